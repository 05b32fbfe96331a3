"""The `llm_execution` middleware: every LLM call of a routed child goes through LiteLLM's Router.

hermes calls it around each provider call of every agent (agent/conversation_loop.py l.1442-1472,
hermes_cli/middleware.py `_run_execution_chain`). Calls from sessions we did not register pass
through untouched. For a routed child we never call `next_call`: the Router's ModelResponse *is*
the result (api_mode chat_completions). A middleware that raises is skipped and hermes calls its
own provider, so nothing here may raise for a routed child: a failed call is recorded (the worker
turns it into a failed task) and the child gets a final assistant message that ends its loop.

Stdlib only at import: this module is loaded at plugin registration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from . import waiting

log = logging.getLogger("hermes_delegate.hermes")

#: Request keys forwarded to the Router; hermes/OpenAI-client-only keys (timeout, extra_body,
#: extra_headers, …) are dropped.
PASS_KEYS = ("tools", "tool_choice", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
             "parallel_tool_calls", "response_format", "seed", "presence_penalty", "frequency_penalty")
_POLL_S = 0.05


@dataclass
class RoutedSession:
    """One routed child: where its calls go, and what they cost."""

    child: Any
    resolution: Any  # hermes_delegate.Resolution
    delegator: Any  # the plugin's base hermes_delegate.Delegator (its Router)
    loop: asyncio.AbstractEventLoop
    completions: list[Any] = field(default_factory=list)  # what Delegator.complete returned
    failure: BaseException | None = None
    interrupted: bool = False

    def serve(self, request: dict[str, Any]) -> Any:
        messages = request.get("messages") or []
        kwargs = {k: request[k] for k in PASS_KEYS if request.get(k) not in (None, [], {})}
        if "tools" in kwargs:
            # litellm 1.106 (main.py l.5295-5297) imports its MCP gateway for any call with tools,
            # which needs the optional `mcp` package; plain function tools never need it.
            kwargs["_skip_mcp_handler"] = True
        fut = asyncio.run_coroutine_threadsafe(
            self.delegator.complete(self.resolution, messages, **kwargs), self.loop)

        def between() -> None:
            if getattr(self.child, "_interrupt_requested", False):
                fut.cancel()  # the next poll raises CancelledError; a call already done keeps its result

        try:
            done = waiting.wait(fut, _POLL_S, between)
        except concurrent.futures.CancelledError:
            self.interrupted = True
            return stop_response("Interrupted.", self.resolution.model)
        except Exception as exc:  # noqa: BLE001 - ProviderError (with .attempts), its own timeout, or anything else
            return self.fail(exc)
        self.completions.append(done)
        return done.response

    def fail(self, exc: BaseException) -> Any:
        self.failure = exc
        text = getattr(exc, "message", None) or f"{type(exc).__name__}"
        return stop_response(f"[hermes-delegate] the model call failed: {text}", self.resolution.model)


_lock = threading.Lock()
_sessions: dict[str, RoutedSession] = {}


def register(session_id: str, session: RoutedSession) -> None:
    with _lock:
        _sessions[session_id] = session


def unregister(session_id: str) -> None:
    with _lock:
        _sessions.pop(session_id, None)


def routed(session_id: str) -> RoutedSession | None:
    with _lock:
        return _sessions.get(session_id)


def stop_response(text: str, model: str) -> Any:
    """A ChatCompletion-shaped final answer (what hermes's chat_completions transport reads)."""
    message = SimpleNamespace(role="assistant", content=text, tool_calls=None, refusal=None, reasoning=None,
                              reasoning_content=None, reasoning_details=None)
    usage = SimpleNamespace(prompt_tokens=0, completion_tokens=0, total_tokens=0, prompt_tokens_details=None,
                            completion_tokens_details=None)
    return SimpleNamespace(id="hermes-delegate-stop", object="chat.completion", model=model, usage=usage,
                           choices=[SimpleNamespace(index=0, message=message, finish_reason="stop")])


def llm_execution(request: Any = None, next_call: Any = None, session_id: str = "", api_mode: str = "",
                  **_: Any) -> Any:
    session = routed(session_id) if session_id else None
    if session is None:
        return next_call()
    try:
        if api_mode and api_mode != "chat_completions":
            raise RuntimeError(f"routed child has api_mode {api_mode!r}, expected chat_completions")
        return session.serve(request if isinstance(request, dict) else {})
    except Exception as exc:  # noqa: BLE001 - raising here would fall through to hermes's provider
        log.warning("hermes-delegate: routed call failed: %s", type(exc).__name__)
        return session.fail(exc)
