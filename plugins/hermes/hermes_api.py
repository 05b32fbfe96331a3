"""hermes-agent's delegation internals, imported defensively.

Children are built and run by hermes's own `tools.delegate_tool` helpers so they get exactly the
built-in's restrictions (blocked tools, toolset intersection, depth, interrupt registration,
subagent_start). Those helpers are private (`_`-prefixed); if a hermes upgrade renames one or
drops a parameter we rely on, every tool call fails with one clear message instead of a traceback
from deep inside a child.
"""

from __future__ import annotations

import inspect
import threading
from types import ModuleType
from typing import Any

TESTED_WITH = "0.19.0"

# name -> keyword parameters we pass (checked against the live signature)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "_build_child_agent": ("task_index", "goal", "context", "toolsets", "model", "max_iterations",
                           "task_count", "parent_agent", "override_provider", "override_base_url",
                           "override_api_key", "override_api_mode", "override_max_tokens", "role"),
    "_run_single_child": ("task_index", "goal", "child", "parent_agent"),
    "_load_config": (),
    "_get_max_spawn_depth": (),
    "_get_max_concurrent_children": (),
    "_emit_parent_console": ("parent_agent", "line"),
    "_apply_summary_budget": ("results", "parent_agent"),
    "is_spawn_paused": (),
}
_lock = threading.Lock()
_checked: ModuleType | None = None


class HermesAPIError(RuntimeError):
    """The installed hermes-agent lacks a helper this plugin needs."""


def _hermes_version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("hermes-agent")
    except Exception:  # noqa: BLE001
        return "unknown"


def delegate_tool() -> ModuleType:
    """`tools.delegate_tool`, after checking every helper we call and its parameters."""
    global _checked
    with _lock:
        if _checked is not None:
            return _checked
        try:
            from tools import delegate_tool as dt  # noqa: PLC0415
        except Exception as exc:  # noqa: BLE001
            raise HermesAPIError(f"cannot import hermes-agent's tools.delegate_tool: {exc}") from None
        problems = []
        for name, params in _REQUIRED.items():
            fn = getattr(dt, name, None)
            if not callable(fn):
                problems.append(f"{name} is missing")
                continue
            try:
                have = inspect.signature(fn).parameters
            except (TypeError, ValueError):
                continue
            lacking = [p for p in params if p not in have]
            if lacking:
                problems.append(f"{name}() has no parameter {', '.join(lacking)}")
        if problems:
            raise HermesAPIError(
                f"hermes-delegate was built against hermes-agent {TESTED_WITH}; the installed "
                f"hermes-agent {_hermes_version()} differs: {'; '.join(problems)}. Install a "
                f"hermes-delegate release for this hermes-agent, or pin hermes-agent=={TESTED_WITH}.")
        _checked = dt
        return dt


def invoke_hook(name: str, **kwargs: Any) -> None:
    """Fire a hermes plugin hook for other plugins; never raises."""
    try:
        from hermes_cli.plugins import invoke_hook as _invoke  # noqa: PLC0415

        _invoke(name, **kwargs)
    except Exception:  # noqa: BLE001 - another plugin's hook must not break delegation
        pass


def thread_pool(max_workers: int, prefix: str) -> Any:
    """hermes's daemon pool (abandoned children never block interpreter exit), else the stdlib's."""
    try:
        from tools.daemon_pool import DaemonThreadPoolExecutor as Pool  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        from concurrent.futures import ThreadPoolExecutor as Pool  # noqa: PLC0415
    try:
        return Pool(max_workers=max_workers, thread_name_prefix=prefix)
    except TypeError:
        return Pool(max_workers=max_workers)


def toolset_of(tool_name: str) -> str | None:
    try:
        import model_tools  # noqa: PLC0415

        return model_tools.get_toolset_for_tool(tool_name)
    except Exception:  # noqa: BLE001
        return None


def saved_tool_names() -> list[str] | None:
    try:
        import model_tools  # noqa: PLC0415

        return list(model_tools._last_resolved_tool_names)
    except Exception:  # noqa: BLE001
        return None


def restore_tool_names(names: list[str] | None) -> None:
    """Child construction overwrites this global; the built-in restores it the same way."""
    if names is None:
        return
    try:
        import model_tools  # noqa: PLC0415

        model_tools._last_resolved_tool_names = names
    except Exception:  # noqa: BLE001
        pass
