"""Chat-completions request handling for :class:`LoopbackProvider` (a mixin)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any

from aiohttp import web

from . import _web as W
from . import responses as R
from .records import RequestRecord


class ChatMixin:
    """``POST /v1/chat/completions``: limiter, latency, faults, normal and streamed replies.

    Mixed into :class:`~hermes_delegate.loopback.server.LoopbackProvider`, which
    provides these attributes plus (from :mod:`.limits`) ``_token_cost`` / ``_arrive`` (recording + fault + rate
    limiters, returning the rate-limit headers and, on a refusal, the Retry-After),
    ``_settle_tokens`` and ``_depart``.
    """

    name: str
    latency_s: float
    slow_s: float
    retry_after: float | str | None
    responder: Any
    _lock: threading.Lock
    _records: list[RequestRecord]
    _in_flight: int
    _ids: itertools.count

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, headers, has_auth = await W.read_call(request, ("authorization", "api-key", "x-api-key"))
        if not isinstance(body, dict):
            rec = RequestRecord(time.monotonic(), None, False, 400, [], has_auth, request.path, headers, {})
            with self._lock:
                self._records.append(rec)
            return W.json_reply(400, R.error_body(400, "request body must be a JSON object"))
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        model = body.get("model")
        stream = bool(body.get("stream"))
        rec = RequestRecord(time.monotonic(), model, stream, "pending", messages, has_auth, request.path, headers, body)
        fault, admitted, rl_headers = self._arrive(rec, self._token_cost(rec))
        if not admitted:  # rl_headers carry the Retry-After (limits._refusal)
            rec.status = fault or 429
            return W.json_reply(429, R.rate_limit_body(self.name), rl_headers)
        try:
            return await self._answer(request, body, rec, fault, rl_headers)
        except asyncio.CancelledError:
            if rec.status == "pending":
                rec.status = fault or 499  # the client went away while we were "thinking"
            raise
        finally:
            self._depart(rec)

    async def _answer(self, request: web.Request, body: dict, rec: RequestRecord, fault: str | None,
                      extra: list) -> web.StreamResponse:
        delay = self.latency_s + (self.slow_s if fault == "slow" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)  # cancelled by aiohttp when the client disconnects
        cid = f"chatcmpl-{self.name}-{next(self._ids)}"
        extra = extra + [("x-request-id", cid)]
        if fault in ("500", "503"):
            rec.status = fault
            return W.json_reply(int(fault), R.error_body(int(fault), f"Injected {fault} (loopback {self.name})"), extra)
        if fault == "malformed":
            rec.status = fault
            return W.reply(200, R.MALFORMED_BODY, "application/json", extra)
        if fault in R.BAD_200_BODIES:
            rec.status = fault
            ctype, raw = R.BAD_200_BODIES[fault]
            return W.reply(200, raw, ctype, extra)
        model = rec.model if isinstance(rec.model, str) else ""
        try:
            message = self._message(body, model, cid)
        except Exception as exc:  # noqa: BLE001 - responder failure becomes a 500
            rec.status = 500
            return W.json_reply(500, R.error_body(500, f"responder raised {type(exc).__name__}: {exc}"), extra)
        usage = R.usage_for(rec.messages, message)
        self._settle_tokens(rec, usage)  # a responder's reply: charge what usage reports
        created = int(time.time())
        rec.status = fault or 200
        if fault == "reset" or (fault == "stream_cut" and not rec.stream):
            data = json.dumps(R.completion(cid, created, model, [R.completion_choice(message)], usage)).encode()
            return await W.cut_body(request, data, "application/json", extra)
        if rec.stream:
            opts = body.get("stream_options")
            include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            if fault == "empty_choices":
                chunks = R.empty_stream_chunks(cid, created, model)
            elif fault == "stream_cut":
                chunks = R.cut_stream_chunks(cid, created, model, message)
            else:
                chunks = R.stream_chunks(cid, created, model, message, usage if include_usage else None)
            events = (json.dumps(chunk).encode() for chunk in chunks)
            return await W.stream_events(request, events, extra, cut=fault == "stream_cut")
        choices = [] if fault == "empty_choices" else [R.completion_choice(message)]
        return W.json_reply(200, R.completion(cid, created, model, choices, usage), extra)

    def _message(self, body: dict, model: str, cid: str) -> dict:
        result = self.responder(body, self) if self.responder is not None else None
        if result is None:
            return {"role": "assistant", "content": R.default_content(self.name, model, body.get("messages") or [])}
        return R.normalize_message(result, cid.rsplit("-", 1)[-1])
