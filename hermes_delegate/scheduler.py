"""Send work only when a deployment has capacity: rpm, tpm and max_parallel_requests, queued.

LiteLLM's Router rejects a request at once (429) when a deployment's slots are full; it does not
queue. The CapacityGate queues: asked for a deployment of a group, it waits, FIFO per group, until
one of the healthy deployments the Router offers has room, takes a slot there, and hands that one
deployment back, so the Router's own retries, cooldowns and fallbacks stay in charge of the rest.

A deployment's first request is sent alone (LiteLLM sets its client up on it, which delays it by
a variable amount and would bunch the next ones into one provider window); the rest follow.
`rpm` is enforced as a smooth rate, not a per-minute burst: at most L requests in any window of
W = 60·L/rpm seconds (L = rpm/60 rounded down, at least 1), plus a small pad for network jitter.
Several processes share the request windows through Redis (see redis_limiter.py).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

__all__ = ["Limits", "CapacityGate", "LocalWindows", "WindowStore", "JITTER_PAD_S"]

#: Added to every rate window so requests admitted back to back do not land inside one provider
#: window because of network jitter.
JITTER_PAD_S = 0.06


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
        self._queues: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._released: asyncio.Event | None = None
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
        if self._released is not None:
            self._released.set()

    async def sent(self, dep_id: str) -> None:
        """A request to this deployment is leaving now. Its window slot was taken at admission, a
        variable while earlier (the Router still had work to do): move the slot to now, so the
        provider's window and ours line up even on a loaded machine."""
        q = self._unsent.get(dep_id)
        if q:
            await self.windows.restamp(dep_id, q.popleft())

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
        task.add_done_callback(self._tasks.discard)

    def block(self, dep_id: str, seconds: float) -> None:
        """A 429 said Retry-After: send nothing more to this deployment until then."""
        st = self._state[dep_id]
        st.blocked_until = max(st.blocked_until, self.clock() + min(60.0, max(0.0, seconds)))

    def in_flight(self, dep_id: str) -> int:
        return self._state[dep_id].in_flight if dep_id in self._state else 0

    # -- the queue --------------------------------------------------------------------------
    async def acquire(self, group: str, deployments: Sequence[Mapping[str, Any]],
                      est_tokens: float = 0.0) -> tuple[Mapping[str, Any], float]:
        """Wait (FIFO per group) until a deployment has room; take a slot; return it and the wait."""
        t0 = self.clock()
        async with self._queues[group]:
            while True:
                ready, soonest = [], float("inf")
                order = list(deployments)
                self.rng.shuffle(order)
                for dep in order:
                    wait = await self._try(_dep_id(dep), est_tokens)
                    if wait == 0.0:
                        ready.append(dep)
                        break
                    soonest = min(soonest, wait)
                if ready:
                    waited = self.clock() - t0
                    if waited > 0.001:
                        self.waits += 1
                        self.wait_s += waited
                    return ready[0], waited
                self._released = self._released or asyncio.Event()
                self._released.clear()
                timeout = None if soonest == float("inf") else soonest
                try:
                    await asyncio.wait_for(self._released.wait(), timeout)
                except TimeoutError:
                    pass


def _dep_id(dep: Mapping[str, Any]) -> str:
    return str((dep.get("model_info") or {}).get("id"))
