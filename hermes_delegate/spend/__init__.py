"""Spend across calls: the stores that hold the caps' spent and reserved amounts and the ledger of
settled tasks (SQLite on one machine, Redis across machines), and a batch's account over them. The
policy (scopes, what a task is charged) is pure, in core/caps.py and core/budget.py."""

from __future__ import annotations

import threading
from typing import Any, Mapping

from ..core.config import Config
from ..core.env_refs import env_ref_name

__all__ = ["open_store", "ledger_location"]

_STORES: dict[str, Any] = {}
_LOCK = threading.Lock()


def _redis_settings(config: Config, env: Mapping[str, str]) -> dict[str, Any] | None:
    rs = config.router.router_settings
    if not (rs.get("redis_url") or rs.get("redis_host")):
        return None
    out = {}
    for k in ("redis_url", "redis_host", "redis_port", "redis_password"):
        v = rs.get(k)
        name = env_ref_name(v) if isinstance(v, str) else None
        out[k] = env.get(name) if name else v
    return out


def ledger_location(config: Config, env: Mapping[str, str]) -> str | None:
    """Where caps and ledger live: a file path, `redis://…` (no password), or None (off)."""
    s = config.delegation
    redis = _redis_settings(config, env)
    if redis is not None:
        host = redis.get("redis_host") or "127.0.0.1"
        url = redis.get("redis_url") or f"redis://{host}:{redis.get('redis_port') or 6379}"
        from ..core.results import api_host  # noqa: PLC0415

        return f"redis://{api_host(str(url))}/{s.budget.namespace}"
    if s.ledger is False and not s.budget.shared:
        return None
    from .sqlite_store import default_ledger_path  # noqa: PLC0415

    return str(s.ledger) if isinstance(s.ledger, str) else str(default_ledger_path(env))


def open_store(config: Config, env: Mapping[str, str]) -> Any:
    """The process's store for this config (one per location), or None when there is nothing to keep."""
    where = ledger_location(config, env)
    if where is None:
        return None
    with _LOCK:
        store = _STORES.get(where)
        if store is None:
            if where.startswith("redis://"):
                from .redis_store import RedisStore  # noqa: PLC0415

                store = RedisStore(_redis_settings(config, env) or {}, where)
                if config.delegation.ledger is not False:  # rows Redis cannot take are kept locally
                    from .sqlite_store import SqliteStore, default_ledger_path  # noqa: PLC0415

                    local = config.delegation.ledger
                    store.fallback = SqliteStore(local if isinstance(local, str) else default_ledger_path(env))
            else:
                from .sqlite_store import SqliteStore  # noqa: PLC0415

                store = SqliteStore(where)
            _STORES[where] = store
        return store
