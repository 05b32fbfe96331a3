"""Limits nobody wrote down: learned from a provider's rate-limit headers, or adapted on its 429s.

For a deployment with no configured `rpm`/`tpm`, its first response tells us what the provider allows
(see headers.py); those limits then pace it exactly as configured ones would, and every later response
updates them (a limit that changes mid-run is followed).

A provider that sends no limit headers is sent to freely until its first 429. Providers limit a rate,
not a concurrency, so the answer is a rate, adapted as TCP CUBIC adapts to a path whose capacity it
cannot see. The 429 holds the deployment for its Retry-After; when the hold ends, and before anything
more is sent, the provider's rate is measured (requests sent since the pace was last set, over at
most RATE_SPAN_S, less those refused) and the pace cut to BETA × that. The 429s of one burst are one
signal: one cut per hold. Each success then raises the pace: quickly (GROWTH_FAR) back towards the
measured rate, slowly (GROWTH_NEAR) over the last 3 % below it, where the last 429 came, and faster again
(GROWTH_BEYOND, rising to 5× as the 429-free run lasts) past it, in case the provider's limit went
up or the measure was low. So the pace stays within a few percent
of the provider's rate, meeting a 429 about once every 60 requests, where a cut to 0.5 (TCP Reno's)
would average 75 % of it.

Before its first 429, such a provider is not sent to all at once either: after its first answer, a
small in-flight window (SLOW_START_WINDOW) grows by one request per success (it doubles every round
trip, TCP's slow start) until the first 429 hands over to the pace above, or until it reaches
SLOW_START_END with no 429 (the provider's limit is then out of reach: nothing more is held).

What a provider states is believed within bounds (sanity.py): a limit that cannot admit one request
is refused (`refused`), and one that later successes contradict (more accepted in a minute than it
allows) is raised to what was accepted (`corrected`).

Pure bookkeeping: the gate calls in with what happened, on the gate's clock.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .headers import RateHeaders
from .sanity import refusal

__all__ = ["Adaptive", "BETA", "MIN_PAD_S", "MAX_PAD_S", "jitter_pad", "SLOW_START_WINDOW", "SLOW_START_END"]

BETA = 0.9
GROWTH_FAR, GROWTH_NEAR, GROWTH_BEYOND = 0.02, 0.0005, 0.01
#: The accepted rate is measured over the requests sent (less those refused) in at most this many
#: seconds before a 429.
RATE_SPAN_S = 2.0
#: A rate is never measured over less than this (a burst's few seconds would overstate it).
MIN_SPAN_S = 1.0
#: The slowest pace adaptation sets: one request per 10 s.
MIN_RPM = 6.0
#: The jitter margin added to a rate window is the spread of measured round trips, within these bounds.
MIN_PAD_S = 0.005
MAX_PAD_S = 0.1
_SAMPLES = 32
#: Slow start: requests in flight at once after a header-less deployment's first answer; one more per
#: success; over (nothing held) once it reaches SLOW_START_END without a 429.
SLOW_START_WINDOW = 2
SLOW_START_END = 32
#: A stated limit is contradicted when, within a minute, more than max(CONTRADICTED × it, it + 2)
#: requests (or tokens) succeeded.
CONTRADICTED = 1.25


@dataclass
class Adaptive:
    """What one deployment's responses taught us."""

    answered: bool = False  # a response (any status) came back: we know whether it sends limit headers
    sends_headers: bool = False
    rpm: float | None = None  # learned from headers, or adapted on 429s (per minute)
    tpm: float | None = None
    adapted: bool = False  # rpm is our estimate from 429s, not the provider's word
    settle_at: float | None = None  # a 429 was sent at this time: set the pace when its hold ends
    paced_since: float = 0.0  # when the current pace was set (a rate is measured only since then)
    hold_from: float = 0.0  # when the 429 that is to be settled came back
    measured_rpm: float | None = None  # the rate the provider accepted, at the last cut
    beyond: int = 0  # successes since the pace passed measured_rpm
    hold_decrease_until: float = 0.0
    rate_limited: int = 0  # 429s this deployment answered
    #: the window the provider counts tokens over: the longest token reset it stated (a reset is when
    #: the tokens used so far are back, so one after a full window's use is the window), 1–60 s
    token_window_s: float = 1.0
    #: stated values not believed (sanity.refusal): {"rpm"/"tpm": {"value", "from", "reason"}}
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: stated values raised to what later successes showed: {"rpm"/"tpm": {"stated", "now", "reason"}}
    corrected: dict[str, dict[str, Any]] = field(default_factory=dict)
    floor_rpm: float = 0.0  # at least this many requests a minute were accepted
    floor_tpm: float = 0.0
    window: int = 0  # slow start's in-flight window (0: not begun)
    window_over: bool = False  # slow start ended (a 429, or SLOW_START_END reached)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    successes: deque[float] = field(default_factory=lambda: deque(maxlen=4096))  # when successes came back
    accepted_tokens: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=4096))
    sends: deque[float] = field(default_factory=lambda: deque(maxlen=1024))  # when requests were sent
    refusals: deque[float] = field(default_factory=lambda: deque(maxlen=1024))  # when the 429'd ones were

    def learn(self, rate: RateHeaders, source: str = "headers") -> bool:
        """Take the limits a response states, within bounds; True when they differ from what we had.
        A stated limit under the bounds is refused; one under what successes showed is raised."""
        self.answered = True
        if not rate.has_limits:
            return False
        stated = {"rpm": rate.requests_limit or None, "tpm": rate.tokens_limit or None}
        for key, value in stated.items():
            why = refusal(key, value)
            before = self.refused.get(key)
            if why is not None:
                self.refused[key] = {"value": value, "from": source, "reason": why}
                stated[key] = None
            elif value is not None and before is not None and value <= before["value"]:
                stated[key] = None  # refused before (too small for a request): still not believed
            elif value is not None:
                self.refused.pop(key, None)
        if stated["rpm"] is None and stated["tpm"] is None:
            return False  # nothing believable: as a provider that states nothing
        self.sends_headers = True
        self.adapted = False
        if rate.tokens_reset_s:
            self.token_window_s = min(60.0, max(self.token_window_s, rate.tokens_reset_s))
        rpm, tpm = stated["rpm"], stated["tpm"]
        if rpm is not None and rpm < self.floor_rpm:
            rpm = self.floor_rpm
        if tpm is not None and tpm < self.floor_tpm:
            tpm = self.floor_tpm
        changed = (rpm, tpm) != (self.rpm, self.tpm)
        self.rpm, self.tpm = rpm, tpm
        return changed

    def refuse(self, key: str, reason: str) -> bool:
        """A learned `rpm`/`tpm` turned out unbelievable (e.g. fewer tokens than one request needs):
        drop it; True when it was in force."""
        value = getattr(self, key)
        if value is None or self.adapted:
            return False
        self.refused[key] = {"value": value, "from": "shared store" if not self.sends_headers else "headers",
                             "reason": reason}
        setattr(self, key, None)
        if self.rpm is None and self.tpm is None:
            self.sends_headers = False
        return True

    def _contradicted(self, key: str, seen: float) -> bool:
        """`seen` requests (or tokens) succeeded within the last minute: more than the stated limit
        allows, it is raised to that (and stays at least that while it is stated again)."""
        value = getattr(self, key)
        if value is None or self.adapted or seen <= max(CONTRADICTED * value, value + 2):
            return False
        first = self.corrected.get(key, {}).get("stated", value)
        setattr(self, "floor_" + key, seen)
        setattr(self, key, seen)
        self.corrected[key] = {"stated": first, "now": seen,
                               "reason": f"{seen:g} {'requests' if key == 'rpm' else 'tokens'} succeeded "
                                         "within a minute"}
        return True

    def on_tokens(self, now: float, tokens: float) -> bool:
        """A success reported `tokens` used; True when they contradict the learned tpm (raised)."""
        if tokens <= 0:
            return False
        self.accepted_tokens.append((now, tokens))
        while self.accepted_tokens and self.accepted_tokens[0][0] <= now - 60.0:
            self.accepted_tokens.popleft()
        return self._contradicted("tpm", sum(t for _, t in self.accepted_tokens))

    # -- slow start: a header-less deployment's in-flight window before its first 429 --------------
    def slow_starting(self) -> bool:
        return self.window > 0 and not self.window_over and not self.sends_headers and not self.adapted \
            and self.rpm is None and self.tpm is None

    def grow_window(self) -> None:
        """A success from a deployment that states no limits: begin slow start, or widen its window."""
        if self.window_over or self.sends_headers or self.adapted or self.rpm is not None or self.tpm is not None:
            return
        self.window = SLOW_START_WINDOW if self.window == 0 else self.window + 1
        if self.window >= SLOW_START_END:
            self.window_over = True

    def on_sent(self, now: float) -> None:
        self.sends.append(now)

    def on_success(self, now: float, latency_s: float | None) -> bool:
        """A success; True when it changed the adapted pace."""
        if latency_s is not None and latency_s >= 0:
            self.latencies.append(latency_s)
        self.successes.append(now)
        while self.successes and self.successes[0] <= now - 60.0:
            self.successes.popleft()
        if self._contradicted("rpm", float(len(self.successes))):
            return True
        if self.adapted and self.rpm is not None:
            top = self.measured_rpm or self.rpm
            if self.rpm < 0.97 * top:
                growth = GROWTH_FAR
            elif self.rpm < top:
                growth = GROWTH_NEAR
            else:  # past the last 429's rate and no 429 yet: probe up, faster the longer it lasts
                self.beyond += 1
                growth = min(5 * GROWTH_BEYOND, GROWTH_BEYOND * (1 + self.beyond / 10))
            self.rpm *= 1.0 + growth
            return True
        return False

    def on_429(self, now: float, hold_s: float, latency_s: float | None = None) -> None:
        """A 429. From a deployment that states no limits: the pace is set when the hold ends (`settle`)."""
        self.rate_limited += 1
        if self.slow_starting():  # the pace set when the hold ends takes over; until then, half the window
            self.window = max(1, self.window // 2)
        sent_at = now - (latency_s or 0.0)
        self.refusals.append(sent_at)
        if self.sends_headers or now < self.hold_decrease_until or self.settle_at is not None:
            return
        self.settle_at, self.hold_from = sent_at, now
        rtt = statistics.median(self.latencies) if self.latencies else 0.0
        self.hold_decrease_until = now + max(hold_s, rtt)

    def settle(self, now: float) -> None:
        """The hold after a 429 is over: pace at BETA × the rate accepted before the refused request."""
        if self.settle_at is None:
            return
        refused, self.settle_at = self.settle_at, None
        # accepted = sent − refused, from when the pace was set (or RATE_SPAN_S before the refused
        # request) until the 429 came back; a 429 answers at once, so by the end of its hold the
        # refusals of that span are known, and what is still in flight was let in
        first = self.sends[0] if self.sends else refused
        # from the first send since the pace was set: the seeded window may hold the first ones back a
        # while, and that idle while is not the provider's rate (measured in, it cut a 9.6/s pace to 6.4)
        since = next((t for t in self.sends if t >= self.paced_since), refused)
        start = max(first, refused - RATE_SPAN_S, since)
        end = max(refused, self.hold_from)
        if end - start < MIN_SPAN_S:  # a 429 soon after the pace was set: the provider's window still
            start = max(first, end - MIN_SPAN_S)  # counts what was sent before; so does the measure
        accepted = sum(1 for t in self.sends if start <= t <= end) - \
            sum(1 for t in self.refusals if start <= t <= end)
        if accepted < 1:  # it accepted nothing: there is no rate to measure; the holds alone apply
            if self.adapted and self.rpm is not None:
                self.rpm, self.paced_since = max(MIN_RPM, self.rpm * BETA), now
            return
        rate = accepted / max(MIN_SPAN_S, end - start)
        if self.adapted and self.rpm is not None:
            rate = min(rate, self.rpm / 60.0 * (1.0 + GROWTH_BEYOND))
        self.measured_rpm, self.beyond = 60.0 * rate, 0
        self.rpm, self.adapted, self.paced_since = max(MIN_RPM, 60.0 * rate * BETA), True, now

    def pad_s(self, default: float) -> float:
        return jitter_pad(self.latencies, default)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.rpm is not None:
            out["rpm"] = self.rpm
        if self.tpm is not None:
            out["tpm"] = self.tpm
        return out


def jitter_pad(latencies: "deque[float] | list[float]", default: float) -> float:
    """The margin a rate window needs so back-to-back requests never land in one provider window: the
    spread (p90 − p10) of measured round trips, bounded; `default` until there are enough samples."""
    if len(latencies) < 8:
        return default
    ordered = sorted(latencies)
    n = len(ordered)
    spread = ordered[int(0.9 * (n - 1))] - ordered[int(0.1 * (n - 1))]
    return min(MAX_PAD_S, max(MIN_PAD_S, 2.0 * spread))
