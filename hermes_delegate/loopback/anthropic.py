"""Anthropic Messages format for :class:`LoopbackProvider` (a mixin): ``POST /v1/messages``.

Same recording, rate limiter, latency and fault names as the OpenAI format (``chat.py``):
``429``/``429_no_retry_after``, ``500``/``503`` (Anthropic error bodies), ``malformed`` (truncated
JSON), the ``BAD_200_BODIES`` (``html``, ``binary``, ``wrong_shape``), ``empty_choices`` (a message
with ``content: []``). Streaming is not served (400): LiteLLM's non-streamed path is what tests use.
The record's ``body`` keeps the request as sent, so a test can read e.g. ``body["thinking"]``.
Token cost for ``tpm``: prompt tokens of ``messages`` plus ``max_tokens`` (else the reply's
``output_tokens``); the rate-limit headers follow the provider's ``ratelimit_headers`` dialect.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiohttp import web

from . import _web as wire
from . import responses as replies
from .limits import LimitsMixin
from .records import RequestRecord

__all__ = ["AnthropicMixin", "MESSAGES_PATHS"]

MESSAGES_PATHS = frozenset({"/v1/messages"})
_TYPES = {429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 400: "invalid_request_error"}


def _error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _TYPES.get(status, "api_error"), "message": message}}


class AnthropicMixin(LimitsMixin):
    """``POST /v1/messages``, mixed into :class:`~hermes_delegate.loopback.server.LoopbackProvider` (which
    provides the state) beside :class:`~hermes_delegate.loopback.chat.ChatMixin`."""

    _ids: itertools.count[int]

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, headers, has_auth = await wire.read_call(request, ("authorization", "x-api-key"))
        if not isinstance(body, dict) or body.get("stream"):
            rec = RequestRecord(time.monotonic(), None, False, 400, [], has_auth, request.path, headers,
                                body if isinstance(body, dict) else {})
            with self._lock:
                self._records.append(rec)
            why = "streaming is not served by the loopback" if isinstance(body, dict) else "body must be JSON"
            return wire.json_reply(400, _error(400, why))
        sent = body.get("messages")
        messages = sent if isinstance(sent, list) else []
        model = body.get("model")
        rec = RequestRecord(time.monotonic(), model, False, "pending", messages, has_auth, request.path, headers, body)
        fault, admitted, rl_headers = self._arrive(rec, self._token_cost(rec, anthropic=True))
        if not admitted:  # rl_headers carry the Retry-After (limits._refusal)
            rec.status = fault or 429
            return wire.json_reply(429, _error(429, f"rate limited (loopback {self.name})"), rl_headers)
        try:
            return await self._anthropic_answer(rec, fault, list(rl_headers))
        except asyncio.CancelledError:
            if rec.status == "pending":
                rec.status = fault or 499  # the client went away while we were "thinking"
            raise
        finally:
            self._depart(rec)

    async def _anthropic_answer(self, rec: RequestRecord, fault: str | None,
                                extra: list[tuple[str, str]]) -> web.Response:
        delay = self.latency_s + (self.slow_s if fault == "slow" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)  # cancelled by aiohttp when the client disconnects
        mid = f"msg_{self.name}_{next(self._ids)}"
        extra = extra + [("request-id", mid)]
        rec.status = fault or 200
        if fault in ("500", "503"):
            return wire.json_reply(int(fault), _error(int(fault), f"Injected {fault} (loopback {self.name})"), extra)
        if fault == "malformed":
            return wire.reply(200, b'{"id": "msg_x", "content": [{"ty', "application/json", extra)
        if fault in replies.BAD_200_BODIES:
            ctype, raw = replies.BAD_200_BODIES[fault]
            return wire.reply(200, raw, ctype, extra)
        model = rec.model if isinstance(rec.model, str) else ""
        text = replies.default_content(self.name, model, rec.messages)
        usage = replies.usage_for(rec.messages, {"content": text})
        content = [] if fault == "empty_choices" else [{"type": "text", "text": text}]
        out = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}}
        return wire.json_reply(200, out, extra)
