"""Config values checked for what they must be, before anything uses them. Pure: no I/O.

    api_base / base_url     an http(s):// URL with a host, and a port 0-65535 when one is given
    redis_url               redis://, rediss:// or unix:// (what redis-py accepts), a port 0-65535
    redis_port              a whole number 1-65535
    timeouts                a positive, finite number of seconds (timeout, stream_timeout, request_timeout)

A value given as an `os.environ/NAME` reference is checked once it is resolved (`check_values`); the
literal ones are checked when the config loads (the router section's validator), so every command
refuses them the same way: a ConfigError naming the key. A deployment's own values are checked per
deployment (`deployment_problems`), so a listing shows a broken deployment and lists the rest, and
planning refuses a task that could reach it before anything is sent.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from .env_refs import env_ref_name
from .errors import ConfigError

__all__ = ["settings_problems", "deployment_problems", "check_values", "ROUTER_SETTINGS", "LITELLM_SETTINGS",
           "DEPLOYMENT_PARAMS"]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _port_problem(port: Any) -> str | None:
    if isinstance(port, bool):
        return f"must be a port number (1-65535), not {_shown(port)}"
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port.strip())
    if not isinstance(port, int) or not 1 <= port <= 65535:
        return f"must be a port number (1-65535), not {_shown(port)}"
    return None


def _url_port_problem(parts: Any, value: Any) -> str | None:
    try:
        parts.port  # noqa: B018 - urllib raises here for a port out of range or not a number
    except ValueError:
        return f"has a port that is not a number 0-65535: {_shown(value)}"
    return None


def _url_problem(value: Any, schemes: tuple[str, ...], example: str, *, host: bool) -> str | None:
    what = " or ".join(f"{sch}://" for sch in schemes)
    if not isinstance(value, str) or not value.strip():
        return f"must be a URL starting {what} (e.g. {example}), not {_shown(value)}"
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return f"is not a valid URL: {_shown(value)}"
    if parts.scheme.lower() not in schemes or (host and not parts.hostname):
        return f"must be a URL starting {what} (e.g. {example}), not {_shown(value)}"
    return _url_port_problem(parts, value)


def _http_url_problem(value: Any) -> str | None:
    return _url_problem(value, ("http", "https"), "http://127.0.0.1:8000/v1", host=True)


def _redis_url_problem(value: Any) -> str | None:
    return _url_problem(value, ("redis", "rediss", "unix"), "redis://127.0.0.1:6379", host=False)


def _timeout_problem(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return f"must be a number of seconds, not {_shown(value)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of seconds, not {_shown(value)}"
    if not math.isfinite(value) or value <= 0:
        return f"must be a positive, finite number of seconds, not {_shown(value)}"
    return None


def _host_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        return f"must be a host name or address, not {_shown(value)}"
    return None


Check = Callable[[Any], "str | None"]
#: router_settings keys and their rule (the Redis connection the Router and the shared windows use).
ROUTER_SETTINGS: dict[str, Check] = {"redis_url": _redis_url_problem, "redis_port": _port_problem,
                                     "redis_host": _host_problem, "timeout": _timeout_problem,
                                     "stream_timeout": _timeout_problem}
#: litellm_settings keys and their rule.
LITELLM_SETTINGS: dict[str, Check] = {"request_timeout": _timeout_problem}
#: a deployment's litellm_params keys and their rule.
DEPLOYMENT_PARAMS: dict[str, Check] = {"api_base": _http_url_problem, "base_url": _http_url_problem,
                                       "timeout": _timeout_problem, "stream_timeout": _timeout_problem}


def settings_problems(values: Mapping[str, Any], rules: Mapping[str, Check], where: str, *,
                      references: bool = False) -> list[str]:
    """`where.key: what it must be` for each value that breaks its rule; an `os.environ/` reference is
    skipped unless `references` (then the values are already resolved: every one is checked)."""
    out: list[str] = []
    for key, check in rules.items():
        value = values.get(key) if isinstance(values, Mapping) else None
        if value is None or (not references and env_ref_name(value) is not None):
            continue
        problem = check(value)
        if problem:
            out.append(f"{where}.{key} {problem}")
    return out


def deployment_problems(params: Mapping[str, Any], where: str, env: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with one deployment's values (`where`: e.g. router.model_list[2].litellm_params);
    with `env`, its `os.environ/` references are read there first (an unset one is another check's)."""
    if env is None:
        return settings_problems(params, DEPLOYMENT_PARAMS, where)
    resolved = {}
    for key in DEPLOYMENT_PARAMS:
        value = params.get(key)
        ref = env_ref_name(value)
        resolved[key] = value if ref is None else (env.get(ref) or None)
    return settings_problems(resolved, DEPLOYMENT_PARAMS, where, references=True)


def check_values(values: Mapping[str, Any], rules: Mapping[str, Check], where: str) -> None:
    """Raise one ConfigError naming every resolved value that breaks its rule."""
    problems = settings_problems(values, rules, where, references=True)
    if problems:
        raise ConfigError("; ".join(problems) + ".", hint="Fix the named keys in the config (docs/litellm.md).")
