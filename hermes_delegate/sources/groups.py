"""Where a config's deployments come from: its own `model_list`, or a running LiteLLM proxy's
groups (`remote:`), listed on first use and handed to the Resolver as a value.

A proxy's listing is kept for the process, per proxy and key (every Resolver and Router of a host
sees the same groups, and the proxy is asked once); a failed listing is not kept.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Callable, Mapping

from ..core.config import Config, Deployment
from ..core.resolver import Resolver
from .remote_proxy import remote_deployments

__all__ = ["model_list_source", "resolver_for", "forget_listings"]

_listings: dict[tuple[str, str | None, str], list[Deployment]] = {}
_lock = threading.Lock()


def model_list_source(config: Config, env: Mapping[str, str] | None = None
                      ) -> Callable[[], list[Deployment]] | None:
    """None for a config that lists its own deployments; for `remote:`, a function that lists the
    proxy's groups (one listing at a time; a failure raises and the next call asks again)."""
    remote = config.remote
    if remote is None:
        return None

    def listing() -> list[Deployment]:
        # the key is read as every other reference is: the config's environment_variables over the env
        lookup = config.env_lookup(os.environ if env is None else env)
        key_value = (lookup.get(remote.api_key_env) or "") if remote.api_key_env else ""
        key = (remote.base_url, remote.api_key_env, hashlib.sha256(key_value.encode()).hexdigest())
        with _lock:
            if key not in _listings:
                _listings[key] = remote_deployments(remote, lookup)
            return list(_listings[key])

    return listing


def forget_listings() -> None:
    """Drop every kept proxy listing (the next use lists again)."""
    with _lock:
        _listings.clear()


def resolver_for(config: Config, env: Mapping[str, str] | None = None, **kw: Any) -> Resolver:
    """The Resolver for a config, with its deployments from wherever the config says."""
    return Resolver(config, env=env, model_list=model_list_source(config, env), **kw)
