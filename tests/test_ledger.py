"""Issue 22: the spend ledger (SQLite in the XDG state directory, or Redis), `hermes-delegate spend`, and
reservations that outlive neither a crash nor their lease."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import LoopbackPair, loopback_dict
from hermes_delegate import Delegator, Task, config_from_dict
from hermes_delegate.hosts import cli

ROOT = Path(__file__).resolve().parents[1]


def wait_until(what: Callable[[], Any], timeout: float = 30.0, describe: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = what()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s: {describe} (last seen {last!r})")


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=30) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY id")]


def held(path: Path) -> float:
    if not path.exists():
        return 0.0
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COALESCE(SUM(amount), 0) FROM holds WHERE expires >= ?",
                              (time.time(),)).fetchone()[0]
    except sqlite3.OperationalError:  # the schema is being created
        return 0.0


def test_every_settled_task_is_a_ledger_row(providers: LoopbackPair, tmp_path: Path):
    ledger = tmp_path / "spend" / "ledger.sqlite3"
    cfg = config_from_dict(loopback_dict(providers, ledger=str(ledger), max_tokens=20))
    d = Delegator(cfg, env={}, session="sess-1", door="python")
    batch = d.run_sync([Task("a", model="priced"), Task("b", model="alpha"), Task("c", model="priced")])
    assert batch.ok
    rows = ledger_rows(ledger)
    assert [r["task_index"] for r in rows] and sorted(r["task_index"] for r in rows) == [0, 1, 2]
    by_index = {r["task_index"]: r for r in rows}
    assert by_index[0]["cost_usd"] == pytest.approx(batch.results[0].cost_usd) and by_index[0]["cost_usd"] > 0
    assert by_index[1]["cost_usd"] is None and by_index[1]["model"] == "alpha"  # unpriced: unknown, never 0
    assert {r["session"] for r in rows} == {"sess-1"} and {r["deployment"] for r in rows} == {"priced-1", "alpha-1"}
    assert all(r["tokens_in"] > 0 and r["host"] and r["day"] for r in rows)
    with sqlite3.connect(ledger) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_location_is_the_xdg_state_dir_and_false_turns_it_off(providers: LoopbackPair, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    Delegator(config_from_dict(loopback_dict(providers))).run_sync([Task("a", model="alpha")])
    assert len(ledger_rows(tmp_path / "state" / "hermes-delegate" / "ledger.sqlite3")) == 1
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "off"))
    Delegator(config_from_dict(loopback_dict(providers, ledger=False))).run_sync([Task("a", model="alpha")])
    assert not (tmp_path / "off").exists()


def _write(tmp_path: Path, providers: LoopbackPair, n: int, **delegation: Any) -> tuple[Path, Path]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(loopback_dict(providers, **delegation)))
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump([{"goal": f"task {i}", "model": "priced"} for i in range(n)]))
    return cfg, tasks


def test_spend_command_sums_the_ledger_and_shows_headroom(providers: LoopbackPair, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]):
    ledger = tmp_path / "l.sqlite3"
    cfg, tasks = _write(tmp_path, providers, 3, ledger=str(ledger), max_tokens=20, budget={"daily_usd": 5})
    assert cli.main(["run", str(tasks), "--config", str(cfg)]) == 0
    ran = capsys.readouterr().out
    assert "daily cap" in ran and "today $" in ran
    assert cli.main(["spend", "--config", str(cfg), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ledger"] == str(ledger) and report["total"]["tasks"] == 3
    assert report["total"]["cost_usd"] > 0
    assert report["by_model"]["priced"]["cost_usd"] == pytest.approx(report["total"]["cost_usd"])
    daily = next(c for c in report["caps"] if c["scope"].startswith("daily cap"))
    assert daily["left_usd"] == pytest.approx(5 - report["total"]["charged_usd"])
    assert cli.main(["spend", "--config", str(cfg), "--since", "1d"]) == 0
    text = capsys.readouterr().out
    assert "by deployment:" in text and "priced-1" in text and "left of $5" in text
    assert cli.main(["doctor", "--config", str(cfg)]) == 0
    assert f"ledger: {ledger}" in capsys.readouterr().out


def test_spend_plot_draws_a_png(providers: LoopbackPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("matplotlib")
    cfg, tasks = _write(tmp_path, providers, 2, ledger=str(tmp_path / "l.sqlite3"))
    assert cli.main(["run", str(tasks), "--config", str(cfg)]) == 0
    png = tmp_path / "spend.png"
    assert cli.main(["spend", "--config", str(cfg), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _readlines_until(proc: subprocess.Popen, enough: Callable[[list[str]], bool], timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    buf = b""
    while not enough(lines):
        assert time.monotonic() < deadline, f"not enough output: {lines}"
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the process ended: {lines}"
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [x.decode() for x in done]
    return lines


@pytest.mark.slow
def test_kill_9_mid_batch_loses_no_settled_row(providers: LoopbackPair, tmp_path: Path):
    ledger = tmp_path / "l.sqlite3"
    providers.alpha.latency_s = 0.2
    cfg, tasks = _write(tmp_path, providers, 40, ledger=str(ledger), max_concurrency=2, max_tokens=20)
    proc = subprocess.Popen([sys.executable, "-m", "hermes_delegate", "run", str(tasks), "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        lines = _readlines_until(proc, lambda ls: sum("completed" in x or "✓" in x for x in ls) >= 5, 120)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = [x for x in lines if x.strip()]
    rows = ledger_rows(ledger)
    assert len(rows) >= len(done) >= 5, (len(rows), done)
    assert len(rows) < 40  # it was killed mid-batch
    assert all(r["status"] == "completed" and r["cost_usd"] > 0 for r in rows)


@pytest.mark.slow
def test_a_killed_process_reservations_are_released_after_the_lease(providers: LoopbackPair, tmp_path: Path):
    ledger = tmp_path / "l.sqlite3"
    providers.alpha.latency_s = 20  # the tasks are in flight, holding their reservations
    budget = {"daily_usd": 1.0, "lease_s": 1.5}
    cfg, tasks = _write(tmp_path, providers, 2, ledger=str(ledger), max_tokens=20, budget=budget)
    proc = subprocess.Popen([sys.executable, "-m", "hermes_delegate", "run", str(tasks), "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_until(lambda: held(ledger) > 0, 60, "the batch holds its reservations")
        wait_until(lambda: len(providers.alpha.requests) >= 2, 30, "both tasks sent")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert held(ledger) > 0  # still held right after the crash...
    wait_until(lambda: held(ledger) == 0, 30, "the dead process's holds lapse after the lease")


def test_a_running_batch_renews_its_holds_past_the_lease(providers: LoopbackPair, tmp_path: Path):
    """A live process keeps its reservations for as long as its tasks run (the lease is renewed)."""
    import threading

    ledger = tmp_path / "l.sqlite3"
    providers.alpha.latency_s = 2.5
    cfg = config_from_dict(loopback_dict(providers, ledger=str(ledger), max_tokens=20,
                                         budget={"daily_usd": 1.0, "lease_s": 0.6}))
    seen: list[float] = []
    t = threading.Thread(target=lambda: Delegator(cfg, env={}).run_sync([Task("a", model="priced")]))
    t.start()
    wait_until(lambda: held(ledger) > 0, 60, "held")
    first = wait_until(lambda: len(providers.alpha.requests), 30, "sent")
    while t.is_alive():
        seen.append(held(ledger))
        time.sleep(0.05)
    t.join()
    assert first and min(seen[: max(1, len(seen) - 10)]) > 0  # held throughout, well past 0.6 s


# -- Redis: caps and ledger shared by every process naming the same server ------------------------------
def test_redis_store_shares_the_daily_cap_and_the_ledger(providers: LoopbackPair, tmp_path: Path, redis_port: int):
    ns = f"t{uuid.uuid4().hex[:10]}"
    data = loopback_dict(providers, router_settings={"num_retries": 0, "redis_url": f"redis://127.0.0.1:{redis_port}"},
                         max_tokens=20, budget={"daily_usd": 1.0, "namespace": ns})
    probe = Delegator(config_from_dict(data), env={})
    (planned,), _ = probe.plan([Task("x", model="priced")])
    data["delegation"]["budget"]["daily_usd"] = planned.reserve_usd * 1.5
    cfg = config_from_dict(data)
    a, b = Delegator(cfg, env={}), Delegator(cfg, env={})
    statuses = []
    for i in range(30):
        statuses.append((a if i % 2 else b).run_sync([Task(f"t{i}", model="priced")]).results[0].status)
        if statuses[-1] == "skipped_budget":
            break
    sent = len(providers.alpha.requests)
    refused = b.run_sync([Task("late", model="priced")])
    assert len(providers.alpha.requests) == sent and refused.results[0].error["type"] == "budget"
    report = a.spend_report()
    assert report["ledger"].startswith("redis://127.0.0.1:") and report["ledger"].endswith(ns)
    assert report["total"]["tasks"] == statuses.count("completed") >= 2
    assert report["total"]["charged_usd"] <= planned.reserve_usd * 1.5
    daily = next(c for c in report["caps"] if c["scope"].startswith("daily cap"))
    assert daily["spent_usd"] == pytest.approx(report["total"]["charged_usd"])


# -- MCP: the session is the server process, unless the client names one in _meta ----------------------
def test_mcp_session_scope_comes_from_the_clients_meta(providers: LoopbackPair, tmp_path: Path):
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    ledger = tmp_path / "l.sqlite3"
    data = loopback_dict(providers, ledger=str(ledger), max_tokens=20, budget={"per_session_usd": 1.0})
    (planned,), _ = Delegator(config_from_dict(data), env={}).plan([Task("x", model="priced")])
    data["delegation"]["budget"]["per_session_usd"] = planned.reserve_usd * 1.5
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(data))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "XDG_CONFIG_HOME": os.environ["XDG_CONFIG_HOME"], "NO_PROXY": "127.0.0.1,localhost"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "hermes_delegate", "mcp", "--config", str(cfg)],
                                   env=env)
    outcomes: dict[str, list[str]] = {"A": [], "B": [], "server": []}

    async def one(client: Any, session: str | None) -> str:
        meta = {"session_id": session} if session else None
        out = await client.call_tool("delegate_task", {"goal": "hi", "model": "priced"}, meta=meta)
        return out.structured_content["results"][0]["status"]

    async def main() -> None:
        async with Client(params) as client:
            for _ in range(20):
                outcomes["A"].append(await one(client, "A"))
                if outcomes["A"][-1] == "skipped_budget":
                    break
            outcomes["B"].append(await one(client, "B"))  # another session: its own cap
            outcomes["server"].append(await one(client, None))  # no _meta: the server process's session

    anyio.run(main)
    assert outcomes["A"][-1] == "skipped_budget" and outcomes["A"].count("completed") >= 1
    assert outcomes["B"] == ["completed"] and outcomes["server"] == ["completed"]
    sessions = {r["session"] for r in ledger_rows(ledger)}
    assert {"mcp:A", "mcp:B"} < sessions and len(sessions) == 3


# -- hermes: the delegation tree shares the root session's caps ------------------------------------------
@pytest.mark.slow
def test_nested_hermes_delegation_draws_from_the_root_sessions_cap(tmp_path: Path, providers: LoopbackPair):
    pytest.importorskip("run_agent", reason="hermes-agent is not installed (pip install -e '.[test]')")
    from hermes_delegate.loopback import LoopbackProvider
    from hermes_helpers import make_home, parent_responder, run_scenario

    ledger = tmp_path / "l.sqlite3"
    data = loopback_dict(providers, ledger=str(ledger), budget={"per_session_usd": 1.0})
    (planned,), _ = Delegator(config_from_dict(data), env={}).plan([Task("orchestrate the review", model="priced")])
    # room for one task's reservation, not two: while the child runs, its own delegation cannot fit
    data["delegation"]["budget"]["per_session_usd"] = planned.reserve_usd * 1.5

    def alpha(body: dict, p: Any) -> Any:
        msgs = body.get("messages") or []
        user = next((str(m.get("content")) for m in msgs if m.get("role") == "user"), "")
        if "orchestrate" not in user:
            return "grandchild answer"
        if msgs[-1].get("role") == "tool":
            return "orchestrated: " + str(msgs[-1].get("content"))[:2000]
        return {"content": None, "tool_calls": [{"function": {"name": "delegate_task", "arguments": {
            "tasks": [{"goal": "grandchild check", "model": "priced"}]}}}]}

    providers.alpha.responder = alpha
    with LoopbackProvider("parent") as parent:
        parent.responder = parent_responder({"nest": {"tasks": [{"goal": "orchestrate the review", "model": "priced",
                                                                 "role": "orchestrator"}]}}, tool="delegate_task")
        home = make_home(tmp_path, {**data["delegation"], "router": data["router"]}, builtin=True,
                         extra={"delegation": {"max_spawn_depth": 2}})
        out = run_scenario(home, parent_url=parent.base_url,
                           conversations=[{"user": "run:nest", "disabled_toolsets": [], "wait_background": True}],
                           timeout=180)
    conv = out["conversations"][0]
    bg = conv["background"]
    assert bg["status"] == "completed", bg
    summary = bg["results"][0]["summary"]
    assert summary.startswith("orchestrated:") and "skipped_budget" in summary and "session cap" in summary
    assert not any("grandchild check" in str(m.get("content")) for r in providers.alpha.requests for m in r.messages
                   if m.get("role") == "user" and "orchestrate" not in str(m.get("content")))
    rows = ledger_rows(ledger)
    assert [r["session"] for r in rows] == [f"hermes:{conv['session_id']}"]


def test_rows_redis_cannot_take_are_kept_in_the_local_ledger(providers: LoopbackPair, tmp_path: Path):
    from helpers import free_port

    ledger = tmp_path / "local.sqlite3"
    data = loopback_dict(providers, router_settings={"num_retries": 0, "redis_url": f"redis://127.0.0.1:{free_port()}"},
                         ledger=str(ledger), max_tokens=20)
    d = Delegator(config_from_dict(data), env={})
    assert d.store.where.startswith("redis://")
    batch = d.run_sync([Task("a", model="priced"), Task("b", model="priced")])
    assert batch.ok
    assert sorted(r["task_index"] for r in ledger_rows(ledger)) == [0, 1]


def test_a_daily_cap_that_cannot_be_checked_is_not_passed(providers: LoopbackPair, tmp_path: Path):
    from helpers import free_port

    data = loopback_dict(providers, router_settings={"num_retries": 0, "redis_url": f"redis://127.0.0.1:{free_port()}"},
                         ledger=str(tmp_path / "l.sqlite3"), max_tokens=20, budget={"daily_usd": 5})
    batch = Delegator(config_from_dict(data), env={}).run_sync([Task("a", model="priced")])
    assert batch.results[0].status == "skipped_budget" and "cannot be reached" in batch.results[0].error["message"]
    assert providers.alpha.requests == []
