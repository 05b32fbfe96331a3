"""Send work only when a deployment has capacity: rpm, tpm and max_parallel_requests, queued.

LiteLLM's Router rejects a request at once (429) when a deployment's slots are full; it does not
queue. The CapacityGate queues: asked for a deployment of a group, it waits, FIFO per group, until
one of the healthy deployments the Router offers has room, takes a slot there, and hands that one
deployment back, so the Router's own retries, cooldowns and fallbacks stay in charge of the rest.

A deployment's first request is sent alone (LiteLLM sets its client up on it, which delays it by
a variable amount and would bunch the next ones into one provider window); the rest follow.
`rpm` is enforced as a smooth rate, not a per-minute burst: at most L requests in any window of
W = 60·L/rpm seconds (L = rpm/60 rounded down, at least 1), plus a small pad for network jitter.
Several processes share all of it through Redis (redis_windows.py): the rpm windows, the parallel
slots, the token counts and the limits one of them learned.

A deployment with no configured limit is paced by what it says (learned.py): its first request goes
alone (first_request.py), its response's rate-limit headers become its limits, and a deployment that sends none is paced
at a rate adapted on its 429s. Configured limits win over learned ones, field by field.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Collection, Mapping, Sequence

from .headers import parse_rate_headers
from .learned import Adaptive
from .first_request import ARRIVAL_GRACE_S, FirstRequests, dep_id_of as _dep_id
from .windows import JITTER_PAD_S, Ask, Limits, LocalWindows, TokenEstimate, WindowStore

__all__ = ["Limits", "TokenEstimate", "CapacityGate", "JITTER_PAD_S", "DEFAULT_429_BLOCK_S"]

#: How long a 429 without Retry-After (or an exhausted limit's reset) holds a deployment.
DEFAULT_429_BLOCK_S = 1.0

@dataclass
class _State:
    warm: bool = False  # a deployment's first request pays LiteLLM's client setup: send it alone
    in_flight: int = 0  # slots taken through the gate
    sending: int = 0  # requests on the wire, gated or not
    blocked_until: float = 0.0
    tokens: deque[tuple[float, float]] = field(default_factory=deque)
    first_sent: float = 0.0  # when the first request (the probe) was sent; inf: reserved, not sent yet
    probe_by: str | None = None  # the call making (or reserved to make) the first request
    bucket: float = 0.0  # learned tpm: tokens in hand (starts empty: the provider may have counted others)
    bucket_at: float = 0.0
    token_ratio: float = 1.0  # prompt tokens responses reported ÷ what we estimated (learned tpm only)
    completion_avg: float = 0.0  # completion tokens of an uncapped request, as responses reported
    leases: deque[str] = field(default_factory=deque)  # parallel slots held in a shared store
    published_at: float = float("-inf")  # when learned limits were last written to a shared store
    probe_token: str | None = None  # the first request's entry in a shared store's rpm window


class CapacityGate(FirstRequests):
    """Per-deployment capacity, shared by every task of one RouterHandle (one event loop)."""

    def __init__(self, limits: Mapping[str, Limits], *, windows: WindowStore | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 learn: bool = False, labels: Mapping[str, Mapping[str, Any]] | None = None):
        self.configured = dict(limits)
        #: what a deployment is (group, model) for the limits published to a shared store; never credentials
        self.labels = dict(labels or {})
        self._recalled: set[str] = set()
        self._id = uuid.uuid4().hex[:12]  # this gate's queues, as a shared store's waiters
        self._queued_at: dict[str, set[str]] = defaultdict(set)  # group -> deployments its waiter queues at
        self.limits = {k: v for k, v in limits.items() if not v.unlimited}  # in force: configured or learned
        self.learn = learn
        self.adaptive: dict[str, Adaptive] = defaultdict(Adaptive)
        self._reserved: dict[str, set[str]] = defaultdict(set)  # call id -> deployments reserved for its probe
        self.windows = windows or LocalWindows(clock)
        self.clock = clock
        self.rng = rng or random.Random()
        self._state: dict[str, _State] = defaultdict(_State)
        self._waiting: dict[str, set[int]] = defaultdict(set)  # tickets queued per group
        self._busy: set[str] = set()  # groups whose head is asking the windows right now
        self._probing: set[int] = set()  # tickets of the calls in admit_unknown
        self._served: set[int] = set()
        self._skipped: set[int] = set()
        self._auto = itertools.count(10**12)
        self._changed: asyncio.Event | None = None
        #: Tickets of the calls under way (set by the router hooks); None: serve in arrival order.
        self.outstanding: Callable[[], Collection[int]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._counting: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        self._unsent: dict[str, deque[str]] = defaultdict(deque)
        self.waits = 0
        self.wait_s = 0.0

    def limited(self, deployments: Sequence[Mapping[str, Any]]) -> bool:
        return any(self.paced(_dep_id(d)) for d in deployments)

    def paced(self, dep_id: str) -> bool:
        """Whether requests to this deployment queue here: it has limits, or a 429's pace is pending."""
        if dep_id in self.limits:
            return True
        ad = self.adaptive.get(dep_id)
        return self.learn and ad is not None and ad.settle_at is not None

    def add(self, dep_id: str, limits: Limits, label: Mapping[str, Any] | None = None) -> None:
        """A deployment added after the gate was built (an implicit one)."""
        self.configured[dep_id] = limits
        if label:
            self.labels[dep_id] = dict(label)
        if not limits.unlimited:
            self.limits[dep_id] = limits

    # -- slot bookkeeping -------------------------------------------------------------------
    def _local_wait(self, dep_id: str, lim: Limits, est_tokens: "float | TokenEstimate", now: float) -> float:
        st = self._state[dep_id]
        if st.blocked_until > now:
            return st.blocked_until - now
        if lim.max_parallel is not None and st.in_flight >= lim.max_parallel:
            return float("inf")  # until a release
        if not st.warm and st.in_flight >= 1:
            return float("inf")  # cold: until the first request returns
        if lim.tpm is not None and lim.token_bucket:
            need = self._charge(st, est_tokens)
            rate, level = self._bucket(dep_id, lim.tpm, now, need)
            if level < need:
                return max(0.001, (need - level) / rate)
        elif lim.tpm is not None:
            span = lim.token_window_s
            while st.tokens and st.tokens[0][0] <= now - span:
                st.tokens.popleft()
            used = sum(t for _, t in st.tokens)
            if st.tokens and used + float(est_tokens) > lim.tpm * span / 60.0:
                return max(0.001, st.tokens[0][0] + span - now)
        return 0.0

    async def _try(self, dep_id: str, est_tokens: "float | TokenEstimate", group: str = "") -> tuple[float, bool]:
        """(0.0, slot taken?) when the deployment can take this request now; else (seconds to wait, False)."""
        now = self.clock()
        blocked = self._state[dep_id].blocked_until if dep_id in self._state else 0.0
        if blocked > now:  # Retry-After holds for unlimited deployments too
            return blocked - now, False
        ad = self.adaptive.get(dep_id)
        if ad is not None and ad.settle_at is not None:  # a 429's hold is over: set the pace first
            ad.settle(now)
            self._apply_learned(dep_id, ad)
        lim = self.limits.get(dep_id)
        if lim is None:
            if not self.paced(dep_id):
                return 0.0, False
            lim = _NO_LIMITS
        wait = self._local_wait(dep_id, lim, est_tokens, now)
        if wait > 0:
            return wait, False
        st = self._state[dep_id]
        ask = self._ask(dep_id, lim, st, est_tokens, now, group)
        if ask.rpm or ask.parallel or ask.tpm_window or ask.tpm_bucket:
            if self._counting.get(dep_id):  # a request counted in the background is counted first
                await asyncio.wait(list(self._counting[dep_id]))
            wait = await self.windows.admit(dep_id, ask)
            if wait > 0:
                if ask.waiter:
                    self._queued_at[group].add(dep_id)
                return wait, False
            self._queued_at[group].discard(dep_id)
            if ask.rpm:
                self._unsent[dep_id].append(ask.token)
            if ask.parallel:
                st.leases.append(ask.token)
        st.in_flight += 1
        if lim.tpm is not None and lim.token_bucket:
            need = self._charge(st, est_tokens)
            st.bucket = self._bucket(dep_id, lim.tpm, now, need)[1] - need
            st.bucket_at = now
        elif lim.tpm is not None:
            st.tokens.append((self.clock(), float(est_tokens)))
        return 0.0, True

    def _ask(self, dep_id: str, lim: Limits, st: "_State", est: "float | TokenEstimate", now: float,
             group: str) -> Ask:
        """What the store is asked for: the rpm window; in a shared store, everyone's slots and tokens too
        (this process's own the gate has just checked)."""
        win = lim.window(self._pad(dep_id))
        if not self.windows.shared:
            return Ask(uuid.uuid4().hex, rpm=win)
        window = bucket = None
        if lim.tpm is not None and lim.token_bucket:
            amount = self._charge(st, est)
            bucket = (self._bucket(dep_id, lim.tpm, now, amount)[0], amount)
        elif lim.tpm is not None:
            window, amount = (lim.tpm * lim.token_window_s / 60.0, lim.token_window_s), float(est)
        else:
            amount = 0.0
        return Ask(uuid.uuid4().hex, rpm=win, parallel=lim.max_parallel, tokens=amount,
                   tpm_window=window, tpm_bucket=bucket, waiter=f"{self._id}:{group}")

    def _bucket(self, dep_id: str, tpm: float, now: float, need: float) -> tuple[float, float]:
        """(refill rate in tokens/s; tokens in hand now) of a learned tpm's bucket for a request of
        `need` tokens. The provider counts tokens over a window W (learned from its token resets): a
        pace r lets r·W + one request into any window, so r = tpm/60 − need/W keeps it at the limit,
        and the bucket holds one request's worth (a second's worth would let two seconds' worth in
        after an idle spell). The jitter margin slows it as it does rpm windows."""
        st = self._state[dep_id]
        ad = self.adaptive.get(dep_id)
        per_s = tpm / 60.0
        window_s = ad.token_window_s if ad is not None else 1.0
        rate = max(per_s / 2.0, per_s - need / window_s) / (1.0 + self._pad(dep_id))
        return rate, min(need, st.bucket + (now - st.bucket_at) * rate)

    def _pad(self, dep_id: str) -> float:
        ad = self.adaptive.get(dep_id)
        return JITTER_PAD_S if ad is None else ad.pad_s(JITTER_PAD_S)

    # -- what came back ---------------------------------------------------------------------
    def observe(self, dep_id: str, headers: Mapping[str, Any] | None, *, status: int | None,
                latency_s: float | None = None) -> None:
        """A response (status 200, or an error's status) came back from this deployment: learn its
        limits from the headers, adapt on a 429, and hold the deployment for what the 429 asks."""
        rate = parse_rate_headers(headers, time.time())
        ad = self.adaptive[dep_id]
        changed = self.learn and ad.learn(rate)
        ad.answered = True
        if dep_id in self._state:
            self._state[dep_id].probe_by = None
        now = self.clock()
        if status == 429:
            hold = rate.retry_after_s if rate.retry_after_s is not None else DEFAULT_429_BLOCK_S
            conf = self.configured.get(dep_id)
            if self.learn and (conf is None or conf.rpm is None):  # no configured rpm: adapt the pace
                ad.on_429(now, hold, latency_s)
            else:
                ad.rate_limited += 1
            self.block(dep_id, max(hold, rate.wait_s()))
        elif status is None or status < 400:
            changed = ad.on_success(now, latency_s) or changed
        if changed:
            self._apply_learned(dep_id, ad)
        self._wake()

    def _apply_learned(self, dep_id: str, ad: Adaptive, *, publish: bool = True) -> None:
        if publish:
            self._publish(dep_id, ad)
        conf = self.configured.get(dep_id) or _NO_LIMITS
        merged = Limits(conf.rpm or ad.rpm, conf.tpm or ad.tpm, conf.max_parallel, conf.token_window_s,
                        token_bucket=not conf.tpm, min_window_s=1.0 if ad.adapted and not conf.rpm else 0.0)
        st = self._state[dep_id]
        if merged.token_bucket and merged.tpm and not (dep_id in self.limits and self.limits[dep_id].tpm):
            st.bucket, st.bucket_at = 0.0, self.clock()
        if merged.unlimited:
            self.limits.pop(dep_id, None)
            return
        new = dep_id not in self.limits
        self.limits[dep_id] = merged
        if new and ad.adapted and not conf.rpm:
            self._seed(dep_id, ad, merged)
        if new and publish:  # the request that taught them was sent and counted by the provider: count it here too
            st.warm = True
            self._restamp(dep_id)

    def _seed(self, dep_id: str, ad: Adaptive, lim: Limits) -> None:
        """A pace set on a 429, where none was: the provider still counts what went out unpaced in its
        last window, so the new window starts with those sends (the refused ones left out: the
        earliest, so what is counted expires last). Without them, the requests held by the 429 all go
        at once when the hold ends, into a window the provider still has full."""
        win = lim.window(self._pad(dep_id))
        if win is None:
            return
        now = self.clock()
        recent = sorted(t for t in ad.sends if t > now - win[1])
        refused = sum(1 for t in ad.refusals if t > now - win[1])
        for t in recent[refused:]:
            self._background(self.windows.record(dep_id, win[1], ago_s=now - t), counting=dep_id)

    @staticmethod
    def _charge(st: "_State", est: "float | TokenEstimate") -> float:
        """What the provider will count for a request: its prompt as responses showed our estimate to
        run, plus its max_tokens (providers count the cap at admission), else the usual completion."""
        if not isinstance(est, TokenEstimate):
            return float(est)
        return est.prompt * st.token_ratio + (est.max_tokens if est.max_tokens else st.completion_avg)

    def used_tokens(self, dep_id: str, est: "float | TokenEstimate", prompt: float, completion: float) -> None:
        """A response reported its token counts: estimates for this deployment follow them."""
        st = self._state[dep_id]
        if isinstance(est, TokenEstimate) and est.prompt > 0 and prompt > 0:
            st.token_ratio = min(10.0, max(0.1, 0.7 * st.token_ratio + 0.3 * prompt / est.prompt))
            if not est.max_tokens:
                st.completion_avg = 0.7 * st.completion_avg + 0.3 * completion if st.completion_avg else completion

    def describe(self, dep_id: str) -> dict[str, Any]:
        """The limits in force for a deployment, which of them were learned, and its 429 count."""
        conf = self.configured.get(dep_id) or _NO_LIMITS
        ad = self.adaptive.get(dep_id)
        out: dict[str, Any] = {}
        learned: list[str] = []
        for key in ("rpm", "tpm", "max_parallel"):
            value = getattr(conf, key)
            if value is None and ad is not None:
                value = ad.describe().get(key)
                if value is not None:
                    learned.append(key)
            if value is not None:
                out[key] = value
        if learned:
            out["learned"] = learned
            out["learned_from"] = "429s" if ad is not None and ad.adapted else "headers"
        if ad is not None and ad.rate_limited:
            out["rate_limited"] = ad.rate_limited
        return out

    def release(self, dep_id: str) -> None:
        st = self._state.get(dep_id)
        if st is not None:
            if not st.warm:
                st.warm = True
                self._restamp(dep_id)
            st.in_flight = max(0, st.in_flight - 1)
            if st.leases:  # any of this process's slots there: they are alike
                self._background(self.windows.release(dep_id, st.leases.popleft()))
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
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result when the event is
        # set in the same loop turn as the task's own cancellation, swallowing a task timeout.
        try:
            async with asyncio.timeout(timeout):
                await (event or self._event()).wait()
        except TimeoutError:
            pass

    async def sent(self, dep_id: str) -> None:
        """A request to this deployment is leaving now. Its window slot was taken at admission, a
        variable while earlier (the Router still had work to do): move the slot to now, so the
        provider's window and ours line up even on a loaded machine."""
        st = self._state[dep_id]
        st.sending += 1
        if self.learn:
            self.adaptive[dep_id].on_sent(self.clock())
        q = self._unsent.get(dep_id)
        if q:
            token = q.popleft()
            try:
                await self.windows.restamp(dep_id, token)
            except Exception:  # noqa: BLE001 - best effort: the slot was taken at admission
                pass

    def finished(self, dep_id: str) -> None:
        """A request `sent` earlier is off the wire (answered, failed or cancelled)."""
        st = self._state.get(dep_id)
        if st is not None:
            st.sending = max(0, st.sending - 1)
            self._wake()

    def blocked_ids(self) -> set[str]:
        now = self.clock()
        return {k for k, st in self._state.items() if st.blocked_until > now}

    def blocked(self, deployments: Sequence[Mapping[str, Any]]) -> bool:
        now = self.clock()
        return any(self._state[_dep_id(d)].blocked_until > now for d in deployments
                   if _dep_id(d) in self._state)

    def holding(self, dep_ids: Collection[str]) -> str | None:
        """Why a call queued for these deployments is still waiting, in words, or None when nothing
        here holds them (for a timeout that came before any request was sent)."""
        now = self.clock()
        reasons: list[str] = []
        for dep_id in dep_ids:
            st = self._state.get(dep_id)
            if st is not None and st.blocked_until > now:
                reasons.append(f"{dep_id} is held {st.blocked_until - now:.1f} s more after a 429")
            elif dep_id in self.limits:
                reasons.append(f"{dep_id} is at its rate limit")
            elif st is not None and not st.warm and st.in_flight:
                reasons.append(f"{dep_id}'s first request has not answered yet")
        return "; ".join(reasons) or None

    def _restamp(self, dep_id: str) -> None:
        """The warm-up request reached the provider at some unknown moment before now: count it
        again at now, so the next window is measured from a time it surely arrived by."""
        win = self.limits[dep_id].window(self._pad(dep_id)) if dep_id in self.limits else None
        st = self._state[dep_id]
        token, st.probe_token = st.probe_token, None
        if win is None:
            return
        if token is not None:  # counted in the shared windows when it was sent: move it to now
            self._background(self.windows.restamp(dep_id, token), counting=dep_id)
        else:
            self._background(self.windows.record(dep_id, win[1]), counting=dep_id)

    def _background(self, update: Awaitable[None], counting: str | None = None) -> None:
        """A store update the caller need not wait for (a failure shows at the next admission); one
        `counting` a request at a deployment is awaited by that deployment's next admission."""
        try:
            task = asyncio.get_running_loop().create_task(update)  # type: ignore[arg-type]
        except RuntimeError:
            update.close()  # type: ignore[attr-defined]
            return
        if counting is not None:
            self._counting[counting].add(task)
            task.add_done_callback(self._counting[counting].discard)
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
                      est_tokens: "float | TokenEstimate" = 0.0, ticket: int | None = None) -> tuple[Mapping[str, Any], float, bool]:
        """Wait (FIFO per group, by `ticket`: the order the calls were made) until a deployment has
        room; take a slot; return it, the wait, and whether a slot was taken (to `release`). Without
        a ticket, arrival order."""
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
                ready, soonest, slot = None, float("inf"), False
                changed = self._event()  # a release while we ask the windows must still wake us
                order = list(deployments)
                self.rng.shuffle(order)
                self._busy.add(group)
                try:
                    for dep in order:
                        wait, slot = await self._try(_dep_id(dep), est_tokens, group)
                        if wait == 0.0:
                            ready = dep
                            break
                        soonest = min(soonest, wait)
                finally:
                    self._busy.discard(group)
                    if min(queue) != ticket:  # an earlier call came meanwhile: it is the head now
                        self._wake()
                if ready is not None:
                    self._leave(group)  # queued at the others for nothing now: the next head queues anew
                    self._served.add(ticket)
                    waited = self.clock() - t0
                    if waited > 0.001:
                        self.waits += 1
                        self.wait_s += waited
                    return ready, waited, slot
                await self._sleep(None if soonest == float("inf") else soonest, changed)
        finally:
            queue.discard(ticket)
            if not queue:
                self._leave(group)
            self._wake()

    def _leave(self, group: str) -> None:
        """This group's waiter no longer waits at the deployments of a shared store it queued at."""
        for dep_id in self._queued_at.pop(group, set()):
            self._background(self.windows.leave(dep_id, f"{self._id}:{group}"))

    def _not_arrived(self, ticket: int) -> set[int]:
        """Earlier calls under way that are neither queued, served nor given up on."""
        if self.outstanding is None:
            return set()
        open_now = set(self.outstanding())
        self._served &= open_now
        self._skipped &= open_now
        queued = set().union(*self._waiting.values()) | self._probing
        return {t for t in open_now if t < ticket} - queued - self._served - self._skipped


_NO_LIMITS = Limits()
def _forget(task: "asyncio.Task[None]") -> None:
    """A background window update failed (Redis went away): the next admission reports it."""
    if not task.cancelled():
        task.exception()
