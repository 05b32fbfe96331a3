"""Before a batch is planned and sent: the files its tasks name, and whether each task fits its model.

    tasks = attach_files(tasks, policy)      # read every task's `files` into its context, or refuse
    planned = plan_batch(tasks, ...)
    check_fit(delegator, planned)            # goal + context + files within the model's context window

Delegator.plan does all three (hosts pass their roots, or files="hint").

Both refuse the whole batch with one BatchValidationError listing every bad task (each problem typed:
the file rule that refused it, or `context_window` with the models that would fit), before anything
is sent. `hint_files` is the hermes variant: its children have file tools, so the paths go into the
goal as a hint and nothing is read here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Sequence

from ..core.budget import estimate_tokens
from ..core.errors import BatchValidationError, DelegateError, TaskProblem
from ..core.planning import PlannedTask, Task
from ..sources.files import FilePolicy, FileRefusedError, read_task_files, render_files

__all__ = ["policy_for", "attach_files", "hint_files", "check_fit"]


def policy_for(delegator: Any, roots: Iterable[str | os.PathLike[str]] | None = None) -> FilePolicy:
    """The host's roots (default: the working directory) plus `delegation.files.roots`."""
    f = delegator.config.delegation.files
    host_roots = list(roots) if roots is not None else [os.getcwd()]
    return FilePolicy.build([*host_roots, *f.roots], deny=f.deny, max_file_bytes=f.max_file_bytes,
                            max_task_bytes=f.max_task_bytes)


def attach_files(tasks: Sequence[Task], policy: FilePolicy) -> list[Task]:
    """Each task with `files`: their text appended to its context (files cleared). Every refusal of the
    batch at once, as a BatchValidationError; nothing is read from a file that breaks a rule."""
    out: list[Task] = []
    problems: list[TaskProblem] = []
    for i, t in enumerate(tasks):
        if not t.files:
            out.append(t)
            continue
        try:
            block = render_files(read_task_files(t.files, policy))
        except FileRefusedError as exc:
            problems.append(TaskProblem(i, t.model, f"{exc.message} {exc.hint}".strip(), exc.kind))
            continue
        ctx = f"{t.context}\n\n{block}" if t.context else block
        out.append(dataclasses.replace(t, context=ctx, files=()))
    if problems:
        raise BatchValidationError(problems, hint="Fix or drop the files listed (each says why), and call again; "
                                                  "nothing was read or sent.")
    return out


def hint_files(tasks: Sequence[Task]) -> list[Task]:
    """For children with file tools (hermes): the paths as a line of the goal, nothing read here."""
    return [dataclasses.replace(t, goal=f"{t.goal}\n\nFiles to read (use your file tools): {', '.join(t.files)}",
                                files=()) if t.files else t for t in tasks]


def _needed(delegator: Any, p: PlannedTask) -> int:
    s = delegator.config.delegation
    text = "\n".join(x for x in (s.system_prompt, p.task.goal, p.task.context or "") if x)
    return estimate_tokens(text)  # the window is the input's (max_input_tokens): the completion is not counted


def _fitting(delegator: Any, needed: int, skip: str) -> list[str]:
    """Configured names (aliases, groups) whose model has a known window that holds `needed` tokens."""
    r = delegator.resolver
    names = [*delegator.config.delegation.aliases, *r.groups]
    out: list[str] = []
    for name in dict.fromkeys(names):
        if name == skip:
            continue
        try:
            res = r.resolve(name)
        except DelegateError:
            continue
        window = delegator.context_window(res)
        if window and window >= needed and delegator.allowlist.allows(res) and name not in out:
            out.append(name)
    return out[:5]


def check_fit(delegator: Any, planned: Sequence[PlannedTask]) -> None:
    """Refuse every task whose system prompt + goal + context would not fit its model's known input
    context window, naming the configured models that would. A window that is not known is not checked."""
    problems: list[TaskProblem] = []
    windows: dict[str, int | None] = {}  # a batch names few models: each one's window looked up once
    for p in planned:
        if p.resolution.model not in windows:  # the window depends on the model (or group) name alone
            windows[p.resolution.model] = delegator.context_window(p.resolution)
        window = windows[p.resolution.model]
        if not window:
            continue
        needed = _needed(delegator, p)
        if needed <= window:
            continue
        fits = _fitting(delegator, needed, p.model_requested)
        advice = (f" Models that would fit: {', '.join(fits)}." if fits
                  else " No configured model has a window that large.")
        problems.append(TaskProblem(p.index, p.model_requested,
                                    f"About {needed:,} tokens (goal, context, files) do not fit {p.resolution.model}'s "
                                    f"context window of {window:,}.{advice}", "context_window", fits))
    if problems:
        raise BatchValidationError(problems, hint="Use a model with a larger window, or send fewer or smaller "
                                                  "files; nothing was sent.")
