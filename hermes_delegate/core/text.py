"""Text and JSON that can always leave the process: valid UTF-8, strict JSON.

A lone surrogate (half of a UTF-16 pair, from a broken JSON escape an LLM or a provider sent) cannot be
encoded as UTF-8, and NaN/Infinity are not JSON. Everything a tool returns or the CLI prints goes through
these, so an answer already paid for is never lost to a UnicodeEncodeError or a non-JSON number.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["utf8", "utf8_deep", "finite"]


def utf8(text: str) -> str:
    """Text that always encodes as UTF-8: each lone surrogate becomes U+FFFD, a split pair is joined
    (text that encodes already is returned as is)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a high+low pair (two code points here) becomes the one character it encodes; a lone half U+FFFD
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def utf8_deep(obj: Any) -> Any:
    """The same data with every string (keys included) passed through `utf8`."""
    if isinstance(obj, str):
        return utf8(obj)
    if isinstance(obj, dict):
        return {utf8_deep(k): utf8_deep(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [utf8_deep(v) for v in obj]
    return obj


def finite(obj: Any) -> Any:
    """The same data with NaN/Infinity floats as None (null), so it dumps as strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
