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
alone (first_request.py), its response's rate-limit headers become its limits, and a deployment that
sends none is paced at a rate adapted on its 429s. Configured limits win over learned ones, field by
field.

No call waits in the queue longer than `max_wait_s` in all (delegation.max_queue_wait_s, over all of
its attempts): it then fails typed (`queue_timeout`), saying which limit held it and where that
limit came from; a head whose computed wait is already longer fails at once.

This module holds the gate and its FIFO queue (fair across calls by their tickets); its mixins hold
the rest, over the per-deployment state in state.py: first_request.py (the first request, shared
learning), learning.py (what came back: `observe`, learned limits merged with configured ones,
`describe`) and tokens.py (tpm: token windows, the learned tpm's bucket, token estimates).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import defaultdict, deque
from typing import Any, Awaitable, Callable, Collection, Coroutine, Mapping, Sequence

from ..core.errors import ProviderError
from .first_request import ARRIVAL_GRACE_S, FirstRequests, dep_id_of as _dep_id
from .learned import Adaptive
from .learning import DEFAULT_429_BLOCK_S, LearnedLimits
from .sanity import MAX_HOLD_S, refusal
from .state import NO_LIMITS, DeploymentState
from .tokens import TokenBudget
from .windows import JITTER_PAD_S, Ask, Limits, LocalWindows, TokenEstimate, WindowStore

__all__ = ["Limits", "TokenEstimate", "CapacityGate", "JITTER_PAD_S", "DEFAULT_429_BLOCK_S", "queue_timeout"]


def queue_timeout(waited_s: float, max_wait_s: float, group: str, held: str | None) -> ProviderError:
    """The typed error of a call that waited in the queue as long as it may (nothing was sent)."""
    return ProviderError(
        "queue_timeout",
        f"Nothing was sent: the request waited {waited_s:.1f} s in the queue for {group!r}, and may wait "
        f"{max_wait_s:g} s at most (delegation.max_queue_wait_s). Held by: {held or 'earlier calls'}. "
        "Configure the deployment's real rpm/tpm (configured limits win over learned ones), raise "
        "delegation.max_queue_wait_s, or send fewer tasks at once.", num_retries=0)


class CapacityGate(FirstRequests, LearnedLimits, TokenBudget):
    """Per-deployment capacity, shared by every task of one RouterHandle (one event loop)."""

    def __init__(self, limits: Mapping[str, Limits], *, windows: WindowStore | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 learn: bool = False, labels: Mapping[str, Mapping[str, Any]] | None = None,
                 max_wait_s: float | None = None):
        self.configured = dict(limits)
        #: the longest a call may wait in the queue, over all its attempts (None: no bound)
        self.max_wait_s = max_wait_s
        self._spent: dict[int, float] = {}  # ticket -> seconds that call has queued so far
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
        self.rng = rng or random.Random()  # noqa: S311 - shuffles the deployments tried, no secret
        self._state: dict[str, DeploymentState] = defaultdict(DeploymentState)
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
        #: call id -> (deployment, its rpm token): sent, not yet on the wire
        self._unwired: dict[str, tuple[str, str]] = {}
        self.waits = 0
        self.wait_s = 0.0

    def limited(self, deployments: Sequence[Mapping[str, Any]]) -> bool:
        return any(self.paced(_dep_id(d)) for d in deployments)

    def free(self, deployments: Sequence[Mapping[str, Any]]) -> bool:
        """Whether none of these needs the gate now: not `paced` (no limits, no 429 pace pending, no slow
        start), not `unknown` (no first request to send alone) and not `blocked` (no Retry-After hold).
        The hooks then hand the Router its own choice untouched, after one pass over the deployments."""
        now = self.clock()
        for d in deployments:
            dep_id = _dep_id(d)
            if self.paced(dep_id) or self._unknown(dep_id):
                return False
            st = self._state.get(dep_id)
            if st is not None and st.blocked_until > now:
                return False
        return True

    def tracked(self, dep_id: str) -> bool:
        """Whether the gate keeps per-request state for this deployment: it has limits, or it may learn
        some (learn_limits). One with neither is only ever held by a 429's Retry-After."""
        return self.learn or dep_id in self.limits

    def paced(self, dep_id: str) -> bool:
        """Whether requests to this deployment queue here: it has limits, or a 429's pace is pending."""
        if dep_id in self.limits:
            return True
        ad = self.adaptive.get(dep_id)
        return self.learn and ad is not None and (ad.settle_at is not None or ad.slow_starting())

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
            st.held_by = "a 429's Retry-After"
            return st.blocked_until - now
        if lim.max_parallel is not None and st.in_flight >= lim.max_parallel:
            st.held_by = f"max_parallel {lim.max_parallel}, {self.limit_source(dep_id, 'max_parallel')}"
            return float("inf")  # until a release
        if not st.warm and st.in_flight >= 1 and (lim.rpm is not None or lim.tpm is not None):
            # cold: until the first request returns (LiteLLM's client set-up delays it by a variable
            # amount, which would bunch the next ones into one provider window). A slot count alone
            # (max_parallel) has no window to bunch into: its first wave goes at once.
            st.held_by = "its first request, not answered yet"
            return float("inf")
        ad = self.adaptive.get(dep_id)
        if self.learn and ad is not None and ad.slow_starting() and max(st.in_flight, st.sending) >= ad.window:
            st.held_by = (f"slow start, {ad.window} requests at once and one more per success: it states no "
                          "limits and has not answered 429 yet")
            return float("inf")  # until a release
        wait = self._tpm_wait(dep_id, st, lim, est_tokens, now)
        if wait > 0:
            st.held_by = f"tpm {lim.tpm:g}, {self.limit_source(dep_id, 'tpm')}"
        return wait

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
        if lim is not None and lim.tpm is not None and lim.token_bucket and ad is not None and ad.tpm is not None:
            why = refusal("tpm", lim.tpm, self._charge(self._state[dep_id], est_tokens))
            if why is not None and ad.refuse("tpm", why):  # it could never admit this request: not believed
                self._apply_learned(dep_id, ad)
                lim = self.limits.get(dep_id)
        if lim is None:
            if not self.paced(dep_id):
                return 0.0, False
            lim = NO_LIMITS
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
                st.held_by = (f"rpm {lim.rpm:g}, {self.limit_source(dep_id, 'rpm')}"
                              if ask.rpm and not self.windows.shared
                              else "its limits, shared with other processes through Redis")
                if ask.waiter:
                    self._queued_at[group].add(dep_id)
                return wait, False
            self._queued_at[group].discard(dep_id)
            if ask.rpm:
                self._unsent[dep_id].append(ask.token)
            if ask.parallel:
                st.leases.append(ask.token)
        st.in_flight += 1
        st.held_by = ""
        self._take_tokens(dep_id, st, lim, est_tokens, now)
        return 0.0, True

    def _ask(self, dep_id: str, lim: Limits, st: DeploymentState, est: "float | TokenEstimate", now: float,
             group: str) -> Ask:
        """What the store is asked for: the rpm window; in a shared store, everyone's slots and tokens too
        (this process's own the gate has just checked)."""
        win = lim.window(self._pad(dep_id))
        if not self.windows.shared:
            return Ask(uuid.uuid4().hex, rpm=win)
        amount, window, bucket = self._tpm_ask(dep_id, st, lim, est, now)
        return Ask(uuid.uuid4().hex, rpm=win, parallel=lim.max_parallel, tokens=amount,
                   tpm_window=window, tpm_bucket=bucket, waiter=f"{self._id}:{group}")

    def _pad(self, dep_id: str) -> float:
        ad = self.adaptive.get(dep_id)
        return JITTER_PAD_S if ad is None else ad.pad_s(JITTER_PAD_S)

    # -- slots given back, requests on the wire (what came back: learning.py) -------------------
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

    def sent(self, dep_id: str, call_id: str | None = None) -> Awaitable[None] | None:
        """A request to this deployment is leaving now. Its window slot was taken at admission, a
        variable while earlier (the Router still had work to do): move the slot to now, so the
        provider's window and ours line up even on a loaded machine; `on_wire` moves it again when
        the request is handed to the HTTP client. Returns the store's update to await, if any (most
        requests have none: nothing is awaited for them)."""
        if not self.tracked(dep_id):  # nothing to count: no limits, none to learn
            return None
        st = self._state[dep_id]
        st.sending += 1
        if self.learn:
            self.adaptive[dep_id].on_sent(self.clock())
        q = self._unsent.get(dep_id)
        if not q:
            return None
        token = q.popleft()
        if call_id is not None:
            self._unwired[call_id] = (dep_id, token)
        return self._restamp_sent(dep_id, token)

    async def _restamp_sent(self, dep_id: str, token: str) -> None:
        try:
            await self.windows.restamp(dep_id, token)
        except Exception:  # noqa: BLE001, S110 - best effort: the slot was taken at admission
            pass

    def on_wire(self, call_id: str | None) -> None:
        """The call's request is being handed to the HTTP client now (litellm's pre-API-call log
        point, synchronous, after its own request building). From the deployment hook to here
        litellm spends a few ms, tens when a batch starts and every task is being routed at once;
        a window stamped at the hook then opened that much early, and the provider saw L+1 requests
        in one window. Counted again from here (after this loop turn: later, never earlier, than
        the wire), and the deployment's next admission waits for the count."""
        sent = self._unwired.pop(call_id, None) if call_id is not None else None
        if sent is not None:
            self._background(self.windows.restamp(*sent), counting=sent[0])

    def awaits_wire(self) -> bool:
        """Whether any request sent to a limited deployment waits for `on_wire` (none: nothing to do)."""
        return bool(self._unwired)

    def forget_call(self, call_id: str | None) -> None:
        """The call is over: a request that never reached the wire has nothing left to restamp."""
        if call_id is not None:
            self._unwired.pop(call_id, None)

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
        """Why a call queued for these deployments is still waiting, in words (which limit, and where
        it came from), or None when nothing here holds them (for a timeout that came before any
        request was sent)."""
        now = self.clock()
        reasons: list[str] = []
        for dep_id in dep_ids:
            st = self._state.get(dep_id)
            if st is not None and st.blocked_until > now:
                reasons.append(f"{dep_id} is held {st.blocked_until - now:.1f} s more after a 429")
            elif st is not None and st.held_by and self.paced(dep_id):
                reasons.append(f"{dep_id} waits for {st.held_by}")
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

    def _background(self, update: Coroutine[Any, Any, None], counting: str | None = None) -> None:
        """A store update the caller need not wait for (a failure shows at the next admission); one
        `counting` a request at a deployment is awaited by that deployment's next admission."""
        try:
            task = asyncio.get_running_loop().create_task(update)
        except RuntimeError:
            update.close()
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
        st.blocked_until = max(st.blocked_until, self.clock() + min(MAX_HOLD_S, max(0.0, seconds)))

    def in_flight(self, dep_id: str) -> int:
        return self._state[dep_id].in_flight if dep_id in self._state else 0

    # -- the queue --------------------------------------------------------------------------
    async def acquire(self, group: str, deployments: Sequence[Mapping[str, Any]],
                      est_tokens: "float | TokenEstimate" = 0.0,
                      ticket: int | None = None) -> tuple[Mapping[str, Any], float, bool]:
        """Wait (FIFO per group, by `ticket`: the order the calls were made) until a deployment has
        room; take a slot; return it, the wait, and whether a slot was taken (to `release`). Without
        a ticket, arrival order."""
        t0 = self.clock()
        if ticket is None:
            ticket = next(self._auto)
        deadline = self._deadline(ticket, t0)
        queue = self._waiting[group]
        queue.add(ticket)
        self._wake()
        grace_end: float | None = None
        try:
            while True:
                if group in self._busy or ticket != min(queue):
                    self._check_deadline(deadline, group, deployments)
                    await self._sleep(self._left(deadline))
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
                # a head that would wait past its bound fails now, not when the bound is reached
                self._check_deadline(deadline, group, deployments, soonest)
                await self._sleep(self._bounded(soonest, deadline), changed)
        finally:
            self._spend(ticket, t0)
            queue.discard(ticket)
            if not queue:
                self._leave(group)
            self._wake()

    # -- the queue-wait bound (delegation.max_queue_wait_s) -------------------------------------
    def _deadline(self, ticket: int, now: float) -> float:
        """When this call's queue time runs out (inf: no bound), counting what it has queued already."""
        if self.max_wait_s is None:
            return float("inf")
        if self.outstanding is not None and len(self._spent) > 64:  # calls that are over
            open_now = set(self.outstanding())
            self._spent = {t: v for t, v in self._spent.items() if t in open_now}
        return now + max(0.0, self.max_wait_s - self._spent.get(ticket, 0.0))

    def _left(self, deadline: float) -> float | None:
        """Seconds to the deadline, for a sleep (None: no bound)."""
        return None if deadline == float("inf") else max(0.001, deadline - self.clock())

    def _bounded(self, wait: float, deadline: float) -> float | None:
        """A sleep of `wait` seconds (inf: until something changes), cut short at the deadline."""
        left = self._left(deadline)
        if wait == float("inf"):
            return left
        return wait if left is None else min(wait, left)

    def _spend(self, ticket: int, t0: float) -> None:
        if self.max_wait_s is not None:
            self._spent[ticket] = self._spent.get(ticket, 0.0) + max(0.0, self.clock() - t0)

    def _check_deadline(self, deadline: float, group: str, deployments: Sequence[Mapping[str, Any]],
                        soonest: float = 0.0) -> None:
        """Raise queue_timeout when the call's bound is reached, or (a head) its wait would pass it."""
        now = self.clock()
        if self.max_wait_s is None or deadline == float("inf") \
                or (now < deadline and (soonest == float("inf") or now + soonest <= deadline)):
            return  # no bound (max_wait_s None gives an infinite deadline), or not reached
        held = self.holding([_dep_id(d) for d in deployments])
        if now < deadline:  # a head whose turn is known to come too late
            held = f"{held or 'its limits'}; its turn would come in {soonest:.1f} s"
        raise queue_timeout(self.max_wait_s - max(0.0, deadline - now), self.max_wait_s, group, held)

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


def _forget(task: "asyncio.Task[None]") -> None:
    """A background window update failed (Redis went away): the next admission reports it."""
    if not task.cancelled():
        task.exception()
