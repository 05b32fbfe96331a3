"""What a subagent is: a small interface, and the standalone implementation.

A host (hermes, later MCP) supplies its own Worker; the engine only needs `run(job)`.
The standalone CompletionWorker is one chat completion through the Router.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..core.results import Attempt, DeploymentInfo
from . import structured

if TYPE_CHECKING:
    from ..core.resolver import Resolution
    from ..routing.router import RouterHandle

__all__ = ["Job", "WorkerOutput", "Worker", "CompletionWorker", "build_messages"]


@dataclass
class Job:
    """One planned task, as a worker sees it."""

    index: int
    goal: str
    context: str | None
    resolution: Resolution
    model_source: str
    system_prompt: str
    max_tokens: int | None = None
    timeout_s: float | None = None
    total: int = 1  # tasks in the batch (hosts show "[i/n]")
    output_schema: dict[str, Any] | None = None  # answer with JSON matching it (structured.py)


@dataclass
class WorkerOutput:
    summary: str
    tokens: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    cost_usd: float | None = None
    deployment: DeploymentInfo | None = None
    attempts: list[Attempt] = field(default_factory=list)
    output: Any = None  # the parsed JSON answer, for a job with output_schema


@runtime_checkable
class Worker(Protocol):
    """Runs one job to completion. Raise ProviderError (or any exception) to fail only that job."""

    async def run(self, job: Job) -> WorkerOutput: ...


def build_messages(job: Job) -> list[dict[str, Any]]:
    user = job.goal if not job.context else f"{job.goal}\n\nContext:\n{job.context}"
    return [{"role": "system", "content": job.system_prompt}, {"role": "user", "content": user}]


class CompletionWorker:
    """The standalone worker: system prompt + goal + context → one completion → its text."""

    def __init__(self, router: RouterHandle):
        self.router = router

    async def run(self, job: Job) -> WorkerOutput:
        kwargs: dict[str, Any] = {}
        if job.max_tokens:
            kwargs["max_tokens"] = job.max_tokens
        # No `timeout=` here: a per-call timeout would override every per-attempt timeout the config
        # gives LiteLLM (a deployment's `timeout`, router_settings.timeout), so a hung deployment could
        # never fail over to a healthy one. The fan-out's task timeout bounds the whole call anyway.
        if job.output_schema is not None:
            return await self._run_structured(job, build_messages(job), kwargs)
        done = await self.router.acompletion(job.resolution, build_messages(job), **kwargs)
        return WorkerOutput(done.text, done.tokens, done.cost_usd, done.deployment, done.attempts)

    async def _run_structured(self, job: Job, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> WorkerOutput:
        """A job with an output_schema: ask for JSON, validate it, retry once (structured.py's rules)."""
        schema = job.output_schema or {}
        messages = [dict(m) for m in messages]
        messages[0]["content"] = f"{messages[0]['content']}\n\n{structured.instruction(schema)}".strip()
        if structured.supports_json_schema(self.router, job):
            kwargs = {**kwargs, "response_format": structured.response_format(schema)}
        tokens = {"input": 0, "output": 0}
        cost: float | None = 0.0
        attempts: list[Any] = []
        problem = ""
        try:
            for attempt in range(2):
                done = await self.router.acompletion(job.resolution, messages, **kwargs)
                for k, v in (done.tokens or {}).items():
                    tokens[k] = tokens.get(k, 0) + int(v or 0)
                cost = None if cost is None or done.cost_usd is None else cost + done.cost_usd
                attempts += list(done.attempts or [])
                value, found = await structured.check_answer(done.text or "", schema)
                if found is None:
                    return WorkerOutput(done.text, tokens, cost, done.deployment, attempts, output=value)
                problem = found
                if attempt == 0:
                    messages = [*messages, {"role": "assistant", "content": done.text or ""},
                                {"role": "user", "content": structured.retry_message(problem)}]
        except asyncio.CancelledError as exc:  # a timeout after a paid answer: what was tried stays known
            exc.attempts = attempts + list(getattr(exc, "attempts", None) or [])  # type: ignore[attr-defined]
            raise
        raise structured.bad_output(problem, attempts)
