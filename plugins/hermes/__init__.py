"""hermes-delegate as a hermes-agent plugin: per-task model routing for real hermes subagents.

Adds the tools `delegate_tasks` and `list_models` (toolset `hermes-delegate`) and an
`llm_execution` middleware that sends every LLM call of a routed subagent through LiteLLM's
Router. See docs/hermes.md.

Loaded as the pip entry point `hermes-delegate = "hermes_delegate_hermes"` or as a directory
plugin (~/.hermes/plugins/hermes-delegate/). register() imports no litellm and no pydantic: the
engine loads on the first schema build or tool call.
"""

from __future__ import annotations

from typing import Any

from .schema import DELEGATE_TOOL, LIST_TOOL, STATIC, TOOLSET, attach_live_schemas

__all__ = ["register", "TOOLSET", "DELEGATE_TOOL", "LIST_TOOL"]


def _delegate_tasks(args: Any, **kw: Any) -> str:
    from .adapter import delegate_tasks  # noqa: PLC0415

    return delegate_tasks(args, **kw)


def _list_models(args: Any = None, **kw: Any) -> str:
    from .adapter import list_models  # noqa: PLC0415

    return list_models(args, **kw)


def register(ctx: Any) -> None:
    from .middleware import llm_execution  # noqa: PLC0415 - stdlib only

    ctx.register_tool(name=DELEGATE_TOOL, toolset=TOOLSET, schema=STATIC[DELEGATE_TOOL], handler=_delegate_tasks,
                      description=STATIC[DELEGATE_TOOL]["description"], emoji="🔀")
    ctx.register_tool(name=LIST_TOOL, toolset=TOOLSET, schema=STATIC[LIST_TOOL], handler=_list_models,
                      description=STATIC[LIST_TOOL]["description"], emoji="📋")
    attach_live_schemas()
    ctx.register_middleware("llm_execution", llm_execution)
