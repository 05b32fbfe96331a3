"""What a provider's response headers say about its rate limits, in one shape for every dialect.

Providers tell every client their limits: OpenAI-style ``x-ratelimit-{limit,remaining,reset}-{requests,
tokens}`` (reset as a Go duration: ``1s``, ``250ms``, ``6m0s``), Anthropic's ``anthropic-ratelimit-
{requests,tokens,input-tokens}-{limit,remaining,reset}`` (reset as an RFC 3339 time), and ``Retry-After``
(seconds or an HTTP date) / ``retry-after-ms`` / ``x-ms-retry-after-ms`` on a 429. LiteLLM hands them
back on a response as ``_hidden_params["additional_headers"]``, each raw header prefixed ``llm_provider-``,
and on an error as ``litellm_response_headers``. Limits are per minute in both dialects. Pure: no I/O, no
clock (the caller passes the wall time to measure RFC 3339 resets against).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

__all__ = ["RateHeaders", "parse_rate_headers", "parse_duration_s", "headers_of"]

_PREFIX = "llm_provider-"
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class RateHeaders:
    """Limits are per minute; remaining counts are what is left now; resets are seconds from now."""

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset_s: float | None = None
    retry_after_s: float | None = None

    @property
    def has_limits(self) -> bool:
        """Whether the provider told us a limit (not only a Retry-After)."""
        return self.requests_limit is not None or self.tokens_limit is not None

    def wait_s(self) -> float:
        """How long nothing more should be sent: the Retry-After (the provider's own word, preferred:
        a reset is when a limit is whole again, usually later), else the reset of an exhausted limit."""
        if self.retry_after_s is not None:
            return self.retry_after_s
        waits = [0.0]
        if self.requests_remaining is not None and self.requests_remaining <= 0:
            waits.append(self.requests_reset_s or 0.0)
        if self.tokens_remaining is not None and self.tokens_remaining <= 0:
            waits.append(self.tokens_reset_s or 0.0)
        return max(waits)


def headers_of(obj: Any) -> Mapping[str, Any] | None:
    """The provider headers litellm attached to a response or an exception, if any."""
    if obj is None:
        return None
    hidden = getattr(obj, "_hidden_params", None)
    if isinstance(hidden, Mapping):
        found = hidden.get("additional_headers")
        if isinstance(found, Mapping) and found:
            return found
    found = getattr(obj, "litellm_response_headers", None)
    if found is None:
        found = getattr(getattr(obj, "response", None), "headers", None)
    try:
        return found if found is not None and len(found) > 0 else None
    except TypeError:
        return None


def _lower(headers: Mapping[str, Any]) -> dict[str, str]:
    """The rate-limit headers (every dialect's `…ratelimit…` and `retry-after…`), lower-cased names,
    the raw `llm_provider-` copy winning over litellm's own re-statement."""
    out: dict[str, str] = {}
    raw: dict[str, str] = {}
    for key, value in headers.items():
        if not isinstance(key, str) or value is None:
            continue
        name = key.lower()
        if "ratelimit" not in name and "retry-after" not in name:
            continue  # most of a response's headers: nothing to learn from
        if name.startswith(_PREFIX):
            raw[name[len(_PREFIX):]] = str(value)
        else:
            out[name] = str(value)
    out.update(raw)
    return out


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_duration_s(text: str | None) -> float | None:
    """Seconds in an OpenAI reset (`1s`, `6m0s`, `250ms`, `1h2m3.5s`) or a plain number of seconds."""
    if text is None:
        return None
    text = text.strip()
    plain = _number(text)
    if plain is not None:
        return plain
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _until(text: str | None, now_wall: float) -> float | None:
    """Seconds from `now_wall` to an RFC 3339 time (Anthropic's resets); a duration works too."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return parse_duration_s(text)
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


def _retry_after(h: Mapping[str, str], now_wall: float) -> float | None:
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):  # OpenAI's, Azure's
        ms = _number(h.get(name))
        if ms is not None:
            return ms / 1000.0
    text = h.get("retry-after")
    if text is None:
        return None
    seconds = _number(text)
    if seconds is not None:
        return seconds
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now_wall)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_rate_headers(headers: Mapping[str, Any] | None, now_wall: float) -> RateHeaders:
    """Every dialect's rate-limit headers as one RateHeaders (all None when there are none)."""
    if not headers:
        return RateHeaders()
    h = _lower(headers)
    if not h:  # a deployment that states no limits (most responses without configured ones)
        return RateHeaders()
    retry = _retry_after(h, now_wall)
    if any(k.startswith("anthropic-ratelimit-") for k in h):
        def triple(kind: str) -> tuple[float | None, float | None, float | None]:
            p = f"anthropic-ratelimit-{kind}-"
            return _number(h.get(p + "limit")), _number(h.get(p + "remaining")), _until(h.get(p + "reset"), now_wall)

        req = triple("requests")
        tok = triple("tokens")
        if tok[0] is None:  # only the input-token limit is stated: it is the one that binds
            tok = triple("input-tokens")
        return RateHeaders(*req, *tok, retry_after_s=retry)
    return RateHeaders(
        _number(h.get("x-ratelimit-limit-requests")), _number(h.get("x-ratelimit-remaining-requests")),
        parse_duration_s(h.get("x-ratelimit-reset-requests")),
        _number(h.get("x-ratelimit-limit-tokens")), _number(h.get("x-ratelimit-remaining-tokens")),
        parse_duration_s(h.get("x-ratelimit-reset-tokens")),
        retry_after_s=retry)
