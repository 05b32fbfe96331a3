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

Rate limits and their headers
-----------------------------

Two sliding-window limiters run on every chat (``/v1/chat/completions``) and
Anthropic (``/v1/messages``) request:

* ``rps``: at most ``floor(rps)`` requests per sliding 1 s window (``rps < 1``:
  one request per ``1/rps`` s window);
* ``tpm``: at most ``tpm * token_window_s / 60`` tokens per sliding
  ``token_window_s`` window (default 60 s; a short window lets benchmarks run in
  seconds while the headers still state the per-minute ``tpm``). A request's
  token cost is fixed at arrival: its prompt tokens (``usage_for``'s count, i.e.
  ``max(1, prompt chars // 4)``) plus ``max_completion_tokens`` / ``max_tokens``
  when the body gives one, else plus the completion tokens the loopback will
  report for it (exact for the default echo reply and for ``/v1/messages``; with
  a ``responder`` it is estimated from the echo at arrival and corrected to the
  reported ``usage.completion_tokens`` once the reply is built). A request whose
  cost does not fit what is left in the window gets a 429 (one whose cost
  exceeds the whole window capacity never fits). ``stats()["tokens"]`` sums the
  costs of admitted requests.

Both limits may be reassigned while serving (``provider.rps = 2``,
``provider.tpm = None``); the next request uses, and its headers report, the new
value. Admitted requests are counted in the 1 s request window even while ``rps``
is unset (so an ``rps`` switched on mid-run sees the last second's traffic); the
token window only keeps charges while ``tpm`` is set (bounded memory), so a
``tpm`` switched on mid-run starts from an empty window.

``ratelimit_headers`` picks the dialect sent on every chat / messages response
(200s and 429s alike) while the limit concerned is set. Limits are per minute,
like the real providers'; ``remaining`` is what is left of the current window
after counting this request (when admitted); ``reset`` for requests is the time
until the oldest request leaves the window (0 when empty), for tokens the time
until the newest charged request leaves it (the window is then empty, i.e. at
full capacity again):

* ``"openai"`` (default): ``x-ratelimit-{limit,remaining,reset}-requests`` and,
  with ``tpm``, ``x-ratelimit-{limit,remaining,reset}-tokens``; resets are Go
  durations rounded up to the millisecond (``"350ms"``, ``"1.2s"``, ``"6m0s"``);
* ``"anthropic"``: ``anthropic-ratelimit-requests-{limit,remaining,reset}`` and,
  with ``tpm``, ``anthropic-ratelimit-tokens-*`` and
  ``anthropic-ratelimit-input-tokens-*`` (the same tpm limit, counting prompt
  tokens only); resets are RFC 3339 UTC times (``2026-12-03T01:02:03.456Z``);
* ``"none"``: no rate-limit headers.

``retry_after`` sets a 429's ``Retry-After``: a number of seconds, ``None`` (no
header) or ``"auto"``: the time until the request would fit again (the later of
the refusing limits' waits; the whole-window reset for a request too large to
ever fit; the estimated end of the earliest in-flight request for
``max_concurrent``; 0 for a scripted ``"429"`` no limit refused), rounded up to the
millisecond, as ``Retry-After: 0.347`` plus ``retry-after-ms: 347``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from . import responses as R
from ._http import BadRequest, Connection, Request
from .anthropic import MESSAGES_PATHS, AnthropicMixin
from .chat import ChatMixin
from .records import RequestRecord

Responder = Callable[[dict, "LoopbackProvider"], Any]
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
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = target if hard == resource.RLIM_INFINITY else min(target, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


def _ms_up(seconds: float) -> int:
    """Whole milliseconds, rounded up (a client waiting that long is past the moment)."""
    return max(0, math.ceil(seconds * 1000.0 - 1e-6))


def go_duration(seconds: float) -> str:
    """Seconds as a Go ``time.Duration`` string, like OpenAI's resets: ``350ms``, ``1.2s``, ``6m0s``."""
    ms = _ms_up(seconds)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + str(whole) + (("." + f"{frac:03d}".rstrip("0")) if frac else "") + "s"


def decimal_seconds(seconds: float) -> str:
    """``0.347`` / ``1.5`` / ``2`` (rounded up to the millisecond), for ``Retry-After``."""
    return f"{_ms_up(seconds) / 1000:.3f}".rstrip("0").rstrip(".")


def rfc3339_in(seconds: float, wall: float) -> str:
    """The UTC wall time ``wall + seconds`` as ``2026-12-03T01:02:03.456Z``."""
    when = datetime.fromtimestamp(wall, timezone.utc) + timedelta(milliseconds=_ms_up(seconds))
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _check_limit(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be None or a finite number >= 0, not {value!r}")
    return value


def _check_retry_after(value: Any) -> float | str | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"retry_after must be None, 'auto' or a number of seconds >= 0, not {value!r}")
    return value


def _max_tokens(body: dict, anthropic: bool) -> int | None:
    """The completion budget a request states (chat: max_completion_tokens, else max_tokens)."""
    for key in (("max_tokens",) if anthropic else ("max_completion_tokens", "max_tokens")):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


class _TokenCharge:
    """One admitted request in the token window."""

    __slots__ = ("time", "cost", "prompt", "live")

    def __init__(self, time_: float, cost: int, prompt: int):
        self.time, self.cost, self.prompt, self.live = time_, cost, prompt, True


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
        retry_after: float | str | None = 1.0,
        models: list[str] | None = None,
        responder: Responder | None = None,
        slow_s: float = 30.0,
        backlog: int = 4096,
        tpm: float | None = None,
        token_window_s: float = 60.0,
        ratelimit_headers: str = "openai",
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
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[asyncio.Task, Connection] = {}

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

    # -- token cost ------------------------------------------------------------------
    def _token_cost(self, rec: RequestRecord, *, anthropic: bool = False) -> tuple[int, int, bool]:
        """(prompt tokens, completion tokens charged, estimated?) for a request, as ``usage`` counts them."""
        body = rec.body if isinstance(rec.body, dict) else {}
        prompt = R.usage_for(rec.messages, {})["prompt_tokens"]
        budget = _max_tokens(body, anthropic)
        if budget is not None:
            return prompt, budget, False
        model = rec.model if isinstance(rec.model, str) else ""
        echo = R.usage_for(rec.messages, {"content": R.default_content(self.name, model, rec.messages)})
        # chat with a responder: the reply is not known yet; settled from its usage in _settle_tokens
        return prompt, echo["completion_tokens"], not anthropic and self.responder is not None

    def _settle_tokens(self, rec: RequestRecord, usage: dict) -> None:
        """Correct an estimated charge to the completion tokens the reply reports."""
        with self._lock:
            charge = self._estimated.pop(id(rec), None)
            if charge is None:
                return
            delta = charge.prompt + int(usage["completion_tokens"]) - charge.cost
            charge.cost += delta
            self._tokens_admitted += delta
            if charge.live:
                self._tok_used += delta

    # -- rate limiting (called with self._lock held) --------------------------------
    def _rl_params(self) -> tuple[int, float]:
        if self._rps is None:
            return 0, 1.0
        rps = float(self._rps)
        if rps <= 0:
            return 0, 1.0
        return (int(math.floor(rps)), 1.0) if rps >= 1 else (1, 1.0 / rps)

    def _tok_capacity(self) -> float:
        return float(self._tpm) * self.token_window_s / 60.0  # type: ignore[arg-type]

    def _prune(self, now: float) -> None:
        _, window = self._rl_params()
        while self._rl_times and self._rl_times[0] <= now - window:
            self._rl_times.popleft()
        while self._tok and self._tok[0].time <= now - self.token_window_s:
            charge = self._tok.popleft()
            charge.live = False
            self._tok_used -= charge.cost
            self._tok_prompt_used -= charge.prompt

    def _request_wait(self, now: float) -> float | None:
        """Seconds until one more request fits the rps window (0: now; None: never, rps == 0)."""
        capacity, window = self._rl_params()
        if capacity <= 0:
            return None
        excess = len(self._rl_times) + 1 - capacity
        return 0.0 if excess <= 0 else max(0.0, self._rl_times[excess - 1] + window - now)

    def _token_wait(self, now: float, cost: int) -> float | None:
        """Seconds until ``cost`` more tokens fit the token window (0: now; None: never)."""
        capacity = self._tok_capacity()
        if cost > capacity:
            return None
        need = self._tok_used + cost - capacity
        if need <= 0:
            return 0.0
        freed = 0
        for charge in self._tok:
            freed += charge.cost
            if freed >= need:
                return max(0.0, charge.time + self.token_window_s - now)
        return max(0.0, self._tok[-1].time + self.token_window_s - now)  # unreachable in practice

    def _rl_headers(self, now: float) -> list[tuple[str, str]]:
        """Rate-limit headers in the configured dialect (after counting an admitted request)."""
        dialect = self.ratelimit_headers
        if dialect == "none" or (self._rps is None and self._tpm is None):
            return []
        wall = time.time() - (time.monotonic() - now)
        fmt_reset = go_duration if dialect == "openai" else (lambda s: rfc3339_in(s, wall))
        triples: list[tuple[str, str, str, str]] = []  # (kind, limit, remaining, reset)
        if self._rps is not None:
            capacity, window = self._rl_params()
            reset = self._rl_times[0] + window - now if self._rl_times else 0.0
            triples.append(("requests", R.fmt_number(round(float(self._rps) * 60.0, 6)),
                            str(max(0, capacity - len(self._rl_times))), fmt_reset(max(0.0, reset))))
        if self._tpm is not None:
            capacity_t = self._tok_capacity()
            reset = self._tok[-1].time + self.token_window_s - now if self._tok else 0.0
            limit = R.fmt_number(round(float(self._tpm), 6))
            reset_text = fmt_reset(max(0.0, reset))
            triples.append(("tokens", limit, str(max(0, math.floor(capacity_t - self._tok_used))), reset_text))
            if dialect == "anthropic":
                triples.append(("input-tokens", limit, str(max(0, math.floor(capacity_t - self._tok_prompt_used))), reset_text))
        if dialect == "openai":
            return [(f"x-ratelimit-{part}-{kind}", value) for kind, *values in triples
                    for part, value in zip(("limit", "remaining", "reset"), values)]
        return [(f"anthropic-ratelimit-{kind}-{part}", value) for kind, *values in triples
                for part, value in zip(("limit", "remaining", "reset"), values)]

    def _refusal(self, now: float, fault: str | None, wait: float | None) -> list[tuple[str, str]]:
        """Headers of a 429: Retry-After (per ``retry_after``) then the rate-limit headers."""
        out: list[tuple[str, str]] = []
        if fault != "429_no_retry_after" and self.retry_after is not None:
            if self.retry_after == "auto":
                wait = max(0.0, wait or 0.0)
                out += [("Retry-After", decimal_seconds(wait)), ("retry-after-ms", str(_ms_up(wait)))]
            else:
                out.append(("Retry-After", R.fmt_number(self.retry_after)))  # type: ignore[arg-type]
        return out + self._rl_headers(now)

    def _arrive(self, rec: RequestRecord, cost: tuple[int, int, bool] = (0, 0, False)) -> tuple[str | None, bool, list[tuple[str, str]]]:
        """Record the request, pop its fault, apply the limiters. -> (fault, admitted, headers).

        ``cost`` is ``_token_cost``'s (prompt, completion, estimated). A refused request's headers
        include its Retry-After; an admitted one must be released with ``_depart(rec)``.
        """
        prompt, completion, estimated = cost
        tokens = prompt + completion
        with self._lock:
            self._records.append(rec)
            if rec.model:
                self._seen_models.setdefault(rec.model, None)
            fault = self._script.popleft() if self._script else self._always
            now = rec.time
            self._prune(now)
            if fault in R.RATE_LIMIT_FAULTS:
                return fault, False, self._refusal(now, fault, 0.0)
            if fault is None:
                waits: list[float] = []
                if self._rps is not None:
                    wait = self._request_wait(now)
                    waits.append(self._rl_params()[1] if wait is None else wait)
                if self._tpm is not None:
                    wait = self._token_wait(now, tokens)
                    if wait is None:  # larger than the whole window: never fits; say when it is empty
                        wait = self._tok[-1].time + self.token_window_s - now if self._tok else self.token_window_s
                    waits.append(wait)
                if any(w > 0 for w in waits):
                    return None, False, self._refusal(now, None, max(waits))
                if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
                    soonest = min(self._ends.values(), default=now)
                    return None, False, self._refusal(now, None, soonest - now)
            self._rl_times.append(now)
            charge = _TokenCharge(now, tokens, prompt)
            if self._tpm is not None:
                self._tok.append(charge)
                self._tok_used += tokens
                self._tok_prompt_used += prompt
            else:
                charge.live = False  # not in the window; settling only corrects stats()["tokens"]
            self._tokens_admitted += tokens
            if estimated:
                self._estimated[id(rec)] = charge
            self._ends[id(rec)] = now + self.latency_s + (self.slow_s if fault == "slow" else 0.0)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._win_times.append(now)
            while self._win_times and self._win_times[0] <= now - 1.0:
                self._win_times.popleft()
            self._max_rps = max(self._max_rps, len(self._win_times))
            return fault, True, self._rl_headers(now)

    def _depart(self, rec: RequestRecord) -> None:
        """An admitted request is finished (answered, failed or abandoned)."""
        with self._lock:
            self._in_flight -= 1
            self._ends.pop(id(rec), None)
            self._estimated.pop(id(rec), None)

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
