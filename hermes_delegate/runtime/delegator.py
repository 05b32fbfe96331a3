"""The Delegator: plan a batch (pure), then fan it out through a Worker (I/O).

    from hermes_delegate import Delegator, Task
    d = Delegator.from_config_file("configs/tiers.yaml")
    batch = d.run_sync([Task("find the TODOs", model="small"), Task("review auth", model="large")])

Hosts construct it with their own Worker and parent model; the CLI uses the standalone one. Hosts
reach the engine only through it (and the other names of `hermes_delegate`): planning and running,
the model listing and its checks, one routed completion, cooldowns, and the one redactor, applied
here to every result, progress event and error on its way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ..core.budget import DEFAULT_RESERVE_TOKENS, Pricing, effective_cap, tightest_cap
from ..core.config import Config
from ..sources.config_file import load_config
from ..core.errors import DelegateError, ProviderError, TaskPayloadError, UsageError
from .fanout import EventCallback, fan_out
from ..core.planning import Allowlist, PlannedTask, Task, plan_batch
from ..core.redact import Redactor, default_redactor, install_engine_log_filters, log_filter
from ..core.resolver import Resolution
from ..sources.groups import resolver_for
from ..routing.auto import AutoClassifier
from ..core.results import BatchResult
from ..core.text import finite, utf8
from .worker import Worker
from .structured import check_output_schema

__all__ = ["Delegator", "coerce_tasks", "context_text", "MAX_CONTEXT_DEPTH"]


#: A context may be a JSON list/object (it is sent as JSON text); nesting deeper than this is refused.
MAX_CONTEXT_DEPTH = 64


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def context_text(value: Any, where: str = "context") -> str | None:
    """A task's context as text: a string as is; a JSON list/object (or number) as its JSON text, so the
    size limit counts what will really be sent. Too deep or not JSON: TaskPayloadError."""
    if value is None or isinstance(value, str):
        return value
    if _too_deep(value, MAX_CONTEXT_DEPTH):
        raise TaskPayloadError(f"The {where} is nested more than {MAX_CONTEXT_DEPTH} levels deep.",
                               hint="Pass the context as text, or as a flat list/object of facts.")
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TaskPayloadError(f"The {where} is not JSON: {exc}.",
                               hint="Pass the context as text, or as a JSON list/object.") from None


def _files_of(value: Any, i: int) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) and x.strip() for x in items):
        raise TaskPayloadError(f"Task {i + 1}: files must be a list of file paths.",
                               hint="E.g. files: [src/app.py, README.md] (relative to the working directory).")
    return tuple(dict.fromkeys(x.strip() for x in items))


def coerce_tasks(tasks: Iterable[Task | Mapping[str, Any] | str]) -> list[Task]:
    """Accept Task objects, {goal, context, model} mappings, or bare goal strings."""
    out: list[Task] = []
    for i, t in enumerate(tasks):
        if isinstance(t, Task):
            if t.context is not None and not isinstance(t.context, str):
                t = dataclasses.replace(t, context=context_text(t.context, f"context of task {i + 1}"))
            out.append(t)
        elif isinstance(t, str):
            out.append(Task(goal=t))
        elif isinstance(t, Mapping):
            unknown = set(t) - {"goal", "context", "model", "files", "output_schema"}
            if unknown:
                raise TaskPayloadError(f"Task {i + 1} has unknown keys: {', '.join(sorted(map(str, unknown)))}.",
                                       hint="A task has goal (required), context, model, files and output_schema.")
            # goal and output_schema as given: plan_batch checks them, with every other task's problems
            schema: Any = t.get("output_schema")
            if isinstance(schema, str):
                with contextlib.suppress(ValueError, RecursionError):
                    schema = json.loads(schema)
            goal: Any = t.get("goal")
            out.append(Task(goal=goal, context=context_text(t.get("context"), f"context of task {i + 1}"),
                            model=t.get("model"), files=_files_of(t.get("files"), i),
                            output_schema=schema))
        else:
            raise TaskPayloadError(f"Task {i + 1} is not an object (got {type(t).__name__}).",
                                   hint='Each task is an object like {"goal": "...", "model": "haiku"}.')
    return out


class Delegator:
    """One engine per config. Safe to reuse across batches; the Router is built on first run."""

    def __init__(self, config: Config | None = None, *, worker: Worker | None = None,
                 parent_model: str | None = None, env: Mapping[str, str] | None = None,
                 router: Any = None, session: str | None = None, tree_root: str | None = None,
                 door: str | None = None):
        self.config = config or Config()
        #: the spend scopes of this engine's batches: its session (a CLI run, an MCP session, a hermes
        #: session), the delegation tree it belongs to, and which host it serves
        self.session = session or uuid.uuid4().hex[:12]
        self.tree_root, self.door = tree_root or self.session, door
        self.env = os.environ if env is None else env
        self.resolver = resolver_for(self.config, env=self.env)
        self.allowlist = Allowlist(self.config.delegation.allow, self.resolver)
        #: `model: auto`'s classifier (LiteLLM's, local), built on the first task that asks for auto
        self.auto_classifier = AutoClassifier(self.config.delegation.auto)
        self.parent_model = parent_model
        self._worker = worker
        self._router: Any = router  # a RouterHandle to share (hosts keep one per process)
        self._stops: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._halted = False  # a stop signal came inside interrupt_on_signals: later batches start stopped
        self._lock = threading.Lock()
        self._router_lock = threading.Lock()
        #: THE redactor: built once from the config and the Resolver's env lookup (every secret-named
        #: litellm_params value, the remote proxy's key, secret-named variables); the process-wide one
        #: (log filters, tool_error) learns the same secrets.
        self.redactor = Redactor.for_config(self.config, self.resolver.env)
        default_redactor().add(*self.redactor.secrets)
        install_engine_log_filters()

    # -- redaction (the boundary where results, events, errors and logs leave the engine) ------
    def redact(self, text: Any) -> Any:
        """`text` with every secret this engine knows replaced by `***`, as valid UTF-8 (a lone surrogate
        becomes U+FFFD), so it can always be written out; non-strings unchanged."""
        out = self.redactor(text)
        return utf8(out) if isinstance(out, str) else out

    @staticmethod
    def to_json(obj: Any, *, indent: int | None = None) -> str:
        """`obj` as strict JSON (NaN and infinities become null) that always encodes as UTF-8: what a
        host prints or sends. Not redacted: write it through `redact` (the CLI's output stream does)."""
        return utf8(json.dumps(finite(obj), indent=indent, ensure_ascii=False, default=str, allow_nan=False))

    @staticmethod
    def log_filter() -> Any:
        """A logging.Filter that redacts with every secret any Delegator of this process knows, for a
        host's own log handler (the engine's and litellm's loggers have it already)."""
        return log_filter()

    @classmethod
    def from_config_file(cls, path: str | os.PathLike[str] | None = None, **kw: Any) -> "Delegator":
        return cls(load_config(path), **kw)

    # -- lazily built I/O parts -------------------------------------------------------------
    @property
    def router(self) -> Any:
        """The RouterHandle (imports litellm on first use). Created once even when two threads ask at
        once (a host's background warm-up and its main thread): a second handle would build a second
        Router, and whichever was assigned last would be the one the warm-up did not warm."""
        if self._router is None:
            from ..routing.router import RouterHandle  # noqa: PLC0415 - keeps `import hermes_delegate` light

            with self._router_lock:
                if self._router is None:
                    self._router = RouterHandle(self.config, self.resolver)  # env: resolver.env
        return self._router

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            from .worker import CompletionWorker  # noqa: PLC0415

            self._worker = CompletionWorker(self.router)
        return self._worker

    def derive(self, *, worker: Worker | None = None, parent_model: str | None = None,
               session: str | None = None, tree_root: str | None = None) -> "Delegator":
        """A Delegator on the same config, Resolver and Router, with its own worker, parent model and
        interrupt (hosts keep one Delegator per config and derive one per call). `session` and
        `tree_root` pick the spend scopes its batches draw from (default: this Delegator's)."""
        d = Delegator(self.config, worker=worker, parent_model=parent_model, env=self.env, router=self.router,
                      session=session or self.session, tree_root=tree_root or (self.tree_root if session is None
                                                                              else None), door=self.door)
        d.resolver, d.allowlist, d.redactor = self.resolver, self.allowlist, self.redactor
        d.auto_classifier = self.auto_classifier
        return d

    # -- operations for hosts that run their own agent loop ------------------------------------
    async def warm_up(self, *, calls: bool = False) -> None:
        """Pay litellm's import and the Router's build now (a long-lived host calls this in the
        background at start-up); `calls=True` also loads litellm's call path with one mocked,
        free completion per group. Safe to call repeatedly and concurrently."""
        from .warmup import warm_up  # noqa: PLC0415

        await warm_up(self.router, calls=calls)
        with contextlib.suppress(DelegateError):  # free once litellm is in; a bad delegation.auto is plan's to say
            await asyncio.to_thread(self.auto_classifier.build)
        # litellm's catalog (prices, context windows: ~20 ms to index), read on a first task's
        # context-window or price lookup
        await asyncio.to_thread(lambda: self.resolver.catalog)

    async def complete(self, resolution: Resolution, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        """One routed completion for a host's own agent loop: the Router picks the deployment, the
        rate-limit queue paces it; returns a Completion (response, text, deployment, attempts,
        tokens, cost_usd). Failures raise ProviderError. Attempt errors and the error come back
        redacted (the response itself is the host's own model's answer, returned as it came)."""
        try:
            done = await self.router.acompletion(resolution, messages, **kwargs)
        except ProviderError as exc:
            self._redact_attempts(exc.attempts)
            self._redacted(exc)
            raise
        self._redact_attempts(done.attempts)
        return done

    def _redact_attempts(self, attempts: Iterable[Any]) -> None:
        for a in attempts:
            a.error = self.redact(a.error)

    def _redacted(self, exc: DelegateError) -> None:
        """One of our errors, as it leaves the engine: message, hint, suggestions and per-task problems."""
        red = self.redact
        exc.message, exc.hint, exc.suggestions = red(exc.message), red(exc.hint), [red(x) for x in exc.suggestions]
        for p in getattr(exc, "problems", None) or []:
            p.model, p.problem, p.suggestions = red(p.model), red(p.problem), [red(x) for x in p.suggestions]

    def context_window(self, resolution: Resolution) -> int | None:
        """The input window of what a resolution reaches (the smallest known, for a group)."""
        return self.resolver.context_window(resolution)

    async def deployment_states(self) -> tuple[list[str | None], set[str] | None]:
        """For each deployment the Resolver knows (`resolver.model_list`: the config's, or a remote
        proxy's groups), the Router's id for it; and the ids cooling down now (``None``: unknown). A
        Router not built yet has no ids and no cooldowns, unless cooldowns live in Redis: then it is
        built to ask."""
        n = len(self.resolver.model_list)
        shared = any(str(k).startswith("redis") for k in self.config.router.router_settings)
        if not (shared or (self._router is not None and self._router.built)):
            return [None] * n, set()
        try:
            handle = self.router
            return handle.deployment_ids(), set(await handle.cooling_down())
        except Exception:  # noqa: BLE001 - a listing must not fail because the Router could not be asked
            return [None] * n, None

    def deployment_limits(self, router_id: str) -> dict[str, Any] | None:
        """The limits in force at a deployment, learned ones included; ``None`` before the Router exists."""
        if self._router is None or not self._router.built:
            return None
        return self._router.gate.describe(router_id) or None

    @staticmethod
    def provider_error(exc: BaseException) -> ProviderError:
        """Any exception from a model call as the engine's typed ProviderError (kind, status, hint)."""
        from ..routing._litellm import to_provider_error  # noqa: PLC0415

        return to_provider_error(exc)

    # -- listing and checking models (runtime/listing.py) ----------------------------------------
    async def model_listing(self) -> dict[str, Any]:
        """THE listing of what may be used (list_models and `hermes-delegate models` show it): tiers,
        aliases, the Resolver's groups with their deployments, models, families, allowlist, limits."""
        from .listing import model_listing  # noqa: PLC0415

        listing: dict[str, Any] = self.redactor.scrub(await model_listing(self))  # scrub keeps the shape
        return listing

    async def check_model(self, model: Any) -> dict[str, Any]:
        """What one model string resolves to, and whether it can run here (raises DelegateError)."""
        from .listing import check_model  # noqa: PLC0415

        checked: dict[str, Any] = self.redactor.scrub(await check_model(self, model))
        return checked

    def model_listing_sync(self) -> dict[str, Any]:
        """`model_listing` from synchronous code."""
        from .sync import run_sync  # noqa: PLC0415

        return run_sync(self.model_listing)

    def learned_limits(self) -> dict[str, Any]:
        """Limits other processes learned for these deployments and shared through Redis (see
        runtime/listing.learned_limits); {} without Redis."""
        from .listing import learned_limits  # noqa: PLC0415

        learned: dict[str, Any] = self.redactor.scrub(learned_limits(self))
        return learned

    def doctor(self) -> dict[str, Any]:
        """The config checked: every deployment's credentials by env var name, unset references,
        unresolvable names, ignored sections, learned limits; `problems` lists what is wrong."""
        from .listing import doctor_report  # noqa: PLC0415

        report: dict[str, Any] = self.redactor.scrub(doctor_report(self))
        return report

    # -- planning (pure) --------------------------------------------------------------------
    def _max_tokens(self, cap: float | None) -> int | None:
        mt = self.config.delegation.max_tokens
        capped = cap is not None or self.config.delegation.budget.shared  # a reservation bounds the output
        return mt if mt or not capped else DEFAULT_RESERVE_TOKENS

    def plan(self, tasks: Sequence[Task | Mapping[str, Any] | str], *, model: str | None = None,
             budget_usd: float | None = None, roots: Iterable[str | os.PathLike[str]] | None = None,
             files: str = "read") -> tuple[list[PlannedTask], float | None]:
        """Resolve and check every task; raise before anything is spent (a DelegateError, redacted).
        Tasks' `files` are read from under `roots` (default: the working directory, plus
        delegation.files.roots) into their context, or with files="hint" named in the goal; every task
        must fit its model's known context window (runtime/task_files.py). Returns (plan, budget cap)."""
        from . import task_files  # noqa: PLC0415

        s = self.config.delegation
        try:
            tasks = coerce_tasks(tasks)
            if any(t.files for t in tasks):
                tasks = (task_files.hint_files(tasks) if files == "hint"
                         else task_files.attach_files(tasks, task_files.policy_for(self, roots)))
            cap = effective_cap(s.budget_usd, budget_usd)
            pricing = None
            tightest = tightest_cap(cap, s.budget)
            if tightest is not None:
                pricing = Pricing(self.config, self.resolver, cap_usd=tightest[0],
                                  max_tokens=self._max_tokens(tightest[0]) or 0, cap_label=tightest[1],
                                  system_prompt=s.system_prompt, allow_unpriced=s.allow_unpriced)
            planned = plan_batch(tasks, self.resolver, s, call_model=model,
                                 parent_model=self.parent_model, allow=self.allowlist, pricing=pricing,
                                 classify=self.auto_classifier, check_schema=check_output_schema)
            task_files.check_fit(self, planned)
        except DelegateError as exc:
            self._redacted(exc)
            raise
        return planned, cap

    # -- running (I/O) ----------------------------------------------------------------------
    def _concurrency(self, max_concurrency: Any) -> int:
        """How many tasks may run at once: `max_concurrency` (a whole number ≥ 1), else the config's."""
        if max_concurrency is None:
            return self.config.delegation.max_concurrency
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise UsageError(f"max_concurrency must be a whole number of at least 1 (got {max_concurrency!r}).",
                             hint="Pass a positive integer, or leave it out to use delegation.max_concurrency "
                                  f"({self.config.delegation.max_concurrency}).")
        return max_concurrency

    async def run(self, tasks: Sequence[Task | Mapping[str, Any] | str], *, model: str | None = None,
                  budget_usd: float | None = None, on_event: EventCallback | None = None,
                  max_concurrency: int | None = None) -> BatchResult:
        self._concurrency(max_concurrency)
        planned, cap = self.plan(tasks, model=model, budget_usd=budget_usd)
        return await self.run_planned(planned, cap=cap, on_event=on_event, max_concurrency=max_concurrency)

    async def run_planned(self, planned: list[PlannedTask], *, cap: float | None = None,
                          on_event: EventCallback | None = None,
                          max_concurrency: int | None = None) -> BatchResult:
        s = self.config.delegation
        concurrency = self._concurrency(max_concurrency)
        # The stop exists before the start-up (litellm's import and the Router's build take seconds): an
        # interrupt() meanwhile is not lost, the batch then starts stopped (every task `interrupted`,
        # nothing sent). Inside interrupt_on_signals, a stop signal that came earlier counts too.
        stop = asyncio.Event()
        key = (asyncio.get_running_loop(), stop)
        with self._lock:
            self._stops.add(key)
            if self._halted:
                stop.set()
        try:
            if self._worker is None and not stop.is_set():
                from .warmup import import_for_first_call  # noqa: PLC0415

                # litellm, and what its first completion imports lazily (~1 s), before the clock starts
                # and off the event loop: a deployment's first request (which goes alone while its
                # limits are learned) must not wait on them
                await asyncio.to_thread(import_for_first_call)
                if not stop.is_set():
                    self.router.router  # noqa: B018 - build the Router before the clock starts
                    # the build runs on the loop: a signal that came meanwhile reaches its handler, and
                    # interrupt() sets the stop, within a few turns of the loop (about four)
                    for _ in range(8):
                        await asyncio.sleep(0)
            if self._router is not None and self._router.built:
                self._router.new_batch()  # shared windows found down before are tried again
            budget = self._account(cap)
            t0 = time.perf_counter()
            results = await fan_out(planned, self.worker, system_prompt=s.system_prompt,
                                    max_concurrency=concurrency,
                                    timeout_s=s.task_timeout_s, max_tokens=self._max_tokens(cap),
                                    budget=budget if budget.active else None, ledger=s.ledger is not False,
                                    on_event=on_event, stop=stop,
                                    redactor=self.redactor)
            await budget.close()
            await budget.read_today()
        finally:
            with self._lock:
                self._stops.discard(key)
        return BatchResult(results, time.perf_counter() - t0, budget.report() if budget else None)

    @property
    def store(self) -> Any:
        """Where this engine's caps and ledger live (spend.open_store: SQLite or Redis), or None (off)."""
        from ..spend import open_store  # noqa: PLC0415

        return open_store(self.config, self.resolver.env)

    def _account(self, cap: float | None) -> Any:
        from ..spend.account import SpendAccount  # noqa: PLC0415

        s = self.config.delegation
        account = SpendAccount(call_cap=cap, settings=s.budget, store=self.store, session=self.session,
                               tree_root=self.tree_root, door=self.door)
        return account

    def spend_report(self, *, since: float | None = None) -> dict[str, Any]:
        """The ledger summed by day, model, deployment, host and session, with the headroom under each cap
        (`hermes-delegate spend`)."""
        from ..spend.report import spend_report  # noqa: PLC0415

        return spend_report(self, since=since)

    def interrupt(self) -> None:
        """Stop every running batch of this Delegator: unfinished tasks end `interrupted`.
        Thread-safe; callable from a signal handler or another thread."""
        with self._lock:
            stops = list(self._stops)
        for loop, ev in stops:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop already closed
                pass

    def run_sync(self, tasks: Sequence[Task | Mapping[str, Any] | str], *, handle_sigint: bool = False,
                 **kw: Any) -> BatchResult:
        """Run a batch from synchronous code. With handle_sigint, Ctrl-C (and SIGTERM, SIGHUP)
        interrupts the batch cleanly (unfinished tasks come back `interrupted`) instead of raising
        KeyboardInterrupt or killing the process."""
        self._concurrency(kw.get("max_concurrency"))
        planned, cap = self.plan(tasks, model=kw.pop("model", None), budget_usd=kw.pop("budget_usd", None))
        return self.run_planned_sync(planned, cap=cap, on_signal=self.interrupt if handle_sigint else None, **kw)

    def run_planned_sync(self, planned: list[PlannedTask], *, cap: float | None = None,
                         on_signal: Callable[[], None] | None = None, **kw: Any) -> BatchResult:
        """`run_planned` from synchronous code; `on_signal` is called on SIGINT/SIGTERM/SIGHUP while the
        batch runs (pass the `stop` of `interrupt_on_signals`, or `self.interrupt`)."""
        from .sync import run_sync  # noqa: PLC0415

        return run_sync(lambda: self.run_planned(planned, cap=cap, **kw), on_signal=on_signal)

    @contextlib.contextmanager
    def interrupt_on_signals(self) -> Iterator[Callable[[], None]]:
        """For a whole command (a CLI): a stop signal interrupts this Delegator's batches and never kills
        the process, so what is known is always printed. Yields the `stop` to pass as `on_signal` (a
        host calls it too for a signal it caught before). Once stopped, a batch started later inside the
        block, or one still starting up (litellm's import, the Router's build), starts stopped: every
        task `interrupted`, nothing sent."""
        from .sync import signals_interrupt  # noqa: PLC0415

        def halt() -> None:
            with self._lock:
                self._halted = True
            self.interrupt()

        try:
            with signals_interrupt(halt) as stop:
                yield stop
        finally:
            with self._lock:
                self._halted = False
