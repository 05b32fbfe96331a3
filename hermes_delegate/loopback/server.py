"""Embedded loopback OpenAI-compatible provider: an ``aiohttp.web`` server in a daemon thread.

Typical use::

    with LoopbackProvider("p1", latency_s=0.05, rps=5).start() as p:
        litellm.completion(model="openai/x", api_base=p.base_url, api_key="sk-test", messages=[...])
        p.script(["429", "ok"])      # next chat request gets a 429, the one after is normal
        print(p.stats())

Chat request processing order: the request is recorded, the next scripted fault
is popped (or the ``set_fault`` fault), then

* ``"429"`` / ``"429_no_retry_after"`` answer immediately;
* with no fault the rate limiter runs (``rps`` sliding 1 s window, then
  ``max_concurrent``) and may answer 429; a request carrying any other fault
  bypasses the limiter check but still counts towards it;
* the admitted request sleeps ``latency_s`` (plus ``slow_s`` for ``"slow"``),
  aborting early when the client disconnects or the server stops, and is then
  answered (normally or per the fault).

``responder(body, provider)`` is a plain synchronous callable run on the server's
event loop thread (keep it quick; coroutine functions are not supported). It
returns ``None`` (default echo reply), a string (the content) or an assistant
message dict with ``content`` and/or OpenAI ``tool_calls``. If it raises, the
request gets a 500.

The rate limits, their headers and ``retry_after`` are described in
:mod:`hermes_delegate.loopback.limits`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import threading
from collections import deque
from typing import Any, Callable, Iterable

from aiohttp import web

from . import _web as wire
from . import responses as replies
from .anthropic import MESSAGES_PATHS, AnthropicMixin
from .chat import ChatMixin
from .limits import _check_limit, _check_retry_after, _TokenCharge
from .records import RequestRecord

Responder = Callable[[dict[str, Any], "LoopbackProvider"], Any]
_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})
RATELIMIT_DIALECTS = ("openai", "anthropic", "none")
_nofile_raised = False


def closed_port_url() -> str:
    """An ``http://127.0.0.1:PORT/v1`` URL on which nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _raise_nofile_limit(target: int = 65536) -> None:
    """Best effort: raise RLIMIT_NOFILE's soft limit so >1000 sockets fit."""
    global _nofile_raised
    if _nofile_raised:
        return
    _nofile_raised = True
    try:
        import resource  # noqa: PLC0415 - Unix only (the ImportError is caught)

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = target if hard == resource.RLIM_INFINITY else min(target, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


class LoopbackProvider(ChatMixin, AnthropicMixin):  # both are LimitsMixins
    def __init__(
        self,
        name: str = "loopback",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        rps: float | None = None,
        max_concurrent: int | None = None,
        retry_after: float | str | None = 1.0,
        models: list[str] | None = None,
        responder: Responder | None = None,
        slow_s: float = 30.0,
        backlog: int = 4096,
        tpm: float | None = None,
        token_window_s: float = 60.0,
        ratelimit_headers: str = "openai",
        extra_headers: Iterable[tuple[str, str]] = (),
    ):
        if ratelimit_headers not in RATELIMIT_DIALECTS:
            raise ValueError(f"ratelimit_headers must be one of {list(RATELIMIT_DIALECTS)}, not {ratelimit_headers!r}")
        token_window_s = float(token_window_s)
        if not (math.isfinite(token_window_s) and token_window_s > 0):
            raise ValueError(f"token_window_s must be a finite number > 0, not {token_window_s!r}")
        self._lock = threading.Lock()
        self._rps = _check_limit("rps", rps)
        self._tpm = _check_limit("tpm", tpm)
        self.token_window_s = token_window_s
        self.ratelimit_headers = ratelimit_headers
        self.extra_headers = list(extra_headers)
        self.name = name
        self.host = host
        self.latency_s = float(latency_s)
        self.max_concurrent = max_concurrent
        self.retry_after = _check_retry_after(retry_after)
        self.models = list(models or [])
        self.responder = responder
        self.slow_s = float(slow_s)
        self.backlog = backlog
        self._port = int(port)
        self._life = threading.Lock()
        self._records: list[RequestRecord] = []
        self._script: deque[str | None] = deque()
        self._always: str | None = None
        self._rl_times: deque[float] = deque()
        self._win_times: deque[float] = deque()
        self._tok: deque[_TokenCharge] = deque()  # token window, oldest first
        self._tok_used = 0  # sum of the live charges' cost / prompt
        self._tok_prompt_used = 0
        self._tokens_admitted = 0
        self._estimated: dict[int, _TokenCharge] = {}  # id(rec) -> charge to settle from the reply's usage
        self._ends: dict[int, float] = {}  # id(rec) -> expected end of an in-flight request
        self._in_flight = 0
        self._max_in_flight = 0
        self._max_rps = 0
        self._seen_models: dict[str, None] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- limits (assignable while serving) ----------------------------------------------
    @property
    def rps(self) -> float | None:
        """Requests per second (sliding 1 s window), or None; assigning takes effect for the next request."""
        return self._rps

    @rps.setter
    def rps(self, value: float | None) -> None:
        value = _check_limit("rps", value)
        with self._lock:
            self._rps = value

    @property
    def tpm(self) -> float | None:
        """Tokens per minute (enforced per ``token_window_s``), or None; assignable while serving."""
        return self._tpm

    @tpm.setter
    def tpm(self, value: float | None) -> None:
        value = _check_limit("tpm", value)
        with self._lock:
            self._tpm = value

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "LoopbackProvider":
        """Serve in a daemon thread with its own event loop; returns once listening."""
        with self._life:
            if self._thread is not None:
                return self
            _raise_nofile_limit()
            ready = threading.Event()
            errors: list[BaseException] = []
            thread = threading.Thread(target=self._run, args=(ready, errors), name=f"loopback-{self.name}", daemon=True)
            thread.start()
            ready.wait()
            if errors:
                thread.join()
                raise errors[0]
            self._thread = thread
        return self

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=wire.MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a handler whose client disconnects is cancelled (latency, "slow")
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1,
                               **wire.PARSER_LIMITS)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self._port, backlog=self.backlog, reuse_address=True)
            loop.run_until_complete(site.start())
            self._port = runner.addresses[0][1]
            self._loop = loop
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._shutdown(runner))
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                loop.close()

    @staticmethod
    async def _shutdown(runner: web.AppRunner) -> None:
        """Reset every open connection (a stopped provider vanishes, as a crashed one would), then clean up."""
        if runner.server is not None:
            for handler in runner.server.connections:
                if handler.transport is not None:
                    handler.transport.abort()
        await runner.cleanup()

    def stop(self) -> None:
        """Close the listener and every open connection, then join the thread. Idempotent."""
        with self._life:
            thread, loop = self._thread, self._loop
            if thread is None:
                return
            self._thread = None
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(loop.stop)
                except RuntimeError:  # loop already closed
                    pass
            if thread is not threading.current_thread():
                thread.join(10.0)

    def __enter__(self) -> "LoopbackProvider":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("LoopbackProvider not started (port=0 is assigned on start())")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __repr__(self) -> str:
        where = self.base_url if self._port else "not started"
        return f"<LoopbackProvider {self.name!r} {where}>"

    # -- fault injection ---------------------------------------------------------
    def script(self, faults: Iterable[str | None]) -> None:
        """Replace the fault script: one entry consumed per incoming chat request ("ok" = normal)."""
        checked = [replies.check_fault(f) for f in faults]
        with self._lock:
            self._script = deque(checked)

    def set_fault(self, fault: str | None) -> None:
        """Fault for every chat request once the script is exhausted (None/"ok" clears)."""
        checked = replies.check_fault(fault)
        with self._lock:
            self._always = checked

    # -- observation -------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def stats(self) -> dict[str, Any]:
        with self._lock:
            statuses = [r.status for r in self._records]
            max_in_flight, max_rps, tokens = self._max_in_flight, self._max_rps, self._tokens_admitted
        ok = sum(1 for s in statuses if s == 200)
        limited = sum(1 for s in statuses if s in (429, "429", "429_no_retry_after"))
        pending = sum(1 for s in statuses if s == "pending")
        return {
            "requests": len(statuses),
            "ok": ok,
            "429": limited,
            "errors": len(statuses) - ok - limited - pending,
            "max_in_flight": max_in_flight,
            "max_rps_observed": float(max_rps),
            "tokens": tokens,
        }

    def reset_stats(self) -> None:
        with self._lock:
            self._records = []
            self._win_times.clear()
            self._max_in_flight = self._in_flight
            self._max_rps = 0
            self._tokens_admitted = 0

    # -- HTTP ----------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        method = request.method
        if path in _CHAT_PATHS and method == "POST":
            return await self._chat(request)
        if path in MESSAGES_PATHS and method == "POST":  # Anthropic format (loopback/anthropic.py)
            return await self._messages(request)
        if method == "GET":
            if path in _MODELS_PATHS:
                return wire.json_reply(200, replies.models_list(self.name, self._model_ids()))
            if path.startswith(("/v1/models/", "/models/")):
                mid = path.split("/models/", 1)[1]
                if mid in self._model_ids():
                    return wire.json_reply(200, replies.models_list(self.name, [mid])["data"][0])
            if path == "/health":
                return wire.reply(200, b"ok", "text/plain")
        return wire.json_reply(404, replies.error_body(404, f"no route for {method} {request.path} "
                                                            f"(loopback {self.name})"))

    def _model_ids(self) -> list[str]:
        with self._lock:
            return list(self.models) if self.models else list(self._seen_models)
