"""The loopback provider's rate limits: request and token windows, ``max_concurrent`` and the headers.

A mixin of :class:`~hermes_delegate.loopback.server.LoopbackProvider`; no I/O here. ``_arrive``
records a request, pops its fault and applies the limiters; ``_depart`` releases an admitted one.

Rate limits and their headers
-----------------------------

Two sliding-window limiters run on every chat (``/v1/chat/completions``) and
Anthropic (``/v1/messages``) request:

* ``rps``: at most ``floor(rps)`` requests per sliding 1 s window (``rps < 1``:
  one request per ``1/rps`` s window);
* ``tpm``: at most ``tpm * token_window_s / 60`` tokens per sliding
  ``token_window_s`` window (default 60 s; a short window lets benchmarks run in
  seconds while the headers still state the per-minute ``tpm``). A request's
  token cost is fixed at arrival: its prompt tokens (``usage_for``'s count, i.e.
  ``max(1, prompt chars // 4)``) plus ``max_completion_tokens`` / ``max_tokens``
  when the body gives one, else plus the completion tokens the loopback will
  report for it (exact for the default echo reply and for ``/v1/messages``; with
  a ``responder`` it is estimated from the echo at arrival and corrected to the
  reported ``usage.completion_tokens`` once the reply is built). A request whose
  cost does not fit what is left in the window gets a 429 (one whose cost
  exceeds the whole window capacity never fits). ``stats()["tokens"]`` sums the
  costs of admitted requests.

Both limits may be reassigned while serving (``provider.rps = 2``,
``provider.tpm = None``); the next request uses, and its headers report, the new
value. Admitted requests are counted in the 1 s request window even while ``rps``
is unset (so an ``rps`` switched on mid-run sees the last second's traffic); the
token window only keeps charges while ``tpm`` is set (bounded memory), so a
``tpm`` switched on mid-run starts from an empty window.

``ratelimit_headers`` picks the dialect sent on every chat / messages response
(200s and 429s alike) while the limit concerned is set. Limits are per minute,
like the real providers'; ``remaining`` is what is left of the current window
after counting this request (when admitted); ``reset`` for requests is the time
until the oldest request leaves the window (0 when empty), for tokens the time
until the newest charged request leaves it (the window is then empty, i.e. at
full capacity again):

* ``"openai"`` (default): ``x-ratelimit-{limit,remaining,reset}-requests`` and,
  with ``tpm``, ``x-ratelimit-{limit,remaining,reset}-tokens``; resets are Go
  durations rounded up to the millisecond (``"350ms"``, ``"1.2s"``, ``"6m0s"``);
* ``"anthropic"``: ``anthropic-ratelimit-requests-{limit,remaining,reset}`` and,
  with ``tpm``, ``anthropic-ratelimit-tokens-*`` and
  ``anthropic-ratelimit-input-tokens-*`` (the same tpm limit, counting prompt
  tokens only); resets are RFC 3339 UTC times (``2026-12-03T01:02:03.456Z``);
* ``"none"``: no rate-limit headers.

``extra_headers`` (a list of ``(name, value)`` pairs, default none) is sent as is on every chat /
messages response, 200s and 429s alike, after the headers above: a provider that states anything
(``x-ratelimit-limit-tokens: 1``, an HTTP-date ``Retry-After``) without enforcing it.

``retry_after`` sets a 429's ``Retry-After``: a number of seconds, ``None`` (no
header) or ``"auto"``: the time until the request would fit again (the later of
the refusing limits' waits; the whole-window reset for a request too large to
ever fit; the estimated end of the earliest in-flight request for
``max_concurrent``; 0 for a scripted ``"429"`` no limit refused), rounded up to the
millisecond, as ``Retry-After: 0.347`` plus ``retry-after-ms: 347``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from . import responses as replies
from .records import RequestRecord

__all__ = ["LimitsMixin", "decimal_seconds", "go_duration", "rfc3339_in"]


def _ms_up(seconds: float) -> int:
    """Whole milliseconds, rounded up (a client waiting that long is past the moment)."""
    return max(0, math.ceil(seconds * 1000.0 - 1e-6))


def go_duration(seconds: float) -> str:
    """Seconds as a Go ``time.Duration`` string, like OpenAI's resets: ``350ms``, ``1.2s``, ``6m0s``."""
    ms = _ms_up(seconds)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + str(whole) + (("." + f"{frac:03d}".rstrip("0")) if frac else "") + "s"


def decimal_seconds(seconds: float) -> str:
    """``0.347`` / ``1.5`` / ``2`` (rounded up to the millisecond), for ``Retry-After``."""
    return f"{_ms_up(seconds) / 1000:.3f}".rstrip("0").rstrip(".")


def rfc3339_in(seconds: float, wall: float) -> str:
    """The UTC wall time ``wall + seconds`` as ``2026-12-03T01:02:03.456Z``."""
    when = datetime.fromtimestamp(wall, timezone.utc) + timedelta(milliseconds=_ms_up(seconds))
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _check_limit(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be None or a finite number >= 0, not {value!r}")
    return value


def _check_retry_after(value: Any) -> float | str | None:
    if value is None:
        return None
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"retry_after must be None, 'auto' or a number of seconds >= 0, not {value!r}")
    return value


def _max_tokens(body: dict[str, Any], anthropic: bool) -> int | None:
    """The completion budget a request states (chat: max_completion_tokens, else max_tokens)."""
    for key in (("max_tokens",) if anthropic else ("max_completion_tokens", "max_tokens")):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


class _TokenCharge:
    """One admitted request in the token window."""

    __slots__ = ("time", "cost", "prompt", "live")

    def __init__(self, time_: float, cost: int, prompt: int):
        self.time, self.cost, self.prompt, self.live = time_, cost, prompt, True


class LimitsMixin:
    """Rate limiting and token accounting; the state lives on the provider (``__init__`` there)."""

    name: str
    latency_s: float
    slow_s: float
    max_concurrent: int | None
    retry_after: float | str | None
    responder: Any
    ratelimit_headers: str
    extra_headers: list[tuple[str, str]]
    token_window_s: float
    _lock: threading.Lock
    _rps: float | None
    _tpm: float | None
    _records: list[RequestRecord]
    _script: deque[str | None]
    _always: str | None
    _rl_times: deque[float]
    _win_times: deque[float]
    _tok: deque[_TokenCharge]
    _tok_used: int
    _tok_prompt_used: int
    _tokens_admitted: int
    _estimated: dict[int, _TokenCharge]  # id(record) ->
    _ends: dict[int, float]  # id(record) -> when it is expected to end
    _in_flight: int
    _max_in_flight: int
    _max_rps: int
    _seen_models: dict[str, None]  # an ordered set

    # -- token cost ------------------------------------------------------------------
    def _token_cost(self, rec: RequestRecord, *, anthropic: bool = False) -> tuple[int, int, bool]:
        """(prompt tokens, completion tokens charged, estimated?) for a request, as ``usage`` counts them."""
        body = rec.body if isinstance(rec.body, dict) else {}
        prompt = replies.usage_for(rec.messages, {})["prompt_tokens"]
        budget = _max_tokens(body, anthropic)
        if budget is not None:
            return prompt, budget, False
        model = rec.model if isinstance(rec.model, str) else ""
        echo = replies.usage_for(rec.messages, {"content": replies.default_content(self.name, model, rec.messages)})
        # chat with a responder: the reply is not known yet; settled from its usage in _settle_tokens
        return prompt, echo["completion_tokens"], not anthropic and self.responder is not None

    def _settle_tokens(self, rec: RequestRecord, usage: Mapping[str, Any]) -> None:
        """Correct an estimated charge to the completion tokens the reply reports."""
        with self._lock:
            charge = self._estimated.pop(id(rec), None)
            if charge is None:
                return
            delta = charge.prompt + int(usage["completion_tokens"]) - charge.cost
            charge.cost += delta
            self._tokens_admitted += delta
            if charge.live:
                self._tok_used += delta

    # -- rate limiting (called with self._lock held) --------------------------------
    def _rl_params(self) -> tuple[int, float]:
        if self._rps is None:
            return 0, 1.0
        rps = float(self._rps)
        if rps <= 0:
            return 0, 1.0
        return (int(math.floor(rps)), 1.0) if rps >= 1 else (1, 1.0 / rps)

    def _tok_capacity(self) -> float:
        if self._tpm is None:  # asked only of a provider with a token limit
            raise TypeError("no token limit: no token capacity")
        return float(self._tpm) * self.token_window_s / 60.0

    def _prune(self, now: float) -> None:
        _, window = self._rl_params()
        while self._rl_times and self._rl_times[0] <= now - window:
            self._rl_times.popleft()
        while self._tok and self._tok[0].time <= now - self.token_window_s:
            charge = self._tok.popleft()
            charge.live = False
            self._tok_used -= charge.cost
            self._tok_prompt_used -= charge.prompt

    def _request_wait(self, now: float) -> float | None:
        """Seconds until one more request fits the rps window (0: now; None: never, rps == 0)."""
        capacity, window = self._rl_params()
        if capacity <= 0:
            return None
        excess = len(self._rl_times) + 1 - capacity
        return 0.0 if excess <= 0 else max(0.0, self._rl_times[excess - 1] + window - now)

    def _token_wait(self, now: float, cost: int) -> float | None:
        """Seconds until ``cost`` more tokens fit the token window (0: now; None: never)."""
        capacity = self._tok_capacity()
        if cost > capacity:
            return None
        need = self._tok_used + cost - capacity
        if need <= 0:
            return 0.0
        freed = 0
        for charge in self._tok:
            freed += charge.cost
            if freed >= need:
                return max(0.0, charge.time + self.token_window_s - now)
        return max(0.0, self._tok[-1].time + self.token_window_s - now)  # unreachable in practice

    def _rl_headers(self, now: float) -> list[tuple[str, str]]:
        """Rate-limit headers in the configured dialect (after counting an admitted request), then
        ``extra_headers``."""
        return self._dialect_headers(now) + [(str(k), str(v)) for k, v in (self.extra_headers or [])]

    def _dialect_headers(self, now: float) -> list[tuple[str, str]]:
        dialect = self.ratelimit_headers
        if dialect == "none" or (self._rps is None and self._tpm is None):
            return []
        wall = time.time() - (time.monotonic() - now)
        fmt_reset = go_duration if dialect == "openai" else (lambda s: rfc3339_in(s, wall))
        triples: list[tuple[str, str, str, str]] = []  # (kind, limit, remaining, reset)
        if self._rps is not None:
            capacity, window = self._rl_params()
            reset = self._rl_times[0] + window - now if self._rl_times else 0.0
            triples.append(("requests", replies.fmt_number(round(float(self._rps) * 60.0, 6)),
                            str(max(0, capacity - len(self._rl_times))), fmt_reset(max(0.0, reset))))
        if self._tpm is not None:
            capacity_t = self._tok_capacity()
            reset = self._tok[-1].time + self.token_window_s - now if self._tok else 0.0
            limit = replies.fmt_number(round(float(self._tpm), 6))
            reset_text = fmt_reset(max(0.0, reset))
            triples.append(("tokens", limit, str(max(0, math.floor(capacity_t - self._tok_used))), reset_text))
            if dialect == "anthropic":
                prompt_left = str(max(0, math.floor(capacity_t - self._tok_prompt_used)))
                triples.append(("input-tokens", limit, prompt_left, reset_text))
        if dialect == "openai":
            return [(f"x-ratelimit-{part}-{kind}", value) for kind, *values in triples
                    for part, value in zip(("limit", "remaining", "reset"), values, strict=True)]
        return [(f"anthropic-ratelimit-{kind}-{part}", value) for kind, *values in triples
                for part, value in zip(("limit", "remaining", "reset"), values, strict=True)]

    def _refusal(self, now: float, fault: str | None, wait: float | None) -> list[tuple[str, str]]:
        """Headers of a 429: Retry-After (per ``retry_after``) then the rate-limit headers."""
        out: list[tuple[str, str]] = []
        retry_after = self.retry_after
        if fault != "429_no_retry_after" and retry_after is not None:
            if retry_after == "auto":
                wait = max(0.0, wait or 0.0)
                out += [("Retry-After", decimal_seconds(wait)), ("retry-after-ms", str(_ms_up(wait)))]
            else:
                out.append(("Retry-After", replies.fmt_number(float(retry_after))))  # seconds (checked)
        return out + self._rl_headers(now)

    def _arrive(self, rec: RequestRecord,
                cost: tuple[int, int, bool] = (0, 0, False)) -> tuple[str | None, bool, list[tuple[str, str]]]:
        """Record the request, pop its fault, apply the limiters. -> (fault, admitted, headers).

        ``cost`` is ``_token_cost``'s (prompt, completion, estimated). A refused request's headers
        include its Retry-After; an admitted one must be released with ``_depart(rec)``.
        """
        prompt, completion, estimated = cost
        tokens = prompt + completion
        with self._lock:
            self._records.append(rec)
            if rec.model:
                self._seen_models.setdefault(rec.model, None)
            fault = self._script.popleft() if self._script else self._always
            now = rec.time
            self._prune(now)
            if fault in replies.RATE_LIMIT_FAULTS:
                return fault, False, self._refusal(now, fault, 0.0)
            if fault is None:
                waits: list[float] = []
                if self._rps is not None:
                    wait = self._request_wait(now)
                    waits.append(self._rl_params()[1] if wait is None else wait)
                if self._tpm is not None:
                    wait = self._token_wait(now, tokens)
                    if wait is None:  # larger than the whole window: never fits; say when it is empty
                        wait = self._tok[-1].time + self.token_window_s - now if self._tok else self.token_window_s
                    waits.append(wait)
                if any(w > 0 for w in waits):
                    return None, False, self._refusal(now, None, max(waits))
                if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                    soonest = min(self._ends.values(), default=now)
                    return None, False, self._refusal(now, None, soonest - now)
            self._rl_times.append(now)
            charge = _TokenCharge(now, tokens, prompt)
            if self._tpm is not None:
                self._tok.append(charge)
                self._tok_used += tokens
                self._tok_prompt_used += prompt
            else:
                charge.live = False  # not in the window; settling only corrects stats()["tokens"]
            self._tokens_admitted += tokens
            if estimated:
                self._estimated[id(rec)] = charge
            self._ends[id(rec)] = now + self.latency_s + (self.slow_s if fault == "slow" else 0.0)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._win_times.append(now)
            while self._win_times and self._win_times[0] <= now - 1.0:
                self._win_times.popleft()
            self._max_rps = max(self._max_rps, len(self._win_times))
            return fault, True, self._rl_headers(now)

    def _depart(self, rec: RequestRecord) -> None:
        """An admitted request is finished (answered, failed or abandoned)."""
        with self._lock:
            self._in_flight -= 1
            self._ends.pop(id(rec), None)
            self._estimated.pop(id(rec), None)
