"""Tool names, and the schemas hermes shows the model: DelegateTools's own, built from the live config.

Registration must stay import-light (no pydantic, no litellm), so register() gives hermes a small
static schema and attaches a `dynamic_schema_overrides` callable to the registry entry
(tools/registry.py l.560-575: applied on every get_definitions(), which model_tools memoises on
config.yaml's mtime). That callable builds DelegateTools from the config in force, so the model sees
the configured tiers, aliases, groups and limits. If it ever fails, hermes keeps the static schema.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

TOOLSET = "hermes-delegate"
# hermes intercepts `delegate_task` by name before its tool registry (agent/tool_executor.py l.1370,
# agent/agent_runtime_helpers.py l.2522), so a plugin tool of that name is never reached: we extend
# the built-in instead (extend_builtin + takeover.tool_execution). DELEGATE_TOOL names it in our
# messages and in the schema we build for it.
DELEGATE_TOOL = "delegate_task"
LIST_TOOL = "list_models"

STATIC = {
    LIST_TOOL: {
        "name": LIST_TOOL,
        "description": f"List the models {DELEGATE_TOOL} may use, or check one (pass model).",
        "parameters": {"type": "object", "properties": {"model": {"type": "string"}}, "required": []},
    },
}

_lock = threading.Lock()
_memo: dict[str, Any] = {}


def live_functions() -> dict[str, dict[str, Any]]:
    """{tool name: DelegateTools's function object} for the config in force (memoised on it)."""
    from hermes_delegate import Delegator  # noqa: PLC0415
    from hermes_delegate import DelegateTools  # noqa: PLC0415

    from .settings import load_plugin_config  # noqa: PLC0415

    cfg = load_plugin_config()
    key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, default=str)
    with _lock:
        if _memo.get("key") == key:
            memoised: dict[str, dict[str, Any]] = _memo["fns"]
            return memoised
    tools = DelegateTools(Delegator(cfg), tool_name=DELEGATE_TOOL, list_name=LIST_TOOL)
    fns = {DELEGATE_TOOL: tools.delegate_task_function(), LIST_TOOL: tools.list_models_function()}
    with _lock:
        _memo.update(key=key, fns=fns)
    return fns


def overrides_for(name: str) -> Callable[[], dict[str, Any]]:
    def overrides() -> dict[str, Any]:
        fn = live_functions()[name]
        return {"description": fn["description"], "parameters": fn["parameters"]}

    return overrides


BUILTIN = DELEGATE_TOOL
_INTRO_END = "and the batch cost."  # last words of hermes_delegate.tools.schema's intro
_ROUTED_NOTE = (
    "Per-task models (hermes-delegate): `model` (top level, or per task in `tasks`) runs that task on the "
    "model it names, through LiteLLM's Router; tasks without one run on hermes's own delegation model. "
    "role, max_iterations and the background behaviour above are unchanged. Call list_models to see the "
    "models you may use.")


_FILES_NOTE = ("Paths the subagent should read (with a routed `model`): passed to it in its goal; it reads "
               "them with its own file tools.")


def extended_builtin_schema(base: dict[str, Any]) -> dict[str, Any]:
    """The built-in's {description, parameters} with `model` top-level and in tasks[] (new dicts)."""
    fn = live_functions()[DELEGATE_TOOL]
    ours = fn["parameters"]["properties"]
    params = dict(base.get("parameters") or {"type": "object", "properties": {}, "required": []})
    props = {k: dict(v) for k, v in (params.get("properties") or {}).items()}
    props["model"] = dict(ours["model"])
    files = {"type": "array", "items": {"type": "string"}, "description": _FILES_NOTE}
    props.setdefault("files", files)
    tasks = props.get("tasks") or {"type": "array", "items": {"type": "object", "properties": {}, "required": ["goal"]}}
    items = dict(tasks.get("items") or {"type": "object", "required": ["goal"]})
    items["properties"] = {"files": files, **(items.get("properties") or {}),
                           "model": dict(ours["tasks"]["items"]["properties"]["model"])}
    tasks["items"] = items
    props["tasks"] = tasks
    params["properties"] = props
    # DelegateTools's description = its generic intro + the config lines (tiers, aliases, groups,
    # default, allowlist, limits); the built-in's own text replaces the intro.
    head, sep, tail = fn["description"].partition(_INTRO_END)
    config = tail.strip() if sep else fn["description"]
    description = " ".join(x for x in (str(base.get("description") or ""), "\n\n" + _ROUTED_NOTE, config) if x)
    return {"description": description, "parameters": params}


def builtin_overrides(entry: Any, original: Callable[[], dict[str, Any]] | None) -> Callable[[], dict[str, Any]]:
    """dynamic_schema_overrides for the built-in delegate_task: its own overrides, then ours on top.
    If ours fail (bad config), the built-in's schema is returned unchanged."""
    static = {"description": entry.schema.get("description"), "parameters": entry.schema.get("parameters")}

    def overrides() -> dict[str, Any]:
        base = original() if original is not None else static
        if not isinstance(base, dict):
            base = static
        from . import hermes_api  # noqa: PLC0415

        if not hermes_api.compatible():
            return base
        from .runtime import warm_in_background  # noqa: PLC0415

        warm_in_background()  # once per process: hermes is up and building an agent
        try:
            return extended_builtin_schema({**static, **base})
        except Exception:  # noqa: BLE001 - a config error shows up in list_models/tool results instead
            return base

    overrides._hermes_delegate = True  # type: ignore[attr-defined]
    return overrides


def extend_builtin() -> bool:
    """Wrap the built-in delegate_task entry's dynamic_schema_overrides (once). True if done."""
    try:
        from tools.registry import registry  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        return False
    entry = registry.get_entry(BUILTIN)
    if entry is None or not hasattr(entry, "dynamic_schema_overrides"):
        return False
    current = entry.dynamic_schema_overrides
    if getattr(current, "_hermes_delegate", False):
        return True
    entry.dynamic_schema_overrides = builtin_overrides(entry, current)
    return True


def attach_live_schemas() -> None:
    """Point each registry entry at its live schema (best effort: the static one stays otherwise)."""
    try:
        from tools.registry import registry  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        return
    for name in STATIC:
        entry = registry.get_entry(name)
        if getattr(entry, "toolset", None) == TOOLSET and hasattr(entry, "dynamic_schema_overrides"):
            entry.dynamic_schema_overrides = overrides_for(name)
