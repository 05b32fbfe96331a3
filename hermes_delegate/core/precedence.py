"""Which model a task runs on: per-task `model` > call-level `model` > config default > parent's model.

`None` and blank strings mean "unset: fall through" (LLMs send both for optional fields);
anything else is taken as the choice at that level, and a bad choice is an error, never skipped.
"""

from __future__ import annotations

from typing import Literal

from .errors import UsageError

__all__ = ["ModelSource", "pick_model", "is_unset"]

ModelSource = Literal["task", "call", "config", "parent"]
_LEVELS: tuple[ModelSource, ...] = ("task", "call", "config", "parent")


def is_unset(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def pick_model(task: object = None, call: object = None, config: object = None,
               parent: object = None) -> tuple[object, ModelSource]:
    """Return (model string, the level that won). Raises UsageError when no level sets one."""
    for level, value in zip(_LEVELS, (task, call, config, parent), strict=True):
        if not is_unset(value):
            return value, level
    raise UsageError(
        "No model for this task: none was given per task or per call, delegation.model is not set, "
        "and there is no parent model.",
        hint='Pass a model (e.g. "haiku" or "glm-4.7"), or set delegation.model in the config.',
    )
