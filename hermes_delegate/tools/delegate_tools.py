"""The agent-facing tools, host-neutral: `delegate_task` and `list_models`.

Every host (the hermes plugin, the CLI, later MCP) wraps DelegateTools unchanged:

    tools = DelegateTools(Delegator(load_config()))
    tools.openai_tools()                        # the schemas, built from the live config
    out = await tools.delegate_task(arguments)  # a JSON string; never raises for bad input

Arguments are taken as LLMs actually send them (a JSON string, `tasks` as a JSON string, null
models); anything malformed becomes one JSON error with a hint, before anything is spent.
Constructing DelegateTools and building the schemas never imports litellm.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import os
import traceback
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import schema as tool_schema
from .compact import DETAILS, compact_batch
from ..runtime.sync import run_sync as _run_sync
from ..core.budget import BUDGET_HINT, finite_usd
from ..runtime.delegator import context_text
from ..core.errors import DelegateError, ProviderError, TaskPayloadError, TaskProblem
from ..core.planning import Task
from ..core.precedence import is_unset
from ..core.redact import default_redactor
from ..core.text import finite, utf8, utf8_deep

if TYPE_CHECKING:
    from ..runtime.delegator import Delegator
    from ..runtime.fanout import EventCallback

__all__ = ["DelegateTools", "tool_error", "internal_error"]

log = logging.getLogger("hermes_delegate.tools.delegate_tools")

_TOP_KEYS = ("goal", "context", "model", "tasks", "budget_usd", "output_schema", "files", "detail")
_TASK_KEYS = ("goal", "context", "model", "output_schema", "files")
#: What LLMs write instead of our key names.
_SYNONYMS = {"task": "goal", "prompt": "goal", "description": "goal", "instruction": "goal",
             "instructions": "goal", "query": "goal", "objective": "goal", "question": "goal",
             "subtasks": "tasks", "jobs": "tasks", "batch": "tasks", "budget": "budget_usd",
             "max_budget_usd": "budget_usd", "models": "model", "provider": "model", "background": "context",
             "details": "context"}
_TASK_SHAPE = '{"goal": "...", "context": "...", "model": "..."}'


# -- errors -------------------------------------------------------------------------------------
def tool_error(exc: DelegateError) -> dict[str, Any]:
    """THE mapping of our errors to a JSON tool error: {error, hint, suggestions, type[, tasks]}.
    Redacted with the process-wide redactor (it knows every Delegator's secrets): a host may call this
    without a Delegator, e.g. for a config that did not load. Every string in it encodes as UTF-8 (a lone
    surrogate echoed from the input becomes U+FFFD)."""
    out: dict[str, Any] = {"error": exc.message, "hint": exc.hint, "suggestions": list(exc.suggestions),
                           "type": exc.kind}
    if isinstance(exc, ProviderError):
        out["retryable"] = exc.retryable
    problems: list[TaskProblem] | None = getattr(exc, "problems", None)
    if problems:
        out["tasks"] = [p.to_dict() for p in problems]
        if not out["suggestions"] and all(p.suggestions == problems[0].suggestions for p in problems):
            out["suggestions"] = list(problems[0].suggestions)  # one fix for the whole call
    scrubbed: dict[str, Any] = utf8_deep(default_redactor().scrub(out))  # both keep the shape
    return scrubbed


def internal_error(exc: BaseException) -> dict[str, Any]:
    """An unexpected exception inside a handler: its type only, never its text or traceback."""
    return {"error": f"internal error: {type(exc).__name__}",
            "hint": "Not caused by your call (it is logged). Retry once; if it fails again, do the work "
                    "without delegating.",
            "suggestions": [], "type": "internal"}


def _payload(message: str, hint: str = "", suggestions: list[str] | None = None) -> TaskPayloadError:
    return TaskPayloadError(message, hint=hint, suggestions=suggestions)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "array"
    return "object" if isinstance(v, Mapping) else type(v).__name__


def _short(v: Any, n: int = 60) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"


def _suggest_key(key: object, valid: tuple[str, ...]) -> list[str]:
    k = str(key).strip().lower()
    if k in _SYNONYMS and _SYNONYMS[k] in valid:
        return [_SYNONYMS[k]]
    return difflib.get_close_matches(k, valid, n=1, cutoff=0.6)


def _unknown_keys(keys: list[Any], valid: tuple[str, ...]) -> tuple[str, list[str]]:
    parts, sugg = [], []
    for k in keys:
        s = _suggest_key(k, valid)
        parts.append(f"{str(k)!r}" + (f" (did you mean {s[0]!r}?)" if s else ""))
        sugg += [x for x in s if x not in sugg]
    return ", ".join(parts), sugg


# -- argument parsing ---------------------------------------------------------------------------
def _loads(text: str, what: str) -> Any:
    """Decode a JSON string (twice, for double-encoded payloads)."""
    value: Any = text
    for _ in range(2):
        try:
            value = json.loads(value)
        except RecursionError:
            raise _payload(f"{what} is nested too deeply.", hint="Send a flat JSON object or string.") from None
        except ValueError as exc:
            if value is not text:
                return value
            detail = f" ({exc.msg} at line {exc.lineno} column {exc.colno})" if isinstance(
                exc, json.JSONDecodeError) else ""
            raise _payload(f"{what} is a string that is not valid JSON{detail}.",
                           hint=f"Send {what} as JSON, e.g. {{\"tasks\": [{_TASK_SHAPE}]}}.") from None
        if not isinstance(value, str):
            return value
    return value


def _args_object(args: Any, tool: str) -> dict[str, Any]:
    if args is None or (isinstance(args, str) and not args.strip()):
        return {}
    if isinstance(args, (str, bytes, bytearray)):
        args = _loads(args.decode() if isinstance(args, (bytes, bytearray)) else args, f"The {tool} arguments")
    if not isinstance(args, Mapping):
        raise _payload(f"The {tool} arguments must be a JSON object, got {_json_type(args)}.",
                       hint=f'Call {tool} with an object, e.g. {{"goal": "...", "model": "haiku"}}.')
    return dict(args)


def _model_field(value: Any, where: str) -> tuple[str | None, str | None]:
    """(model or None when unset, problem text)."""
    if is_unset(value):
        return None, None
    if not isinstance(value, str):
        return None, f"{where} must be a string or null, got {_json_type(value)}."
    return value, None


def _context_field(value: Any) -> str | None:
    if is_unset(value):
        return None
    return context_text(value)  # an object/list of facts is kept as JSON text (depth-capped)


def _budget_field(value: Any) -> float | None:
    if is_unset(value):
        return None
    num: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        num = value
    elif isinstance(value, str):
        try:
            num = float(value.strip().lstrip("$").strip())
        except ValueError:
            num = None
    if num is None:
        raise _payload(f"budget_usd must be a number of US dollars, got {_json_type(value)} {_short(value)}.",
                       hint=BUDGET_HINT)
    return finite_usd(num)  # ≤ 0 and above-the-cap are the budget's to refuse (budget.effective_cap)


def _task_list(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        raw = _loads(raw, "tasks")
    if isinstance(raw, Mapping):
        hint = ('Wrap the object in an array: "tasks": [{...}].' if "goal" in raw
                else f'Pass "tasks": [{_TASK_SHAPE}, ...].')
        raise _payload("tasks must be an array of task objects, got an object.", hint=hint)
    if not isinstance(raw, (list, tuple)):
        raise _payload(f"tasks must be an array of task objects, got {_json_type(raw)}.",
                       hint=f'Pass "tasks": [{_TASK_SHAPE}, ...].')
    if not raw:
        raise _payload("tasks is empty: the batch has no tasks.",
                       hint="Give at least one task with a goal, or use top-level goal for one task.")
    return list(raw)


def _schema_field(value: Any, where: str = "output_schema") -> dict[str, Any] | None:
    if is_unset(value):
        return None
    from ..runtime.structured import check_output_schema  # noqa: PLC0415 - jsonschema only when asked for

    return check_output_schema(value, where)


def _files_field(value: Any, where: str) -> tuple[str, ...]:
    """`files`: a path or a list of paths (strings); anything else is a payload error."""
    if is_unset(value):
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) and x.strip() for x in items):
        raise _payload(f"{where} must be a list of file paths (strings), got {_json_type(value)} {_short(value)}.",
                       hint='E.g. "files": ["src/app.py", "README.md"] (relative to the server\'s working '
                            "directory).")
    return tuple(dict.fromkeys(x.strip() for x in items))


def _detail_field(value: Any) -> str:
    if is_unset(value):
        return "compact"
    if value not in DETAILS:
        raise _payload(f"detail must be one of {', '.join(DETAILS)}, got {_short(value)}.",
                       hint='Leave it out for the compact result; pass "full" for deployments, attempts, '
                            "tokens and timings.")
    return str(value)


def _one_task(i: int, raw: Any, shared_context: str | None,
              shared_schema: dict[str, Any] | None = None,
              shared_files: tuple[str, ...] = ()) -> tuple[Task | None, TaskProblem | None]:
    def bad(text: str, model: Any = None, sugg: list[str] | None = None) -> tuple[None, TaskProblem]:
        return None, TaskProblem(i, model if isinstance(model, str) else None, text, "payload", sugg or [])

    who = f"Task {i + 1} (tasks[{i}])"  # 1-based for people, the 0-based index the JSON uses
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            raw = json.loads(raw)
        except ValueError:
            pass
    if not isinstance(raw, Mapping):
        example = json.dumps({"goal": raw}) if isinstance(raw, str) else _TASK_SHAPE
        return bad(f"{who} is a {_json_type(raw)}, not an object; write it as {_short(example, 80)}.")
    model = raw.get("model")
    unknown = [k for k in raw if k not in _TASK_KEYS]
    if unknown:
        text, sugg = _unknown_keys(unknown, _TASK_KEYS)
        return bad(f"{who} has unknown key(s) {text}; a task has goal, context and model "
                   "(and optionally output_schema, files).", model, sugg)
    goal = raw.get("goal")
    if goal is None:
        return bad(f"{who} has no goal.", model)
    if not isinstance(goal, str):
        return bad(f"{who}: goal must be a string, got {_json_type(goal)}.", model)
    if not goal.strip():
        return bad(f"{who} has an empty goal.", model)
    model_str, problem = _model_field(model, f"{who}: model")
    if problem:
        return bad(problem)
    try:
        schema = _schema_field(raw.get("output_schema"), f"{who}: output_schema") or shared_schema
    except TaskPayloadError as exc:
        return bad(f"{exc.message} {exc.hint}".strip(), model)
    try:
        files = tuple(dict.fromkeys((*shared_files, *_files_field(raw.get("files"), f"{who}: files"))))
    except TaskPayloadError as exc:
        return bad(f"{exc.message} {exc.hint}".strip(), model)
    ctx = _context_field(raw.get("context"))
    if shared_context:
        ctx = f"{shared_context}\n\n{ctx}" if ctx else shared_context
    return Task(goal=goal, context=ctx, model=model_str, output_schema=schema, files=files), None


def parse_call(args: Any, tool: str = "delegate_task") -> tuple[list[Task], str | None, float | None]:
    """The delegate_task arguments → (tasks, call-level model, budget_usd). Raises TaskPayloadError.

    Checks shape only; what each model means (and whether it is allowed) is Delegator.plan's job."""
    tasks, model, budget, _ = parse_request(args, tool)
    return tasks, model, budget


def parse_request(args: Any, tool: str = "delegate_task") -> tuple[list[Task], str | None, float | None, str]:
    """parse_call, plus `detail` ("compact" or "full")."""
    data = _args_object(args, tool)
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        text, sugg = _unknown_keys(unknown, _TOP_KEYS)
        raise _payload(f"Unknown argument(s) {text}.", suggestions=sugg,
                       hint=f"{tool} takes goal, context, model, tasks, budget_usd, output_schema, files "
                            "and detail.")
    call_model, problem = _model_field(data.get("model"), "model")
    if problem:
        raise _payload(problem, hint='Pass a model string such as "haiku" or "glm-4.7", or null.')
    budget = _budget_field(data.get("budget_usd"))
    schema = _schema_field(data.get("output_schema"))
    detail = _detail_field(data.get("detail"))
    shared_files = _files_field(data.get("files"), "files")
    goal, tasks_raw = data.get("goal"), data.get("tasks")
    has_goal = not is_unset(goal)
    has_tasks = not is_unset(tasks_raw) and not (has_goal and isinstance(tasks_raw, (list, tuple)) and not tasks_raw)
    if has_goal and has_tasks:
        raise _payload("Both goal and tasks were given: pick one.",
                       hint="Use goal (with context, model) for one task, or tasks for several. "
                            "To run this goal too, add it to tasks as {\"goal\": \"...\"}.")
    if has_tasks:
        shared = _context_field(data.get("context"))
        items = _task_list(tasks_raw)
        tasks, problems = [], []
        for i, raw in enumerate(items):
            task, prob = _one_task(i, raw, shared, schema, shared_files)
            if prob:
                problems.append(prob)
            elif task:
                tasks.append(task)
        if problems:
            n = len(problems)
            msg = problems[0].problem if n == 1 else f"{n} tasks are malformed; nothing was started."
            sugg = problems[0].suggestions if n == 1 else []
            raise TaskPayloadError(msg, hint=f"Each task is an object {_TASK_SHAPE}; only goal is required.",
                                   suggestions=sugg, problems=problems)  # tool_error lists them as "tasks"
        return tasks, call_model, budget, detail
    if has_goal:
        if not isinstance(goal, str):
            hint = ('For several tasks use "tasks": [{"goal": "..."}, ...].' if isinstance(goal, (list, tuple))
                    else "Pass the task as a string.")
            raise _payload(f"goal must be a string, got {_json_type(goal)}.", hint=hint)
        task = Task(goal=goal, context=_context_field(data.get("context")), output_schema=schema, files=shared_files)
        return [task], call_model, budget, detail
    what = "goal is empty" if "goal" in data else "No task given"
    raise _payload(f"{what}: pass goal (one task) or tasks (several).",
                   hint='E.g. {"goal": "find the TODOs in src/", "model": "haiku"}.')


class DelegateTools:
    """delegate_task and list_models over one Delegator. Results and errors are JSON strings.

    A batch answers with the compact result a parent model reads (tools/compact.py); `detail: "full"`
    in the call gives the full report (BatchResult.to_dict()). `files` are read from under `roots`
    (default: the working directory; plus delegation.files.roots) into each task's context, or, with
    files="hint" (hosts whose children have file tools), named in the goal instead. `index_key`
    names the compact result's task index (hermes reads `task_index`)."""

    def __init__(self, delegator: Delegator, *, tool_name: str = "delegate_task",
                 list_name: str = "list_models", roots: Iterable[str | os.PathLike[str]] | None = None,
                 files: str = "read", index_key: str = "index"):
        self.delegator = delegator
        self.tool_name = tool_name
        self.list_name = list_name
        self.roots = list(roots) if roots is not None else None
        self.files_mode = files
        self.index_key = index_key

    # -- schemas (built from the config in force, every time) -------------------------------
    def delegate_task_function(self) -> dict[str, Any]:
        fn = tool_schema.delegate_task_function(self.delegator, self.tool_name)
        fn["description"] = fn["description"].replace("list_models", self.list_name)
        return fn

    def list_models_function(self) -> dict[str, Any]:
        return tool_schema.list_models_function(self.list_name, self.tool_name)

    def openai_tools(self) -> list[dict[str, Any]]:
        return [{"type": "function", "function": self.delegate_task_function()},
                {"type": "function", "function": self.list_models_function()}]

    # -- delegate_task ----------------------------------------------------------------------
    def parse_call(self, args: Any) -> tuple[list[Task], str | None, float | None]:
        return parse_call(args, self.tool_name)

    def parse_request(self, args: Any) -> tuple[list[Task], str | None, float | None, str]:
        return parse_request(args, self.tool_name)

    async def delegate_task(self, args: Any, *, on_event: EventCallback | None = None) -> str:
        try:
            # in a thread: a new output_schema's check (up to ~0.4 s) never holds up other sessions
            tasks, model, budget, detail = await asyncio.to_thread(self.parse_request, args)
            planned, cap = self.delegator.plan(tasks, model=model, budget_usd=budget, roots=self.roots,
                                               files=self.files_mode)
            batch = await self.delegator.run_planned(planned, cap=cap, on_event=on_event)
            full = batch.to_dict()
            return self._dump(full if detail == "full" else compact_batch(full, self.index_key))
        except DelegateError as exc:
            return self._dump(tool_error(exc))
        except Exception as exc:  # noqa: BLE001 - the boundary: no traceback reaches the LLM
            return self._internal(self.tool_name, exc)

    def delegate_task_sync(self, args: Any, *, on_event: EventCallback | None = None) -> str:
        return _run_sync(lambda: self.delegate_task(args, on_event=on_event))

    # -- list_models ------------------------------------------------------------------------
    async def list_models(self, args: Any = None) -> str:
        try:
            data = _args_object(args, self.list_name)
            model = data.get("model")
            if not is_unset(model):
                out = await self.delegator.check_model(model)
            else:
                out = await self.delegator.model_listing()  # the one listing (the CLI's `models` too)
            return self._dump(out)
        except DelegateError as exc:
            return self._dump(tool_error(exc))
        except Exception as exc:  # noqa: BLE001
            return self._internal(self.list_name, exc)

    def list_models_sync(self, args: Any = None) -> str:
        return _run_sync(lambda: self.list_models(args))

    # -- output -----------------------------------------------------------------------------
    def _dump(self, obj: Any) -> str:
        """The one way a tool answer leaves: redacted with the Delegator's redactor, strict JSON (a NaN
        or infinity, e.g. in a provider's structured answer, becomes null) and valid UTF-8 (a lone
        surrogate, e.g. echoed by a provider, becomes U+FFFD)."""
        return utf8(json.dumps(finite(self.delegator.redactor.scrub(obj)), ensure_ascii=False, default=str,
                               allow_nan=False))

    def _internal(self, tool: str, exc: BaseException) -> str:
        # our loggers carry the redacting filter (installed when the Delegator was created)
        log.error("%s: unexpected error\n%s", tool, "".join(traceback.format_exception(exc)))
        return json.dumps(internal_error(exc))
