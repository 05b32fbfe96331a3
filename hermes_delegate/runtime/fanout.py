"""The parallel fan-out: a queue under a concurrency cap, per-task timeouts, budget gating,
interrupts, and results in input order. One task's failure never touches another's result.
With a `redactor` (the Delegator's), every result and progress event is redacted before a host sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from ..routing._litellm import to_provider_error
from ..core.errors import ProviderError
from ..core.planning import PlannedTask
from ..core.results import ProgressEvent, Status, TaskResult
from .worker import Job, Worker

__all__ = ["fan_out", "EventCallback"]

log = logging.getLogger("hermes_delegate.runtime.fanout")
EventCallback = Callable[[ProgressEvent], None]


def _base(p: PlannedTask, status: Status) -> TaskResult:
    return TaskResult(index=p.index, goal=p.goal, status=status,
                      model_requested=p.model_requested, model=p.resolution.model,
                      model_source=p.model_source, resolved_via=p.resolution.resolved_via,
                      auto=p.auto.to_dict() if p.auto else None, downgraded_from=p.downgraded_from)


def _not_started(p: PlannedTask, redactor: Any) -> TaskResult:
    res = _base(p, "interrupted")
    res.error = {"type": "interrupted", "retryable": True,
                 "message": "The batch was interrupted before it started; nothing was sent."}
    if redactor is not None:
        _redact_result(res, redactor)
    return res


def _redact_result(res: TaskResult, redactor: Any) -> None:
    """Every string a result carries (summary, error, attempt errors, structured output, goal) redacted."""
    res.goal, res.summary, res.error, output, errors = redactor.scrub(
        [res.goal, res.summary, res.error, res.output, [a.error for a in res.attempts]])
    if res.output is not None:
        res.output = output
    for a, err in zip(res.attempts, errors, strict=True):  # scrub keeps the list's length
        a.error = err


def _emit(cb: EventCallback, event: ProgressEvent, redactor: Any = None) -> None:
    """Hand a progress event to the host (callers check for a callback first: no event is built for none)."""
    if redactor is not None:  # a done event's result is redacted already
        event = replace(event, goal=redactor(event.goal))
    try:
        cb(event)
    except Exception:
        log.debug("progress callback failed", exc_info=True)


async def fan_out(planned: Sequence[PlannedTask], worker: Worker, *, system_prompt: str,
                  max_concurrency: int, timeout_s: float | None, max_tokens: int | None = None,
                  budget: Any = None, ledger: bool = True, on_event: EventCallback | None = None,
                  stop: asyncio.Event | None = None, redactor: Any = None) -> list[TaskResult]:
    """Run every planned task; return one result per task, in input order. With a `budget` (the spend
    account), every paid attempt is settled on it, and written to the ledger unless `ledger` is off."""
    total = len(planned)
    if stop is not None and stop.is_set():  # stopped before it started (a signal during start-up)
        return [_not_started(p, redactor) for p in planned]
    results: list[TaskResult | None] = [None] * total
    sem = asyncio.Semaphore(max_concurrency)
    uncapped = budget is not None and budget.uncapped  # only the ledger: every reservation granted at once

    async def one(slot: int, p: PlannedTask) -> None:
        started: float | None = None
        held = False
        sent = True  # unknown: a task cut short may have been answered (and billed)
        res: TaskResult | None = None  # what became of it (made only then: one per task)
        try:
            async with sem:
                if uncapped:
                    budget.reserve_now(p.index)
                    held = True
                elif budget is not None:
                    refused = await budget.reserve(p.index, p.reserve_usd)
                    for rung in p.fallbacks if refused is not None else ():  # a cheaper tier (downgrade)
                        if await budget.reserve(p.index, rung.reserve_usd) is None:
                            p, refused = p.downgraded(rung), None
                            break
                    if refused is not None:
                        res = _base(p, "skipped_budget")
                        res.error = {"type": "budget", "retryable": False, "message": refused}
                        return
                    held = True
                started = time.perf_counter()
                if on_event is not None:
                    _emit(on_event, ProgressEvent("start", p.index, total, p.goal, p.resolution.model), redactor)
                job = Job(p.index, p.task.goal, p.task.context, p.resolution, p.model_source, system_prompt,
                          max_tokens, timeout_s, total, output_schema=p.task.output_schema)
                try:
                    async with asyncio.timeout(timeout_s):
                        out = await worker.run(job)
                except TimeoutError as exc:
                    res = _base(p, "timeout")
                    queued = getattr(exc.__cause__, "queued", None)
                    sent = not queued
                    # what was tried before the clock ran out (RouterHandle puts it on the cancellation)
                    res.attempts = list(getattr(exc.__cause__, "attempts", None) or [])
                    msg = f"The task did not finish within {timeout_s:g} s."
                    if res.attempts:
                        msg += (f" Attempts before the timeout: {len(res.attempts)}, the last one "
                                f"{res.attempts[-1].status}.")
                    elif queued:
                        msg += f" Nothing was sent: it was queued ({queued})."
                    res.error = {"type": "timeout", "retryable": True, "message": msg}
                    return
                res = _base(p, "completed")
                res.summary, res.tokens, res.cost_usd = out.summary, out.tokens, out.cost_usd
                res.deployment, res.attempts = out.deployment, out.attempts
                res.output = getattr(out, "output", None)
        except asyncio.CancelledError as exc:
            sent = started is not None and not getattr(exc, "queued", None)
            res = _base(p, "interrupted")
            res.error = {"type": "interrupted", "retryable": True, "message": "The batch was interrupted."}
            res.attempts = list(getattr(exc, "attempts", None) or [])
            raise
        except Exception as exc:  # noqa: BLE001 - any worker failure fails only this task
            perr = exc if isinstance(exc, ProviderError) else to_provider_error(exc)
            res = _base(p, "failed")
            res.error = perr.to_dict()
            res.attempts = list(getattr(exc, "attempts", []) or [])
        finally:
            if res is None:  # ended by something other than an answer, a failure, a timeout or a cancellation
                res = _base(p, "interrupted")
            if started is not None:
                res.duration_s = round(time.perf_counter() - started, 4)
            cancelled: asyncio.CancelledError | None = None
            if budget is not None and held:  # every paid attempt charged, whatever the status; one commit
                try:
                    await budget.settle(p.index, p.reserve_usd, res, sent=sent, ledger=ledger)
                except asyncio.CancelledError as exc:  # interrupted while settling: the settlement goes on
                    cancelled = exc  # without this task, and the result (paid for) is still kept below
            if redactor is not None:
                _redact_result(res, redactor)
            results[slot] = res
            if on_event is not None and (started is not None or res.status == "skipped_budget"):
                _emit(on_event, ProgressEvent("done", p.index, total, p.goal, p.resolution.model, res), redactor)
            if cancelled is not None:
                raise cancelled

    tasks = [asyncio.create_task(one(i, p), name=f"delegate-task-{p.index}") for i, p in enumerate(planned)]
    waiter = asyncio.gather(*tasks, return_exceptions=True)
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        if stopper is None:
            await waiter
        else:
            either: set[asyncio.Future[Any]] = {waiter, stopper}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():  # interrupted: cancel what is left and drain it
                for t in tasks:
                    t.cancel()
                await asyncio.shield(waiter)
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        raise
    finally:
        if stopper is not None:
            stopper.cancel()
    return [r if r is not None else _base(planned[i], "interrupted") for i, r in enumerate(results)]
