"""Issue 24 item 5: the SQLite ledger's group commits run on the event loop when the file's write lock is
free at that instant, and in the executor otherwise, so the loop never waits for a lock; every
settlement of a turn of the loop shares one commit; a cancelled settlement still commits, and the
write-ahead log is checkpointed off the loop.

Real SQLite files; the lock is held by another process, as another hermes-delegate would hold it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from conftest import LoopbackPair, loopback_dict
from helpers import async_wait_until, wait_until

from hermes_delegate import Delegator, Task, config_from_dict
from hermes_delegate.spend.sqlite_store import LEDGER_COLUMNS, SqliteStore

KEYS = ["day:2026-12-07", "month:2026-12"]


def _row(i: int) -> dict[str, Any]:
    return {**{c: None for c in LEDGER_COLUMNS}, "ts": time.time(), "status": "completed", "task_index": i,
            "charged_usd": 0.001}


async def _settle(store: SqliteStore, i: int) -> None:
    await store.settle(None, KEYS, 0.001, False, _row(i))


def _indexes(path: Path, *, wal: bool = True) -> list[int]:
    """The ledger's task indexes; with `wal=False` only what the database file itself holds (the
    write-ahead log ignored), i.e. what a checkpoint has copied there."""
    uri = f"file:{path}?immutable=1" if not wal else f"file:{path}"
    with sqlite3.connect(uri, uri=True, timeout=30) as db:
        try:
            return [r[0] for r in db.execute("SELECT task_index FROM ledger ORDER BY id")]
        except sqlite3.DatabaseError:  # no table in the file yet (it is only in the log), or, read
            return []  # without the file's locks (immutable), a checkpoint is writing it right now


def _spent(path: Path) -> float:
    with sqlite3.connect(path, timeout=30) as db:
        return float(db.execute("SELECT usd FROM spent WHERE scope = ?", (KEYS[0],)).fetchone()[0])


def _hold_the_write_lock(path: Path) -> subprocess.Popen[str]:
    """Another process takes the file's write lock and keeps it until `_release`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.readline()\n"
         "db.execute('COMMIT')"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)


def test_the_loop_never_waits_for_a_lock_another_process_holds(tmp_path: Path):
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path)

    async def main() -> None:
        await _settle(store, 0)  # the file's first commit (the executor's): the schema exists now
        holder = await asyncio.to_thread(_hold_the_write_lock, path)
        try:
            settling = asyncio.ensure_future(_settle(store, 1))
            turns = 0

            async def ticking() -> bool:
                nonlocal turns
                turns += 1
                await asyncio.sleep(0)
                return turns >= 200

            await async_wait_until(ticking, 30, "200 turns of the loop while the lock is held",
                                   interval_s=0)
            assert not settling.done(), "the settlement cannot commit while another process holds the lock"
            await asyncio.to_thread(_release, holder)
            await asyncio.wait_for(settling, 60)  # liveness only: it commits once the lock is free
        finally:
            holder.kill() if holder.poll() is None else None
            holder.wait()

    asyncio.run(main())
    assert _indexes(path) == [0, 1]
    store.close()


def test_the_settlements_of_one_turn_share_one_commit_on_the_loop(tmp_path: Path):
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path)

    async def main() -> int:
        await _settle(store, 0)
        before = store._loop_commits
        await asyncio.gather(*[_settle(store, i) for i in range(1, 201)])  # all settle in one turn
        return store._loop_commits - before

    assert asyncio.run(main()) == 1
    assert _indexes(path) == list(range(201))
    assert abs(_spent(path) - 0.201) < 1e-9
    store.close()


def test_a_cancelled_settlement_is_still_committed_and_its_turn_too(tmp_path: Path):
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path)

    async def main() -> list[Any]:
        await _settle(store, 0)
        tasks = [asyncio.ensure_future(_settle(store, i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)  # each has started; the first one commits the turn once it resumes
        tasks[0].cancel()  # ... but it is cancelled first
        # liveness only: with the turn dropped, the other two would wait for ever
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)

    outcome = asyncio.run(main())
    assert isinstance(outcome[0], asyncio.CancelledError) and outcome[1:] == [None, None]
    assert _indexes(path) == [0, 1, 2, 3]  # a paid result's row is never lost to a cancellation
    store.close()


def test_the_write_ahead_log_is_checkpointed_off_the_loop(tmp_path: Path):
    """The loop's connection never checkpoints (its fsyncs would block the loop); the executor does,
    every 64 group commits on the loop, so the rows reach the database file itself."""
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path)

    async def main() -> None:
        await _settle(store, 0)
        for i in range(1, 65):  # one commit per turn
            await _settle(store, i)
        await async_wait_until(lambda: len(_indexes(path, wal=False)) >= 64, 30,
                               "the checkpoint to copy the first 64 commits into the database file")

    asyncio.run(main())
    assert _indexes(path) == list(range(65))
    store.close()


def test_a_batch_interrupted_while_a_task_settles_keeps_that_tasks_paid_result(providers: LoopbackPair,
                                                                                tmp_path: Path):
    """The task has its answer and is settling (its commit waits for a write lock another process holds)
    when the batch is interrupted: the result stays `completed`, with its cost, and its ledger row is
    written. Before, the interrupt cut the settlement's await and the result came back `interrupted`."""
    path = tmp_path / "ledger.sqlite3"
    d = Delegator(config_from_dict(loopback_dict(providers, ledger=str(path), max_tokens=20)), env={})
    assert d.run_sync([Task("warm", model="priced")]).ok  # the file's first commit (the executor's)
    store = d.store
    holder = _hold_the_write_lock(path)
    try:
        got: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: got.update(batch=d.run_sync([Task("paid", model="priced")])))
        runner.start()
        wait_until(lambda: store._flushing, 30, "the settlement to wait for the lock, in the executor")
        d.interrupt()
        _release(holder)
        runner.join(60)
        assert not runner.is_alive()
    finally:
        _release(holder)
    res = got["batch"].results[0]
    assert (res.status, res.cost_usd is not None and res.cost_usd > 0) == ("completed", True), (res.status, res.error)
    assert [r for r in _indexes(path)] == [0, 0]  # the warm-up's row and this one's
