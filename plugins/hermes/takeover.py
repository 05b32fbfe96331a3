"""hermes's own `delegate_task`, extended: calls that name a routed model run through hermes-delegate.

hermes 0.19 runs `delegate_task` through its `tool_execution` middleware on both tool paths
(agent/tool_executor.py, sequential; agent/agent_runtime_helpers.py, concurrent). This middleware
looks at the arguments: when no task resolves to a routed model (its own `model`, the call's
`model`, or `hermes_delegate.model` in config.yaml) it calls `next_call()` and the built-in runs
untouched. Otherwise it runs the whole call through hermes-delegate (adapter.Call): each task on
the model it names, a task without one on hermes's own provider, exactly as a built-in child.

`role`, `max_iterations` keep the built-in's meaning. `background` follows the built-in's 0.19
rule (the model's flag is ignored): a top-level agent's call is dispatched as ONE background
batch through hermes's public `tools.async_delegation.dispatch_async_delegation_batch`, so the
combined results re-enter the conversation like a built-in background batch; a subagent's call,
or a session that cannot take a late completion, runs synchronously (with the built-in's note).

Stdlib only at import: loaded at plugin registration.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("hermes_delegate.hermes")

TOOL = "delegate_task"
#: keys hermes's delegate_task understands that the engine's parser does not
HERMES_TOP_KEYS = ("role", "background", "max_iterations", "toolsets")
HERMES_TASK_KEYS = ("role", "toolsets", "acp_command", "acp_args")


def _has_model(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def routes(args: Any, default_model: Any = None) -> bool:
    """Does some task of this call resolve to a model hermes-delegate routes?"""
    if not isinstance(args, dict):
        return False
    if _has_model(args.get("model")) or _has_model(default_model):
        return True
    tasks = args.get("tasks")
    return isinstance(tasks, list) and any(isinstance(t, dict) and _has_model(t.get("model")) for t in tasks)


def split_args(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the engine's arguments, hermes's per-call options: role, roles by task index, max_iterations)."""
    engine = {k: v for k, v in args.items() if k not in HERMES_TOP_KEYS}
    opts: dict[str, Any] = {"role": args.get("role"), "roles": {}, "max_iterations": args.get("max_iterations")}
    tasks = args.get("tasks")
    if isinstance(tasks, list):
        clean = []
        for i, t in enumerate(tasks):
            if isinstance(t, dict):
                if t.get("role") is not None:
                    opts["roles"][i] = t.get("role")
                t = {k: v for k, v in t.items() if k not in HERMES_TASK_KEYS}
            clean.append(t)
        engine["tasks"] = clean
    return engine, opts


def _block_model() -> Any:
    from . import settings  # noqa: PLC0415

    block = settings.raw_block()  # hermes's parse: cheap on every call; validated when we route
    return block.get("model") if isinstance(block, dict) else None


def tool_execution(tool_name: str = "", args: Any = None, next_call: Any = None, session_id: str = "",
                   **_: Any) -> Any:
    if tool_name != TOOL or next_call is None:
        return next_call() if next_call is not None else None
    try:
        from . import hermes_api  # noqa: PLC0415

        if not hermes_api.compatible() or not routes(args, _block_model()):
            return next_call()
    except Exception:
        log.debug("hermes-delegate: routing check failed; built-in delegate_task runs", exc_info=True)
        return next_call()
    try:
        return routed_delegate_task(args, session_id=session_id)
    except Exception as exc:  # noqa: BLE001 - raising would make hermes run the built-in, model ignored
        log.warning("hermes-delegate: delegate_task failed: %s", type(exc).__name__)
        return json.dumps({"error": f"hermes-delegate: delegate_task failed ({type(exc).__name__}).",
                           "hint": "Retry without `model` to use hermes's built-in delegation.",
                           "type": "internal"})


def routed_delegate_task(args: dict[str, Any], *, session_id: str = "") -> str:
    """hermes's delegate_task, for a call where some task names a routed model."""
    from . import adapter, hermes_api, parent as parent_mod  # noqa: PLC0415 - the engine loads on a routed call

    dt = hermes_api.delegate_tool()
    parent = parent_mod.find_parent(session_id)
    refused = adapter.refusal(dt, parent, TOOL)
    if refused:
        return refused
    cfg, err = adapter.plugin_config()
    if err:
        return err
    engine_args, opts = split_args(args)
    call = adapter.Call(parent, cfg, dt, role=opts["role"], roles=opts["roles"], max_iterations=opts["max_iterations"])
    role = call.batch.role
    # hermes 0.19's rule (run_agent._dispatch_delegate_task): a top-level agent's delegation always
    # runs in the background; a subagent's stays synchronous. The model's `background` is ignored.
    if getattr(parent, "_delegate_depth", 0) == 0:
        dispatched = background_dispatch(parent, call, engine_args, role)
        if dispatched is not None:
            return dispatched
        out = json.loads(call.run(engine_args))
        if isinstance(out, dict):
            out["note"] = ("background delegation is not available in this session (it cannot receive a "
                           "detached result later, or hermes's background pool is full), so the subagent(s) "
                           "ran SYNCHRONOUSLY and the result is included above.")
        return json.dumps(out, ensure_ascii=False)
    return call.run(engine_args)


def background_dispatch(parent: Any, call: Any, engine_args: dict[str, Any], role: str) -> str | None:
    """Dispatch `call` as one background batch the way the built-in does; None = run it inline.

    Returns the built-in's `dispatched` payload, or None when the session cannot take a late
    completion (stateless HTTP, `hermes -z`, cron) or hermes's async pool is full."""
    from tools.async_delegation import dispatch_async_delegation_batch  # noqa: PLC0415

    try:
        from gateway.session_context import async_delivery_supported  # noqa: PLC0415

        if not async_delivery_supported():
            return None
    except Exception:  # noqa: BLE001, S110 - no gateway module: the CLI path, which can deliver
        pass
    try:
        from tools.approval import get_current_session_key  # noqa: PLC0415

        session_key = get_current_session_key(default="")
    except Exception:  # noqa: BLE001
        session_key = ""
    session_key = session_key or str(getattr(parent, "session_id", "") or "")
    from . import hermes_api  # noqa: PLC0415

    max_async = hermes_api.max_async_children()
    tasks = engine_args.get("tasks")
    goals = [str(t.get("goal") or "") for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) \
        else [str(engine_args.get("goal") or "")]
    call.detach()
    dispatch = dispatch_async_delegation_batch(
        goals=goals, context=engine_args.get("context"), toolsets=None, role=role,
        model=engine_args.get("model"), session_key=session_key,
        parent_session_id=getattr(parent, "session_id", None),
        runner=lambda: call.run_combined(engine_args), interrupt_fn=call.stop, max_async_children=max_async)
    if dispatch.get("status") != "dispatched":
        call.attach()
        return None
    n = len(goals)
    note = ("Subagent is running in the background (hermes-delegate). Its full result re-enters the "
            "conversation as a new message when it finishes. Do not wait or poll — just continue." if n == 1 else
            f"{n} subagents are running in parallel in the background (hermes-delegate), each on its model. "
            "Their consolidated results re-enter the conversation as a single message once ALL of them "
            "finish. Do not wait or poll — just continue.")
    return json.dumps({"status": "dispatched", "mode": "background", "count": n,
                       "delegation_id": dispatch["delegation_id"], "goals": goals, "note": note},
                      ensure_ascii=False)
