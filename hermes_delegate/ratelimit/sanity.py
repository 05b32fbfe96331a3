"""Bounds on what a provider may teach us: a learned limit that cannot admit one request is refused.

A provider's rate-limit headers (or a value another process published through Redis) are believed
only within bounds. An rpm under MIN_LEARNED_RPM, or a tpm under MIN_LEARNED_TPM or under what one
request needs, would hold every later task in the queue for minutes or centuries; such a value is
refused (the deployment is then paced as one that states nothing: by its 429s), and `describe`
says so. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["MIN_LEARNED_RPM", "MIN_LEARNED_TPM", "MAX_HOLD_S", "refusal", "checked_published"]

#: The slowest request limit believed: one request a minute.
MIN_LEARNED_RPM = 1.0
#: The smallest token limit believed at all (a chat request with a system prompt is tens of tokens);
#: a larger one is still refused when one request needs more than it (`refusal(need=...)`).
MIN_LEARNED_TPM = 100.0
#: The longest a Retry-After (or an exhausted limit's reset) holds a deployment.
MAX_HOLD_S = 60.0

_WHAT = {"rpm": "requests", "tpm": "tokens"}


def refusal(key: str, value: float | None, need: float | None = None) -> str | None:
    """Why a learned `rpm`/`tpm` of `value` cannot be believed (None: it can). `need`: the tokens
    one request of the batch needs (tpm only)."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "not a finite number"
    if key == "rpm" and value < MIN_LEARNED_RPM:
        return f"under {MIN_LEARNED_RPM:g} request a minute: it would hold every task for minutes or more"
    if key == "tpm" and value < MIN_LEARNED_TPM:
        return f"under {MIN_LEARNED_TPM:g} tokens a minute: too few for any request"
    if key == "tpm" and need is not None and value < need:
        return f"fewer tokens a minute than one request needs (~{need:.0f})"
    return None


def checked_published(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A learned-limits entry read from a shared store, its unbelievable values moved to `refused`
    ({key: {"value", "reason"}}), so `models`/`doctor` show them as refused, never as limits."""
    out = dict(entry)
    refused = dict(out.get("refused") or {}) if isinstance(out.get("refused"), Mapping) else {}
    for key in _WHAT:
        value = out.get(key)
        if value is None:
            continue
        why = refusal(key, value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else "not a number"
        if why is not None:
            refused[key] = {"value": value, "reason": why}
            del out[key]
    if refused:
        out["refused"] = refused
    return out
