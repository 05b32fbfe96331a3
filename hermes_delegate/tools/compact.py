"""What a parent model reads of a batch: the compact result, built from the full report.

The full report (`BatchResult.to_dict()`: deployment, attempt log, tokens, timings, cost per task)
is for people and programs (`hermes-delegate run --json`, the Python API, `detail: "full"`). A model
pays for every token it reads, so by default the tools hand it only what it acts on:

    {"results": [{"index": 0, "status": "completed", "model": "haiku-group", "summary": "…"},
                 {"index": 1, "status": "failed", "model": "glm-4.7",
                  "error": {"type": "rate_limit", "message": "…", "hint": "…"}}],
     "cost_usd": 0.0012, "budget_left_usd": 0.49}

Per task: its index (0-based, as in the call), status, the model that served it, its answer
(`output` for a task with an output_schema, else `summary`) and, when it did not complete, the
error's type, message and hint. Per batch: the cost (or how many costs are unknown), the budget left
under a cap, and the counts only when some task did not complete. No ids, no nulls, no deployments.
Pure: a dict in, a dict out.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["DETAILS", "compact_batch", "compact_task", "is_batch"]

#: The values of the tools' `detail` argument.
DETAILS = ("compact", "full")

#: What to do about a failure whose error carries no hint of its own (the engine's own statuses).
_DEFAULT_HINTS = {
    "timeout": "Retry with a smaller task, a faster model, or a longer delegation.task_timeout_s.",
    "budget": "Raise budget_usd, pick cheaper models, or run fewer tasks.",
    "interrupted": "The batch was stopped; call again to run it.",
    "rate_limit": "Retry later, or pick another model.",
    "server": "The provider failed: retry, or pick another model.",
    "connection": "The provider could not be reached: retry, or pick another model.",
    "bad_response": "The provider's answer was unusable: retry, or pick another model.",
    "auth": "The provider refused the credentials: pick another model (list_models shows which can run).",
    "not_found": "The provider does not serve this model: pick another (list_models).",
    "bad_request": "The provider refused the request: shorten the task, or pick another model.",
    "context_window": "The task is too long for this model: shorten it, or pick a model with a larger window.",
    "content_policy": "The provider refused the content: rephrase the task, or pick another model.",
    "bad_output": "Simplify the output_schema, or pick a stronger model.",
    "unknown": "Retry once; if it fails again, do the work without delegating.",
}


def is_batch(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("results"), list)


def _error(r: Mapping[str, Any]) -> dict[str, Any]:
    err = r.get("error")
    e: Mapping[str, Any] = err if isinstance(err, Mapping) else {}
    kind = e.get("type") or r.get("status")
    out: dict[str, Any] = {"type": kind}
    if e.get("message"):
        out["message"] = e["message"]
    hint = e.get("hint") or _DEFAULT_HINTS.get(str(kind))
    if hint:
        out["hint"] = hint
    return out


def compact_task(r: Mapping[str, Any], index_key: str = "index") -> dict[str, Any]:
    """One task of the full report, as a parent model reads it."""
    out: dict[str, Any] = {index_key: r.get("index"), "status": r.get("status")}
    model = r.get("model") or r.get("model_requested")
    if model:
        out["model"] = model
    if r.get("output") is not None:
        out["output"] = r["output"]
    elif r.get("summary"):
        out["summary"] = r["summary"]
    if r.get("status") != "completed":
        out["error"] = _error(r)
    return out


def compact_batch(full: Mapping[str, Any], index_key: str = "index") -> dict[str, Any]:
    """The full report (BatchResult.to_dict()) → what a parent model reads."""
    results = [compact_task(r, index_key) for r in full.get("results") or [] if isinstance(r, Mapping)]
    out: dict[str, Any] = {"results": results}
    counts = full.get("counts") or {}
    if set(counts) - {"completed"}:
        out["counts"] = dict(counts)
    cost = full.get("cost") or {}
    if cost.get("total_usd") is not None:
        out["cost_usd"] = cost["total_usd"]
    if cost.get("unknown"):
        out["cost_unknown_tasks"] = cost["unknown"]
    budget = full.get("budget") or {}
    if budget.get("cap_usd") is not None:
        spent = (budget.get("spent_usd") or 0.0) + (budget.get("reserved_usd") or 0.0)
        out["budget_left_usd"] = round(max(0.0, budget["cap_usd"] - spent), 6)
    return out
