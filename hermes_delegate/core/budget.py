"""Spend controls: price a task before it runs, and hold the batch under its cap.

A task starts only if spent + reserved-in-flight + its own reservation stays within the cap; it is
reserved at `input_tokens × input price + max_tokens × output price`, and settled at its real cost.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .catalog import ModelPrice
from .caps import BudgetSettings, price_override_problems
from .errors import BudgetError, ConfigError

if TYPE_CHECKING:
    from .config import Config
    from .resolver import Resolution, Resolver


class TaskText(Protocol):
    """What a reservation reads of a task (a planning.Task; planning imports this module, so the
    type is named here, not imported from there)."""

    @property
    def goal(self) -> str: ...

    @property
    def context(self) -> str | None: ...

__all__ = ["Pricing", "Budget", "effective_cap", "tightest_cap", "max_paid_tries", "DEFAULT_RESERVE_TOKENS",
           "estimate_tokens"]

#: max_tokens assumed for a reservation when the config sets none (and passed to the worker,
#: so the reservation is a real bound).
DEFAULT_RESERVE_TOKENS = 4096


def estimate_tokens(text: str) -> int:
    """A deliberately generous estimate (≈3 chars/token) so reservations err on the safe side."""
    return max(1, len(text) // 3 + 8)


BUDGET_HINT = "Pass e.g. budget_usd: 0.5, or omit it to use the configured cap."


def finite_usd(value: int | float) -> float:
    """A budget number as a float; NaN, infinities and ints too large for a float are a BudgetError."""
    try:
        usd = float(value)
    except OverflowError:  # an int too large for a float (10**400)
        usd = math.inf
    if not math.isfinite(usd):
        raise BudgetError("budget_usd must be a finite positive number of US dollars.", hint=BUDGET_HINT)
    return usd


def effective_cap(config_cap: float | None, call_cap: object) -> float | None:
    """A call may lower the configured cap, never raise it."""
    if call_cap is None:
        return config_cap
    cap = finite_usd(call_cap) if isinstance(call_cap, (int, float)) and not isinstance(call_cap, bool) else 0.0
    if cap <= 0:
        raise BudgetError(f"budget_usd must be a positive number, got {call_cap!r}.", hint=BUDGET_HINT)
    if config_cap is not None and cap > config_cap:
        raise BudgetError(
            f"budget_usd {cap} is above the configured cap of {config_cap}.",
            hint=f"Pass a budget_usd of at most {config_cap}, or omit it.",
        )
    return cap


def tightest_cap(call_cap: float | None, settings: BudgetSettings) -> tuple[float, str] | None:
    """The smallest cap a single task must fit (the call's, or a session/day/month cap), and its name."""
    named = ((call_cap, "the budget"), (settings.per_session_usd, "the session cap"),
             (settings.daily_usd, "the daily cap"), (settings.monthly_usd, "the monthly cap"))
    caps = [(c, label) for c, label in named if c is not None]
    return min(caps) if caps else None


def deployment_price(params: dict[str, Any], info: dict[str, Any]) -> ModelPrice | None:
    """A deployment's own price override (litellm_params first, then model_info). Each must be a finite
    number >= 0: a config is checked when read; a remote proxy's listing is checked here."""
    for where, src in (("litellm_params", params), ("model_info", info)):
        problems = price_override_problems(src, where)
        if problems:
            raise ConfigError(f"{problems[0]}.", hint="Give prices as plain numbers of US dollars, e.g. 3e-06.")
        i, o = src.get("input_cost_per_token"), src.get("output_cost_per_token")
        if i is not None and o is not None:
            return ModelPrice(float(i), float(o))
    return None


def max_paid_tries(config: Config) -> int:
    """How many answered (so billable) attempts one call may make: 1 + the largest num_retries the
    Router may use (router_settings, litellm_settings, a deployment's own; LiteLLM's default is 2)."""
    found = [config.router.router_settings.get("num_retries"), config.router.litellm_settings.get("num_retries"),
             *(d.litellm_params.get("num_retries") for d in config.router.model_list)]
    numbers = [int(n) for n in found if isinstance(n, (int, float)) and not isinstance(n, bool)
               and math.isfinite(n) and n >= 0]
    if not numbers and found[0] is None and found[1] is None:
        numbers = [ROUTER_DEFAULT_RETRIES]
    return 1 + max(numbers or [0])


#: LiteLLM's Router retries this often when no num_retries is configured (openai.DEFAULT_MAX_RETRIES).
ROUTER_DEFAULT_RETRIES = 2
#: What the structured-output instruction and the retry turn add around the schema, in characters.
SCHEMA_OVERHEAD_CHARS = 200


class Pricing:
    """Prices for resolved models: deployment prices from the config first, then the catalog.

    A reservation prices everything a task may send and be billed for: the system prompt, goal and
    context, an output_schema's text and its one retry (which sends the first answer back), times every
    attempt the Router may make (`max_paid_tries`), each at max_tokens of output."""

    def __init__(self, config: Config, resolver: Resolver, *, cap_usd: float | None, max_tokens: int,
                 system_prompt: str = "", allow_unpriced: bool = False, cap_label: str = "the budget"):
        self.config, self.resolver = config, resolver
        self.cap_usd, self.max_tokens = cap_usd, max_tokens
        self.system_prompt, self.allow_unpriced = system_prompt, allow_unpriced
        self.cap_label = cap_label
        self.tries = max_paid_tries(config)

    def price(self, res: Resolution) -> ModelPrice | None:
        """The most expensive deployment the call could land on; None when any price is unknown."""
        if res.is_group:
            prices = []
            for dep in self.resolver.groups.get(res.model, []):
                p = deployment_price(dep.litellm_params, dep.model_info) or self.resolver.catalog.price(
                    str(dep.litellm_params.get("model")))
                if p is None:
                    return None
                prices.append(p)
            if not prices:
                return None
            return ModelPrice(max(p.input_per_token for p in prices), max(p.output_per_token for p in prices))
        return self.resolver.catalog.price(res.model)

    def estimate(self, price: ModelPrice, task: TaskText) -> float:
        """The most one task may be billed on a model at `price`."""
        text = self.system_prompt + task.goal + (f"\n\nContext:\n{task.context}" if task.context else "")
        tokens_in = estimate_tokens(text)
        mt = self.max_tokens
        one = tokens_in * price.input_per_token + mt * price.output_per_token
        schema = getattr(task, "output_schema", None)
        if schema is not None:
            schema_tokens = estimate_tokens(json.dumps(schema, ensure_ascii=False, default=str)) + \
                SCHEMA_OVERHEAD_CHARS // 3
            one += schema_tokens * price.input_per_token
            # the retry after a wrong-shape answer: the same prompt plus that answer, and a new answer
            one += one + (mt + SCHEMA_OVERHEAD_CHARS // 3) * price.input_per_token
        return one * self.tries

    def reservation(self, res: Resolution, task: TaskText) -> float | None:
        if self.cap_usd is None:
            return None
        amount = self.amount(res, task)
        if not self.fits(amount):
            raise self.over_cap(res, amount)
        return amount

    def amount(self, res: Resolution, task: TaskText) -> float:
        """What one task on `res` is reserved at; BudgetError when its price is unknown (and that is not
        allowed)."""
        price = self.price(res)
        if price is None:
            if self.allow_unpriced:
                return 0.0
            raise BudgetError(
                f"Model {res.model} has no known price, so it cannot run under a budget.",
                hint="Pick a priced model (see list_models), set prices in the model_list, "
                     "or set delegation.allow_unpriced: true.",
            )
        return self.estimate(price, task)

    def fits(self, amount: float) -> bool:
        """Whether one reservation of `amount` fits the tightest cap (the plan-time check)."""
        return self.cap_usd is None or amount <= self.cap_usd

    def over_cap(self, res: Resolution, amount: float, why: str = "") -> BudgetError:
        tries = f" ({self.tries} attempts)" if self.tries > 1 else ""
        return BudgetError(
            f"One task on {res.model} may cost up to ${amount:.6f}{tries}; {self.cap_label} is "
            f"${self.cap_usd:.6f}.{why}",
            hint=f"Raise the cap to at least {amount:.6f}, lower max_tokens or num_retries, "
                 "or pick a cheaper model.",
        )


@dataclass
class Budget:
    """The running account of one batch. All methods run on the event loop thread."""

    cap_usd: float
    spent_usd: float = 0.0
    reserved_usd: float = 0.0

    def __post_init__(self) -> None:
        self._changed = asyncio.Event()

    def try_reserve(self, amount: float) -> bool:
        if self.spent_usd + self.reserved_usd + amount > self.cap_usd + 1e-12:
            return False
        self.reserved_usd += amount
        return True

    def settle(self, reserved: float, actual: float | None) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        self.spent_usd += reserved if actual is None else actual
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def in_flight(self) -> bool:
        return self.reserved_usd > 1e-15

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    def report(self) -> dict[str, float]:
        return {"cap_usd": self.cap_usd, "spent_usd": round(self.spent_usd, 10),
                "reserved_usd": round(self.reserved_usd, 10)}
