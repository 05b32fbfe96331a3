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

import json
import time
from typing import Any

from . import responses as R
from ._http import Connection, Request
from .records import SECRET_HEADERS, RequestRecord

__all__ = ["AnthropicMixin", "MESSAGES_PATHS"]

MESSAGES_PATHS = frozenset({"/v1/messages"})
_TYPES = {429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 400: "invalid_request_error"}


def _error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _TYPES.get(status, "api_error"), "message": message}}


class AnthropicMixin:
    name: str
    latency_s: float
    slow_s: float
    retry_after: float | str | None
    _lock: Any
    _records: list[RequestRecord]
    _in_flight: int
    _ids: Any

    async def _messages(self, conn: Connection, req: Request) -> bool:
        keep = req.keep_alive
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            body = None
        headers = {k: v for k, v in req.headers.items() if k not in SECRET_HEADERS}
        has_auth = any(req.headers.get(h) for h in ("authorization", "x-api-key"))
        if not isinstance(body, dict) or body.get("stream"):
            rec = RequestRecord(time.monotonic(), None, False, 400, [], has_auth, req.path, headers,
                                body if isinstance(body, dict) else {})
            with self._lock:
                self._records.append(rec)
            why = "streaming is not served by the loopback" if isinstance(body, dict) else "body must be JSON"
            await conn.send_json(400, _error(400, why), keep_alive=keep)
            return keep
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        model = body.get("model")
        rec = RequestRecord(time.monotonic(), model, False, "pending", messages, has_auth, req.path, headers, body)
        fault, admitted, rl_headers = self._arrive(rec, self._token_cost(rec, anthropic=True))  # type: ignore[attr-defined]
        if not admitted:  # rl_headers carry the Retry-After (server._refusal)
            rec.status = fault or 429
            await conn.send_json(429, _error(429, f"rate limited (loopback {self.name})"), rl_headers, keep_alive=keep)
            return keep
        try:
            return await self._anthropic_answer(conn, rec, fault, keep, list(rl_headers))
        finally:
            self._depart(rec)  # type: ignore[attr-defined]

    async def _anthropic_answer(self, conn: Connection, rec: RequestRecord, fault: str | None, keep: bool,
                                extra: list) -> bool:
        delay = self.latency_s + (self.slow_s if fault == "slow" else 0.0)
        if delay > 0 and not await conn.sleep(delay):
            rec.status = fault or 499
            return False
        mid = f"msg_{self.name}_{next(self._ids)}"
        extra = extra + [("request-id", mid)]
        rec.status = fault or 200
        if fault in ("500", "503"):
            await conn.send_json(int(fault), _error(int(fault), f"Injected {fault} (loopback {self.name})"),
                                 extra, keep_alive=keep)
            return keep
        if fault == "malformed":
            await conn.send(200, [("Content-Type", "application/json")] + extra, b'{"id": "msg_x", "content": [{"ty',
                            keep_alive=keep)
            return keep
        if fault in R.BAD_200_BODIES:
            ctype, raw = R.BAD_200_BODIES[fault]
            await conn.send(200, [("Content-Type", ctype)] + extra, raw, keep_alive=keep)
            return keep
        model = rec.model if isinstance(rec.model, str) else ""
        text = R.default_content(self.name, model, rec.messages)
        usage = R.usage_for(rec.messages, {"content": text})
        content = [] if fault == "empty_choices" else [{"type": "text", "text": text}]
        out = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]}}
        await conn.send_json(200, out, extra, keep_alive=keep)
        return keep
