"""Over budget: refuse, or downgrade down the user's tier ladder. Pure.

`delegation.budget.on_over_budget: downgrade` moves a task whose model does not fit to the best tier
below it that does. The ladder is `delegation.tiers` (cheapest first), else the aliases named like
tiers (`small`, `medium`, `large`, …) in the order the config writes them. A task never moves up the
ladder, nor to a rung that is not cheaper than its own model; a pinned model (`opus!`) never moves.

"Fits" is a predicate over a reservation amount, so any check plugs in: the per-call cap at plan time
(`Pricing.fits`), the batch's running account at run time (`Budget.try_reserve`, in the fan-out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

from .errors import BudgetError, DelegateError
from .resolver import TIER_NAMES, Resolution, Resolver

__all__ = ["Rung", "Ladder", "ladder_names", "first_fit", "fit_or_downgrade"]

T = TypeVar("T")


@dataclass(frozen=True)
class Rung:
    """One place a task may run: the model string (a ladder name, or what the task asked for), its
    resolution, and what one task there is reserved at."""

    model: str
    resolution: Resolution
    reserve_usd: float | None = None


def first_fit(options: Iterable[T], fits: Callable[[T], bool]) -> T | None:
    """The first option the predicate accepts (it may reserve as it checks, as Budget.try_reserve does)."""
    return next((o for o in options if fits(o)), None)


def ladder_names(tiers: Sequence[str] | None, aliases: Iterable[str]) -> list[str]:
    """The ladder, cheapest first: `delegation.tiers`, else the aliases named like tiers, in order."""
    return list(tiers) if tiers is not None else [a for a in aliases if a in TIER_NAMES]


class Ladder:
    """The ladder's rungs resolved once per batch; `usable` says which a task may move to (the allowlist
    and the credentials check apply to a rung as to any model)."""

    def __init__(self, names: Sequence[str], resolver: Resolver, usable: Callable[[Resolution], bool]):
        self.rungs: list[tuple[str, Resolution | None, bool]] = []
        for name in names:
            try:
                res: Resolution | None = resolver.resolve(name)
            except DelegateError:  # a rung that does not resolve is never moved to (doctor names it)
                res = None
            self.rungs.append((name, res, res is not None and usable(res)))

    def below(self, name: str, res: Resolution) -> list[tuple[str, Resolution]]:
        """The usable rungs under a task's place on the ladder, the best first. A task on a model the
        ladder does not name (by its name, else by what it resolves to) may go to any rung, cheaper
        ones only (the caller compares prices)."""
        at = next((i for i, (n, _, _) in enumerate(self.rungs) if n == name), None)
        if at is None:
            at = next((i for i, (_, r, _) in enumerate(self.rungs)
                       if r is not None and (r.model, r.is_group) == (res.model, res.is_group)), None)
        under = self.rungs[:at] if at is not None else self.rungs
        return [(n, r) for n, r, ok in reversed(under) if ok and r is not None]


def fit_or_downgrade(name: str, res: Resolution, *, amount: Callable[[Resolution], float],
                     fits: Callable[[float], bool], ladder: Ladder | None,
                     refuse: Callable[[Resolution, float, str], DelegateError],
                     ) -> tuple[Rung, tuple[Rung, ...], str | None]:
    """Where a task runs under a budget: (its rung, the cheaper rungs below it that it may still move to
    at run time, best first, and the model it was downgraded from, or None). Without a ladder (refuse)
    or for a pinned model, a reservation that does not fit is `refuse(res, amount, why)`, raised."""
    cost = amount(res)
    if ladder is None or res.pinned:
        if not fits(cost):
            raise refuse(res, cost, " It is pinned (`!`), so it is not downgraded." if ladder and res.pinned else "")
        return Rung(name, res, cost), (), None
    cheaper: list[Rung] = []
    for rung_name, rung_res in ladder.below(name, res):
        try:
            rung_cost = amount(rung_res)
        except BudgetError:  # an unpriced rung cannot run under a budget
            continue
        if rung_cost < cost:  # never up: a rung that is not cheaper is no downgrade
            cheaper.append(Rung(rung_name, rung_res, rung_cost))
    if fits(cost):
        return Rung(name, res, cost), tuple(cheaper), None
    pick = first_fit(cheaper, lambda r: fits(r.reserve_usd or 0.0))
    if pick is None:
        tried = ", ".join(f"{r.model} (${r.reserve_usd:.6f})" for r in cheaper)
        raise refuse(res, cost, f" No tier below it fits either ({tried})." if tried
                     else " No cheaper tier below it on the ladder (delegation.tiers) to downgrade to.")
    return pick, tuple(cheaper[cheaper.index(pick) + 1:]), name
