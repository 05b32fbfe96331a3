"""Embedded loopback OpenAI-compatible provider (stdlib only: asyncio streams + a thread).

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
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import threading
from collections import deque
from typing import Any, Callable, Iterable

from . import responses as R
from ._http import BadRequest, Connection, Request
from .anthropic import MESSAGES_PATHS, AnthropicMixin
from .chat import ChatMixin
from .records import RequestRecord

Responder = Callable[[dict, "LoopbackProvider"], Any]
_CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
_MODELS_PATHS = frozenset({"/v1/models", "/models"})
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
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = target if hard == resource.RLIM_INFINITY else min(target, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


class LoopbackProvider(ChatMixin, AnthropicMixin):
    def __init__(
        self,
        name: str = "loopback",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        rps: float | None = None,
        max_concurrent: int | None = None,
        retry_after: float | None = 1.0,
        models: list[str] | None = None,
        responder: Responder | None = None,
        slow_s: float = 30.0,
        backlog: int = 4096,
    ):
        self.name = name
        self.host = host
        self.latency_s = float(latency_s)
        self.rps = rps
        self.max_concurrent = max_concurrent
        self.retry_after = retry_after
        self.models = list(models or [])
        self.responder = responder
        self.slow_s = float(slow_s)
        self.backlog = backlog
        self._port = int(port)
        self._lock = threading.Lock()
        self._life = threading.Lock()
        self._records: list[RequestRecord] = []
        self._script: deque[str | None] = deque()
        self._always: str | None = None
        self._rl_times: deque[float] = deque()
        self._win_times: deque[float] = deque()
        self._in_flight = 0
        self._max_in_flight = 0
        self._max_rps = 0
        self._seen_models: dict[str, None] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[asyncio.Task, Connection] = {}

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

    def _run(self, ready: threading.Event, errors: list) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self._port, backlog=self.backlog, reuse_address=True)
            )
            self._port = self._server.sockets[0].getsockname()[1]
            self._loop = loop
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            errors.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._shutdown())
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                loop.close()

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task, conn in list(self._conns.items()):
            conn.abort()
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except (asyncio.TimeoutError, OSError):
                pass

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
        checked = [R.check_fault(f) for f in faults]
        with self._lock:
            self._script = deque(checked)

    def set_fault(self, fault: str | None) -> None:
        """Fault for every chat request once the script is exhausted (None/"ok" clears)."""
        checked = R.check_fault(fault)
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

    def stats(self) -> dict:
        with self._lock:
            statuses = [r.status for r in self._records]
            max_in_flight, max_rps = self._max_in_flight, self._max_rps
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
        }

    def reset_stats(self) -> None:
        with self._lock:
            self._records = []
            self._win_times.clear()
            self._max_in_flight = self._in_flight
            self._max_rps = 0

    # -- rate limiting (called with self._lock held) --------------------------------
    def _rl_params(self) -> tuple[int, float]:
        rps = float(self.rps)  # type: ignore[arg-type]
        if rps <= 0:
            return 0, 1.0
        return (int(math.floor(rps)), 1.0) if rps >= 1 else (1, 1.0 / rps)

    def _rl_headers(self) -> list[tuple[str, str]]:
        if self.rps is None:
            return []
        capacity, _ = self._rl_params()
        remaining = max(0, capacity - len(self._rl_times))
        return [("x-ratelimit-limit-requests", R.fmt_number(self.rps)), ("x-ratelimit-remaining-requests", str(remaining))]

    def _arrive(self, rec: RequestRecord) -> tuple[str | None, bool, list[tuple[str, str]]]:
        """Record the request, pop its fault, apply the limiter. -> (fault, admitted, rate headers)."""
        with self._lock:
            self._records.append(rec)
            if rec.model:
                self._seen_models.setdefault(rec.model, None)
            fault = self._script.popleft() if self._script else self._always
            if fault in R.RATE_LIMIT_FAULTS:
                return fault, False, self._rl_headers() if self.rps is not None else []
            now = rec.time
            if self.rps is not None:
                capacity, window = self._rl_params()
                while self._rl_times and self._rl_times[0] <= now - window:
                    self._rl_times.popleft()
                if fault is None and len(self._rl_times) + 1 > capacity:
                    return None, False, self._rl_headers()
            if fault is None and self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                return None, False, self._rl_headers()
            if self.rps is not None:
                self._rl_times.append(now)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._win_times.append(now)
            while self._win_times and self._win_times[0] <= now - 1.0:
                self._win_times.popleft()
            self._max_rps = max(self._max_rps, len(self._win_times))
            return fault, True, self._rl_headers()

    # -- HTTP ----------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
        conn.set_nodelay()
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = conn
        try:
            while not conn.closed:
                try:
                    req = await conn.read_request()
                except BadRequest as exc:
                    await conn.send_json(exc.status, R.error_body(exc.status, exc.message), keep_alive=False)
                    break
                if req is None:
                    break
                keep = await self._dispatch(conn, req)
                if not (keep and req.keep_alive):
                    break
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Server stopping. Not re-raised: on 3.11 asyncio.streams' done-callback
            # calls task.exception() on the handler task and would log the cancellation.
            conn.abort()
        finally:
            self._conns.pop(task, None)
            conn.close()

    async def _dispatch(self, conn: Connection, req: Request) -> bool:
        keep = req.keep_alive
        path = req.path.rstrip("/") or "/"
        if path in _CHAT_PATHS and req.method == "POST":
            return await self._chat(conn, req)
        if path in MESSAGES_PATHS and req.method == "POST":  # Anthropic format (loopback/anthropic.py)
            return await self._messages(conn, req)
        if req.method == "GET":
            if path in _MODELS_PATHS:
                await conn.send_json(200, R.models_list(self.name, self._model_ids()), keep_alive=keep)
                return keep
            if path.startswith(("/v1/models/", "/models/")):
                mid = path.split("/models/", 1)[1]
                if mid in self._model_ids():
                    await conn.send_json(200, R.models_list(self.name, [mid])["data"][0], keep_alive=keep)
                    return keep
            if path == "/health":
                await conn.send(200, [("Content-Type", "text/plain")], b"ok", keep_alive=keep)
                return keep
        await conn.send_json(404, R.error_body(404, f"no route for {req.method} {req.path} (loopback {self.name})"), keep_alive=keep)
        return keep

    def _model_ids(self) -> list[str]:
        with self._lock:
            return list(self.models) if self.models else list(self._seen_models)
