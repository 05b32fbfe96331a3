"""What the agent sees of the config: the tool schemas (OpenAI function-calling format), generated
from the live config. The list_models listing itself is the Delegator's (runtime/listing.py), the
one the CLI's `models` shows too.

The descriptions teach the model-string grammar by example, state the precedence, carry an explicit
DO NOT against the colon-prefix form, and list what this config defines (tiers, aliases, groups, the
allowlist, limits), so the LLM sees what exists. They are sent on every request: keep them short.
Resolving a name reads LiteLLM's catalog from disk but never imports litellm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from ..core.auto import AUTO_DOC
from ..core.errors import DelegateError
from ..core.resolver import TIER_NAMES

if TYPE_CHECKING:
    from ..runtime.delegator import Delegator

__all__ = [
    "MODEL_EXAMPLES",
    "PRECEDENCE",
    "COLON_DO_NOT",
    "UNSET",
    "delegate_task_function",
    "list_models_function",
    "configured_names",
]

#: The worked examples of a model string (a test guards that they stay in the schema).
MODEL_EXAMPLES = (
    "Model string forms: a bare id (`glm-4.7`); an alias or tier (`haiku`, `small`); "
    "an id through one provider (`stepfun/step-3.5-flash --provider openrouter`, "
    "`claude-opus-4-6 --provider anthropic`)."
)
PRECEDENCE = "Precedence: task model > call model > config default > parent (your own model)."
COLON_DO_NOT = (
    "DO NOT write the colon-prefix form `openrouter:stepfun/step-3.5-flash`: it is rejected. "
    "Write `stepfun/step-3.5-flash --provider openrouter`."
)
UNSET = 'null or "" means unset: falls through to the next level.'

_INTRO = (
    "Run subtasks in parallel, each on the model it names, and get every result back. "
    "A worker sees only its task's goal and context, not this conversation: put everything it needs there. "
    "One task: pass goal (and context, model). Several: pass tasks. Not both. "
    "Name files by path (files); don't paste them. "
    "Returns JSON: per task index, status, model, summary (or output; error on failure), and the batch cost."
)
_MAX_LISTED = 24  # names per category in the description; list_models has the rest


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", … (+{len(items) - _MAX_LISTED})" if len(items) > _MAX_LISTED else "")


def configured_names(delegator: Delegator) -> dict[str, dict[str, str | None]]:
    """Configured tiers and aliases → the id each resolves to (None when it does not resolve)."""
    out: dict[str, dict[str, str | None]] = {"tiers": {}, "aliases": {}}
    for name in delegator.config.delegation.aliases:
        try:
            target: str | None = delegator.resolver.resolve(name).model
        except DelegateError:
            target = None
        out["tiers" if name in TIER_NAMES else "aliases"][name] = target
    return out


def _money(x: float) -> str:
    return f"${x:.2f}" if x >= 0.1 else f"${x:g}"


def _config_lines(delegator: Delegator) -> list[str]:
    s = delegator.config.delegation
    names = configured_names(delegator)
    lines: list[str] = []
    for kind in ("tiers", "aliases"):
        if names[kind]:
            pairs = (f"{k}→{v or '(unresolvable)'}" for k, v in names[kind].items())
            lines.append(f"Configured {kind}: {_listing(pairs)}.")
    groups = list(delegator.resolver.groups)
    if groups:
        lines.append(f"Model groups: {_listing(groups)}.")
    if s.model:
        lines.append(f"Config default: {s.model}.")
    if delegator.parent_model:
        lines.append(f"Parent (your model): {delegator.parent_model}.")
    if s.allow is not None:
        allowed = _listing(s.allow) if s.allow else "(nothing)"
        lines.append(f"Allowed models only: {allowed}; anything else is refused.")
    limits = [f"at most {s.max_tasks} tasks per call"]
    if s.budget_usd is not None:
        limits.append(f"budget {_money(s.budget_usd)} per call")
    lines.append("Limits: " + "; ".join(limits) + ". list_models shows prices, context windows, credentials.")
    return lines


_OUTPUT_SCHEMA_PROPERTY: dict[str, Any] = {
    "type": "object",
    "description": "Optional JSON Schema the worker's answer must match; returned parsed as the task's "
                   "`output` (a mismatch after one retry fails the task: bad_output).",
}
_FILES_DOC = "Text files the worker reads (paths relative to the working directory)."


def _model_property(call_level: bool) -> dict[str, Any]:
    if call_level:
        text = (f"Model for every task without its own. {MODEL_EXAMPLES} {AUTO_DOC} {COLON_DO_NOT} "
                f"{PRECEDENCE} {UNSET}")
    else:
        text = (f"This task's model; overrides the call-level model. Same forms as the top-level model "
                f"(`auto`: picked from this task's complexity). {UNSET}")
    return {"type": "string", "description": text}


def delegate_task_function(delegator: Delegator, name: str = "delegate_task") -> dict[str, Any]:
    """The bare OpenAI function object for delegate_task, built from the delegator's config now."""
    s = delegator.config.delegation
    if s.budget_usd is not None:
        budget_doc = (f"Optional cost cap for this call in USD; may lower the configured {_money(s.budget_usd)}, "
                      "never raise it.")
    else:
        budget_doc = "Optional cost cap for this call in USD."
    budget_doc += " Tasks that would pass it are not started (status skipped_budget)."
    task_item = {
        "type": "object",
        "properties": {
            "goal": {"type": "string", "description": "What this worker must do (required)."},
            "context": {"type": "string", "description": "What it needs to know: files, facts, constraints."},
            "model": _model_property(call_level=False),
            "output_schema": _OUTPUT_SCHEMA_PROPERTY,
            "files": {"type": "array", "items": {"type": "string"}, "description": _FILES_DOC},
        },
        "required": ["goal"],
    }
    return {
        "name": name,
        "description": " ".join([_INTRO, *_config_lines(delegator)]),
        "parameters": {
            "type": "object",
            "properties": {
                "goal": {"type": "string", "description": "The task, for a single-task call (instead of tasks)."},
                "context": {"type": "string", "description": "Background for the single task. With tasks, it is "
                                                             "shared: prepended to each task's context."},
                "model": _model_property(call_level=True),
                "tasks": {
                    "type": "array",
                    "description": f"Several independent tasks, run in parallel (1 to {s.max_tasks}).",
                    "items": task_item,
                    "minItems": 1,
                    "maxItems": s.max_tasks,
                },
                "budget_usd": {"type": "number", "description": budget_doc},
                "output_schema": {**_OUTPUT_SCHEMA_PROPERTY, "description": "A JSON Schema for every task "
                                  "without its own output_schema (see tasks[].output_schema)."},
                "files": {"type": "array", "items": {"type": "string"},
                          "description": "Files for every task (see tasks[].files)."},
                "detail": {"enum": ["compact", "full"],
                           "description": '"full" adds deployments, attempts, tokens, timings.'},
            },
            "required": [],
        },
    }


def list_models_function(name: str = "list_models", delegate_name: str = "delegate_task") -> dict[str, Any]:
    return {
        "name": name,
        "description": (
            f"List what {delegate_name} may use: tiers and aliases with the id each resolves to; model groups "
            "with their deployments (provider, api host, context window, price per 1M tokens, credentials "
            "set/missing, cooling down); the allowlist; built-in family aliases. No arguments needed. "
            "Pass model to check one model string instead."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "model": {"type": "string",
                          "description": "Optional: one model string to check (what it resolves to, allowed, price)."},
            },
            "required": [],
        },
    }
