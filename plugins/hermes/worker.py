"""HermesWorker: each task is a real hermes subagent (run_agent.AIAgent), built and run by hermes's
own delegate_tool helpers, so it is restricted exactly like a built-in child.

A routed task (model from the task, the call or the config) gets a child on provider "custom",
api_mode chat_completions and a placeholder endpoint that is never contacted: the llm_execution
middleware serves every one of its calls through the Router. hermes probes an endpoint's /models
for the context window at construction, so the placeholder's answer is seeded in hermes's
in-memory endpoint-metadata cache (agent/model_metadata.py `_endpoint_model_metadata_cache`,
l.111 and l.979) with the routed model's window. A task on the parent's model (precedence level
4) runs exactly like the built-in's children, on hermes's own provider.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

from . import hermes_api, middleware, runtime
from .schema import LIST_TOOL, TOOLSET

PLACEHOLDER_URL = "http://hermes-delegate.invalid/v1"  # RFC 6761: never resolves; never used
PLACEHOLDER_KEY = "hermes-delegate-routed"
_DEFAULT_WINDOW = 128_000
_build_lock = threading.Lock()  # child construction rewrites model_tools globals: one at a time


def _seed_context_window(model: str, window: int) -> None:
    hermes_api.seed_context_window(PLACEHOLDER_URL, model, window)


def _window(base: Any, resolution: Any) -> int:
    return int(base.context_window(resolution) or _DEFAULT_WINDOW)


class Batch:
    """One routed delegate_task call: the parent, the children it spawned, and how to build and stop them."""

    def __init__(self, parent: Any, handle: Any, *, max_iterations: int, max_workers: int, role: str = "leaf",
                 roles: dict[int, str] | None = None):
        self.parent = parent
        self.handle = handle
        self.max_iterations = max_iterations
        self.role, self.roles = role, dict(roles or {})
        self.detached = False  # a background batch: children are not the parent turn's
        self.total = 1
        self.tool_names = hermes_api.saved_tool_names()
        self.toolsets = self._child_toolsets()
        self.pool = hermes_api.thread_pool(max_workers, "hermes-delegate-child")
        self.children: dict[int, Any] = {}  # task index -> child AIAgent (spawned = subagent_start fired)
        self.cancelled: set[int] = set()
        self.lock = threading.Lock()

    def _child_toolsets(self) -> list[str]:
        """The parent's toolsets minus ours (children cannot re-delegate through us); hermes then
        intersects with the parent's and strips DELEGATE_BLOCKED_TOOLS, as for built-in children."""
        enabled = getattr(self.parent, "enabled_toolsets", None)
        if enabled is not None:
            sets = set(enabled)
        else:
            sets = {ts for n in getattr(self.parent, "valid_tool_names", ()) or () if (ts := hermes_api.toolset_of(n))}
        return sorted(sets - {TOOLSET}) or ["__hermes_delegate_none__"]  # [] would mean "inherit all"

    # -- on pool threads ----------------------------------------------------------------------
    def build(self, job: Any, routed: bool) -> Any:
        dt = hermes_api.delegate_tool()
        kw: dict[str, Any] = dict(task_index=job.index, goal=job.goal, context=job.context, toolsets=self.toolsets,
                                  model=None, max_iterations=self.max_iterations, task_count=self.total,
                                  parent_agent=self.parent, role=self.roles.get(job.index, self.role))
        if job.max_tokens:
            kw["override_max_tokens"] = job.max_tokens
        if routed:
            _seed_context_window(job.resolution.model, _window(self.handle, job.resolution))
            kw.update(model=job.resolution.model, override_provider="custom", override_base_url=PLACEHOLDER_URL,
                      override_api_key=PLACEHOLDER_KEY, override_api_mode="chat_completions")
        with _build_lock:
            try:
                child = dt._build_child_agent(**kw)
            finally:
                hermes_api.restore_tool_names(self.tool_names)
        child._delegate_saved_tool_names = self.tool_names
        child._hermes_delegate_child = True
        # the delegation tree shares one budget: a child that delegates again draws from the root's caps
        child._hermes_delegate_tree_root = tree_root(self.parent)
        _strip_own_tools(child)
        if routed:
            child._fallback_chain, child._fallback_model = [], None  # never fall back to hermes's provider
            child._hermes_delegate_session = middleware.RoutedSession(child, job.resolution, self.handle,
                                                                      runtime.loop())
            middleware.register(child.session_id, child._hermes_delegate_session)
        if self.detached:  # like the built-in's background batches: off the parent's interrupt list
            self._detach_from_parent(child)
        with self.lock:
            self.children[job.index] = child
            cancelled = job.index in self.cancelled
        if cancelled:  # the batch was interrupted while we were building
            self.discard(child)
        return child

    def run(self, job: Any, child: Any) -> dict[str, Any]:
        dt = hermes_api.delegate_tool()
        if job.index in self.cancelled:
            return {"status": "interrupted"}
        try:
            out = dt._run_single_child(task_index=job.index, goal=job.goal, child=child, parent_agent=self.parent)
            return cast("dict[str, Any]", out)  # hermes's result entry
        finally:
            middleware.unregister(child.session_id)

    # -- stopping -----------------------------------------------------------------------------
    def cancel(self, index: int) -> None:
        with self.lock:
            self.cancelled.add(index)
            child = self.children.get(index)
        if child is not None:
            try:
                child.interrupt("hermes-delegate: task stopped")
            except Exception:  # noqa: BLE001, S110 - the child is marked cancelled either way
                pass

    def discard(self, child: Any) -> None:
        """A child that will never run: undo what _build_child_agent registered."""
        middleware.unregister(child.session_id)
        self._detach_from_parent(child)
        try:
            child.close()
        except Exception:  # noqa: BLE001, S110 - best effort: it never ran
            pass

    def close(self) -> None:
        self.pool.shutdown(wait=False)

    def _detach_from_parent(self, child: Any) -> None:
        lock = getattr(self.parent, "_active_children_lock", None)
        try:
            if lock is not None:
                with lock:
                    self.parent._active_children.remove(child)
            else:
                self.parent._active_children.remove(child)
        except (AttributeError, ValueError):
            pass


def _strip_own_tools(child: Any) -> None:
    """Belt and braces: if a composite toolset carried our list_models into the child, remove it
    (delegate_task is hermes's own: its role rules decide whether a child keeps it)."""
    ours = {LIST_TOOL}
    names = getattr(child, "valid_tool_names", None)
    if not names or not (ours & set(names)):
        return
    child.valid_tool_names = set(names) - ours
    child.tools = [t for t in (child.tools or []) if t.get("function", {}).get("name") not in ours]


class HermesWorker:
    """The engine's Worker protocol over hermes subagents."""

    def __init__(self, batch: Batch):
        self.batch = batch

    async def run(self, job: Any) -> Any:
        routed = job.model_source != "parent"  # level 4 runs on hermes's own provider, like the built-in
        loop = asyncio.get_running_loop()
        try:
            if routed:
                await self.batch.handle.warm_up()
            child = await loop.run_in_executor(self.batch.pool, self.batch.build, job, routed)
            entry = await loop.run_in_executor(self.batch.pool, self.batch.run, job, child)
        except asyncio.CancelledError:
            self.batch.cancel(job.index)
            raise
        return _output(entry, child, getattr(child, "_hermes_delegate_session", None))


def _output(entry: dict[str, Any], child: Any, session: Any) -> Any:
    from hermes_delegate import Delegator, DeploymentInfo, ProviderError, WorkerOutput  # noqa: PLC0415

    status = entry.get("status")
    if session is not None and session.failure is not None:
        exc = session.failure
        if not isinstance(exc, ProviderError):
            exc = Delegator.provider_error(exc)
        exc.attempts = _attempts(session) + list(getattr(session.failure, "attempts", None) or [])
        raise exc
    if status == "interrupted" or (session is not None and session.interrupted):
        raise asyncio.CancelledError()
    if status != "completed":
        kind = "timeout" if status == "timeout" else "unknown"
        err = ProviderError(kind, str(entry.get("error") or "The subagent did not produce a response."))
        err.attempts = _attempts(session)
        raise err
    if session is not None:
        done = session.completions
        tokens = {"input": sum(c.tokens.get("input", 0) for c in done),
                  "output": sum(c.tokens.get("output", 0) for c in done)}
        costs = [c.cost_usd for c in done]
        cost = sum(costs) if costs and None not in costs else None
        deployment = done[-1].deployment if done else None
        return WorkerOutput(entry.get("summary") or "", tokens, cost, deployment, _attempts(session))
    tokens = {k: int(v) for k, v in (entry.get("tokens") or {}).items() if k in ("input", "output")}
    dep = DeploymentInfo.for_endpoint(getattr(child, "provider", None), getattr(child, "base_url", None),
                                      getattr(child, "model", None))
    return WorkerOutput(entry.get("summary") or "", tokens or {"input": 0, "output": 0},
                        entry.get("_child_cost_usd") or None, dep, [])


def _attempts(session: Any) -> list[Any]:
    return [a for c in (session.completions if session is not None else []) for a in c.attempts]


def tree_root(agent: Any) -> str | None:
    """The session id of the root of `agent`'s delegation tree (its own, for a top-level agent)."""
    return getattr(agent, "_hermes_delegate_tree_root", None) or getattr(agent, "session_id", None)
