"""`hermes-delegate demo`: start embedded loopback providers, run a mixed-model batch from configs/,
and show which model and provider served each task, and wall time against summed task time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, TextIO

import yaml

from .config import Config, config_from_dict
from .errors import ConfigError
from .loopback import LoopbackProvider

__all__ = ["find_demo_files", "loopback_config", "DEMO_LATENCY_S"]

#: Latency of each embedded provider, so the parallelism is visible.
DEMO_LATENCY_S = {"alpha": 0.8, "beta": 1.2, "gamma": 1.0}
_SCHEME = "loopback://"


def find_demo_files(config: str | None = None, tasks: str | None = None) -> tuple[Path, Path]:
    roots = [Path.cwd() / "configs", Path(__file__).resolve().parents[1] / "configs"]
    for root in roots:
        c = Path(config) if config else root / "demo.yaml"
        t = Path(tasks) if tasks else root / "demo-tasks.yaml"
        if c.exists() and t.exists():
            return c, t
    raise ConfigError("Cannot find configs/demo.yaml and configs/demo-tasks.yaml.",
                      hint="Run the demo from a checkout of hermes-delegate, or pass --config and --tasks.")


def _walk_bases(data: Any) -> Iterator[dict[str, Any]]:
    router = (data or {}).get("router") or {}
    for dep in router.get("model_list") or []:
        params = dep.get("litellm_params") or {}
        if str(params.get("api_base", "")).startswith(_SCHEME):
            yield params


def loopback_config(path: Path, providers: dict[str, LoopbackProvider]) -> Config:
    """Load a config whose api_base values say `loopback://NAME`, starting provider NAME as needed."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for params in _walk_bases(data):
        name = params["api_base"][len(_SCHEME):]
        if name not in providers:
            providers[name] = LoopbackProvider(name, latency_s=DEMO_LATENCY_S.get(name, 1.0)).start()
        params["api_base"] = providers[name].base_url
    return config_from_dict(data, source=str(path), base_dir=path.parent)


def describe(providers: dict[str, LoopbackProvider], out: TextIO) -> None:
    for name, p in providers.items():
        print(f"  embedded provider {name:<6} {p.base_url}  (latency {p.latency_s:.1f}s)", file=out)
