"""What runs a routed `delegate_task` (takeover.py) and the `list_models` handler, over DelegateTools.

A call runs on the calling agent's thread (the sequential tool path). It finds that agent,
applies the built-in's gates (spawn pause, depth), then runs DelegateTools on the plugin loop
with a HermesWorker and waits, polling like the built-in does (tools/delegate_tool.py l.2666-2700):
per-task progress lines go to the parent's console, and a parent interrupt stops the batch
(Delegator.interrupt) while hermes's AIAgent.interrupt reaches the children themselves. Afterwards
it does what the built-in's `_execute_and_aggregate` does: subagent_stop hooks, the summary budget,
the memory-provider notice and the cost roll-up.
"""

from __future__ import annotations

import json
import logging
import queue
from typing import TYPE_CHECKING, Any

from . import hermes_api, parent as parent_mod, runtime, settings, waiting
from .schema import DELEGATE_TOOL, LIST_TOOL

if TYPE_CHECKING:
    from hermes_delegate import DelegateError

log = logging.getLogger("hermes_delegate.hermes")
_POLL_S = 0.1


def _error(message: str, hint: str = "", kind: str = "usage") -> str:
    return json.dumps({"error": message, "hint": hint, "suggestions": [], "type": kind})


def _delegate_error(exc: DelegateError) -> str:
    from hermes_delegate import tool_error  # noqa: PLC0415

    return _hermes_keys(json.dumps(tool_error(exc)))


def _config_error(exc: Exception) -> str:
    """A config that did not load: our typed error as the tool error; anything else (an import
    problem) as its text."""
    from hermes_delegate import DelegateError  # noqa: PLC0415

    if isinstance(exc, DelegateError):
        return _delegate_error(exc)
    return _error(f"hermes-delegate: {exc}", kind="config")


def _hermes_keys(text: str) -> str:
    """Hints name the key a hermes user edits: hermes_delegate.allow_unpriced, not delegation.…"""
    from hermes_delegate.sources.hermes_home import hermes_keys  # noqa: PLC0415

    return hermes_keys(text)


def _tools(delegator: Any) -> Any:
    from hermes_delegate import DelegateTools  # noqa: PLC0415

    # hermes children have file tools: `files` go to them as a hint in the goal, not read by us; the
    # compact result's index is hermes's own `task_index` (its summary budget and completion read it)
    return DelegateTools(delegator, tool_name=DELEGATE_TOOL, list_name=LIST_TOOL, files="hint",
                         index_key="task_index")


def _delegator(base: Any, *, parent_model: str | None, worker: Any = None, session: str | None = None) -> Any:
    # one per call (its own interrupt), sharing the plugin's one Router instead of building one per call;
    # its spend session is the root of the delegation tree (a nested child draws from the root's caps)
    return base.derive(worker=worker, parent_model=parent_model, session=session and f"hermes:{session}")


# -- the gates takeover.routed_delegate_task applies -------------------------------------------
def refusal(dt: Any, parent: Any, tool: str) -> str | None:
    """The built-in's refusals (spawn pause, depth), as an error payload; None = go."""
    if parent is None:
        return _error(f"{tool} must be called by a running hermes agent.")
    if dt.is_spawn_paused():
        return _error("Delegation spawning is paused.",
                      "Clear the pause in the TUI (`p` in /agents) or via the `delegation.pause` RPC.")
    depth, max_depth = getattr(parent, "_delegate_depth", 0), dt._get_max_spawn_depth()
    if depth >= max_depth:
        return _error(f"Delegation depth limit reached (depth={depth}, max_spawn_depth={max_depth}).",
                      "Do the work yourself, or raise delegation.max_spawn_depth in config.yaml.", "depth_limit")
    return None


def plugin_config() -> tuple[Any, str | None]:
    """(the plugin's Config, None), or (None, the error payload)."""
    try:
        return settings.load_plugin_config(), None
    except Exception as exc:  # noqa: BLE001 - a DelegateError (bad config) or an import problem
        return None, _config_error(exc)


def _role(r: Any) -> str:
    """The built-in's role normalisation (tools/delegate_tool.py _normalize_role): leaf unless orchestrator."""
    return "orchestrator" if isinstance(r, str) and r.strip().lower() == "orchestrator" else "leaf"


class Call:
    def __init__(self, parent: Any, cfg: Any, dt: Any, *, role: Any = None, roles: dict[int, Any] | None = None,
                 max_iterations: Any = None):
        from .worker import Batch, HermesWorker, tree_root  # noqa: PLC0415

        self.parent, self.dt = parent, dt
        hermes_cfg = dt._load_config() or {}
        default_iters = int(hermes_cfg.get("max_iterations") or 50)
        iters = max_iterations if isinstance(max_iterations, int) and max_iterations > 0 else default_iters
        self.batch = Batch(parent, runtime.delegator_for(cfg), max_workers=cfg.delegation.max_concurrency,
                           max_iterations=iters, role=_role(role),
                           roles={i: _role(r) for i, r in (roles or {}).items()})
        self.watch_parent = True  # False once detached into a background batch
        self.stopped = False
        self.delegator = _delegator(self.batch.handle, parent_model=parent_mod.parent_model(parent),
                                    worker=HermesWorker(self.batch), session=tree_root(parent))
        self.lines: queue.Queue[str] = queue.Queue()
        self.results: dict[int, Any] = {}

    def on_event(self, ev: Any) -> None:  # on the plugin loop
        self.batch.total = ev.total
        if ev.kind == "done" and ev.result is not None:
            r = ev.result
            self.results[ev.index] = r
            icon = "✓" if r.status == "completed" else "✗"
            self.lines.put(f"{icon} [{ev.index + 1}/{ev.total}] {ev.goal[:40]}  ({r.duration_s:.1f}s) · "
                           f"{r.model or ev.model}")

    def run(self, args: Any) -> str:
        tools = _tools(self.delegator)
        fut = runtime.submit(tools.delegate_task(args, on_event=self.on_event))
        stopped = False

        def between() -> None:
            nonlocal stopped
            self._print_progress()
            asked = self.stopped or (self.watch_parent and getattr(self.parent, "_interrupt_requested", False))
            if not stopped and asked:
                stopped = True
                self.delegator.interrupt()
                for index in list(self.batch.children):
                    self.batch.cancel(index)

        try:
            out = waiting.wait(fut, _POLL_S, between)
        except Exception as exc:
            from hermes_delegate import internal_error  # noqa: PLC0415

            log.exception("%s failed", DELEGATE_TOOL)
            out = json.dumps(internal_error(exc))
        finally:
            self.batch.close()
            hermes_api.restore_tool_names(self.batch.tool_names)
        spend = spend_line(out)
        if spend:
            self.lines.put(spend)
        self._print_progress()
        self._after()
        return _hermes_keys(self._budget_summaries(out))

    # -- background batches (takeover.background_dispatch) ------------------------------------
    def detach(self) -> None:
        """Owned by hermes's async registry now: a parent interrupt no longer stops it."""
        self.watch_parent = False
        self.batch.detached = True

    def attach(self) -> None:
        self.watch_parent = True
        self.batch.detached = False

    def stop(self) -> None:
        """hermes's interrupt_fn for the background unit (e.g. /stop)."""
        self.stopped = True
        self.delegator.interrupt()
        for index in list(self.batch.children):
            self.batch.cancel(index)

    def run_combined(self, args: Any) -> dict[str, Any]:
        """The runner for dispatch_async_delegation_batch: the built-in's combined-result shape."""
        data = json.loads(self.run(args))
        if not isinstance(data, dict):
            return {"results": [], "error": str(data)}
        results = data.get("results")
        if isinstance(results, list):
            for r in results:
                if isinstance(r, dict) and "task_index" not in r:
                    r["task_index"] = r.get("index")
                if isinstance(r, dict) and isinstance(r.get("error"), dict):  # hermes prints it as text
                    e = r["error"]
                    r["error"] = " ".join(str(x) for x in (f"{e.get('type')}:", e.get("message"), e.get("hint")) if x)
        else:
            data.setdefault("results", [])
        if "error" in data and not isinstance(data["error"], str):
            data["error"] = json.dumps(data["error"])
        return data

    def _print_progress(self) -> None:
        spinner = getattr(self.parent, "_delegate_spinner", None)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            try:
                if spinner is not None:
                    spinner.print_above(line)
                    continue
            except Exception:  # noqa: BLE001, S110 - then as a plain console line, below
                pass
            self.dt._emit_parent_console(self.parent, f"  {line}")

    def _after(self) -> None:
        """subagent_stop per spawned child (on this, the parent's, thread), memory notice, cost."""
        p = self.parent
        cost = 0.0
        for index, child in sorted(self.batch.children.items()):
            r = self.results.get(index)
            status = r.status if r is not None else "interrupted"
            summary = r.summary if r is not None else None
            hermes_api.invoke_hook(
                "subagent_stop", parent_session_id=getattr(p, "session_id", None),
                parent_turn_id=getattr(p, "_current_turn_id", "") or "",
                child_session_id=getattr(child, "session_id", None),
                child_role=getattr(child, "_delegate_role", None) or "leaf", child_summary=summary,
                child_status=status, duration_ms=int((r.duration_s if r is not None else 0) * 1000))
            memory = getattr(p, "_memory_manager", None)
            if memory is not None and r is not None:
                try:
                    memory.on_delegation(task=r.goal, result=summary or "", child_session_id=child.session_id)
                except Exception:  # noqa: BLE001, S110 - the parent's memory provider is best effort
                    pass
            cost += (r.cost_usd or 0.0) if r is not None else 0.0
        if cost > 0:
            try:
                p.session_estimated_cost_usd = float(getattr(p, "session_estimated_cost_usd", 0.0) or 0.0) + cost
                if getattr(p, "session_cost_source", "none") in (None, "", "none"):
                    p.session_cost_source = "subagent"
            except Exception:  # noqa: BLE001, S110 - a parent without cost fields: nothing to add to
                pass

    def _budget_summaries(self, out: str) -> str:
        """hermes's _apply_summary_budget: long summaries are cut to the parent's context headroom,
        the full text spilled to a file (tools/delegate_tool.py l.1736)."""
        try:
            data = json.loads(out)
            results = data.get("results") if isinstance(data, dict) else None
            if not isinstance(results, list):
                return out
            def index(r: dict[str, Any]) -> Any:
                return r.get("task_index", r.get("index"))  # compact result, or the full report

            entries = [{"task_index": index(r), "summary": r["summary"]} for r in results
                       if isinstance(r, dict) and isinstance(r.get("summary"), str) and r["summary"]]
            if not entries:
                return out
            self.dt._apply_summary_budget(entries, self.parent)
            by_index = {e["task_index"]: e for e in entries}
            changed = False
            for r in results:
                e = by_index.get(index(r))
                if e is not None and e["summary"] != r["summary"]:
                    r["summary"], changed = e["summary"], True
                    if e.get("summary_full_path"):
                        r["summary_full_path"] = e["summary_full_path"]
            return json.dumps(data, ensure_ascii=False) if changed else out
        except Exception:
            log.debug("summary budget skipped", exc_info=True)
            return out


# -- list_models --------------------------------------------------------------------------------
def list_models(args: Any = None, **kw: Any) -> str:
    try:
        cfg = settings.load_plugin_config()
    except Exception as exc:  # noqa: BLE001
        return _config_error(exc)
    parent = parent_mod.find_parent(kw.get("session_id"))
    d = _delegator(runtime.delegator_for(cfg), parent_model=parent_mod.parent_model(parent) if parent else None)
    return _hermes_keys(runtime.submit(_tools(d).list_models(args)).result())


def spend_line(out: str) -> str | None:
    """The end-of-batch line: the call's cost and, under a daily cap, the day's spend against it."""
    try:
        data = json.loads(out)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("cost"), dict):
        return None
    total = data["cost"].get("total_usd")
    line = f"cost {'unknown' if total is None else f'${total:.6f}'}"
    today = (data.get("budget") or {}).get("today")
    if isinstance(today, dict):
        line += f"; today ${today.get('spent_usd', 0.0):.6f} of the ${today.get('cap_usd', 0):g} daily cap"
    return line
