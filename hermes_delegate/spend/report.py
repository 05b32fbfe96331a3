"""`hermes-delegate spend`: the ledger summed by day, model, deployment, host and session, and the
headroom left under each cap right now. Unknown costs are counted as unknown, never as 0."""

from __future__ import annotations

import time
from typing import Any

from ..core.caps import scopes_for

__all__ = ["spend_report", "summarise"]

GROUPS = ("day", "model", "deployment", "host", "session")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over ledger rows: known dollars, charged dollars (estimates included), unknown count."""
    out: dict[str, Any] = {"total": _sum(rows)}
    for g in GROUPS:
        buckets: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            buckets.setdefault(str(r.get(g) or "-"), []).append(r)
        out[f"by_{g}"] = {k: _sum(v) for k, v in sorted(buckets.items())}
    return out


def _sum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    known = [r["cost_usd"] for r in rows if r.get("cost_usd") is not None]
    return {"tasks": len(rows), "cost_usd": round(sum(known), 10),
            "charged_usd": round(sum(r.get("charged_usd") or 0.0 for r in rows), 10),
            "unknown": sum(1 for r in rows if r.get("cost_usd") is None),
            "tokens_in": sum(int(r.get("tokens_in") or 0) for r in rows),
            "tokens_out": sum(int(r.get("tokens_out") or 0) for r in rows)}


def headroom(delegator: Any, store: Any) -> list[dict[str, Any]]:
    """Each configured cap: spent, held by running tasks, and what is left (the session's is this one's)."""
    s = delegator.config.delegation
    out: list[dict[str, Any]] = []
    if s.budget_usd is not None:
        out.append({"scope": "per call", "cap_usd": s.budget_usd})
    scopes = scopes_for(s.budget, now=time.time(), session=delegator.session)
    states = store.scope_states([sc.key for sc in scopes]) if store is not None and scopes else {}
    for sc in scopes:
        st = states.get(sc.key, {"spent_usd": 0.0, "reserved_usd": 0.0, "unknown": 0})
        out.append({"scope": sc.label, "key": sc.key, "cap_usd": sc.cap_usd, **st,
                    "left_usd": round(max(0.0, sc.cap_usd - st["spent_usd"] - st["reserved_usd"]), 10)})
    return out


def spend_report(delegator: Any, *, since: float | None = None) -> dict[str, Any]:
    store = delegator.store
    rows = store.rows(since) if store is not None else []
    day_model: dict[str, dict[str, float]] = {}
    for r in rows:
        d = day_model.setdefault(str(r.get("day")), {})
        d[str(r.get("model"))] = d.get(str(r.get("model")), 0.0) + float(r.get("charged_usd") or 0.0)
    return {"ledger": store.where if store is not None else None, "since": since, **summarise(rows),
            "caps": headroom(delegator, store), "rows": len(rows), "day_model": day_model}
