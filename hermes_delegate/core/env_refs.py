"""LiteLLM's `os.environ/NAME` references: the one place they are parsed. Pure; values are read only
from the mapping the caller passes."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["ENV_REF", "env_ref_name", "env_ref", "resolve_env_ref"]

#: LiteLLM's prefix for "read this value from the environment variable that follows".
ENV_REF = "os.environ/"


def env_ref_name(value: Any) -> str | None:
    """`"os.environ/ZAI_API_KEY"` → `"ZAI_API_KEY"`; anything else → None."""
    if isinstance(value, str) and value.startswith(ENV_REF):
        return value[len(ENV_REF):]
    return None


def env_ref(name: str) -> str:
    """The reference LiteLLM reads for env var `name`."""
    return f"{ENV_REF}{name}"


def resolve_env_ref(value: Any, env: Mapping[str, str]) -> Any:
    """The value a reference stands for (None when the variable is unset); other values unchanged."""
    name = env_ref_name(value)
    return value if name is None else env.get(name)
