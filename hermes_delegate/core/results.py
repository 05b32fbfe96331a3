"""What a batch returns: plain dataclasses with `to_dict()`, the same shape from every host."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["Attempt", "DeploymentInfo", "TaskResult", "BatchResult", "Status", "ProgressEvent", "api_host"]

Status = Literal["completed", "failed", "timeout", "interrupted", "skipped_budget"]


@dataclass
class DeploymentInfo:
    """Who served a call. `api_host` is host[:port] only: never a path, query or credential."""

    provider: str | None
    deployment_id: str | None
    api_host: str | None = None
    model: str | None = None  # the provider-side model id (litellm_params.model)
    #: the limits in force when the task finished: {"rpm", "tpm", "max_parallel", "learned": [which of
    #: them came from the provider's headers], "rate_limited": 429s so far}; None when there are none
    limits: dict[str, Any] | None = None

    @classmethod
    def for_endpoint(cls, provider: str | None, base_url: str | None, model: str | None) -> "DeploymentInfo":
        """A call a host made itself (not through the Router): host[:port] of its base URL only."""
        return cls(provider=provider or None, deployment_id=None, api_host=api_host(base_url), model=model)


@dataclass
class Attempt:
    deployment: DeploymentInfo | None
    status: str  # "ok", an HTTP status ("429"), or an error kind ("timeout", "connection", …)
    wait_s: float = 0.0  # time spent waiting before this attempt (backoff, Retry-After, queueing)
    error: str | None = None
    #: the provider answered this attempt (so it may have billed it), whatever became of the answer
    paid: bool = False
    cost_usd: float | None = None  # what the answer cost (None: unknown, e.g. no usage or no price)


@dataclass
class TaskResult:
    index: int
    goal: str
    status: Status
    summary: str | None = None
    model_requested: str | None = None
    model: str | None = None
    model_source: str | None = None
    resolved_via: str | None = None  # how model_requested resolved; "auto": chosen by the classifier
    auto: dict[str, Any] | None = None  # model auto's choice: {tier, score, model}
    downgraded_from: str | None = None  # on_over_budget downgrade: the model it did not fit on
    deployment: DeploymentInfo | None = None
    attempts: list[Attempt] = field(default_factory=list)
    duration_s: float = 0.0
    tokens: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    cost_usd: float | None = None  # null when unknown, never 0 by default
    cost_estimated: bool = False  # a paid attempt's cost was unknown: the caps were charged its reservation
    error: dict[str, Any] | None = None  # {type, message, retryable}
    output: Any = None  # the parsed JSON answer of a task with output_schema

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attempts"] = len(self.attempts)
        d["attempt_log"] = [asdict(a) for a in self.attempts]
        return d


@dataclass
class BatchResult:
    results: list[TaskResult]
    total_duration_s: float
    budget: dict[str, Any] | None = None  # {cap_usd, spent_usd, reserved_usd}

    @property
    def ok(self) -> bool:
        return all(r.status == "completed" for r in self.results)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def cost(self) -> dict[str, Any]:
        known = [r.cost_usd for r in self.results if r.cost_usd is not None]
        ran = [r for r in self.results if r.status not in ("skipped_budget",)]
        unknown = sum(1 for r in ran if r.cost_usd is None and r.status == "completed")
        return {"total_usd": round(sum(known), 10) if known else (None if unknown else 0.0),
                "unknown": unknown}

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "counts": self.counts(),
            "total_duration_s": round(self.total_duration_s, 4),
            "sum_task_duration_s": round(sum(r.duration_s for r in self.results), 4),
            "cost": self.cost(),
            "budget": self.budget,
            "rate_limited": self.rate_limited(),
        }

    def rate_limited(self) -> list[dict[str, Any]]:
        """The 429s of this batch, per deployment (every attempt counted, retried or not)."""
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in self.results:
            for a in r.attempts:
                if a.status != "429" or a.deployment is None:
                    continue
                d = a.deployment
                key = (d.deployment_id, d.provider, d.model, d.api_host)
                row = rows.setdefault(key, {"deployment_id": d.deployment_id, "provider": d.provider,
                                            "model": d.model, "api_host": d.api_host, "count": 0})
                row["count"] += 1
        return sorted(rows.values(), key=lambda row: -row["count"])


@dataclass
class ProgressEvent:
    """Sent to a host's `on_event` callback: kind is "start" or "done"."""

    kind: Literal["start", "done"]
    index: int
    total: int
    goal: str
    model: str | None
    result: TaskResult | None = None


def api_host(url: str | None) -> str | None:
    """`https://user:pw@api.x.ai/v1?key=…` → `api.x.ai` (host[:port] only)."""
    if not url:
        return None
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        if not parts.hostname:
            return None
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    except ValueError:  # a port out of range or not a number: the config check names it (config_values)
        return None
