"""`hermes-delegate spend`: where the money went, from the ledger (the Delegator's `spend_report`), and
the headroom left under each cap. `--plot FILE.png` draws spend per day stacked by model (matplotlib,
`pip install "hermes-delegate[plot]"`)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import Any, Callable

from .. import Delegator, UsageError
from .textout import TextOut

__all__ = ["cmd_spend", "parse_since"]

EXIT_OK = 0


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """`7d`, `24h`, `30m`, or a date `2026-12-01`: a unix time; None for everything."""
    if not text:
        return None
    now = time.time() if now is None else now
    t = text.strip().lower()
    units = {"d": 86400, "h": 3600, "m": 60}
    if t[-1:] in units and t[:-1].replace(".", "", 1).isdigit():
        return now - float(t[:-1]) * units[t[-1]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a span nor a date.",
                         hint="Use e.g. --since 7d, --since 24h or --since 2026-12-01.") from None


def _money(v: Any) -> str:
    return f"${v:.6f}"


def _table(title: str, groups: dict[str, dict[str, Any]], out: TextOut) -> None:
    print(title, file=out)
    for name, g in groups.items():
        unknown = f"  +{g['unknown']} unknown" if g["unknown"] else ""
        print(f"  {name:<28} {_money(g['cost_usd']):>14}  {g['tasks']:>5} tasks{unknown}", file=out)


def plot(rows_by_day_model: dict[str, dict[str, float]], path: str) -> None:
    """Spend per day, stacked by model, as a PNG."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise UsageError("--plot needs matplotlib.", hint='pip install "hermes-delegate[plot]"') from None
    days = sorted(rows_by_day_model)
    models = sorted({m for d in rows_by_day_model.values() for m in d})
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(days)
    for m in models:
        vals = [rows_by_day_model[d].get(m, 0.0) for d in days]
        ax.bar(days, vals, bottom=bottom, label=m)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]  # one per day, both
    ax.set_ylabel("US dollars")
    ax.set_title("hermes-delegate spend per day, by model")
    ax.legend(fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_spend(args: argparse.Namespace, delegator: Delegator, out: TextOut,
              print_json: Callable[[Any, TextOut], None]) -> int:
    report = delegator.spend_report(since=parse_since(args.since))
    if args.plot:
        plot(report.pop("day_model", {}), args.plot)
    else:
        report.pop("day_model", None)
    if args.json:
        print_json(report, out)
        return EXIT_OK
    print(f"ledger: {report['ledger'] or 'off (delegation.ledger: false)'}", file=out)
    total = report["total"]
    unknown = f" (+{total['unknown']} tasks of unknown cost)" if total["unknown"] else ""
    print(f"total {_money(total['cost_usd'])} over {total['tasks']} tasks{unknown}", file=out)
    for g in ("day", "model", "deployment", "host", "session"):
        if report[f"by_{g}"]:
            _table(f"by {g}:", report[f"by_{g}"], out)
    if report["caps"]:
        print("caps:", file=out)
        for cap in report["caps"]:
            if "left_usd" in cap:
                print(f"  {cap['scope']:<26} {_money(cap['spent_usd'])} spent, {_money(cap['reserved_usd'])} "
                      f"held, {_money(cap['left_usd'])} left of ${cap['cap_usd']:g}", file=out)
            else:
                print(f"  {cap['scope']:<26} ${cap['cap_usd']:g}", file=out)
    if args.plot:
        print(f"plot: {args.plot}", file=out)
    return EXIT_OK
