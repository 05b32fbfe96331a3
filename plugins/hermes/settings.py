"""The plugin's settings, read (never written) from hermes's own $HERMES_HOME/config.yaml.

    delegation:                 # hermes's own block; we read model/provider/base_url/api_key,
      model: small              # max_concurrent_children and child_timeout_seconds from it
    hermes_delegate:            # ours: hermes_delegate.Config's `delegation` keys at top level,
      aliases: {small: haiku}   # plus `tiers` (merged into aliases), `router` or `litellm_config`
      router: {model_list: [...], router_settings: {num_retries: 2}}

Precedence for the default model (level 3): `hermes_delegate.model`, then hermes's
`delegation.model` (with `delegation.provider` → `MODEL --provider SLUG`, or `delegation.base_url`
→ an OpenAI-compatible Router group of that name).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Mapping

BLOCK = "hermes_delegate"
_ROUTER_KEYS = ("router", "litellm_config")
_cache_lock = threading.Lock()
_cache: dict[str, Any] = {}


def read_hermes_config() -> tuple[dict[str, Any], Path | None]:
    """The raw config.yaml mapping (hermes's read-only loader: no defaults merged, no migration)."""
    try:
        from hermes_cli.config import get_config_path, read_raw_config  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - outside hermes (unit tests of this module)
        return {}, None
    raw = read_raw_config()
    return (raw if isinstance(raw, dict) else {}), get_config_path()


def _default_model(hermes_deleg: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """hermes's delegation.model as a model string, plus a Router group when it names a base_url."""
    model = hermes_deleg.get("model")
    if not isinstance(model, str) or not model.strip():
        return None, None
    model = model.strip()
    base_url = hermes_deleg.get("base_url")
    if isinstance(base_url, str) and base_url.strip():
        params: dict[str, Any] = {"model": f"openai/{model}", "api_base": base_url.strip()}
        if hermes_deleg.get("api_key"):
            params["api_key"] = hermes_deleg["api_key"]
        return model, {"model_name": model, "litellm_params": params}
    provider = hermes_deleg.get("provider")
    if isinstance(provider, str) and provider.strip() and provider.strip().lower() not in ("auto", "custom"):
        return f"{model} --provider {provider.strip()}", None
    return model, None


def plugin_dict(raw: Mapping[str, Any], *, default_concurrency: int = 3) -> dict[str, Any]:
    """hermes config.yaml → the mapping `hermes_delegate.config_from_dict` validates."""
    from hermes_delegate import ConfigError  # noqa: PLC0415

    block = raw.get(BLOCK)
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"config.yaml: `{BLOCK}:` must be a mapping, got {type(block).__name__}.")
    hermes_deleg = raw.get("delegation") if isinstance(raw.get("delegation"), Mapping) else {}
    settings = {k: v for k, v in block.items() if k not in _ROUTER_KEYS and k != "tiers"}
    tiers = block.get("tiers")
    if tiers is not None:
        if not isinstance(tiers, Mapping):
            raise ConfigError(f"config.yaml: `{BLOCK}.tiers` must map tier names to models.")
        settings["aliases"] = {**tiers, **(settings.get("aliases") or {})}
    data: dict[str, Any] = {k: block[k] for k in _ROUTER_KEYS if block.get(k) is not None}
    if settings.get("model") is None:
        model, group = _default_model(hermes_deleg)
        if model:
            settings["model"] = model
        if group and "litellm_config" not in data:
            router = dict(data.get("router") or {})
            model_list = list(router.get("model_list") or [])
            if not any(isinstance(d, Mapping) and d.get("model_name") == group["model_name"] for d in model_list):
                model_list.append(group)
            router["model_list"] = model_list
            data["router"] = router
    # Unset limits follow hermes's own delegation settings, so children run as the built-in's do.
    if "max_concurrency" not in settings:
        n = hermes_deleg.get("max_concurrent_children")
        settings["max_concurrency"] = n if isinstance(n, int) and n >= 1 else default_concurrency
    if "task_timeout_s" not in settings:
        t = hermes_deleg.get("child_timeout_seconds")
        valid = isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0
        settings["task_timeout_s"] = t if valid else None  # the built-in has no per-child timeout
    data["delegation"] = settings
    return data


def _hermes_default_concurrency() -> int:
    try:
        from tools.delegate_tool import _get_max_concurrent_children  # noqa: PLC0415

        return int(_get_max_concurrent_children())
    except Exception:  # noqa: BLE001
        return 3  # hermes 0.19's _DEFAULT_MAX_CONCURRENT_CHILDREN


def load_plugin_config() -> Any:
    """The hermes_delegate Config in force (cached on the validated content)."""
    from hermes_delegate import config_from_dict  # noqa: PLC0415
    from hermes_delegate import ConfigError  # noqa: PLC0415

    raw, path = read_hermes_config()
    data = plugin_dict(raw, default_concurrency=_hermes_default_concurrency())
    key = json.dumps(data, sort_keys=True, default=str)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    source = f"{path} ({BLOCK})" if path else BLOCK
    try:
        cfg = config_from_dict(data, source=source, base_dir=path.parent if path else None)
    except ConfigError as exc:
        exc.message = exc.message.replace("delegation.", f"{BLOCK}.")
        raise
    with _cache_lock:
        _cache.clear()
        _cache[key] = cfg
    return cfg

