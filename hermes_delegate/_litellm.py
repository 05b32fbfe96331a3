"""The one door to litellm: a quiet, lazy import and the mapping of its errors to ours.

Nothing else in the package imports litellm at module level. `import_litellm()` costs 2–3 s and
~200 MB the first time, so only the router and workers call it, on first use.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from typing import Any, Iterator

from .errors import ProviderError
from .redact import install_log_filter, redact

__all__ = ["import_litellm", "map_litellm_errors", "to_provider_error", "LITELLM_LOGGERS"]

LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")
_NOISE = re.compile(r"^(?:litellm\.)?\w+(?:Error|Exception)?:\s*(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?"
                    r"(?:\w+Exception\s*-\s*)?")


def import_litellm() -> Any:
    """Import litellm with the local cost map, no stdout noise, and quiet loggers."""
    if "litellm" in sys.modules and getattr(sys.modules["litellm"], "Router", None) is not None:
        return sys.modules["litellm"]
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with contextlib.redirect_stdout(io.StringIO()):
        import litellm  # noqa: PLC0415 - deliberately lazy
        from litellm import Router  # noqa: F401, PLC0415 - force the lazy attribute now, quietly
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    if not os.environ.get("HERMES_DELEGATE_LITELLM_LOGS"):
        for name in LITELLM_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    install_log_filter(LITELLM_LOGGERS)
    return litellm


# Class name (anywhere in the MRO) → our kind. Order matters: most specific first.
_KINDS: list[tuple[str, str]] = [
    ("ContextWindowExceededError", "context_window"),
    ("ContentPolicyViolationError", "content_policy"),
    ("RateLimitError", "rate_limit"),
    ("RouterRateLimitError", "rate_limit"),  # every deployment of the group is cooling down
    ("Timeout", "timeout"),
    ("TimeoutError", "timeout"),
    ("AuthenticationError", "auth"),
    ("PermissionDeniedError", "auth"),
    ("NotFoundError", "not_found"),
    ("BadRequestError", "bad_request"),
    ("UnprocessableEntityError", "bad_request"),
    ("ServiceUnavailableError", "server"),
    ("InternalServerError", "server"),
    ("BadGatewayError", "server"),
    ("APIConnectionError", "connection"),
    ("ClientConnectionError", "connection"),
    ("ConnectionError", "connection"),
    ("JSONDecodeError", "bad_response"),
    ("APIResponseValidationError", "bad_response"),
]


def _clean(message: str) -> str:
    text = message.strip().splitlines()[0] if message.strip() else ""
    text = _NOISE.sub("", text, count=1).strip()
    text = re.sub(r"\s*Received Model Group=.*$", "", text)
    return redact(text[:500]) or "no message"


def to_provider_error(exc: BaseException) -> ProviderError:
    """The most specific ProviderError for a litellm/openai/httpx exception."""
    if isinstance(exc, ProviderError):
        return exc
    names = [c.__name__ for c in type(exc).__mro__]
    status = getattr(exc, "status_code", None)
    kind = next((k for cls, k in _KINDS if cls in names), None)
    raw = str(exc)
    if kind is None:
        if isinstance(status, int) and status >= 500:
            kind = "server"
        elif status == 429:
            kind = "rate_limit"
        elif "JSONDecodeError" in raw or "Expecting value" in raw or "Invalid JSON" in raw:
            kind = "bad_response"
        elif isinstance(exc, (ConnectionError, OSError)):
            kind = "connection"
        else:
            kind = "unknown"
    if kind == "server" and status == 500 and ("Expecting value" in raw or "JSONDecodeError" in raw):
        kind = "bad_response"
    code = status if isinstance(status, int) else None
    msg = _clean(raw)
    return ProviderError(kind, f"{type(exc).__name__}: {msg}", status_code=code)


@contextlib.contextmanager
def map_litellm_errors() -> Iterator[None]:
    """Re-raise any provider-side exception as a ProviderError (cancellation passes through)."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:  # the boundary: nothing of litellm's leaks past here
        raise to_provider_error(exc) from exc
