"""hermes-agent's config.yaml as a hermes_delegate Config: what the hermes plugin and
`hermes-delegate --hermes [HERMES_HOME]` both read, so they agree on every setting.

    delegation:                 # hermes's own block; we read model/provider/base_url/api_key,
      model: small              # max_concurrent_children and child_timeout_seconds from it
    hermes_delegate:            # ours: hermes_delegate.Config's `delegation` keys at top level,
      aliases: {small: haiku}   # plus `tiers` (a mapping: merged into aliases; a list: the downgrade
                                # ladder, as delegation.tiers), `router` or `litellm_config`,
      router: {model_list: [...], router_settings: {num_retries: 2}}   # and the plugin's own keys

Read with config_file.read_yaml_file (plain YAML; anchors and merge keys bounded), never written.
Imports no host code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from ..core.config import Config, DelegationSettings
from .config_file import config_from_dict, default_config_path, read_bounded, read_yaml_file
from ..core.errors import BudgetError, ConfigError

BLOCK = "hermes_delegate"
ROUTER_KEYS = ("router", "litellm_config")
#: keys of the block that configure the hermes plugin itself, not hermes_delegate.Config
PLUGIN_KEYS = ("warm_up",)
DEFAULT_CONCURRENCY = 3  # hermes 0.19's _DEFAULT_MAX_CONCURRENT_CHILDREN


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(os.path.expanduser(env.get("HERMES_HOME") or "~/.hermes"))


def read_hermes_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml_file(path, "hermes config file", not_found_hint="Pass the HERMES_HOME that holds config.yaml.",
                          aliases=True)  # anchors and merge keys, as hermes reads it; bounded
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}.")
    return data


def detect(env: Mapping[str, str] | None = None) -> Path | None:
    """The HERMES_HOME ($HERMES_HOME, else ~/.hermes) whose config.yaml has a `hermes_delegate:` block."""
    path = home_dir(env) / "config.yaml"
    try:
        text = read_bounded(path).decode("utf-8")  # at most MAX_YAML_BYTES + 1: never an endless stream whole
    except (OSError, UnicodeDecodeError):
        return None
    return path.parent if re.search(rf"^{BLOCK}\s*:", text, re.MULTILINE) else None


def autodetect(env: Mapping[str, str] | None = None) -> Path | None:
    """The HERMES_HOME `hermes-delegate` uses when given no --config: none when $HERMES_DELEGATE_CONFIG
    is set or our own default config file exists; else the one `detect` finds."""
    env = os.environ if env is None else env
    if env.get("HERMES_DELEGATE_CONFIG") or default_config_path(env).exists():
        return None
    return detect(env)


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


def plugin_dict(raw: Mapping[str, Any], *, default_concurrency: int = DEFAULT_CONCURRENCY) -> dict[str, Any]:
    """hermes config.yaml → the mapping `hermes_delegate.config_from_dict` validates."""
    block = raw.get(BLOCK)
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"config.yaml: `{BLOCK}:` must be a mapping, got {type(block).__name__}.")
    hermes_value = raw.get("delegation")
    hermes_deleg: Mapping[str, Any] = hermes_value if isinstance(hermes_value, Mapping) else {}
    settings = {k: v for k, v in block.items() if k not in ROUTER_KEYS and k != "tiers" and k not in PLUGIN_KEYS}
    tiers = block.get("tiers")
    if isinstance(tiers, list):  # the downgrade ladder itself, as `delegation.tiers`
        settings["tiers"] = tiers
    elif tiers is not None:
        if not isinstance(tiers, Mapping):
            raise ConfigError(f"config.yaml: `{BLOCK}.tiers` must map tier names to models, or list the "
                              "downgrade ladder (tier names, cheapest first).")
        settings["aliases"] = {**tiers, **(settings.get("aliases") or {})}
    data: dict[str, Any] = {k: block[k] for k in ROUTER_KEYS if block.get(k) is not None}
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


def _our_keys() -> tuple[str, ...]:
    return tuple(DelegationSettings.model_fields)  # Config.delegation's keys


def hermes_keys(text: str) -> str:
    """Rewrite `delegation.KEY` (our standalone config's block) to `hermes_delegate.KEY`, the block a
    hermes user edits, for every key of ours (hermes's own `delegation.max_spawn_depth` etc. stay)."""
    keys = "|".join(sorted(map(re.escape, _our_keys()), key=len, reverse=True))
    return re.sub(rf"\bdelegation\.({keys})\b", rf"{BLOCK}.\1", text)


def config_from_hermes(raw: Mapping[str, Any], *, path: Path | None,
                       default_concurrency: int = DEFAULT_CONCURRENCY) -> Config:
    data = plugin_dict(raw, default_concurrency=default_concurrency)
    source = f"{path} ({BLOCK})" if path else BLOCK
    try:
        return config_from_dict(data, source=source, base_dir=path.parent if path else None)
    except (ConfigError, BudgetError) as exc:  # a bad budget_usd is a BudgetError, named the same way
        exc.message = exc.message.replace("delegation.", f"{BLOCK}.")
        if getattr(exc, "hint", None):
            exc.hint = hermes_keys(exc.hint)
        raise


def config_for_home(home: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """The Config the plugin uses in this HERMES_HOME (None/"": $HERMES_HOME, else ~/.hermes)."""
    base = Path(os.path.expanduser(str(home))) if home else home_dir(env)
    path = base / "config.yaml"
    concurrency = DEFAULT_CONCURRENCY
    raw = read_hermes_yaml(path)
    deleg = raw.get("delegation")
    if isinstance(deleg, Mapping) and isinstance(deleg.get("max_concurrent_children"), int):
        concurrency = deleg["max_concurrent_children"]
    return config_from_hermes(raw, path=path, default_concurrency=concurrency)
