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
import threading
from types import TracebackType
from typing import Any, Iterator

from ..core.errors import ProviderError
from ..core.redact import LITELLM_LOGGERS, install_engine_log_filters, redact

__all__ = ["import_litellm", "map_litellm_errors", "to_provider_error", "exception_text", "close_loop_clients",
           "complexity_router", "LITELLM_LOGGERS"]

log = logging.getLogger("hermes_delegate.litellm")
_NOISE = re.compile(r"^(?:litellm\.)?\w+(?:Error|Exception)?:\s*(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?"
                    r"(?:\w+Exception\s*-\s*)?")


_configured = False
#: One import at a time: a host's background warm-up and its first call may both get here, and two
#: threads interleaving litellm's multi-second import (and swapping sys.stdout) must not happen.
_import_lock = threading.Lock()


def import_litellm() -> Any:
    """Import litellm with the local cost map, no stdout noise, and quiet, redacting loggers.
    The loggers are set up once even when the host (hermes, a test) imported litellm first."""
    mod = sys.modules.get("litellm")
    if _configured and mod is not None and getattr(mod, "Router", None) is not None:
        return mod
    with _import_lock:
        return _import_litellm()


def _import_litellm() -> Any:
    global _configured
    # Any: the module's settings are plain attributes set below, and Router may be a lazy attribute
    mod: Any = sys.modules.get("litellm")
    if mod is None or getattr(mod, "Router", None) is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        with contextlib.redirect_stdout(io.StringIO()):
            import litellm  # noqa: PLC0415 - deliberately lazy

            mod = litellm
            _router = mod.Router  # force the lazy attribute now, quietly
    if not _configured:
        mod.suppress_debug_info = True
        mod.set_verbose = False
        if not os.environ.get("HERMES_DELEGATE_LITELLM_LOGS"):
            for name in LITELLM_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        _logs_to_stderr()
        install_engine_log_filters()  # the same filters a Delegator installs (a host may import litellm first)
        _configured = True
    return mod


def complexity_router(config: dict[str, Any]) -> Any:
    """LiteLLM's own complexity router (`litellm.router_strategy.complexity_router`), built with `config`
    (its complexity_router_config) and no Router: only its local `classify(prompt)` is used, which scores
    the text by rules and calls nothing. Raises what LiteLLM's config model raises (ValueError)."""
    import_litellm()
    from litellm.router_strategy.complexity_router.complexity_router import ComplexityRouter  # noqa: PLC0415

    # the second argument is its Router (litellm 1.106: `litellm_router_instance`; 1.110: `ctx`, a routing
    # context), positional so both take it; classify() never reads it
    return ComplexityRouter("hermes-delegate-auto", None,  # type: ignore[arg-type]  # classify() never reads it
                            complexity_router_config=config or None)


def _logs_to_stderr() -> None:
    """litellm's own log handler writes every record below WARNING to stdout, where a host's result
    (`run --json`) or protocol (MCP over stdio) goes, and does so even at interpreter exit. Drop it: its
    records reach the host's own handlers (stderr) by propagation; without any, a plain stderr handler
    takes its place."""
    for name in LITELLM_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h).__name__ != "LevelRoutingStreamHandler" and getattr(h, "stream", None) is not sys.stdout:
                continue
            lg.removeHandler(h)
            if not (lg.propagate and logging.getLogger().handlers):
                repl = logging.StreamHandler(sys.stderr)
                repl.setLevel(h.level)
                repl.setFormatter(h.formatter)
                for f in h.filters:
                    repl.addFilter(f)
                lg.addHandler(repl)


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
        except Exception:
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
    return redact(text)[:500] or "no message"


def exception_text(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` of a third-party exception, for an Attempt row. Exception text enters the engine
    here and in `_clean` (the one mapping of litellm's errors), where it is redacted before it is cut
    short: a secret cut in half could no longer be recognised where results leave the engine."""
    return f"{type(exc).__name__}: {redact(str(exc))[:limit]}"


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
                           # litellm >= 1.110: "LiteLLM: provider returned a response with no 'choices'.
                           # Raw keys: [...]"
                           r"|provider returned a response with no 'choices'"
                           r"|Invalid response object|Expecting value")

# litellm 1.110's Router re-raises a *copy* of the attempt's error with the cause chain dropped (its
# __context__ is an unrelated RuntimeError), so for the error a call finally raises only the wrapper's
# own message is left. These match litellm's exact wording, on the wrapper's cleaned first line, and only
# when the wrapper carries no provider response (see `_has_provider_response`): a real HTTP 500 always does.
#: (pattern, kind, name, guarded): `guarded` patterns are skipped when the provider's headers came with the error.
_MESSAGE_KINDS: list[tuple[re.Pattern[str], str, str, bool]] = [
    # openai's APIConnectionError default text; litellm 1.110 wraps it as InternalServerError (500).
    (re.compile(r"^Connection error\.$"), "connection", "APIConnectionError", True),
    # json.JSONDecodeError's own str(); litellm 1.110 makes it the InternalServerError's whole message.
    (re.compile(r"^(?:Expecting [^:]+|Unterminated string starting at|Invalid control character at|Extra data"
                r"|Invalid \\escape|Invalid \\uXXXX escape): line \d+ column \d+ \(char \d+\)$"),
     "bad_response", "JSONDecodeError", True),
    # litellm's Anthropic transformation on an unparseable 2xx body (1.106 and 1.110, as APIConnectionError;
    # the AnthropicError it wraps has status 200). It carries the 200's headers, so it is not guarded.
    (re.compile(r"^Unable to get json response - "), "bad_response", "JSONDecodeError", False),
]
#: litellm 1.110 (Anthropic format): a body of the wrong shape is `APIConnectionError: 'content'` followed by
#: the traceback of the KeyError it caught; both the repr and the traceback's last line must be there.
_KEYERROR_TEXT = re.compile(r"^'[^'\n]{1,100}'$")


def _has_provider_response(exc: BaseException) -> bool:
    """True when the wrapper carries the provider's own HTTP response (its headers): the status is real.
    litellm's invented status 500 (no response, or a 200 it could not use) comes with no headers."""
    if getattr(exc, "litellm_response_headers", None):
        return True
    headers: Any = getattr(getattr(exc, "response", None), "headers", None)
    try:
        return bool(headers) and len(headers) > 0
    except TypeError:
        return False


def _message_kind(exc: BaseException) -> tuple[str, str] | None:
    """(kind, name) from litellm's exact wording when no cause chain is left; None otherwise."""
    if any(_real_status(c) for c in _causes(exc)):
        return None
    answered = _has_provider_response(exc)
    raw = str(exc).strip()
    first = _NOISE.sub("", raw.splitlines()[0] if raw else "", count=1).strip()
    for pattern, kind, name, guarded in _MESSAGE_KINDS:
        if pattern.search(first) and not (guarded and answered):
            return kind, name
    if not answered and _KEYERROR_TEXT.match(first) and f"\nKeyError: {first}" in raw:
        return "bad_response", "KeyError"
    return None


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
    if kind in ("server", "unknown", "connection") and hidden is None and name == type(exc).__name__:
        by_text = _message_kind(exc)  # the chain is gone (litellm 1.110's re-raised copy): litellm's words
        if by_text is not None:
            kind, name = by_text
    code = status if isinstance(status, int) and kind not in _NO_STATUS else None
    msg = _clean(raw)
    return ProviderError(kind, f"{name}: {msg}", status_code=code)


class _MapErrors(contextlib.AbstractContextManager[None]):
    """map_litellm_errors' context manager: stateless (one instance serves every `with`), and a plain
    class, not a generator: it wraps every completion, and a generator per call cost its frames."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, ProviderError):
            raise to_provider_error(exc) from exc  # the boundary: nothing of litellm's leaks past here


_MAP_ERRORS = _MapErrors()


def map_litellm_errors() -> contextlib.AbstractContextManager[None]:
    """Re-raise any provider-side exception as a ProviderError (cancellation passes through)."""
    return _MAP_ERRORS
