"""Send work only when a deployment has capacity: rpm, tpm and max_parallel_requests, queued.

LiteLLM's Router rejects a request at once (429) when a deployment's slots are full; it does not
queue. The CapacityGate queues: asked for a deployment of a group, it waits, FIFO per group, until
one of the healthy deployments the Router offers has room, takes a slot there, and hands that one
deployment back, so the Router's own retries, cooldowns and fallbacks stay in charge of the rest.

A deployment's first request is sent alone (LiteLLM sets its client up on it, which delays it by
a variable amount and would bunch the next ones into one provider window); the rest follow.
`rpm` is enforced as a smooth rate, not a per-minute burst: at most L requests in any window of
W = 60·L/rpm seconds (L = rpm/60 rounded down, at least 1), plus a small pad for network jitter.
Several processes share the request windows through Redis (see redis_windows.py).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence

__all__ = ["Limits", "CapacityGate", "LocalWindows", "WindowStore", "JITTER_PAD_S"]

#: Added to every rate window so requests admitted back to back do not land inside one provider
#: window because of network jitter.
JITTER_PAD_S = 0.06

#: How long the head of a queue waits for an earlier call (a lower ticket) that has started but not
#: reached the gate yet (LiteLLM's own routing work, e.g. Redis round trips, delays some calls more than
#: others): queue order follows the order calls were made, not the order they got here.
ARRIVAL_GRACE_S = 0.25


@dataclass(frozen=True)
class Limits:
    rpm: float | None = None
    tpm: float | None = None
    max_parallel: int | None = None

    @classmethod
    def from_deployment(cls, dep: Mapping[str, Any], default_parallel: int | None = None) -> "Limits":
        lp = dep.get("litellm_params") or {}
        info = dep.get("model_info") or {}

        def num(key: str) -> float | None:
            v = lp.get(key, info.get(key))
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None

        par = num("max_parallel_requests") or (float(default_parallel) if default_parallel else None)
        return cls(num("rpm"), num("tpm"), int(par) if par else None)

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_parallel is None

    def window(self) -> tuple[int, float] | None:
        """(L requests, per W seconds) for the rpm limit."""
        if self.rpm is None:
            return None
        per = max(1, int(self.rpm // 60))
        return per, 60.0 * per / self.rpm + JITTER_PAD_S


class WindowStore(Protocol):
    """Where request windows live: this process (LocalWindows) or Redis (RedisWindows)."""

    async def admit(self, key: str, limit: int, window_s: float, token: str) -> float:
        """Take a slot (named `token`) if one is free now and return 0.0; else the seconds until one frees."""
        ...

    async def restamp(self, key: str, token: str) -> None:
        """The request behind `token` is being sent now: move its slot to now."""
        ...

    async def record(self, key: str, window_s: float) -> None:
        """Count one request now, unconditionally."""
        ...


class LocalWindows:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._w: dict[str, deque[tuple[float, str]]] = defaultdict(deque)

    async def admit(self, key: str, limit: int, window_s: float, token: str = "") -> float:
        now = self.clock()
        q = self._w[key]
        while q and q[0][0] <= now - window_s:
            q.popleft()
        if len(q) < limit:
            q.append((now, token))
            return 0.0
        return max(0.001, q[0][0] + window_s - now)

    async def restamp(self, key: str, token: str) -> None:
        q = self._w[key]
        for i, (_, tok) in enumerate(q):
            if tok == token:
                del q[i]
                q.append((self.clock(), token))
                return

    async def record(self, key: str, window_s: float) -> None:
        self._w[key].append((self.clock(), ""))


@dataclass
class _State:
    warm: bool = False  # a deployment's first request pays LiteLLM's client setup: send it alone
    in_flight: int = 0
    blocked_until: float = 0.0
    tokens: deque[tuple[float, float]] = field(default_factory=deque)


class CapacityGate:
    """Per-deployment capacity, shared by every task of one RouterHandle (one event loop)."""

    def __init__(self, limits: Mapping[str, Limits], *, windows: WindowStore | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.limits = {k: v for k, v in limits.items() if not v.unlimited}
        self.windows = windows or LocalWindows(clock)
        self.clock = clock
        self.rng = rng or random.Random()
        self._state: dict[str, _State] = defaultdict(_State)
        self._waiting: dict[str, set[int]] = defaultdict(set)  # tickets queued per group
        self._busy: set[str] = set()  # groups whose head is asking the windows right now
        self._served: set[int] = set()
        self._skipped: set[int] = set()
        self._auto = itertools.count(10**12)
        self._changed: asyncio.Event | None = None
        #: Tickets of the calls under way (set by the router hooks); None: serve in arrival order.
        self.outstanding: Callable[[], Collection[int]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsent: dict[str, deque[str]] = defaultdict(deque)
        self.waits = 0
        self.wait_s = 0.0

    def limited(self, deployments: Sequence[Mapping[str, Any]]) -> bool:
        return any(_dep_id(d) in self.limits for d in deployments)

    # -- slot bookkeeping -------------------------------------------------------------------
    def _local_wait(self, dep_id: str, lim: Limits, est_tokens: float, now: float) -> float:
        st = self._state[dep_id]
        if st.blocked_until > now:
            return st.blocked_until - now
        if lim.max_parallel is not None and st.in_flight >= lim.max_parallel:
            return float("inf")  # until a release
        if not st.warm and st.in_flight >= 1:
            return float("inf")  # cold: until the first request returns
        if lim.tpm is not None:
            while st.tokens and st.tokens[0][0] <= now - 60.0:
                st.tokens.popleft()
            used = sum(t for _, t in st.tokens)
            if st.tokens and used + est_tokens > lim.tpm:
                return max(0.001, st.tokens[0][0] + 60.0 - now)
        return 0.0

    async def _try(self, dep_id: str, est_tokens: float) -> float:
        now = self.clock()
        blocked = self._state[dep_id].blocked_until if dep_id in self._state else 0.0
        if blocked > now:  # Retry-After holds for unlimited deployments too
            return blocked - now
        lim = self.limits.get(dep_id)
        if lim is None:
            return 0.0
        wait = self._local_wait(dep_id, lim, est_tokens, now)
        if wait > 0:
            return wait
        win = lim.window()
        if win is not None:
            token = uuid.uuid4().hex
            wait = await self.windows.admit(dep_id, win[0], win[1], token)
            if wait > 0:
                return wait
            self._unsent[dep_id].append(token)
        st = self._state[dep_id]
        st.in_flight += 1
        if lim.tpm is not None:
            st.tokens.append((self.clock(), est_tokens))
        return 0.0

    def release(self, dep_id: str) -> None:
        st = self._state.get(dep_id)
        if st is not None:
            if not st.warm:
                st.warm = True
                self._restamp(dep_id)
            st.in_flight = max(0, st.in_flight - 1)
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _event(self) -> asyncio.Event:
        """The event the next change sets (take it before an await, so no change is missed)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def _sleep(self, timeout: float | None, event: asyncio.Event | None = None) -> None:
        """Until something changes (a release, an arrival, a departure) or `timeout` seconds."""
        try:
            await asyncio.wait_for((event or self._event()).wait(), timeout)
        except TimeoutError:
            pass

    async def sent(self, dep_id: str) -> None:
        """A request to this deployment is leaving now. Its window slot was taken at admission, a
        variable while earlier (the Router still had work to do): move the slot to now, so the
        provider's window and ours line up even on a loaded machine."""
        q = self._unsent.get(dep_id)
        if q:
            token = q.popleft()
            try:
                await self.windows.restamp(dep_id, token)
            except Exception:  # noqa: BLE001 - best effort: the slot was taken at admission
                pass

    def blocked_ids(self) -> set[str]:
        now = self.clock()
        return {k for k, st in self._state.items() if st.blocked_until > now}

    def blocked(self, deployments: Sequence[Mapping[str, Any]]) -> bool:
        now = self.clock()
        return any(self._state[_dep_id(d)].blocked_until > now for d in deployments
                   if _dep_id(d) in self._state)

    def _restamp(self, dep_id: str) -> None:
        """The warm-up request reached the provider at some unknown moment before now: count it
        again at now, so the next window is measured from a time it surely arrived by."""
        win = self.limits[dep_id].window() if dep_id in self.limits else None
        if win is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.windows.record(dep_id, win[1]))
        except RuntimeError:
            return
        self._tasks.add(task)
        task.add_done_callback(_forget)
        task.add_done_callback(self._tasks.discard)

    def block(self, dep_id: str, seconds: float) -> None:
        """A 429 said Retry-After: send nothing more to this deployment until then."""
        st = self._state[dep_id]
        st.blocked_until = max(st.blocked_until, self.clock() + min(60.0, max(0.0, seconds)))

    def in_flight(self, dep_id: str) -> int:
        return self._state[dep_id].in_flight if dep_id in self._state else 0

    # -- the queue --------------------------------------------------------------------------
    async def acquire(self, group: str, deployments: Sequence[Mapping[str, Any]],
                      est_tokens: float = 0.0, ticket: int | None = None) -> tuple[Mapping[str, Any], float]:
        """Wait (FIFO per group, by `ticket`: the order the calls were made) until a deployment has
        room; take a slot; return it and the wait. Without a ticket, arrival order."""
        t0 = self.clock()
        if ticket is None:
            ticket = next(self._auto)
        queue = self._waiting[group]
        queue.add(ticket)
        self._wake()
        grace_end: float | None = None
        try:
            while True:
                if group in self._busy or ticket != min(queue):
                    await self._sleep(None)
                    continue
                earlier = self._not_arrived(ticket)
                if earlier:
                    grace_end = grace_end if grace_end is not None else self.clock() + ARRIVAL_GRACE_S
                    if self.clock() < grace_end:
                        await self._sleep(grace_end - self.clock())
                        continue
                    self._skipped |= earlier
                ready, soonest = None, float("inf")
                changed = self._event()  # a release while we ask the windows must still wake us
                order = list(deployments)
                self.rng.shuffle(order)
                self._busy.add(group)
                try:
                    for dep in order:
                        wait = await self._try(_dep_id(dep), est_tokens)
                        if wait == 0.0:
                            ready = dep
                            break
                        soonest = min(soonest, wait)
                finally:
                    self._busy.discard(group)
                if ready is not None:
                    self._served.add(ticket)
                    waited = self.clock() - t0
                    if waited > 0.001:
                        self.waits += 1
                        self.wait_s += waited
                    return ready, waited
                await self._sleep(None if soonest == float("inf") else soonest, changed)
        finally:
            queue.discard(ticket)
            self._wake()

    def _not_arrived(self, ticket: int) -> set[int]:
        """Earlier calls under way that are neither queued, served nor given up on."""
        if self.outstanding is None:
            return set()
        open_now = set(self.outstanding())
        self._served &= open_now
        self._skipped &= open_now
        queued = set().union(*self._waiting.values())
        return {t for t in open_now if t < ticket} - queued - self._served - self._skipped


def _forget(task: "asyncio.Task[None]") -> None:
    """A background window update failed (Redis went away): the next admission reports it."""
    if not task.cancelled():
        task.exception()


def _dep_id(dep: Mapping[str, Any]) -> str:
    return str((dep.get("model_info") or {}).get("id"))
