"""The plugin's settings, read (never written) from hermes's own $HERMES_HOME/config.yaml.

The mapping (hermes's `delegation:` block + our `hermes_delegate:` block → hermes_delegate.Config)
lives in hermes_delegate.sources.hermes_home, shared with `hermes-delegate --hermes`, so the CLI and the
plugin agree. The file is read with hermes_delegate.sources.config_file.read_yaml_file (plain YAML: no
tags; anchors, aliases and merge keys with a bound on their expansion), not hermes's loader. Path:
hermes's `get_config_path()` (public), which honours HERMES_HOME and profiles.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Mapping

BLOCK = "hermes_delegate"
_cache_lock = threading.Lock()
_cache: dict[str, Any] = {}


def config_path() -> Path | None:
    try:
        from hermes_cli.config import get_config_path  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - outside hermes
        return None
    return Path(get_config_path())


def read_hermes_config() -> tuple[dict[str, Any], Path | None]:
    """The raw config.yaml mapping ({} when there is none)."""
    from hermes_delegate.sources.hermes_home import read_hermes_yaml  # noqa: PLC0415

    path = config_path()
    if path is None or not path.exists():
        return {}, path
    return read_hermes_yaml(path), path


def raw_block() -> Any:
    """The `hermes_delegate:` block as hermes itself parsed it (registration-time switches only:
    cheap, no pydantic; the block is validated with our reader on first use)."""
    try:
        from hermes_cli.config import read_raw_config  # noqa: PLC0415

        raw = read_raw_config()
    except Exception:  # noqa: BLE001
        return None
    return raw.get(BLOCK) if isinstance(raw, dict) else None


def plugin_dict(raw: Mapping[str, Any], *, default_concurrency: int = 3) -> dict[str, Any]:
    from hermes_delegate.sources.hermes_home import plugin_dict as _plugin_dict  # noqa: PLC0415

    return _plugin_dict(raw, default_concurrency=default_concurrency)


def _hermes_default_concurrency() -> int:
    from . import hermes_api  # noqa: PLC0415

    return hermes_api.max_concurrent_children()


def load_plugin_config() -> Any:
    """The hermes_delegate Config in force (cached on the validated content)."""
    from hermes_delegate.sources.hermes_home import config_from_hermes  # noqa: PLC0415

    raw, path = read_hermes_config()
    concurrency = _hermes_default_concurrency()
    key = json.dumps([plugin_dict(raw, default_concurrency=concurrency), str(path)], sort_keys=True, default=str)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    cfg = config_from_hermes(raw, path=path, default_concurrency=concurrency)
    with _cache_lock:
        _cache.clear()
        _cache[key] = cfg
    return cfg
