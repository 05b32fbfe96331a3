"""`hermes-delegate demo`: start embedded loopback providers, run a mixed-model batch (demo_data/),
and show which model and provider served each task, and wall time against summed task time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import yaml

from .. import Config, ConfigError, config_from_dict
from .textout import TextOut

if TYPE_CHECKING:  # imported where providers start: `doctor` checks configs here without aiohttp
    from ..loopback import LoopbackProvider

__all__ = ["find_demo_files", "loopback_config", "DEMO_LATENCY_S", "DEMO_DATA", "LOOPBACK_SCHEME"]

#: Latency of each embedded provider, so the parallelism is visible.
DEMO_LATENCY_S = {"alpha": 0.8, "beta": 1.2, "gamma": 1.0}
LOOPBACK_SCHEME = _SCHEME = "loopback://"


#: The demo's config and tasks ship inside the package (package data), so `hermes-delegate demo` works
#: from any install and any directory; configs/demo.yaml in a checkout is the same file, for reading.
DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"


def find_demo_files(config: str | None = None, tasks: str | None = None) -> tuple[Path, Path]:
    c = Path(config) if config else DEMO_DATA / "demo.yaml"
    t = Path(tasks) if tasks else DEMO_DATA / "demo-tasks.yaml"
    for what, path, flag in (("demo config", c, "--demo-config"), ("demo tasks file", t, "--tasks")):
        if not path.is_file():
            packaged = not (config if flag == "--demo-config" else tasks)
            raise ConfigError(
                f"Cannot find the {what} {path}.",
                hint="Reinstall hermes-delegate (the demo files ship in the package)." if packaged
                else f"Pass an existing file to {flag}, or leave it out to use the demo's own.")
    return c, t


def _walk_bases(data: Any) -> Iterator[dict[str, Any]]:
    router = (data or {}).get("router") or {}
    for dep in router.get("model_list") or []:
        params = dep.get("litellm_params") or {}
        if str(params.get("api_base", "")).startswith(_SCHEME):
            yield params


def loopback_config(path: Path, providers: dict[str, LoopbackProvider]) -> Config:
    """Load a config whose api_base values say `loopback://NAME`, starting provider NAME as needed."""
    from ..loopback import LoopbackProvider  # noqa: PLC0415 - declared in pyproject.toml: the demo starts them

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for params in _walk_bases(data):
        name = params["api_base"][len(_SCHEME):]
        if name not in providers:
            providers[name] = LoopbackProvider(name, latency_s=DEMO_LATENCY_S.get(name, 1.0)).start()
        params["api_base"] = providers[name].base_url
    if isinstance(data.get("delegation"), dict):  # the demo's made-up spend stays out of the user's ledger
        data["delegation"].setdefault("ledger", False)
    return config_from_dict(data, source=str(path), base_dir=path.parent)


def describe(providers: dict[str, LoopbackProvider], out: TextOut) -> None:
    for name, p in providers.items():
        print(f"  embedded provider {name:<6} {p.base_url}  (latency {p.latency_s:.1f}s)", file=out)


def refuse_loopback_outside_demo(cfg: Config) -> None:
    """`loopback://NAME` is filled in by `hermes-delegate demo` only: anywhere else no provider answers
    there, and every task would fail after its timeout. Say so before anything starts."""
    names = sorted({str(d.litellm_params.get("api_base"))[len(_SCHEME):] for d in cfg.router.model_list
                    if str(d.litellm_params.get("api_base") or "").startswith(_SCHEME)})
    if names:
        raise ConfigError(
            f"{cfg.source or 'the config'}: api_base loopback://{names[0]} only works under "
            "`hermes-delegate demo`, which starts the embedded loopback providers and fills in their addresses.",
            hint="Run `hermes-delegate demo --demo-config FILE`, or start loopback providers yourself with "
                 "`python -m hermes_delegate.loopback` and put the http://127.0.0.1:PORT/v1 addresses it "
                 "prints in api_base.")
