"""hermes-delegate as a hermes-agent plugin: per-task model routing for real hermes subagents.

Extends hermes's own `delegate_task` with `model` (top level and per task): its schema through
the registry entry's dynamic_schema_overrides, its calls through a `tool_execution` middleware
that takes over exactly the calls naming a routed model (takeover.py). Adds `list_models`
(toolset `hermes-delegate`) and an `llm_execution` middleware that sends every LLM call of a
routed subagent through LiteLLM's Router. See docs/hermes.md.

Loaded as the pip entry point `hermes-delegate = "hermes_delegate_hermes"` or as a directory
plugin (~/.hermes/plugins/hermes-delegate/). register() imports no litellm and no pydantic: the
engine loads on the first schema build or tool call.
"""

from __future__ import annotations

from typing import Any

from .schema import DELEGATE_TOOL, LIST_TOOL, STATIC, TOOLSET, attach_live_schemas

__all__ = ["register", "TOOLSET", "DELEGATE_TOOL", "LIST_TOOL"]


def _list_models(args: Any = None, **kw: Any) -> str:
    from .adapter import list_models  # noqa: PLC0415

    return list_models(args, **kw)


def register(ctx: Any) -> None:
    import logging  # noqa: PLC0415

    from . import hermes_api, takeover  # noqa: PLC0415 - stdlib only
    from .middleware import llm_execution  # noqa: PLC0415 - stdlib only
    from .schema import extend_builtin  # noqa: PLC0415

    try:
        hermes_api.check()
    except hermes_api.HermesAPIError as exc:
        logging.getLogger("hermes_delegate.hermes").warning("%s", exc)
        return  # nothing registered: the built-in delegate_task works exactly as without the plugin
    ctx.register_tool(name=LIST_TOOL, toolset=TOOLSET, schema=STATIC[LIST_TOOL], handler=_list_models,
                      description=STATIC[LIST_TOOL]["description"], emoji="📋")
    attach_live_schemas()
    extend_builtin()
    ctx.register_middleware("tool_execution", takeover.tool_execution)
    ctx.register_middleware("llm_execution", llm_execution)
    # The engine warm-up (litellm import, Router build) starts on hermes's first tool-schema build,
    # i.e. once hermes has started and builds an agent (schema.builtin_overrides), never here.
