"""Turn a batch of tasks into planned jobs, or refuse the whole batch before anything runs.

Pure: resolution, precedence, `model: auto` (the classifier is handed in), the allowlist, size limits,
budget pricing and downgrade. A batch with any bad task raises one BatchValidationError listing every
bad task, so an LLM can fix the call in one retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from functools import partial
from typing import Any, Callable, Sequence

from .auto import AutoPick, Classify, auto_map, is_auto, pick_auto, task_text, unmapped
from .budget import Pricing
from .config import DelegationSettings
from .downgrade import Ladder, Rung, fit_or_downgrade, ladder_names
from .errors import (BatchValidationError, BudgetError, DelegateError, NotAllowedError, ProviderError,
                     TaskPayloadError, TaskProblem, UsageError)
from .grammar import parse_model_string
from .precedence import pick_model
from .resolver import Resolution, Resolver

__all__ = ["Task", "PlannedTask", "plan_batch", "Allowlist"]

_GLOB = set("*?[")


@dataclass(frozen=True)
class Task:
    goal: str
    context: str | None = None
    model: str | None = None
    output_schema: dict[str, Any] | None = field(default=None, hash=False)  # a JSON Schema the answer must match
    files: tuple[str, ...] = ()  # paths a host reads into the context before planning (runtime/task_files.py)


@dataclass
class PlannedTask:
    index: int
    task: Task
    model_requested: str
    model_source: str
    resolution: Resolution
    reserve_usd: float | None = None  # what the budget holds back while it runs
    auto: AutoPick | None = None  # what `model: auto` chose (tier, score, model string)
    downgraded_from: str | None = None  # the model it would have run on, had that fitted the budget
    fallbacks: tuple[Rung, ...] = ()  # cheaper rungs it may still move to (downgrade), the best first

    @property
    def goal(self) -> str:
        return self.task.goal

    @property
    def origin(self) -> str:
        """The model string the task was to run on: auto's pick, or what was asked for."""
        return self.auto.model if self.auto else self.model_requested

    def downgraded(self, rung: Rung) -> "PlannedTask":
        """This task moved down to `rung` (one of its fallbacks)."""
        res = replace(rung.resolution, resolved_via="auto") if self.auto else rung.resolution
        rest = self.fallbacks[self.fallbacks.index(rung) + 1:] if rung in self.fallbacks else ()
        return replace(self, resolution=res, reserve_usd=rung.reserve_usd,
                       downgraded_from=self.downgraded_from or self.origin, fallbacks=rest)


class Allowlist:
    """`delegation.allow`: names or glob patterns. A model passes if the name the LLM wrote, any step
    of its alias chain, or its final id matches, or if its final id is what an allowed name resolves to."""

    def __init__(self, patterns: Sequence[str] | None, resolver: Resolver):
        self.patterns = list(patterns) if patterns is not None else None
        self._models: set[str] = set()
        for p in self.patterns or ():
            if not (_GLOB & set(p)):
                try:
                    self._models.add(resolver.resolve(p).model)
                except DelegateError:
                    pass

    @property
    def active(self) -> bool:
        return self.patterns is not None

    def allows(self, res: Resolution) -> bool:
        if self.patterns is None:
            return True
        if res.model in self._models:
            return True
        names = {res.input.strip(), res.input.split()[0] if res.input.split() else "", res.model, *res.chain}
        return any(fnmatchcase(n, p) for n in names for p in self.patterns)

    def check(self, res: Resolution) -> None:
        if not self.allows(res):
            raise NotAllowedError(
                f"Model {res.input.strip()!r} ({res.model}) is not allowed here.",
                hint=f"Pick one of the allowed models: {', '.join(self.patterns or [])}.",
                suggestions=[p for p in self.patterns or [] if not (_GLOB & set(p))],
            )


def _problem(index: int, model: object, exc: DelegateError) -> TaskProblem:
    text = exc.message + (f" {exc.hint}" if exc.hint else "")
    return TaskProblem(index=index, model=model if isinstance(model, str) else None, problem=text,
                       type=exc.kind, suggestions=list(exc.suggestions))


def _check_encodable(task: Task) -> None:
    """A lone surrogate (a half of a UTF-16 pair, e.g. from a broken JSON escape) cannot be sent as
    UTF-8: refuse it here, before anything is spent, instead of failing after the provider answered."""
    for name, value in (("goal", task.goal), ("context", task.context), ("model", task.model)):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise TaskPayloadError(
                    f"The {name} contains a lone surrogate (U+{ord(value[exc.start]):04X} at character "
                    f"{exc.start + 1}), which is not valid Unicode text.",
                    hint="Send valid UTF-8 text: a \\ud83d-style escape must be followed by its low half "
                         "(\\ude00), or removed.") from None


def _resolve(model: object, task: Task, resolver: Resolver, settings: DelegationSettings,
             classify: Classify | None) -> tuple[Resolution, AutoPick | None]:
    """The task's resolution; for `auto`, the model its complexity tier maps to (resolved_via auto)."""
    spec = parse_model_string(model) if isinstance(model, str) and model.lstrip().startswith("auto") else None
    if spec is None or not is_auto(spec):  # (the Resolver parses, and caches, every other model string)
        return resolver.resolve(model), None  # type: ignore[arg-type]
    if classify is None:
        raise UsageError("model auto needs the complexity classifier, which this planner was not given.",
                         hint="Plan through Delegator.plan, or pass a model.")
    pick = pick_auto(task_text(task.goal, task.context), classify, auto_map(settings.auto))
    try:
        res = resolver.resolve(pick.model)
    except ProviderError:
        raise
    except DelegateError as exc:
        raise unmapped(pick, exc) from None
    return replace(res, resolved_via="auto", pinned=res.pinned or spec.pinned), pick


def plan_batch(tasks: Sequence[Task], resolver: Resolver, settings: DelegationSettings, *,
               call_model: str | None = None, parent_model: str | None = None,
               allow: Allowlist | None = None, pricing: Pricing | None = None,
               classify: Classify | None = None,
               check_schema: Callable[[Any, str], Any] | None = None) -> list[PlannedTask]:
    """Resolve every task's model and check it, or raise before anything is spent. `classify` is
    LiteLLM's complexity classifier (text → tier, score), used only for tasks whose model is `auto`.
    `check_schema(schema, where)` checks a task's output_schema (raising TaskPayloadError); the caller
    supplies it (pure too)."""
    if not tasks:
        raise TaskPayloadError("The batch has no tasks.", hint="Give at least one task with a goal.")
    if len(tasks) > settings.max_tasks:
        raise TaskPayloadError(
            f"The batch has {len(tasks)} tasks; the limit is {settings.max_tasks} per call.",
            hint=f"Split the work into calls of at most {settings.max_tasks} tasks.",
        )
    allow = allow or Allowlist(settings.allow, resolver)
    ladder: Ladder | None = None
    if pricing is not None and settings.budget.on_over_budget == "downgrade":
        ladder = Ladder(ladder_names(settings.tiers, settings.aliases), resolver,
                        usable=lambda r: allow.allows(r) and _callable(resolver, r))
    planned: list[PlannedTask] = []
    problems: list[TaskProblem] = []
    callable_ok: dict[int, Resolution] = {}
    for i, task in enumerate(tasks):
        model: object = task.model
        try:
            if not isinstance(task.goal, str) or not task.goal.strip():
                raise TaskPayloadError("The task has no goal.", hint="Give each task a non-empty goal string.")
            _check_encodable(task)
            if task.output_schema is not None and check_schema is not None:
                check_schema(task.output_schema, "output_schema")
            size = len(task.goal) + len(task.context or "")
            if size > settings.max_input_chars:
                raise TaskPayloadError(
                    f"Goal plus context is {size:,} characters; the limit is {settings.max_input_chars:,}.",
                    hint="Summarise the context, or point the worker at a file instead of pasting it.")
            model, source = pick_model(task.model, call_model, settings.model, parent_model)
            res, auto = _resolve(model, task, resolver, settings, classify)
            if id(res) not in callable_ok:  # one check per Resolution (the Resolver caches one per string)
                try:
                    resolver.check_callable(res)  # an unset os.environ/ key or api_base: auth, nothing is sent
                except ProviderError as exc:  # this task's problem, listed with the others (type auth)
                    problems.append(_problem(i, model, exc))
                    continue
                callable_ok[id(res)] = res  # (held, so its id is not reused within the batch)
            allow.check(res)
            p = PlannedTask(i, task, str(model).strip(), source, res, auto=auto)
            if pricing is not None and pricing.cap_usd is not None:
                rung, fallbacks, downgraded_from = fit_or_downgrade(
                    p.origin, res, amount=partial(pricing.amount, task=task), fits=pricing.fits, ladder=ladder,
                    refuse=pricing.over_cap)
                if downgraded_from is not None:
                    p = p.downgraded(rung)
                p = replace(p, reserve_usd=rung.reserve_usd, fallbacks=fallbacks)
            planned.append(p)
        except ProviderError:
            raise  # a remote proxy that cannot be listed is not a fault of this task's model
        except DelegateError as exc:
            if isinstance(exc, BudgetError) and len(tasks) == 1:
                raise
            problems.append(_problem(i, model, exc))
    if problems:
        if all(p.type == "budget" for p in problems):
            hint = "Raise budget_usd, lower max_tokens, or pick cheaper models."
        elif all(p.type == "auth" for p in problems):
            hint = ("Set each variable named (or correct its os.environ/ reference in the config), or pick "
                    "a model that can run here, and call again.")
        else:
            hint = ""
        raise BatchValidationError(problems, hint=hint)
    return planned


def _callable(resolver: Resolver, res: Resolution) -> bool:
    try:
        resolver.check_callable(res)
    except ProviderError:
        return False
    return True
