"""One batch's account: the call's own cap (in memory, as before) and the shared scopes (session, day,
month: in the store), reserved before a task is sent and settled when it ends, whatever its status;
each settled task becomes one ledger row.

A task that does not fit the call's cap waits while others of the batch are in flight (they may settle
below their reservations); one that does not fit a shared scope, with nothing of its own batch in flight
to wait for, is not started (`skipped_budget`, error type `budget`, naming the scope).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any, Sequence

from ..core.budget import Budget
from ..core.caps import BudgetSettings, Scope, period_keys, scopes_for, settle_amount

__all__ = ["SpendAccount", "OWNER"]

log = logging.getLogger("hermes_delegate.spend")

#: This process, as the owner of its holds (a dead owner's holds lapse after the lease).
OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
HOST = socket.gethostname()


class SpendAccount:
    """All methods run on the batch's event loop."""

    def __init__(self, *, call_cap: float | None, settings: BudgetSettings, store: Any = None,
                 session: str | None = None, tree_root: str | None = None, door: str | None = None,
                 session_cap: float | None = None):
        self.budget = Budget(call_cap) if call_cap is not None else None
        self.settings, self.store = settings, store
        self.session, self.tree_root, self.door = session, tree_root, door
        self.session_cap = session_cap
        self.lease_s = settings.lease_s
        self._holds: dict[int, tuple[str, list[str]]] = {}  # task index -> (hold id, scope keys)
        self._changed = asyncio.Event()
        self._waiters = 0  # reservations waiting for a settlement (none: no event is set or made)
        self._settling = 0  # settlements under way (their holds already popped, the store not yet told)
        self._settled = 0  # settlements done: a reservation refused across one asks again
        self._renewer: asyncio.Task[None] | None = None
        self.spent_usd = 0.0
        self.unknown = 0
        self.today: dict[str, Any] | None = None
        self._period_keys: tuple[tuple[str, str], tuple[str, ...]] | None = None

    @property
    def active(self) -> bool:
        return self.budget is not None or self.store is not None

    @property
    def uncapped(self) -> bool:
        """No cap at all (only the ledger): every reservation is granted at once, in `reserve_now`."""
        st = self.settings
        return (self.budget is None and self.session_cap is None and st.per_session_usd is None
                and st.daily_usd is None and st.monthly_usd is None)

    def reserve_now(self, index: int) -> None:
        """`reserve` for an uncapped account: nothing to check, so no await (a coroutine per task saved)."""
        self._holds[index] = ("", [])

    def _scopes(self) -> list[Scope]:
        if self.store is None:
            return []
        return scopes_for(self.settings, now=time.time(), session=self.session, session_cap=self.session_cap)

    def _in_flight(self) -> bool:
        return bool(self._holds) or self._settling > 0 or (self.budget is not None and self.budget.in_flight)

    async def reserve(self, index: int, amount: float | None) -> str | None:
        """Hold a task's reservation in every scope; None when held, else why it is not started."""
        amount = amount or 0.0
        while True:
            if self.budget is not None and not self.budget.try_reserve(amount):
                if not self._in_flight():
                    return (f"Not started: the batch budget of ${self.budget.cap_usd} would be passed "
                            f"(spent ${self.budget.spent_usd:.6f}).")
                await self._wait()
                continue
            scopes = self._scopes()
            if not scopes:
                self._holds[index] = ("", [])
                return None
            hold_id = uuid.uuid4().hex
            settled = self._settled
            try:
                refused = await self.store.reserve(hold_id, OWNER, scopes, amount, self.lease_s)
            except Exception as exc:  # noqa: BLE001 - a cap that cannot be checked is not passed
                if self.budget is not None:
                    self.budget.settle(amount, 0.0)
                return (f"Not started: the spend caps' store ({self.store.where}) cannot be reached "
                        f"({type(exc).__name__}); nothing was sent.")
            if refused is None:
                self._holds[index] = (hold_id, [s.key for s in scopes])
                self._renew_soon()
                return None
            if self.budget is not None:
                self.budget.settle(amount, 0.0)
            scope, spent, held = refused
            if self._settled != settled:  # a task settled while the store answered: it may fit now
                continue
            if not self._in_flight():
                return (f"Not started: the {scope.label} of ${scope.cap_usd:g} would be passed (spent "
                        f"${spent:.6f}, ${held:.6f} held by running tasks; this task reserves ${amount:.6f}).")
            await self._wait()

    async def _wait(self) -> None:
        self._waiters += 1
        try:
            await self._changed.wait()
        finally:
            self._waiters -= 1

    def _renew_soon(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        """Keep this batch's holds alive while they are in flight (a dead process stops renewing)."""
        while self._holds:
            await asyncio.sleep(self.lease_s / 3)
            ids = [h for h, _ in self._holds.values() if h]
            with contextlib.suppress(Exception):
                await self.store.renew(ids, self.lease_s)

    async def settle(self, index: int, reserved: float | None, res: Any, *, sent: bool, ledger: bool) -> None:
        """Charge a finished task (every paid attempt; the reservation where a cost is unknown), update the
        result's cost, release its holds, and write its ledger row: one commit.

        Cancelling the caller does not stop the settlement: the result is updated before the first await,
        and the commit completes without the caller (the SQLite store's commit is queued by then, see
        `SqliteStore.settle`; any other store's runs in a task of its own, shielded)."""
        reserved = reserved or 0.0
        held = self._holds.pop(index, None)
        self._settling += 1
        try:
            work = self._settle(reserved, held, res, sent=sent, ledger=ledger)
            if self.store is None or getattr(self.store, "settles_when_cancelled", False):
                await work  # no task per settlement (a cost on every task of a batch)
            else:
                await asyncio.shield(work)
        finally:
            self._settling -= 1
            self._settled += 1
            if self._waiters:
                self._changed.set()
                self._changed = asyncio.Event()

    async def _settle(self, reserved: float, held: tuple[str, list[str]] | None, res: Any, *, sent: bool,
                      ledger: bool) -> None:
        charge = settle_amount(status=res.status, cost_usd=res.cost_usd, attempts=res.attempts,
                               reserved=reserved, sent=sent)
        if res.status != "completed" and charge.cost_usd is not None and charge.cost_usd > 0:
            res.cost_usd = charge.cost_usd  # a failed task's paid attempts are reported too
        elif charge.cost_usd is None and res.status == "completed":
            res.cost_usd = None
        res.cost_estimated = charge.estimated
        if held is not None and self.budget is not None:
            self.budget.settle(reserved, charge.usd)
        self.spent_usd += charge.usd
        self.unknown += int(charge.cost_usd is None and (sent or res.status == "completed"))
        paid = charge.paid
        if self.store is not None and (held is not None or paid):
            now = time.time()
            periods = period_keys(now, self.settings.timezone)
            row = self._row(res, charge, now, periods[0]) \
                if ledger and (sent or paid or res.status == "completed") else None
            hold_id, held_keys = held if held is not None else ("", [])
            # every settlement counts in its day, month and session, capped or not: a cap set later
            # already knows what was spent in its period
            keys = self._keys(held_keys, periods)
            try:
                await self.store.settle(hold_id or None, keys, charge.usd, charge.cost_usd is None, row)
            except Exception as exc:  # noqa: BLE001 - the result is never lost to the ledger; the hold lapses
                await self._spool(res.index, keys, charge, row, exc)

    def _keys(self, held: list[str], periods: tuple[str, str]) -> tuple[str, ...]:
        """The scope keys a settlement counts in: its holds', its day's and month's, its session's."""
        if not held and self._period_keys is not None and self._period_keys[0] == periods:
            return self._period_keys[1]  # the usual case (no cap held the task): the same for every task
        keys = tuple(sorted({*held, *periods, *([f"session:{self.session}"] if self.session else [])}))
        if not held:
            self._period_keys = (periods, keys)
        return keys

    async def _spool(self, index: int, keys: Sequence[str], charge: Any, row: dict[str, Any] | None,
                     exc: BaseException) -> None:
        """A shared store (Redis) that cannot be reached: the row goes to this machine's SQLite ledger."""
        fallback = getattr(self.store, "fallback", None)
        log.warning("the spend ledger (%s) could not record task %s (%s)%s", self.store.where, index,
                    type(exc).__name__, f"; kept in {fallback.where}" if fallback is not None else "")
        if fallback is not None:
            try:
                await fallback.settle(None, keys, charge.usd, charge.cost_usd is None, row)
            except Exception as again:  # noqa: BLE001
                log.warning("the local spend ledger could not record task %s either (%s)", index,
                            type(again).__name__)

    def _row(self, res: Any, charge: Any, now: float, day: str) -> dict[str, Any]:
        dep = res.deployment or (res.attempts[-1].deployment if res.attempts else None)
        return {"ts": now, "day": day[4:], "status": res.status, "cost_usd": charge.cost_usd,
                "charged_usd": charge.usd, "estimated": int(charge.estimated),
                "tokens_in": int((res.tokens or {}).get("input", 0) or 0),
                "tokens_out": int((res.tokens or {}).get("output", 0) or 0),
                "model": res.model, "deployment": getattr(dep, "deployment_id", None),
                "provider": getattr(dep, "provider", None), "api_host": getattr(dep, "api_host", None),
                "host": HOST, "door": self.door, "session": self.session, "tree_root": self.tree_root,
                "error_type": (res.error or {}).get("type"), "task_index": res.index}

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(BaseException):
                await self._renewer
        left = [h for h, _ in self._holds.values() if h]
        if left and self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.release(left)

    def report(self) -> dict[str, Any] | None:
        """The batch's budget: {cap_usd, spent_usd, reserved_usd} for a call cap; with session, daily or
        monthly caps also what was charged, the unknown costs, the session and the delegation tree's root."""
        shared = self.store is not None and self.settings.shared
        if self.budget is None and not shared:
            return None
        out: dict[str, Any] = dict(self.budget.report()) if self.budget is not None else {}
        if shared:
            out.update(charged_usd=round(self.spent_usd, 10), unknown=self.unknown, session=self.session,
                       tree_root=self.tree_root)
            if self.today is not None:
                out["today"] = self.today
        return out

    async def read_today(self) -> None:
        """The day's spend against the daily cap, for the end-of-batch line (`today` in the report)."""
        if self.store is None or self.settings.daily_usd is None:
            return
        day, _ = period_keys(time.time(), self.settings.timezone)
        try:
            state = (await asyncio.to_thread(self.store.scope_states, [day]))[day]
        except Exception:  # noqa: BLE001 - only a line of the summary
            return
        self.today = {"day": day[4:], "cap_usd": self.settings.daily_usd, **state}
