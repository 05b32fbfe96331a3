"""Issue 24: per-request work only limited deployments need is skipped for the others, and the spend
ledger's group commit writes what one settlement after another would.

A deployment with no configured limit and `learn_limits: false` can only ever be held by a 429's
Retry-After: the gate keeps no per-request state for it (no slot counts, no learning bookkeeping),
while a 429 from it still holds it and is still counted. Deployments with limits keep every step.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from conftest import LOOPBACK_KEY, LoopbackPair, loopback_config

from hermes_delegate import Delegator, Task
from hermes_delegate.spend.sqlite_store import LEDGER_COLUMNS, SqliteStore


def test_an_unlimited_deployment_that_learns_nothing_gets_no_gate_state(providers: LoopbackPair):
    d = Delegator(loopback_config(providers, learn_limits=False), env={})
    batch = d.run_sync([Task(f"task {i}", model="alpha") for i in range(6)])
    assert [r.status for r in batch.results] == ["completed"] * 6
    gate = d.router.gate
    assert "alpha-1" not in gate._state and "alpha-1" not in gate.adaptive, (dict(gate._state), dict(gate.adaptive))


def test_a_429_still_holds_and_counts_an_unlimited_deployment_that_learns_nothing(providers: LoopbackPair):
    d = Delegator(loopback_config(providers, learn_limits=False), env={})
    assert d.run_sync([Task("warm", model="alpha")]).results[0].status == "completed"
    providers.alpha.retry_after = 30
    providers.alpha.script(["429"])
    res = d.run_sync([Task("limited", model="alpha")]).results[0]
    assert res.status == "failed" and res.error["type"] == "rate_limit", res.error
    gate = d.router.gate
    assert "alpha-1" in gate.blocked_ids()
    assert gate.describe("alpha-1").get("rate_limited") == 1


def test_a_deployment_with_a_configured_limit_keeps_its_gate_state(providers: LoopbackPair):
    extra = [{"model_name": "paced", "litellm_params": {"model": "openai/alpha-model", "api_base": providers.alpha.base_url,
                                                        "api_key": LOOPBACK_KEY, "rpm": 6000},
              "model_info": {"id": "paced-1"}}]
    d = Delegator(loopback_config(providers, learn_limits=False, model_list_extra=extra), env={})
    batch = d.run_sync([Task(f"task {i}", model="paced") for i in range(4)])
    assert [r.status for r in batch.results] == ["completed"] * 4
    gate = d.router.gate
    assert "paced-1" in gate.limits and "paced-1" in gate._state and gate._state["paced-1"].warm


def _settlements(n: int, seed: int) -> list[tuple[str | None, list[str], float, bool, dict[str, Any] | None]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        row = None if i % 7 == 0 else {c: rnd.random() if c in ("ts", "cost_usd", "charged_usd") else f"{c}-{i}"
                                       for c in LEDGER_COLUMNS}
        keys = ["day:2026-12-07", "month:2026-12", *([f"session:s{i % 5}"] if i % 2 else [])]
        out.append((f"hold-{i}" if i % 3 else None, keys, rnd.random() / 7, i % 4 == 0, row))
    return out


def _settle_one(db: sqlite3.Connection, hold_id: str | None, scope_keys: list[str], usd: float, unknown: bool,
                row: dict[str, Any] | None) -> None:
    """The oracle: one settlement, one statement per hold, scope and row (what the store once did)."""
    if hold_id is not None:
        db.execute("DELETE FROM holds WHERE id = ?", (hold_id,))
    for key in scope_keys:
        db.execute("INSERT INTO spent (scope, usd, unknown) VALUES (?, ?, ?) ON CONFLICT(scope) DO UPDATE "
                   "SET usd = usd + excluded.usd, unknown = unknown + excluded.unknown", (key, usd, int(unknown)))
    if row is not None:
        db.execute(f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) VALUES ({', '.join('?' * len(LEDGER_COLUMNS))})",
                   [row.get(c) for c in LEDGER_COLUMNS])


def _store(path: Path, variable_limit: int | None = None) -> SqliteStore:
    store = SqliteStore(path)
    db = store._db()
    if variable_limit is not None:
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variable_limit)
    db.executemany("INSERT INTO holds VALUES (?, ?, ?, ?, ?)",
                   [(f"hold-{i}", "day:2026-12-07", 1.0, "owner", 1e12) for i in range(900)])
    db.execute("INSERT INTO spent VALUES ('day:2026-12-07', 0.3, 1)")
    return store


def _contents(store: SqliteStore) -> list[list[Any]]:
    db = store._db()
    return [db.execute(q).fetchall() for q in ("SELECT * FROM holds ORDER BY id", "SELECT * FROM spent ORDER BY scope",
                                               "SELECT * FROM ledger ORDER BY id")]


def test_a_group_commit_leaves_the_ledger_as_one_settlement_after_another_would(tmp_path: Path):
    for n, limit in ((700, None), (300, 40), (1, 40)):  # the last two: statements split at the variable limit
        batch = _settlements(n, seed=n)
        one_by_one, grouped = _store(tmp_path / f"a{n}.sqlite3"), _store(tmp_path / f"b{n}.sqlite3", limit)
        one_by_one._tx(lambda db, b=batch: [_settle_one(db, *s) for s in b])
        grouped._tx(lambda db, b=batch: SqliteStore._apply_batch(db, b))
        assert _contents(grouped) == _contents(one_by_one)  # the same floats, summed in the same order
        one_by_one.close()
        grouped.close()
