"""The one door to litellm: a quiet, lazy import and the mapping of its errors to ours.

Nothing else in the package imports litellm at module level. `import_litellm()` costs 2–3 s and
~200 MB the first time, so only the router and workers call it, on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
import os
import re
import sys
from typing import Any, Iterator

from .errors import ProviderError
from .redact import install_log_filter, redact

__all__ = ["import_litellm", "map_litellm_errors", "to_provider_error", "close_loop_clients", "LITELLM_LOGGERS"]

log = logging.getLogger("hermes_delegate.litellm")
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")
_NOISE = re.compile(r"^(?:litellm\.)?\w+(?:Error|Exception)?:\s*(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?"
                    r"(?:\w+Exception\s*-\s*)?")


_configured = False


def import_litellm() -> Any:
    """Import litellm with the local cost map, no stdout noise, and quiet, redacting loggers.
    The loggers are set up once even when the host (hermes, a test) imported litellm first."""
    global _configured
    mod = sys.modules.get("litellm")
    if mod is None or getattr(mod, "Router", None) is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        with contextlib.redirect_stdout(io.StringIO()):
            import litellm  # noqa: PLC0415 - deliberately lazy
            from litellm import Router  # noqa: F401, PLC0415 - force the lazy attribute now, quietly
        mod = litellm
    if not _configured:
        mod.suppress_debug_info = True
        mod.set_verbose = False
        if not os.environ.get("HERMES_DELEGATE_LITELLM_LOGS"):
            for name in LITELLM_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        install_log_filter(LITELLM_LOGGERS)
        _configured = True
    return mod


async def close_loop_clients() -> int:
    """Close and forget the HTTP clients litellm cached for the running event loop; returns how many.

    litellm keys its client cache by event loop and never closes a client whose loop has ended, so
    every `asyncio.run()` batch would leave its keep-alive sockets open (until the cache's 10-minute
    TTL). Call this at the end of a loop that is about to close, never on a loop that lives on."""
    litellm = sys.modules.get("litellm")
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    entries = getattr(cache, "cache_dict", None)
    if not isinstance(entries, dict):
        return 0
    # The cache's own key scheme (litellm 1.106: `-{id(loop)}`; newer: a per-loop token).
    scoped = getattr(cache, "update_cache_key_with_event_loop", None)
    suffix = scoped("") if callable(scoped) else f"-{id(asyncio.get_running_loop())}"
    closed = 0
    for key in [k for k in list(entries) if isinstance(k, str) and k.endswith(suffix)]:
        client = entries.pop(key, None)
        getattr(cache, "ttl_dict", {}).pop(key, None)
        close = getattr(client, "close", None) or getattr(client, "aclose", None)
        if close is None:
            continue
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
            closed += 1
        except Exception:  # noqa: BLE001 - best effort: a client that cannot close is dropped anyway
            log.debug("closing a litellm client failed", exc_info=True)
    return closed


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


# litellm reports a refused or reset connection and an unparseable body as a generic
# InternalServerError (status 500), and a stream cut as a MidStreamFallbackError; the cause chain
# says what really happened. Checked in order, on the causes only (never on the wrapper itself).
_CAUSE_KINDS: list[tuple[str, str]] = [
    ("JSONDecodeError", "bad_response"),
    ("APITimeoutError", "timeout"),
    ("TimeoutException", "timeout"),  # httpx
    ("TimeoutError", "timeout"),
    ("APIConnectionError", "connection"),
    ("TransportError", "connection"),  # httpx: ConnectError, ReadError, RemoteProtocolError, ...
    ("ClientConnectionError", "connection"),  # aiohttp
    ("ClientPayloadError", "connection"),  # aiohttp: body cut short
    ("ConnectionError", "connection"),
]
#: Kinds whose status code, if any, is litellm's invention (no HTTP response, or a 200 we could not use).
_NO_STATUS = {"connection", "timeout", "bad_response"}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = [exc]
    orig = getattr(exc, "original_exception", None)
    cur = exc.__cause__ or exc.__context__ or (orig if isinstance(orig, BaseException) else None)
    while cur is not None and len(seen) < 16 and not any(cur is s for s in seen):
        yield cur
        seen.append(cur)
        orig = getattr(cur, "original_exception", None)
        cur = cur.__cause__ or cur.__context__ or (orig if isinstance(orig, BaseException) else None)


def _hidden_kind(exc: BaseException) -> tuple[str, BaseException] | None:
    """The real failure (kind, cause) behind a generic server error; None when a real HTTP status came."""
    for cause in _causes(exc):
        names = [c.__name__ for c in type(cause).__mro__]
        if "HTTPStatusError" in names or (type(cause).__module__.startswith("openai")
                                          and "APIStatusError" in names):
            return None  # the provider did answer with this status: a real server error
        kind = next((k for cls, k in _CAUSE_KINDS if cls in names), None)
        if kind is not None:
            return kind, cause
    return None


#: Causes that mean "the provider answered, but the body is not a usable completion": a parse error, or
#: litellm's transformation failing on a body of the wrong shape (Anthropic format: KeyError 'content').
_SHAPE_CAUSES = ("JSONDecodeError", "UnicodeDecodeError", "KeyError", "IndexError", "TypeError",
                 "ValidationError")
#: litellm's own words for a 200 it could not use (it then invents a status 500).
_BAD_200_TEXT = re.compile(r"Empty or invalid response from LLM endpoint|provider returned '\w+' that is not"
                           r"|Invalid response object|Expecting value")


def _real_status(cause: BaseException) -> bool:
    names = [c.__name__ for c in type(cause).__mro__]
    return "HTTPStatusError" in names or (type(cause).__module__.startswith("openai")
                                          and "APIStatusError" in names)


def _unusable_200(exc: BaseException) -> str | None:
    """The name of the failure when `exc` is litellm's wrapper around a body it could not use (HTML, binary,
    JSON of the wrong shape); None when the provider sent a real error status or the connection failed."""
    chain = [exc, *_causes(exc)]
    if any(_real_status(c) for c in chain[1:]):
        return None
    for cause in chain[1:]:
        names = [c.__name__ for c in type(cause).__mro__]
        if any(n in names for n in ("TransportError", "ClientConnectionError", "ClientPayloadError",
                                    "TimeoutException", "APITimeoutError")):
            return None
    for cause in chain[1:]:
        names = [c.__name__ for c in type(cause).__mro__]
        hit = next((n for n in _SHAPE_CAUSES if n in names), None)
        if hit is not None:
            return hit
    if any(_BAD_200_TEXT.search(str(c)) for c in chain):
        return "UnusableResponse"
    return None


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
    name = type(exc).__name__
    hidden = _hidden_kind(exc) if kind in ("server", "unknown") else None
    if hidden is not None:
        kind, name = hidden[0], type(hidden[1]).__name__  # name the real failure, not the wrapper
    if kind == "server" and status == 500 and ("Expecting value" in raw or "JSONDecodeError" in raw):
        kind = "bad_response"
    if kind in ("server", "unknown", "connection"):
        bad = _unusable_200(exc)
        if bad is not None:  # a 200 litellm could not use: no HTTP status of the provider's to report
            kind, name = "bad_response", bad
    code = status if isinstance(status, int) and kind not in _NO_STATUS else None
    msg = _clean(raw)
    return ProviderError(kind, f"{name}: {msg}", status_code=code)


@contextlib.contextmanager
def map_litellm_errors() -> Iterator[None]:
    """Re-raise any provider-side exception as a ProviderError (cancellation passes through)."""
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:  # the boundary: nothing of litellm's leaks past here
        raise to_provider_error(exc) from exc
