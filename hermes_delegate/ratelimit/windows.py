"""What a deployment's limits are, and where the counts behind them live.

`Limits` are one deployment's rpm / tpm / max_parallel_requests (configured, or learned). The gate
(gate.py) always counts this process's own requests itself; a `WindowStore` holds the request windows,
and, when it is `shared` (Redis, redis_windows.py), everyone's counts: rpm windows, parallel slots,
token windows and buckets, and the limits one process learned, so N processes together stay under
one provider's limits. `LocalWindows` is the store of a process on its own.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

__all__ = ["Limits", "TokenEstimate", "Ask", "WindowStore", "LocalWindows", "JITTER_PAD_S", "next_due"]

#: Added to every rate window so requests admitted back to back do not land inside one provider
#: window because of network jitter, until measured round trips give a better margin (learned.jitter_pad).
JITTER_PAD_S = 0.06

@dataclass(frozen=True)
class Limits:
    rpm: float | None = None
    tpm: float | None = None
    max_parallel: int | None = None
    #: a configured tpm is counted over a minute's window (a minute's burst is allowed); a learned one
    #: (`token_bucket`) is paced smoothly, tpm/60 tokens a second with a second's worth of burst, since
    #: the provider's own window is not stated
    token_window_s: float = 60.0
    token_bucket: bool = False
    #: the rpm window is at least this long: an rpm adapted from 429s (say 270) becomes 5 requests per
    #: 1.11 s, not bursts of 4 per 0.89 s (two of which fit in a provider's 1 s window) nor 4 per 1 s
    min_window_s: float = 0.0

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

    def window(self, pad_s: float = JITTER_PAD_S) -> tuple[int, float] | None:
        """(L requests, per W seconds) for the rpm limit."""
        if self.rpm is None:
            return None
        if self.min_window_s > 0:  # L = ⌈rpm·min/60⌉ requests per 60·L/rpm ≥ min seconds: the rate exactly
            per = max(1, math.ceil(self.rpm * self.min_window_s / 60.0))
        else:
            per = max(1, int(self.rpm // 60))
        return per, 60.0 * per / self.rpm + pad_s


@dataclass(frozen=True)
class Ask:
    """One request's claim on a deployment, as the gate puts it to the store: take all of it, or none."""

    token: str  # names this request's rpm entry and parallel slot
    rpm: tuple[int, float] | None = None  # at most L requests in any W seconds
    parallel: int | None = None  # at most this many in flight at once
    tokens: float = 0.0  # what this request counts against a tpm
    tpm_window: tuple[float, float] | None = None  # (tokens, per seconds): a configured tpm
    tpm_bucket: tuple[float, float] | None = None  # (tokens per second, capacity): a learned tpm
    waiter: str = ""  # the queue (a process's group) asking: a shared store serves queues in turn


class WindowStore(Protocol):
    """Where request windows live: this process (LocalWindows) or Redis (RedisWindows)."""

    #: whether other processes count here too; if not, the gate's own counts are all there is
    shared: bool

    async def admit(self, key: str, ask: Ask) -> float:
        """Take what `ask` claims if all of it is free now and return 0.0; else the seconds to wait."""
        ...

    async def restamp(self, key: str, token: str) -> None:
        """The request behind `token` is being sent now: move its rpm entry to now."""
        ...

    async def record(self, key: str, window_s: float, token: str = "", ago_s: float = 0.0) -> None:
        """Count one request, unconditionally, as sent `ago_s` seconds before now (named `token`, to
        restamp it later)."""
        ...

    async def release(self, key: str, token: str) -> None:
        """The request behind `token` is over: its parallel slot is free."""
        ...

    async def leave(self, key: str, waiter: str) -> None:
        """`waiter` was served elsewhere (or gave up): it no longer waits for this deployment."""
        ...

    async def publish(self, key: str, learned: Mapping[str, Any]) -> None:
        """Limits learned for this deployment, for the other processes."""
        ...

    async def recall(self, key: str) -> dict[str, Any] | None:
        """Limits another process learned for this deployment, if any."""
        ...


def next_due(due: float | None, now: float, step: float) -> float:
    """When the admission after one made `now` is due, evenly spaced `step` = W/L apart.

    Never a burst of L: a burst is stamped when admitted but leaves over the time litellm's call
    path takes for each of its requests (tens of ms under load; up to 90 ms measured for 15 at once),
    and the next burst, admitted one window after the stamps, reached a provider's sliding window
    before the first had left it. The spacing follows a schedule (GCRA's theoretical arrival time),
    not the previous request's send stamp: spaced from send stamps, every gap also took the
    admission-to-send time (~4 ms), 2-3 % of the rate at 5 req/s; a waiter woken a little late does
    not push the schedule either. The L-per-W window over send stamps still bounds what reaches the
    provider. After an idle spell (`now` a whole step past what was due) the schedule starts anew."""
    if due is not None and now - due < step:
        return due + step
    return now + step


class LocalWindows:
    """The rpm windows of a process on its own (its parallel slots and tokens the gate counts itself)."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._w: dict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self._next: dict[str, float] = {}  # per key: when the next evenly spaced admission is due

    async def admit(self, key: str, ask: Ask) -> float:
        if ask.rpm is None:
            return 0.0
        limit, window_s = ask.rpm
        now = self.clock()
        q = self._w[key]
        while q and q[0][0] <= now - window_s:
            q.popleft()
        if len(q) < limit:
            if limit > 1:
                due = self._next.get(key)
                if due is not None and due > now:
                    return max(0.001, due - now)
                self._next[key] = next_due(due, now, window_s / limit)
            q.append((now, ask.token))
            return 0.0
        return max(0.001, q[0][0] + window_s - now)

    async def restamp(self, key: str, token: str) -> None:
        q = self._w[key]
        for i, (_, tok) in enumerate(q):
            if tok == token:
                del q[i]
                q.append((self.clock(), token))
                return

    async def record(self, key: str, window_s: float,  # noqa: ARG002 - pruned by each admission's own window
                     token: str = "", ago_s: float = 0.0) -> None:
        q = self._w[key]
        at = self.clock() - max(0.0, ago_s)
        i = len(q)
        while i and q[i - 1][0] > at:  # the window stays in time order
            i -= 1
        q.insert(i, (at, token))

    async def release(self, key: str, token: str) -> None:
        """Nothing to free: the gate counts this process's parallel slots itself."""

    async def leave(self, key: str, waiter: str) -> None:
        """Nothing to leave: this process's queues are the gate's own."""

    async def publish(self, key: str, learned: Mapping[str, Any]) -> None:
        """No other process to tell."""

    async def recall(self, key: str) -> dict[str, Any] | None:
        """No other process learned anything (None)."""


@dataclass(frozen=True)
class TokenEstimate:
    """A request's tokens before it is sent: the prompt, estimated from its text, and its max_tokens."""

    prompt: float
    max_tokens: float = 0.0

    def __float__(self) -> float:
        return self.prompt + self.max_tokens
