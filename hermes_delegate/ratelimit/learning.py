"""What came back from a deployment: limits learned from its responses, applied to the gate.

Mixed into CapacityGate (gate.py), whose state (state.py) it shares. A response's rate-limit
headers (headers.py) become the deployment's limits; a 429 holds the deployment for what it asks
and, where no rpm is configured, adapts the pace (learned.py). Configured limits win over learned
ones, field by field; `describe` says which are which.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from .headers import parse_rate_headers
from .learned import Adaptive
from .sanity import MAX_HOLD_S
from .state import NO_LIMITS, GateState
from .windows import Limits

__all__ = ["LearnedLimits", "DEFAULT_429_BLOCK_S"]

#: How long a 429 without Retry-After (or an exhausted limit's reset) holds a deployment.
DEFAULT_429_BLOCK_S = 1.0


class LearnedLimits(GateState):
    """The learned-limits half of CapacityGate (see gate.py for the state)."""

    def observe(self, dep_id: str, headers: Mapping[str, Any] | None, *, status: int | None,
                latency_s: float | None = None) -> None:
        """A response (status 200, or an error's status) came back from this deployment: learn its
        limits from the headers, adapt on a 429, and hold the deployment for what the 429 asks."""
        if status != 429 and not self.tracked(dep_id):  # no limits, none to learn: only a 429 holds it
            self._wake()
            return
        rate = parse_rate_headers(headers, time.time())
        ad = self.adaptive[dep_id]
        changed = self.learn and ad.learn(rate)
        ad.answered = True
        if dep_id in self._state:
            self._state[dep_id].probe_by = None
        now = self.clock()
        if status == 429:
            hold = min(MAX_HOLD_S, rate.retry_after_s if rate.retry_after_s is not None else DEFAULT_429_BLOCK_S)
            conf = self.configured.get(dep_id)
            if self.learn and (conf is None or conf.rpm is None):  # no configured rpm: adapt the pace
                ad.on_429(now, hold, latency_s)
            else:
                ad.rate_limited += 1
            self.block(dep_id, max(hold, rate.wait_s()))
        elif status is None or status < 400:
            changed = ad.on_success(now, latency_s) or changed
            if self.learn and dep_id not in self.limits and not ad.sends_headers and not ad.adapted:
                ad.grow_window()  # slow start (learned.py): unknown limits, no headers, no 429 yet
        if changed:
            self._apply_learned(dep_id, ad)
        elif self.learn and ad.sends_headers and not ad.adapted and rate.has_limits:
            self._publish(dep_id, ad, confirmed=True)  # the same limits stated again: still true
        self._wake()

    def _apply_learned(self, dep_id: str, ad: Adaptive, *, publish: bool = True) -> None:
        if publish:
            self._publish(dep_id, ad)
        conf = self.configured.get(dep_id) or NO_LIMITS
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

    def describe(self, dep_id: str) -> dict[str, Any]:
        """The limits in force for a deployment, which of them were learned, and its 429 count."""
        conf = self.configured.get(dep_id) or NO_LIMITS
        ad = self.adaptive.get(dep_id)
        out: dict[str, Any] = {}
        learned: list[str] = []
        found = ad.describe() if ad is not None else {}  # once per call (this runs for every answer)
        for key in ("rpm", "tpm", "max_parallel"):
            value = getattr(conf, key)
            if value is None:
                value = found.get(key)
                if value is not None:
                    learned.append(key)
            if value is not None:
                out[key] = value
        if learned:
            out["learned"] = learned
            out["learned_from"] = "429s" if ad is not None and ad.adapted else "headers"
        if ad is not None and ad.rate_limited:
            out["rate_limited"] = ad.rate_limited
        if ad is not None and (ad.refused or ad.corrected):
            out.update(limit_notes(ad, conf))
        return out

    def limit_source(self, dep_id: str, key: str) -> str:
        """Where the `rpm`/`tpm`/`max_parallel` in force came from, in words."""
        conf = self.configured.get(dep_id) or NO_LIMITS
        if getattr(conf, key, None) is not None:
            return "configured"
        ad = self.adaptive.get(dep_id)
        if ad is not None and ad.adapted and key == "rpm":
            return "adapted on the provider's 429s"
        if ad is not None and key in ad.corrected:
            return "learned from the provider's headers, raised to what succeeded"
        return "learned from the provider's rate-limit headers, here or by another process through Redis"


def limit_notes(ad: Adaptive, conf: Limits) -> dict[str, Any]:
    """`refused` / `corrected` learned values and one warning sentence each (for list_models, results)."""
    out: dict[str, Any] = {}
    warnings: list[str] = []
    refused = {k: v for k, v in ad.refused.items() if getattr(conf, k) is None}
    if refused:
        out["refused"] = {k: v["value"] for k, v in refused.items()}
        warnings += [f"{k} {v['value']:g} stated by the provider ({v['from']}) was refused: {v['reason']}"
                     for k, v in refused.items()]
    corrected = {k: v for k, v in ad.corrected.items() if getattr(conf, k) is None}
    if corrected:
        out["corrected"] = {k: {"stated": v["stated"], "now": v["now"]} for k, v in corrected.items()}
        warnings += [f"{k} {v['stated']:g} stated by the provider was raised to {v['now']:g}: {v['reason']}"
                     for k, v in corrected.items()]
    if warnings:
        out["warnings"] = warnings
    return out
