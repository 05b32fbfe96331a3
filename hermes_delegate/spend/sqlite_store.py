"""The spend store on one machine: a SQLite file (stdlib `sqlite3`, WAL), by default
`$XDG_STATE_HOME/hermes-delegate/ledger.sqlite3`.

Three tables: `holds` (one row per reservation and scope: owner, amount, lease expiry), `spent` (per scope
key: dollars settled and how many settled tasks had an unknown cost) and `ledger` (one row per settled
task). A reservation checks and takes every scope in one `BEGIN IMMEDIATE` transaction, so processes
sharing the file never pass a cap together; a settlement moves the hold to `spent` and appends the
ledger row in one commit, so a crash loses no settled row. Calls run off the event loop (its executor), one
at a time, except one: a group commit of settlements runs on the loop itself when the file's write lock
is free at that instant (it never waits there), and in the executor otherwise (see `settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar, TypeVarTuple, Unpack

from ..core.caps import Scope

__all__ = ["SqliteStore", "default_ledger_path", "LEDGER_COLUMNS"]

LEDGER_COLUMNS = ("ts", "day", "status", "cost_usd", "charged_usd", "estimated", "tokens_in", "tokens_out",
                  "model", "deployment", "provider", "api_host", "host", "door", "session", "tree_root",
                  "error_type", "task_index")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS holds (id TEXT NOT NULL, scope TEXT NOT NULL, amount REAL NOT NULL, owner TEXT NOT NULL,
                                  expires REAL NOT NULL, PRIMARY KEY (id, scope));
CREATE INDEX IF NOT EXISTS holds_scope ON holds (scope, expires);
CREATE TABLE IF NOT EXISTS spent (scope TEXT PRIMARY KEY, usd REAL NOT NULL DEFAULT 0,
                                  unknown INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY, {", ".join(LEDGER_COLUMNS)});
CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts);
"""
# the column names are the constant above; every value is bound
_ROW_VALUES = f"({', '.join('?' * len(LEDGER_COLUMNS))})"
_INSERT_ROWS = f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) VALUES "  # noqa: S608 - as above
_SELECT_ROWS = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger WHERE ts >= ? ORDER BY ts"  # noqa: S608 - as above

#: group commits on the loop between two checkpoints of the WAL (run in the executor)
_CHECKPOINT_EVERY = 64
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
#: a settlement's arguments (SqliteStore.settle's): hold id, scope keys, dollars, unknown cost, ledger row
_Settlement = tuple[str | None, Sequence[str], float, bool, dict[str, Any] | None]
#: a settlement waiting for its commit: the loop it came from, the future its settle() awaits, its arguments
_Waiting = tuple[asyncio.AbstractEventLoop, asyncio.Future[None], _Settlement]


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    """`values` in consecutive pieces of at most `size` (a statement's bound variables are limited)."""
    return [values[i:i + size] for i in range(0, len(values), size)]


def _settled(futs: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """On the futures' loop: the commit holding their settlements is done (or failed with `error`)."""
    for f in futs:
        if not f.done():
            f.set_exception(error) if error is not None else f.set_result(None)


def default_ledger_path(env: Any = None) -> Path:
    """`$XDG_STATE_HOME/hermes-delegate/ledger.sqlite3` (default `~/.local/state/...`)."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "hermes-delegate" / "ledger.sqlite3"


class SqliteStore:
    """Caps and ledger in one SQLite file. Open lazily: nothing is created until the first write or read."""

    shared_across_machines = False
    #: a settlement is committed even when the coroutine awaiting `settle` is cancelled (see there)
    settles_when_cancelled = True

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        # settlements of the current turn of each loop; those handed to the executor (`_flush`)
        self._turns: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
        self._pending: list[_Waiting] = []
        self._flushing = False
        # the connection group commits use on a loop: never waits for a lock, never checkpoints
        self._loop_conn: sqlite3.Connection | None = None
        self._loop_lock = threading.Lock()
        self._loop_commits = 0

    @property
    def where(self) -> str:
        return str(self.path)

    # -- the connection, on the store's thread ----------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # a process crash loses no commit in WAL mode
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def _open_loop_conn(self) -> None:
        """The connection group commits use on the event loop (opened here, off the loop, once the schema
        exists): a busy timeout of 0, so a write lock held by another process or thread is never waited
        for on the loop (that commit goes to the executor instead), and no automatic checkpoint, whose
        fsyncs would block the loop (the executor runs them, `_checkpoint`)."""
        if self._loop_conn is None:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._loop_conn = conn

    def _tx(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            return self._finish(db, fn)

    @staticmethod
    def _finish(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """`fn` inside the transaction just begun on `db`: committed, or rolled back if it or the commit
        fails (a failed COMMIT must not leave the shared connection inside a transaction)."""
        try:
            out = fn(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return out

    async def _call(self, fn: Callable[[Unpack[_Ts]], _T], *args: Unpack[_Ts]) -> _T:
        # the loop's own executor: its threads end with the loop (no thread of ours outlives a batch);
        # one connection, every use under self._lock
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- caps ---------------------------------------------------------------------------------------
    @staticmethod
    def _state(db: sqlite3.Connection, scope: str, now: float) -> tuple[float, float, int]:
        row = db.execute("SELECT usd, unknown FROM spent WHERE scope = ?", (scope,)).fetchone()
        held = db.execute("SELECT COALESCE(SUM(amount), 0) FROM holds WHERE scope = ? AND expires >= ?",
                          (scope, now)).fetchone()[0]
        return (row[0] if row else 0.0), float(held), (row[1] if row else 0)

    def reserve_sync(self, hold_id: str, owner: str, scopes: Sequence[Scope], amount: float,
                     lease_s: float) -> tuple[Scope, float, float] | None:
        """Hold `amount` in every scope, or in none: None, or (the scope refusing, its spent, its held)."""
        def run(db: sqlite3.Connection) -> tuple[Scope, float, float] | None:
            now = time.time()
            db.execute("DELETE FROM holds WHERE expires < ?", (now,))
            for s in scopes:
                spent, held, _ = self._state(db, s.key, now)
                if spent + held + amount > s.cap_usd + 1e-12:
                    return s, spent, held
            db.executemany("INSERT OR REPLACE INTO holds VALUES (?, ?, ?, ?, ?)",
                           [(hold_id, s.key, amount, owner, now + lease_s) for s in scopes])
            return None
        return self._tx(run)

    async def reserve(self, hold_id: str, owner: str, scopes: Sequence[Scope], amount: float,
                      lease_s: float) -> tuple[Scope, float, float] | None:
        return await self._call(self.reserve_sync, hold_id, owner, scopes, amount, lease_s)

    @staticmethod
    def _apply_batch(db: sqlite3.Connection, batch: Sequence[_Settlement]) -> None:
        """A group commit's settlements, as one settlement after another would leave them (each hold gone,
        each scope's sum added in the same order, the rows in the same order), in a few
        multi-row statements: every statement releases the GIL around SQLite's work and waits to take it
        back, and with the event loop busy that wait is up to a switch interval (5 ms) each time, so a
        statement per row made a commit of a few hundred rows take a tenth of a second or more."""
        limit = max(1, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        holds = [h for h, *_ in batch if h is not None]
        spent = [p for _, keys, usd, unknown, _ in batch for key in keys for p in (key, usd, int(unknown))]
        rows: list[Any] = []
        for *_, row in batch:
            if row is not None:
                rows += map(row.get, LEDGER_COLUMNS)
        for chunk in _chunks(holds, limit):
            db.execute(f"DELETE FROM holds WHERE id IN ({', '.join('?' * len(chunk))})", chunk)  # noqa: S608
        for chunk in _chunks(spent, limit - limit % 3):  # SQLite applies the upsert row by row, in order
            db.execute("INSERT INTO spent (scope, usd, unknown) VALUES "  # noqa: S608 - placeholders only
                       + ", ".join(["(?, ?, ?)"] * (len(chunk) // 3))
                       + " ON CONFLICT(scope) DO UPDATE SET usd = usd + excluded.usd, "
                       "unknown = unknown + excluded.unknown", chunk)
        width = len(LEDGER_COLUMNS)
        for chunk in _chunks(rows, limit - limit % width):
            db.execute(_INSERT_ROWS + ", ".join([_ROW_VALUES] * (len(chunk) // width)), chunk)

    def settle_sync(self, hold_id: str | None, scope_keys: Sequence[str], usd: float, unknown: bool,
                    row: dict[str, Any] | None) -> None:
        self._tx(partial(self._apply_batch, batch=[(hold_id, scope_keys, usd, unknown, row)]))

    async def settle(self, hold_id: str | None, scope_keys: Sequence[str], usd: float, unknown: bool,
                     row: dict[str, Any] | None) -> None:
        """Returns once the settlement is committed (group commit: the settlements made in one turn of the
        loop share one commit, made by the first of them once the turn is over). Queued before its first
        await, it is committed even if the caller is cancelled.

        The commit runs on the loop when the file's write lock is free at that instant (a few multi-row
        statements, a millisecond or two), otherwise (and for this process's first commit) in the
        executor, where it may wait for the lock. Not in a thread every time: a thread must win the GIL
        back from the loop after each SQLite statement, and with the loop busy finishing a batch that is a
        switch interval (5 ms) per statement, so the batch's last rows were committed tens of milliseconds
        after its last answer, and the batch waited for them."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._pending_lock:
            turn = self._turns.setdefault(loop, [])
            turn.append((loop, fut, (hold_id, scope_keys, usd, unknown, row)))
            lead = len(turn) == 1
        if lead:
            try:
                await asyncio.sleep(0)  # the rest of this turn's settlements join
            except asyncio.CancelledError:
                fut.cancel()  # nobody awaits it now; the settlement is still committed, below
                raise
            finally:  # cancelled too: the turn's other settlements are never left waiting
                with self._pending_lock:
                    batch = self._turns.pop(loop, [])
                if not self._commit_here(batch):
                    self._commit_in_executor(loop, batch)
        await fut

    def _commit_here(self, batch: list[_Waiting]) -> bool:
        """One group commit on the loop, if nothing holds the write lock now; False when it must wait."""
        db = self._loop_conn
        if db is None or not self._loop_lock.acquire(blocking=False):
            return False
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # locked: not waited for on the loop
                return False
            error: BaseException | None = None
            try:
                self._finish(db, partial(self._apply_batch, batch=[args for _, _, args in batch]))
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter of this commit
                error = exc
            self._loop_commits += 1
        finally:
            self._loop_lock.release()
        with contextlib.suppress(RuntimeError):  # its loop has closed (a batch torn down)
            _settled([f for _, f, _ in batch], error)
            if self._loop_commits % _CHECKPOINT_EVERY == 0:
                batch[0][0].run_in_executor(None, self._checkpoint)
        return True

    def _commit_in_executor(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting]) -> None:
        with self._pending_lock:
            self._pending.extend(batch)
            start = not self._flushing
            self._flushing = True
        if start:
            try:
                loop.run_in_executor(None, self._flush)
            except RuntimeError:  # the loop has closed (a batch torn down): committed here, waiting if need be
                self._flush()

    def _flush(self) -> None:
        """In the executor: group commits until nothing is pending (waiting for the lock if need be)."""
        while True:
            with self._pending_lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._flushing = False
                    return
            error: BaseException | None = None
            try:
                self._tx(partial(self._apply_batch, batch=[args for _, _, args in batch]))
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter of this commit
                error = exc
            else:
                with self._lock, contextlib.suppress(sqlite3.Error):  # the schema exists: later commits
                    self._open_loop_conn()  # can run on the loop
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for loop, fut, _ in batch:
                waiting.setdefault(loop, []).append(fut)
            for loop, futs in waiting.items():  # one wake-up per loop, not per row (the GIL, as above)
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(_settled, futs, error)

    def _checkpoint(self) -> None:
        """The WAL's pages copied into the database file (PASSIVE: it waits for no reader or writer)."""
        with self._lock:
            self._db().execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def renew(self, hold_ids: Iterable[str], lease_s: float) -> None:
        ids = list(hold_ids)

        def run(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE holds SET expires = ? WHERE id = ?", [(time.time() + lease_s, i) for i in ids])
        if ids:
            await self._call(self._tx, run)

    async def release(self, hold_ids: Iterable[str]) -> None:
        ids = list(hold_ids)
        if ids:
            await self._call(self._tx, lambda db: db.executemany("DELETE FROM holds WHERE id = ?",
                                                                 [(i,) for i in ids]))

    # -- reading (the `spend` command, doctor, headroom) ---------------------------------------------
    def scope_states(self, keys: Sequence[str]) -> dict[str, dict[str, float]]:
        """{scope: {spent_usd, reserved_usd, unknown}} as of now (nothing created if the file is absent)."""
        if not self.path.exists():
            return {k: {"spent_usd": 0.0, "reserved_usd": 0.0, "unknown": 0} for k in keys}
        with self._lock:
            db = self._db()
            now = time.time()
            out = {}
            for k in keys:
                spent, held, unknown = self._state(db, k, now)
                out[k] = {"spent_usd": round(spent, 10), "reserved_usd": round(held, 10), "unknown": unknown}
            return out

    def rows(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every ledger row (since a unix time), oldest first."""
        if not self.path.exists():
            return []
        with self._lock:
            cur = self._db().execute(_SELECT_ROWS, (since or 0.0,))
            return [dict(zip(LEDGER_COLUMNS, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._loop_lock:
            if self._loop_conn is not None:
                self._loop_conn.close()
                self._loop_conn = None
