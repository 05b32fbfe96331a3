"""A LiteLLM config's settings made concrete before litellm sees them: every `os.environ/NAME`
reference resolved against the Resolver's lookup (`Config.env_lookup`: environment_variables over
the Delegator's env, never written to os.environ), and `litellm_settings` applied as LiteLLM's proxy
applies them (`cache: true` builds a `litellm.Cache` from `cache_params`). The Router therefore never
reads a variable itself.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from ..core.config_values import LITELLM_SETTINGS, ROUTER_SETTINGS, check_values
from ..core.env_refs import env_ref_name
from ..core.errors import ConfigError

__all__ = ["resolve_refs", "resolve_mapping", "resolved_settings", "apply_litellm_settings", "build_cache"]

#: router_settings keys LiteLLM's Redis client wants as an int.
_INT_KEYS = frozenset({"redis_port", "port"})


def resolve_refs(value: Any, env: Mapping[str, str], where: str, *, unset: str = "keep") -> Any:
    """A deep copy of `value` with `os.environ/NAME` strings replaced by their values. An unset name is
    kept as the reference (`unset="keep"`: the model_list, whose unset keys planning refuses) or is a
    ConfigError naming the key (`unset="error"`: settings, where LiteLLM would read the literal)."""
    if isinstance(value, Mapping):
        return resolve_mapping(value, env, where, unset=unset)
    if isinstance(value, list):
        return [resolve_refs(v, env, f"{where}[{i}]", unset=unset) for i, v in enumerate(value)]
    name = env_ref_name(value)
    if name is None:
        return copy.copy(value)
    got = env.get(name) if name else None
    if got is None or got == "":
        if unset == "keep":
            return value
        raise ConfigError(f"{where} refers to os.environ/{name}, which is not set.",
                          hint=f"export {name}=..., or define it under environment_variables: in the "
                               "LiteLLM config.")
    return got


def resolve_mapping(value: Mapping[str, Any], env: Mapping[str, str], where: str, *,
                    unset: str = "keep") -> dict[str, Any]:
    """`resolve_refs` of a mapping (a deployment's params, a settings block): a new dict."""
    return {k: _resolve_key(k, v, env, f"{where}.{k}", unset) for k, v in value.items()}


def _resolve_key(key: Any, value: Any, env: Mapping[str, str], where: str, unset: str) -> Any:
    out = resolve_refs(value, env, where, unset=unset)
    if key in _INT_KEYS and isinstance(out, str) and out.strip().isdigit():
        return int(out)
    return out


def resolved_settings(config: Any, model_list: Any, env: Mapping[str, str]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """(model_list, router_settings, litellm_settings) with every reference resolved; `model_list`
    is the Resolver's (the config's own, or a remote proxy's groups) and `env` its lookup
    (`Resolver.env`: the config's environment_variables over the Delegator's env)."""
    lookup = env
    model_list = [resolve_mapping(d.model_dump(exclude_none=True), lookup, f"model_list[{i}]")
                  for i, d in enumerate(model_list)]
    router_settings = resolve_mapping(dict(config.router.router_settings), lookup, "router_settings",
                                      unset="error")
    litellm_settings = resolve_mapping(dict(config.router.litellm_settings), lookup, "litellm_settings",
                                       unset="error")
    check_values(router_settings, ROUTER_SETTINGS, "router_settings")  # os.environ/ values, now resolved
    check_values(litellm_settings, LITELLM_SETTINGS, "litellm_settings")
    return model_list, router_settings, litellm_settings


def build_cache(litellm: Any, settings: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """`litellm.Cache` from `cache_params`, as the proxy builds it: type defaults to redis, and a redis
    cache without parameters takes REDIS_HOST/REDIS_PORT/REDIS_PASSWORD (from `env`, our lookup)."""
    params = dict(settings.get("cache_params") or {})
    cache_type = params.get("type", "redis")
    if cache_type in ("redis", "redis-semantic") and not params:
        params = {"type": cache_type, "host": env.get("REDIS_HOST"), "port": env.get("REDIS_PORT")}
        if env.get("REDIS_PASSWORD"):
            params["password"] = env["REDIS_PASSWORD"]
        if not params["host"]:
            raise ConfigError("litellm_settings.cache: true needs a Redis server (the default cache type) "
                              "and REDIS_HOST is not set.",
                              hint="Add cache_params: {type: local} for an in-process cache, or "
                                   "cache_params: {type: redis, host: ..., port: ...}.")
    params["type"] = cache_type
    if "default_in_memory_ttl" in params:
        litellm.default_in_memory_ttl = params["default_in_memory_ttl"]
    if "default_redis_ttl" in params:
        litellm.default_redis_ttl = params["default_redis_ttl"]
    from litellm.caching.caching import Cache  # noqa: PLC0415 - litellm is imported by now

    import importlib.util  # noqa: PLC0415

    # litellm serves a cache hit through orjson and (via its proxy's pass-through modules) soundfile
    # and, from 1.110, fastapi, all optional: without them every cached call fails with
    # ModuleNotFoundError. The `cache` extra installs them.
    missing = [m for m in ("orjson", "soundfile", "fastapi") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"litellm_settings.cache needs {', '.join(missing)}, not installed.",
                          hint=f'pip install {" ".join(missing)} (or "hermes-delegate[cache]"), '
                               "or drop cache: true.")

    try:
        return Cache(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"litellm_settings.cache_params cannot build a LiteLLM cache: {exc}",
                          hint="See LiteLLM's caching docs for the keys of each cache type.") from None


def apply_litellm_settings(litellm: Any, settings: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """Set `litellm_settings` on the litellm module (process-wide, as in the proxy)."""
    for key, value in settings.items():
        if key == "cache_params":
            continue
        if key == "cache":
            if value is True:
                litellm.cache = build_cache(litellm, settings, env)
            continue
        setattr(litellm, key, value)
