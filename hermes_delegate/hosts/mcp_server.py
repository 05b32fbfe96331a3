"""`hermes-delegate mcp`: the delegate_task and list_models tools behind the Model Context Protocol.

A thin host over the public API (``hermes_delegate``): the schemas, validation and errors are
DelegateTools', unchanged. Transports: stdio (default) and streamable HTTP (``--http [HOST:]PORT``).

    result.content            one text block per task: model, status, summary (or the error and its hint)
    result.structuredContent  the compact result (tools/compact.py; declared by the tool's outputSchema):
                              per task index, status, model, answer or error; the batch's cost.
                              With `detail: "full"`: the full report (deployment, attempts, tokens,
                              timings, cost per task), as `hermes-delegate run --json` prints it
    result.isError            a tool error: {error, hint, suggestions, type} as text and structuredContent

The engine is warmed in the background once the server runs (litellm import on a worker thread,
then the Router on the server's loop), so `initialize` answers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
from typing import Any, AsyncIterator

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

from hermes_delegate import Config, DelegateTools, Delegator, ProgressEvent, UsageError, __version__

__all__ = ["build_server", "serve_stdio", "serve_http", "parse_bind", "BATCH_OUTPUT_SCHEMA", "DEFAULT_TOKEN_ENV"]

log = logging.getLogger("hermes_delegate.mcp")

DEFAULT_TOKEN_ENV = "HERMES_DELEGATE_MCP_TOKEN"  # noqa: S105 - the variable's name, not a token
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_TASK_RESULT = {
    "type": "object",
    "required": ["index", "status"],
    "properties": {
        "index": {"type": "integer", "description": "the task's position in the call, from 0"},
        "status": {"enum": ["completed", "failed", "timeout", "interrupted", "skipped_budget"]},
        "model": _STR_OR_NULL,
        "summary": _STR_OR_NULL,
        "output": {"description": "the parsed answer of a task with output_schema"},
        "error": {"type": ["object", "null"], "description": "when it did not complete: type, message, hint",
                  "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                                 "hint": {"type": "string"}}},
    },
}
#: What delegate_task's structuredContent holds on success: the compact result (tools/compact.py). With
#: `detail: "full"` it is the full report (BatchResult.to_dict()), whose tasks carry these keys and more.
BATCH_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {"type": "array", "items": _TASK_RESULT},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"},
                   "description": "tasks per status, when some task did not complete"},
        "cost_usd": {"type": "number"},
        "cost_unknown_tasks": {"type": "integer"},
        "budget_left_usd": {"type": "number"},
    },
}


# -- results -> MCP ---------------------------------------------------------------------------
def _is_error(data: Any) -> bool:
    return isinstance(data, dict) and "results" not in data and "error" in data and "type" in data


def _error_text(err: dict[str, Any]) -> str:
    lines = [f"error ({err.get('type')}): {err.get('error')}"]
    if err.get("hint"):
        lines.append(f"hint: {err['hint']}")
    if err.get("suggestions"):
        lines.append("suggestions: " + ", ".join(map(str, err["suggestions"])))
    for t in err.get("tasks") or []:
        lines.append(f"  task {t.get('index')} ({t.get('model')}): {t.get('problem')}")
    return "\n".join(lines)


def _task_text(r: dict[str, Any], n: int) -> str:
    head = f"[{r['index'] + 1}/{n}] {r.get('model') or r.get('model_requested') or '?'} — {r['status']}"
    if r["status"] == "completed":
        body = r.get("summary") or ""
        if r.get("output") is not None:
            body = json.dumps(r["output"], ensure_ascii=False)
    else:
        e = r.get("error") or {}
        body = f"{e.get('type', r['status'])}: {e.get('message', '')}".rstrip(": ")
        if e.get("hint"):
            body += f"\nhint: {e['hint']}"
    return f"{head}\n{body}"


def _batch_text(data: dict[str, Any]) -> str:
    """The batch line, compact or full: its cost, the budget left, and the counts when not all completed."""
    parts = []
    cost = data.get("cost_usd", (data.get("cost") or {}).get("total_usd"))
    if isinstance(cost, (int, float)):
        parts.append(f"cost ${cost:.6g}")
    unknown = data.get("cost_unknown_tasks", (data.get("cost") or {}).get("unknown"))
    if unknown:
        parts.append(f"{unknown} cost(s) unknown")
    if "budget_left_usd" in data:
        parts.append(f"budget left ${data['budget_left_usd']:.6g}")
    counts = data.get("counts") or {}
    if set(counts) - {"completed"}:
        parts.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "batch: " + " · ".join(parts) if parts else ""


def to_call_result(text: str) -> types.CallToolResult:
    """A DelegateTools JSON answer → CallToolResult (text blocks + structuredContent, isError for errors)."""
    data = json.loads(text)
    if _is_error(data):
        return types.CallToolResult(content=[types.TextContent(type="text", text=_error_text(data))],
                                    structured_content=data, is_error=True)
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        n = len(data["results"])
        blocks: list[types.ContentBlock] = [types.TextContent(type="text", text=_task_text(r, n))
                                            for r in data["results"]]
        footer = _batch_text(data)
        if footer:
            blocks.append(types.TextContent(type="text", text=footer))
        return types.CallToolResult(content=blocks, structured_content=data)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                structured_content=data if isinstance(data, dict) else {"value": data})


#: Where a client names its session in a tool call's `_meta` (the per-session spend cap is then its own).
SESSION_META_KEYS = ("hermes_delegate/session", "session_id", "sessionId")


def session_of(meta: Any) -> str | None:
    """The session a client passed in `_meta`, as `mcp:<id>` (at most 200 characters), or None."""
    if not isinstance(meta, dict):
        return None
    for key in SESSION_META_KEYS:
        value = meta.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return f"mcp:{str(value).strip()[:200]}"
    return None


# -- the server -------------------------------------------------------------------------------
class McpHost:
    """One Delegator and its DelegateTools for the life of the server process."""

    def __init__(self, config: Config, *, warm: bool = True, roots: list[str] | None = None):
        self.delegator = Delegator(config, door="mcp")  # its session (spend caps): this server process
        self.roots = [os.getcwd(), *(roots or [])]  # where `files` may be read from (+ delegation.files.roots)
        self.tools = DelegateTools(self.delegator, roots=self.roots)
        self.warm_enabled = warm
        self._warm: asyncio.Task[None] | None = None

    async def _warm_up(self) -> None:
        try:
            await self.delegator.warm_up()  # litellm's import off the loop, then the Router on it
            log.info("engine warm")
        except Exception as exc:  # noqa: BLE001 - a bad config is reported by the tools, not here
            log.warning("warm-up failed: %s", type(exc).__name__)

    def start_warm(self) -> None:
        if self.warm_enabled and self._warm is None:
            self._warm = asyncio.get_running_loop().create_task(self._warm_up())

    async def ready(self) -> None:
        if self._warm is not None:
            await asyncio.shield(self._warm)

    def list_tools(self) -> list[types.Tool]:
        d, m = self.tools.delegate_task_function(), self.tools.list_models_function()
        return [types.Tool(name=d["name"], description=d["description"], input_schema=d["parameters"],
                           output_schema=BATCH_OUTPUT_SCHEMA),
                types.Tool(name=m["name"], description=m["description"], input_schema=m["parameters"])]

    async def call(self, ctx: Any, name: str, args: Any, meta: Any = None) -> types.CallToolResult:
        if name == self.tools.list_name:
            return to_call_result(await self.tools.list_models(args))
        if name != self.tools.tool_name:
            err = {"error": f"Unknown tool {name!r}.",
                   "hint": f"Call {self.tools.tool_name} or {self.tools.list_name}.",
                   "suggestions": [self.tools.tool_name, self.tools.list_name], "type": "usage"}
            return to_call_result(json.dumps(err))
        await self.ready()
        queue: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        done = 0  # progress events come redacted from the engine (Delegator's redactor)

        def on_event(ev: ProgressEvent) -> None:
            if ev.kind == "done":
                queue.put_nowait(ev)

        async def send_progress() -> None:
            nonlocal done
            while (ev := await queue.get()) is not None:
                done += 1
                status = ev.result.status if ev.result else "done"
                msg = f"{done}/{ev.total} {ev.model or '?'} {status}: {ev.goal[:120]}"
                with contextlib.suppress(Exception):
                    await ctx.session.report_progress(done, ev.total, msg)

        # a Delegator per call (sharing the one Router), so cancelling this call interrupts only its batch
        # its spend session: the client's, when it passes one in `_meta` (SESSION_META_KEYS), else the server's
        call_delegator = self.delegator.derive(session=session_of(meta))
        tools = DelegateTools(call_delegator, tool_name=self.tools.tool_name, list_name=self.tools.list_name,
                              roots=self.roots)
        loop = asyncio.get_running_loop()
        sender = loop.create_task(send_progress())
        batch = loop.create_task(tools.delegate_task(args, on_event=on_event))  # outside the request's scope
        try:
            text = await asyncio.shield(batch)
        except asyncio.CancelledError:
            # notifications/cancelled (or the client went away): unfinished tasks end `interrupted`
            call_delegator.interrupt()
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                with anyio.move_on_after(10):
                    text = await batch
                    counts = json.loads(text).get("counts")
                    log.info("delegate_task cancelled by the client; tasks: %s", counts)
            raise
        finally:
            queue.put_nowait(None)
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception), anyio.move_on_after(5):
                await sender
        return to_call_result(text)


def build_server(config: Config, *, warm: bool = True, roots: list[str] | None = None) -> tuple[Server[Any], McpHost]:
    host = McpHost(config, warm=warm, roots=roots)

    @contextlib.asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        host.start_warm()
        yield {}

    async def on_list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=host.list_tools())

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await host.call(ctx, params.name, params.arguments, getattr(params, "meta", None))

    server: Server[Any] = Server("hermes-delegate", version=__version__, lifespan=lifespan,
                                 instructions="delegate_task fans subtasks out in parallel, each on the model "
                                              "it names; list_models shows what you may name.",
                                 on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    return server, host


async def serve_stdio(config: Config, *, roots: list[str] | None = None) -> None:
    from mcp.server.stdio import stdio_server  # noqa: PLC0415

    server, _ = build_server(config, roots=roots)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


# -- streamable HTTP --------------------------------------------------------------------------
def parse_bind(text: str) -> tuple[str, int]:
    """"[HOST:]PORT" → (host, port); the host defaults to 127.0.0.1."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        num = int(port)
        if not 0 <= num <= 65535:
            raise ValueError
    except ValueError:
        raise UsageError(f"--http {text!r}: expected [HOST:]PORT with a port number 0-65535.",
                         hint="E.g. --http 8765 or --http 127.0.0.1:8765.") from None
    return host, num


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(host: str, token_env: str, env: Any = None) -> str | None:
    """The token HTTP requests must carry, or None (loopback bind, no token set). Refuses a
    non-loopback bind without one."""
    env = os.environ if env is None else env
    token = (env.get(token_env) or "").strip() or None
    if token is None and not is_loopback(host):
        raise UsageError(f"Refusing to serve MCP on {host} without a bearer token: ${token_env} is not set.",
                         hint=f"Set {token_env} to a long random secret (clients send it as a bearer token "
                              "in the Authorization header), or bind to 127.0.0.1.")
    return token


class BearerGate:
    """ASGI middleware: 401 for any HTTP request without `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str):
        import hmac  # noqa: PLC0415

        self.app, self._want, self._cmp = app, f"Bearer {token}".encode(), hmac.compare_digest

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not self._cmp(got, self._want):
                body = json.dumps({"error": "unauthorized", "hint": "Send Authorization: Bearer <token>."}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


#: Host names a loopback bind answers to besides its own address.
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _host_name(host: str) -> str:
    """A host as it appears in a Host header or an Origin: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def transport_security(host: str, allow_hosts: Any = ()) -> Any:
    """The SDK's DNS-rebinding protection, on for every bind: the Host header must name the bound
    address (a loopback bind: also 127.0.0.1, localhost, [::1]) or one of `allow_hosts`, with any
    port; an Origin, when sent, must be http(s):// one of those. A wildcard bind (0.0.0.0, ::) answers
    only to loopback names and `allow_hosts` (name the host names clients use with --allow-host)."""
    from mcp.server.transport_security import TransportSecuritySettings  # noqa: PLC0415

    names: list[str] = []
    wildcard = host in ("0.0.0.0", "::", "")  # noqa: S104 - recognises a wildcard bind, binds nothing
    for name in [*([] if wildcard else [host]), *(_LOOPBACK_NAMES if wildcard or is_loopback(host) else ()),
                 *allow_hosts]:
        name = _host_name(str(name).strip().lower())
        if name and name not in names:
            names.append(name)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[form for n in names for form in (n, f"{n}:*")],
        allowed_origins=[form for n in names for scheme in ("http", "https")
                         for form in (f"{scheme}://{n}", f"{scheme}://{n}:*")])


def http_app(config: Config, host: str, token: str | None, allow_hosts: Any = (), *,
             roots: list[str] | None = None) -> Any:
    server, mcp_host = build_server(config, roots=roots)
    app = server.streamable_http_app(host=host, transport_security=transport_security(host, allow_hosts))
    inner_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        async with inner_lifespan(a):
            mcp_host.start_warm()
            yield

    app.router.lifespan_context = lifespan
    return BearerGate(app, token) if token else app


async def serve_http(config: Config, bind: str, token_env: str = DEFAULT_TOKEN_ENV, allow_hosts: Any = (), *,
                     roots: list[str] | None = None) -> None:
    import uvicorn  # noqa: PLC0415

    host, port = parse_bind(bind)
    token = bearer_token(host, token_env)
    app = http_app(config, host, token, allow_hosts, roots=roots)
    cfg = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(cfg)
    await srv.serve()
