"""Chat-completions request handling for :class:`LoopbackProvider` (a mixin)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from aiohttp import web

from . import _web as wire
from . import responses as replies
from .limits import LimitsMixin
from .records import RequestRecord


class ChatMixin(LimitsMixin):
    """``POST /v1/chat/completions``: limiter, latency, faults, normal and streamed replies.

    Mixed into :class:`~hermes_delegate.loopback.server.LoopbackProvider`, which provides the state;
    :mod:`.limits` gives ``_token_cost`` / ``_arrive`` (recording + fault + rate limiters, returning the
    rate-limit headers and, on a refusal, the Retry-After), ``_settle_tokens`` and ``_depart``.
    """

    _ids: itertools.count[int]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, headers, has_auth = await wire.read_call(request, ("authorization", "api-key", "x-api-key"))
        if not isinstance(body, dict):
            rec = RequestRecord(time.monotonic(), None, False, 400, [], has_auth, request.path, headers, {})
            with self._lock:
                self._records.append(rec)
            return wire.json_reply(400, replies.error_body(400, "request body must be a JSON object"))
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        model = body.get("model")
        stream = bool(body.get("stream"))
        rec = RequestRecord(time.monotonic(), model, stream, "pending", messages, has_auth, request.path, headers, body)
        fault, admitted, rl_headers = self._arrive(rec, self._token_cost(rec))
        if not admitted:  # rl_headers carry the Retry-After (limits._refusal)
            rec.status = fault or 429
            return wire.json_reply(429, replies.rate_limit_body(self.name), rl_headers)
        try:
            return await self._answer(request, body, rec, fault, rl_headers)
        except asyncio.CancelledError:
            if rec.status == "pending":
                rec.status = fault or 499  # the client went away while we were "thinking"
            raise
        finally:
            self._depart(rec)

    async def _answer(self, request: web.Request, body: dict[str, Any], rec: RequestRecord, fault: str | None,
                      extra: list[tuple[str, str]]) -> web.StreamResponse:
        delay = self.latency_s + (self.slow_s if fault == "slow" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)  # cancelled by aiohttp when the client disconnects
        cid = f"chatcmpl-{self.name}-{next(self._ids)}"
        extra = extra + [("x-request-id", cid)]
        if fault in ("500", "503"):
            rec.status = fault
            injected = replies.error_body(int(fault), f"Injected {fault} (loopback {self.name})")
            return wire.json_reply(int(fault), injected, extra)
        if fault == "malformed":
            rec.status = fault
            return wire.reply(200, replies.MALFORMED_BODY, "application/json", extra)
        if fault in replies.BAD_200_BODIES:
            rec.status = fault
            ctype, raw = replies.BAD_200_BODIES[fault]
            return wire.reply(200, raw, ctype, extra)
        model = rec.model if isinstance(rec.model, str) else ""
        try:
            message = self._message(body, model, cid)
        except Exception as exc:  # noqa: BLE001 - responder failure becomes a 500
            rec.status = 500
            return wire.json_reply(500, replies.error_body(500, f"responder raised {type(exc).__name__}: {exc}"), extra)
        usage = replies.usage_for(rec.messages, message)
        self._settle_tokens(rec, usage)  # a responder's reply: charge what usage reports
        created = int(time.time())
        rec.status = fault or 200
        if fault == "reset" or (fault == "stream_cut" and not rec.stream):
            whole = replies.completion(cid, created, model, [replies.completion_choice(message)], usage)
            data = json.dumps(whole).encode()
            return await wire.cut_body(request, data, "application/json", extra)
        if rec.stream:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            if fault == "empty_choices":
                chunks = replies.empty_stream_chunks(cid, created, model)
            elif fault == "stream_cut":
                chunks = replies.cut_stream_chunks(cid, created, model, message)
            else:
                chunks = replies.stream_chunks(cid, created, model, message, usage if include_usage else None)
            events = (json.dumps(chunk).encode() for chunk in chunks)
            return await wire.stream_events(request, events, extra, cut=fault == "stream_cut")
        choices = [] if fault == "empty_choices" else [replies.completion_choice(message)]
        return wire.json_reply(200, replies.completion(cid, created, model, choices, usage), extra)

    def _message(self, body: dict[str, Any], model: str, cid: str) -> dict[str, Any]:
        result = self.responder(body, self) if self.responder is not None else None
        if result is None:
            return {"role": "assistant",
                    "content": replies.default_content(self.name, model, body.get("messages") or [])}
        return replies.normalize_message(result, cid.rsplit("-", 1)[-1])
