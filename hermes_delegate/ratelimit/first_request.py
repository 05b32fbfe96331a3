"""A deployment's first request goes alone; what one process learned, the others start with.

Mixed into CapacityGate (gate.py), whose state it shares. Until a deployment with no configured limit
has answered, its limits are unknown: its first request (the earliest call's) goes alone, for at most
PROBE_WAIT_S, and its answer's headers (or a 429) teach the limits that pace the rest. With a shared
store (Redis), that first request is counted in the shared window while it is out, what it taught
is published, and a process that has not heard from the deployment yet starts from there.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping, Sequence

from .learned import Adaptive
from .sanity import checked_published
from .state import GateState

__all__ = ["FirstRequests", "ARRIVAL_GRACE_S", "PROBE_WAIT_S", "dep_id_of"]

#: How long the head of a queue waits for an earlier call (a lower ticket) that has started but not
#: reached the gate yet (LiteLLM's own routing work, e.g. Redis round trips, delays some calls more than
#: others): queue order follows the order calls were made, not the order they got here.
ARRIVAL_GRACE_S = 0.25
#: An adapted pace changes on every success: a shared store hears of it at most this often.
PUBLISH_EVERY_S = 1.0
#: Limits a deployment keeps stating are published again this often (a shared store keeps them for
#: redis_windows.LEARNED_TTL_S, a few times this).
CONFIRM_EVERY_S = 30.0
#: A first request is counted in a shared store's rpm window while it is out, for the processes
#: that learn the limits meanwhile; this long at most (its answer moves the entry to then).
PROBE_COUNTED_S = 60.0
#: How long a deployment's first request (whose answer states its limits) goes alone at most, from
#: when it is sent: a 429 comes back well within it, a completion often does not, and the batch
#: should not wait for that.
PROBE_WAIT_S = 0.5


class FirstRequests(GateState):
    """The first-request and shared-learning half of CapacityGate (see gate.py for the state)."""

    def unknown(self, deployments: Sequence[Mapping[str, Any]]) -> bool:
        """Whether any of these has not answered yet (its limits are still to learn)."""
        return self.learn and any(self._unknown(dep_id_of(d)) for d in deployments)

    def _unknown(self, dep_id: str) -> bool:
        ad = self.adaptive.get(dep_id)
        return self.learn and (ad is None or not ad.answered)

    # -- the first request to a deployment goes alone -------------------------------------------
    async def admit_unknown(self, call_id: str, deployments: Sequence[Mapping[str, Any]],
                            ticket: int | None = None) -> list[Mapping[str, Any]] | None:
        """The deployments this call may go to now, the Router choosing among them as it would: all but
        those held by a Retry-After and those whose first request (another call's) is still out, for
        at most PROBE_WAIT_S after it was sent. The unknown ones offered are reserved for this call
        until it is sent (`picked`), so two calls never both make a deployment's first request.
        None once the first answer taught limits: the call then queues for them (`acquire`).
        The first request is the earliest call's (by `ticket`): a later one waits for earlier ones
        still on their way here, for ARRIVAL_GRACE_S at most."""
        if ticket is not None:
            self._probing.add(ticket)
        grace_end: float | None = None
        t0 = self.clock()
        deadline = self._deadline(ticket, t0) if ticket is not None else float("inf")
        try:
            return await self._admit_unknown(call_id, deployments, ticket, grace_end, deadline)
        finally:
            if ticket is not None:
                self._spend(ticket, t0)
                self._probing.discard(ticket)
            self._wake()

    async def _admit_unknown(self, call_id: str, deployments: Sequence[Mapping[str, Any]], ticket: int | None,
                             grace_end: float | None, deadline: float) -> list[Mapping[str, Any]] | None:
        group = str(self.labels.get(dep_id_of(deployments[0]), {}).get("group") or "") if deployments else ""
        while True:
            if self.limited(deployments):
                return None
            now = self.clock()
            self._check_deadline(deadline, group or "its group", deployments)
            if ticket is not None and any(t < ticket for t in self._probing):
                await self._sleep(self._left(deadline))  # an earlier call is here: it goes first
                continue
            earlier = self._not_arrived(ticket) if ticket is not None else set()
            if earlier:
                grace_end = grace_end if grace_end is not None else now + ARRIVAL_GRACE_S
                if now < grace_end:
                    await self._sleep(grace_end - now)
                    continue
                self._skipped |= earlier
            ready, soonest = [], float("inf")
            for dep in deployments:
                dep_id = dep_id_of(dep)
                st = self._state[dep_id]
                if st.blocked_until > now:
                    soonest = min(soonest, st.blocked_until - now)
                    continue
                if self._unknown(dep_id) and st.probe_by not in (None, call_id):
                    left = st.first_sent + PROBE_WAIT_S - now
                    if left > 0:
                        soonest = min(soonest, left)
                        continue
                ready.append(dep)
            if ready:
                for dep in ready:
                    dep_id = dep_id_of(dep)
                    st = self._state[dep_id]
                    if self._unknown(dep_id) and st.probe_by is None:
                        st.probe_by, st.first_sent = call_id, float("inf")
                        self._reserved[call_id].add(dep_id)
                if ticket is not None:
                    self._served.add(ticket)  # later calls need not wait for it to arrive
                return ready
            await self._sleep(self._bounded(soonest, deadline))

    def picked(self, call_id: str, dep_id: str) -> None:
        """The Router sent this call to `dep_id`: its other reservations are free again."""
        if call_id not in self._reserved:  # it reserved nothing (every deployment had answered); the
            self._wake()  # queue still re-checks: a call picked or over is what a waiting call waits for
            return
        for other in self._reserved.pop(call_id, set()):
            st = self._state[other]
            if other == dep_id:
                self._reserved[call_id].add(other)
                if st.first_sent == float("inf"):
                    st.first_sent = self.clock()  # the probe's wait runs from when it is sent
                    if self.windows.shared:  # other processes count it from now (restamped when answered)
                        st.probe_token = uuid.uuid4().hex
                        self._background(self.windows.record(other, PROBE_COUNTED_S, st.probe_token))
            elif st.probe_by == call_id:
                st.probe_by = None
        self._wake()

    def unreserve(self, call_id: str) -> None:
        """The call is over (answered, failed or cancelled): nothing stays reserved for it."""
        if call_id not in self._reserved:
            self._wake()  # as in `picked`: nothing to free, but waiting calls re-check
            return
        for dep_id in self._reserved.pop(call_id, set()):
            st = self._state[dep_id]
            if st.probe_by == call_id:
                st.probe_by = None
        self._wake()

    # -- limits learned by one process, known to all (a shared store) -----------------------
    def _publish(self, dep_id: str, ad: Adaptive, *, confirmed: bool = False) -> None:
        """Put what this deployment taught us where the other processes look first: on a change of
        stated limits at once, an adapted pace at most once a second, the same limits stated again
        (`confirmed`) every CONFIRM_EVERY_S (the store forgets them soon after they stop being
        confirmed). Limits refused since they were published are published as gone."""
        st = self._state[dep_id]
        now = self.clock()
        if not self.windows.shared or (ad.rpm is None and ad.tpm is None and st.published_at == float("-inf")) \
                or (ad.adapted and now - st.published_at < PUBLISH_EVERY_S) \
                or (confirmed and now - st.published_at < CONFIRM_EVERY_S):
            return
        st.published_at = now
        learned = {**ad.describe(), "learned_from": "429s" if ad.adapted else "headers",
                   "measured_rpm": ad.measured_rpm, "at": time.time(), **self.labels.get(dep_id, {})}
        if ad.refused:
            learned["refused"] = {k: {"value": v["value"], "reason": v["reason"]} for k, v in ad.refused.items()}
        self._background(self.windows.publish(dep_id, learned))

    async def recall(self, deployments: Sequence[Mapping[str, Any]]) -> None:
        """Limits another process learned for these deployments (a shared store): taken as if this
        process had learned them, so their first request here need not go alone. Once per deployment."""
        if not (self.learn and self.windows.shared):
            return
        for dep in deployments:
            dep_id = dep_id_of(dep)
            if dep_id in self._recalled or not self._unknown(dep_id):
                continue
            self._recalled.add(dep_id)
            try:
                learned = await self.windows.recall(dep_id)
            except Exception:  # noqa: BLE001, S112 - best effort: without it the first request teaches them
                continue
            learned = checked_published(learned) if learned else None  # unbelievable values: refused
            if learned and (_pos(learned.get("rpm")) or _pos(learned.get("tpm"))) and self._unknown(dep_id):
                ad = self.adaptive[dep_id]
                ad.answered, ad.rpm, ad.tpm = True, _pos(learned.get("rpm")), _pos(learned.get("tpm"))
                ad.adapted = learned.get("learned_from") == "429s"
                ad.sends_headers = not ad.adapted
                ad.measured_rpm = _pos(learned.get("measured_rpm")) or ad.rpm
                ad.paced_since = self.clock()
                self._apply_learned(dep_id, ad, publish=False)


def _pos(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def dep_id_of(dep: Mapping[str, Any]) -> str:
    """The Router's id of a deployment (model_info.id)."""
    return str((dep.get("model_info") or {}).get("id"))
