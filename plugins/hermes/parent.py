"""The running hermes agent that called our tool, and its model as a LiteLLM id.

hermes 0.19 hands a plugin tool handler only `task_id`, `session_id` and `user_task`, never the
agent (model_tools.py l.1271-1277). Tools always run on a call stack that holds the owning
AIAgent (agent/tool_executor.execute_tool_calls_sequential's `agent`, or `self` in
AIAgent._invoke_tool on the concurrent path; hermes_api.FRAME_LOCALS, checked by the version
guard), so we walk the stack to the nearest one and cross-check its session_id. Fallback: the
interactive CLI's agent, only when its session_id matches. Never a search of the process's other
objects: an agent found there may be another session's (or a stale one of this session).
"""

from __future__ import annotations

import sys
from typing import Any

from .hermes_api import FRAME_LOCALS

_NAMES = tuple(dict.fromkeys(name for _, _, name in FRAME_LOCALS))  # agent, self, parent_agent


def _agent_class() -> type | None:
    mod = sys.modules.get("run_agent")
    return getattr(mod, "AIAgent", None) if mod is not None else None


def find_parent(session_id: str | None = None, *, start: Any = None) -> Any:
    """The AIAgent running this tool call, or None."""
    cls = _agent_class()
    if cls is None:
        return None
    nearest = None
    frame = start or sys._getframe(1)
    while frame is not None:
        for name in _NAMES:
            obj = frame.f_locals.get(name)
            if isinstance(obj, cls):
                if not session_id or getattr(obj, "session_id", None) == session_id:
                    return obj
                nearest = nearest or obj
        frame = frame.f_back
    if session_id:
        found = _cli_agent(cls, session_id)
        if found is not None:
            return found
    return nearest


def _cli_agent(cls: type[Any], session_id: str) -> Any:
    from . import hermes_api  # noqa: PLC0415

    agent = hermes_api.cli_agent()
    return agent if isinstance(agent, cls) and agent.session_id == session_id else None


def litellm_model_for(provider: str | None, model: str | None,
                      base_url: str | None = None) -> tuple[str | None, str | None]:
    """(LiteLLM id, api_base) for a hermes provider/model pair.

    anthropic + claude-x → anthropic/claude-x; openrouter + a/b → openrouter/a/b; custom, local
    or an unknown slug → openai/<model> on the agent's base_url (any OpenAI-compatible server).
    """
    if not model:
        return None, None
    slug = (provider or "").strip().lower()
    if slug in ("", "custom", "local", "auto") or slug.startswith("custom:"):
        return f"openai/{model}", base_url
    from hermes_delegate import DelegateError  # noqa: PLC0415
    from hermes_delegate import provider_for_slug  # noqa: PLC0415

    try:
        info = provider_for_slug(slug)
    except DelegateError:
        return f"openai/{model}", base_url
    if model.startswith(info.prefix + "/"):
        return model, info.api_base
    return f"{info.prefix}/{model}", info.api_base


def parent_model(agent: Any) -> str | None:
    """Precedence level 4: the calling agent's own model, as a LiteLLM id."""
    return litellm_model_for(getattr(agent, "provider", None), getattr(agent, "model", None),
                             getattr(agent, "base_url", None))[0]
