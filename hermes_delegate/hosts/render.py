"""How the CLI shows things to a person: progress lines, a live view on a TTY, summaries.

Plain lines everywhere; on a TTY, a live per-task view instead (rich): a "loading providers…" line
while the engine starts, every task as a row from the start (pending, then running, with its elapsed
time), each row replaced by its result line when it ends.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any, cast

from .. import BatchResult, DelegateError, ProgressEvent, TaskResult
from .textout import TextOut

__all__ = ["task_line", "Progress", "summary_lines", "for_people"]

_ICON = {"completed": "✓", "failed": "✗", "timeout": "⏱", "interrupted": "■", "skipped_budget": "$"}


def _short(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def served_by(r: TaskResult) -> str:
    d = r.deployment
    if d is None:
        return r.model or "?"
    where = f"{d.provider}@{d.api_host}" if d.api_host else (d.provider or "?")
    return f"{d.model or r.model} via {where}"


def task_line(r: TaskResult, total: int) -> str:
    """`✓ [1/3] goal (4.7s) · model via provider@host` — the built-in tool's shape, plus who served it."""
    asked = f"{r.model_requested} → " if r.model_requested and r.model_requested != r.model else ""
    line = (f"{_ICON.get(r.status, '?')} [{r.index + 1}/{total}] {_short(r.goal, 40)} ({r.duration_s:.1f}s)"
            f" · {asked}{served_by(r)}")
    if r.status != "completed":
        msg = (r.error or {}).get("message", r.status)
        line += f" — {r.status}: {_short(str(msg), 100)}"
    return line


def summary_lines(batch: BatchResult) -> list[str]:
    counts = ", ".join(f"{n} {s}" for s, n in batch.counts().items())
    total_task = sum(r.duration_s for r in batch.results)
    cost = batch.cost()
    cost_txt = "unknown" if cost["total_usd"] is None else f"${cost['total_usd']:.6f}"
    if cost["unknown"]:
        unpriced = [f"{r.index + 1} ({r.model})" for r in batch.results
                    if r.cost_usd is None and r.status == "completed"]
        more = f" and {len(unpriced) - 5} more" if len(unpriced) > 5 else ""
        cost_txt += (f" (unknown price: task{'s' if len(unpriced) != 1 else ''} {', '.join(unpriced[:5])}{more};"
                     " set input_cost_per_token/output_cost_per_token in its model_list entry)")
    speed = f"{total_task / batch.total_duration_s:.1f}× parallel" if batch.total_duration_s > 0 else ""
    lines = [f"{len(batch.results)} tasks: {counts}",
             f"wall time {batch.total_duration_s:.2f}s vs {total_task:.2f}s summed task time ({speed})",
             f"cost {cost_txt}"]
    b = batch.budget or {}
    if b.get("cap_usd") is not None:
        lines.append(f"budget: spent ${b['spent_usd']:.6f} of ${b['cap_usd']:.6f} (reserved ${b['reserved_usd']:.6f})")
    if b.get("today") is not None:
        t = b["today"]
        unknown = f", {t['unknown']} unknown" if t.get("unknown") else ""
        lines.append(f"this call ${b.get('charged_usd', 0.0):.6f}; today ${t['spent_usd']:.6f} of the "
                     f"${t['cap_usd']:g} daily cap ({t['day']}{unknown})")
    return lines


class Progress:
    """An on_event callback. Thread-safe; writes to `out` (the real stdout, even if redirected)."""

    def __init__(self, total: int, out: TextOut | None = None, live: bool | None = None,
                 goals: list[str] | None = None, clock: Any = time.monotonic):
        self.total = total
        self.out = out or sys.stdout
        self.clock = clock
        self._lock = threading.Lock()
        self._live: Any = None
        self._rows: dict[int, str] = {}  # finished rows
        self._goals = list(goals or [])
        self._running: dict[int, tuple[str, float]] = {}  # index -> (text, started)
        self._t0 = clock()
        self._started = False
        if live is None:
            live = bool(getattr(self.out, "isatty", lambda: False)())
        if live:
            try:
                from rich.console import Console  # noqa: PLC0415
                from rich.live import Live  # noqa: PLC0415

                # rich writes and flushes; isatty, fileno and encoding it reads with getattr() and fallbacks
                self._console = Console(file=cast(IO[str], self.out))
                self._live = Live(console=self._console, refresh_per_second=8, transient=False,
                                  get_renderable=self._render)
            except ImportError:
                self._live = None

    def __enter__(self) -> "Progress":
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def lines(self) -> list[str]:
        """The live view's text now (also what tests read)."""
        with self._lock:
            now = self.clock()
            out = [] if self._started else [f"loading providers… ({now - self._t0:.1f}s)"]
            for i in range(max(self.total, len(self._goals))):
                if i in self._rows:
                    out.append(self._rows[i])
                elif i in self._running:
                    text, t = self._running[i]
                    out.append(f"… [{i + 1}/{self.total}] {text} ({now - t:.1f}s)")
                elif i < len(self._goals):
                    out.append(f"· [{i + 1}/{self.total}] {_short(self._goals[i])} (pending {now - self._t0:.1f}s)")
            return out

    def _render(self) -> Any:
        from rich.text import Text  # noqa: PLC0415

        return Text("\n".join(self.lines()))

    def __call__(self, ev: ProgressEvent) -> None:
        with self._lock:
            self._started = True
            if ev.kind == "start":
                self._running[ev.index] = (f"{_short(ev.goal)} · {ev.model}", self.clock())
                line = ""
            else:
                if ev.result is None:
                    raise ValueError("a done event carries its task's result")
                line = task_line(ev.result, ev.total)
                self._running.pop(ev.index, None)
                self._rows[ev.index] = line
        if self._live is not None:
            self._live.refresh()
        elif ev.kind == "done":
            print(line, file=self.out, flush=True)


def for_people(exc: DelegateError) -> str:
    """An error as a person at a shell reads it: tasks numbered from 1 (`Task 2 (tasks[1])`; JSON keeps
    the 0-based `index`), and the CLI's own command where a hint names the agent tool."""
    return str(exc).replace("see list_models", "see `hermes-delegate models`")  # BatchValidationError: 1-based

