"""Every error hermes-delegate raises, in one tree.

    DelegateError                      base: catch this to catch everything of ours
    ├── UsageError                     the caller's mistake; fix the input and call again
    │   ├── SpecError                  a malformed model string ("openrouter:x", "", "--bogus")
    │   ├── UnknownModelError          a name that resolves to nothing
    │   ├── UnknownProviderError       a --provider slug that is not known
    │   ├── AmbiguousModelError        a bare id served by several providers
    │   ├── NotAllowedError            a model outside delegation.allow
    │   ├── ConfigError                a bad config file (names the file and the key path)
    │   ├── TaskPayloadError           a malformed tool call / task list
    │   ├── BudgetError                a budget that cannot be honoured (too small, unpriced model)
    │   └── BatchValidationError       several tasks are bad at once; carries one problem per task
    └── ProviderError                  a runtime failure of a provider call (typed by `kind`)

Every error carries `hint` (what to do instead) and `suggestions` (ready-to-use names),
so hosts can turn it into a message an LLM can act on without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DelegateError",
    "UsageError",
    "SpecError",
    "UnknownModelError",
    "UnknownProviderError",
    "AmbiguousModelError",
    "NotAllowedError",
    "ConfigError",
    "TaskPayloadError",
    "BudgetError",
    "BatchValidationError",
    "TaskProblem",
    "ProviderError",
]


class DelegateError(Exception):
    """Base class. `str(err)` is the message; `hint` and `suggestions` say what to do."""

    kind = "error"

    def __init__(self, message: str, *, hint: str = "", suggestions: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.suggestions = list(suggestions or [])

    def __str__(self) -> str:
        text = self.message
        if self.suggestions:
            text += f" Did you mean: {', '.join(self.suggestions)}?"
        if self.hint:
            text += f" {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "error": self.message, "hint": self.hint, "suggestions": self.suggestions}


class UsageError(DelegateError):
    kind = "usage"


class SpecError(UsageError):
    kind = "spec"


class UnknownModelError(UsageError):
    kind = "unknown_model"


class UnknownProviderError(UsageError):
    kind = "unknown_provider"


class AmbiguousModelError(UsageError):
    kind = "ambiguous"


class NotAllowedError(UsageError):
    kind = "not_allowed"


class ConfigError(UsageError):
    kind = "config"


class TaskPayloadError(UsageError):
    kind = "payload"

    #: One entry per malformed task, when a task list is checked as a whole (tool_error lists them
    #: as "tasks"); empty for an error about the call itself.
    problems: list[TaskProblem]

    def __init__(self, message: str, *, hint: str = "", suggestions: list[str] | None = None,
                 problems: list[TaskProblem] | None = None):
        super().__init__(message, hint=hint, suggestions=suggestions)
        self.problems = list(problems or [])


class BudgetError(UsageError):
    kind = "budget"


@dataclass
class TaskProblem:
    """What is wrong with one task of a batch."""

    index: int
    model: str | None
    problem: str
    type: str = "spec"
    suggestions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "model": self.model,
            "type": self.type,
            "problem": self.problem,
            "suggestions": self.suggestions,
        }


class BatchValidationError(UsageError):
    """Raised before anything runs when one or more tasks cannot be resolved or are not allowed."""

    kind = "invalid_tasks"

    def __init__(self, problems: list[TaskProblem], *, hint: str = ""):
        n = len(problems)
        msg = f"{n} task{'s' if n != 1 else ''} cannot run; nothing was started."
        super().__init__(
            msg,
            hint=hint or "Fix the model of each listed task (use one of its suggestions) and call again.",
        )
        self.problems = problems

    def __str__(self) -> str:
        """One line per task, numbered as people count (`Task 2 (tasks[1])`: 1-based, then the 0-based
        `index` the JSON carries), as the tools name a task."""
        lines = [self.message]
        for p in self.problems:
            sug = f" (try: {', '.join(p.suggestions)})" if p.suggestions else ""
            model = f" [{p.model}]" if p.model else ""
            lines.append(f"  Task {p.index + 1} (tasks[{p.index}]){model}: {p.problem}{sug}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["tasks"] = [p.to_dict() for p in self.problems]
        return out


class ProviderError(DelegateError):
    """A provider call failed at run time. `kind` names the failure class a caller can branch on:
    rate_limit, timeout, connection, server, bad_response, auth, bad_request, not_found,
    context_window, content_policy, budget_exceeded, interrupted, queue_timeout (waited
    delegation.max_queue_wait_s in the rate-limit queue; nothing sent), limiter_unavailable, unknown."""

    RETRYABLE = {"rate_limit", "timeout", "connection", "server", "bad_response", "queue_timeout"}

    #: Every attempt made for the call that failed (routing.Attempt rows), filled in by the router.
    attempts: list[Any]
    #: True for a 200 the provider sent that carried no usable choices (retried elsewhere once).
    unusable_200: bool
    #: How often LiteLLM's Router may retry the call that raised it; None: the Router's own setting
    #: (the Router reads it off an exception, and fills it in from a deployment's `num_retries`).
    num_retries: int | None

    def __init__(self, kind: str, message: str, *, status_code: int | None = None, hint: str = "",
                 attempts: list[Any] | None = None, unusable_200: bool = False, num_retries: int | None = None):
        super().__init__(message, hint=hint)
        self.kind = kind
        self.status_code = status_code
        self.attempts = list(attempts or [])
        self.unusable_200 = unusable_200
        self.num_retries = num_retries

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.kind, "message": self.message, "retryable": self.retryable,
               "status_code": self.status_code}
        if self.hint:
            out["hint"] = self.hint
        return out
