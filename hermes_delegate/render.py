"""How the CLI shows things to a person: progress lines, a live view on a TTY, summaries.

Plain lines everywhere; with rich installed and a TTY, a live per-task view instead.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from .results import BatchResult, ProgressEvent, TaskResult

__all__ = ["task_line", "Progress", "summary_lines"]

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
        cost_txt += f" ({cost['unknown']} task{'s' if cost['unknown'] != 1 else ''} with unknown price)"
    speed = f"{total_task / batch.total_duration_s:.1f}× parallel" if batch.total_duration_s > 0 else ""
    lines = [f"{len(batch.results)} tasks: {counts}",
             f"wall time {batch.total_duration_s:.2f}s vs {total_task:.2f}s summed task time ({speed})",
             f"cost {cost_txt}"]
    if batch.budget:
        b = batch.budget
        lines.append(f"budget: spent ${b['spent_usd']:.6f} of ${b['cap_usd']:.6f} (reserved ${b['reserved_usd']:.6f})")
    return lines


class Progress:
    """An on_event callback. Thread-safe; writes to `out` (the real stdout, even if redirected)."""

    def __init__(self, total: int, out: TextIO | None = None, live: bool | None = None):
        self.total = total
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._live: Any = None
        self._rows: dict[int, str] = {}
        if live is None:
            live = bool(getattr(self.out, "isatty", lambda: False)())
        if live:
            try:
                from rich.console import Console  # noqa: PLC0415
                from rich.live import Live  # noqa: PLC0415

                self._console = Console(file=self.out)
                self._live = Live(console=self._console, refresh_per_second=8, transient=False)
            except ImportError:
                self._live = None

    def __enter__(self) -> "Progress":
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def _render(self) -> Any:
        from rich.text import Text  # noqa: PLC0415

        return Text("\n".join(self._rows[i] for i in sorted(self._rows)))

    def __call__(self, ev: ProgressEvent) -> None:
        with self._lock:
            if ev.kind == "start":
                line = f"… [{ev.index + 1}/{ev.total}] {_short(ev.goal)} · {ev.model}"
            else:
                assert ev.result is not None
                line = task_line(ev.result, ev.total)
            if self._live is not None:
                self._rows[ev.index] = line
                self._live.update(self._render())
            elif ev.kind == "done":
                print(line, file=self.out, flush=True)
