"""Issue #5, nothing written behind the user's back: every config file — the project's config (at the
default XDG place and at an explicit --config path), a hermes-style $HERMES_HOME/config.yaml, and the
LiteLLM configs they reference through `litellm_config` — is byte-identical after every command, the
failing ones included, and no file appears in (or disappears from) the config directories, $HOME or the
working directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from conftest import LOOPBACK_KEY, LoopbackPair
from hermes_delegate import Delegator, config_from_dict, load_config
from hermes_delegate.hosts import cli
from hermes_delegate.tools.delegate_tools import DelegateTools

ROOT = Path(__file__).resolve().parents[1]


#: The one place a batch writes (issue 22): the spend ledger in the XDG state directory.
LEDGER_DIR = os.path.join(".local", "state", "hermes-delegate")


def snapshot(*roots: Path) -> dict[str, str]:
    """{path: sha256} of every file under the roots (but the spend ledger's, which batches append to)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and LEDGER_DIR not in str(p):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _litellm_yaml(providers: LoopbackPair) -> str:
    return yaml.safe_dump({
        "model_list": [
            {"model_name": "alpha", "litellm_params": {"model": "openai/alpha-model",
                                                       "api_base": providers.alpha.base_url, "api_key": LOOPBACK_KEY}},
            {"model_name": "beta", "litellm_params": {"model": "openai/beta-model",
                                                      "api_base": providers.beta.base_url,
                                                      "api_key": "os.environ/BETA_KEY_FOR_NO_WRITES"}},
        ],
        "router_settings": {"num_retries": 0},
        "litellm_settings": {"drop_params": True},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},  # proxy-only: ignored, never rewritten
    }, sort_keys=False)


class World:
    """$HOME with the project's config at the XDG default place (+ its litellm.yaml), an explicit config
    elsewhere, a hermes home, a working directory and the tasks files."""

    def __init__(self, tmp: Path, providers: LoopbackPair):
        self.home = tmp / "home"
        self.xdg = self.home / ".config"
        self.project_dir = self.xdg / "hermes-delegate"
        self.explicit_dir = tmp / "explicit"
        self.hermes_home = self.home / ".hermes"
        self.work = tmp / "work"
        self.tasks_dir = tmp / "tasks"
        for d in (self.project_dir, self.explicit_dir, self.hermes_home, self.work, self.tasks_dir):
            d.mkdir(parents=True)
        lite = _litellm_yaml(providers)
        delegation = {"model": "small", "aliases": {"small": "alpha", "large": "beta"}, "task_timeout_s": 10}
        self.project = self.project_dir / "config.yaml"
        self.project.write_text(yaml.safe_dump({"delegation": delegation, "litellm_config": "./litellm.yaml"}))
        (self.project_dir / "litellm.yaml").write_text(lite)
        self.explicit = self.explicit_dir / "mine.yaml"
        self.explicit.write_text("# hand-written, comments and all\n" + yaml.safe_dump(
            {"delegation": delegation, "litellm_config": "../explicit/proxy.yaml"}))
        (self.explicit_dir / "proxy.yaml").write_text("# a LiteLLM proxy config\n" + lite)
        self.broken = self.explicit_dir / "broken.yaml"
        self.broken.write_text("delegation:\n  model: [unclosed\n")
        self.invalid = self.explicit_dir / "invalid.yaml"
        self.invalid.write_text(yaml.safe_dump({"delegation": {"max_concurrency": -1, "nope": 1}}))
        self.hermes_config = self.hermes_home / "config.yaml"
        self.hermes_config.write_text("# hermes's own file\n" + yaml.safe_dump({
            "model": {"default": "parent-model"},
            "delegation": {"max_concurrent_children": 2},
            "hermes_delegate": {"tiers": {"small": "alpha"}, "model": "small", "litellm_config": "./litellm.yaml"},
        }, sort_keys=False))
        (self.hermes_home / "litellm.yaml").write_text(lite)
        self.tasks = self.tasks_dir / "tasks.yaml"
        self.tasks.write_text(yaml.safe_dump([{"goal": "a"}, {"goal": "b", "model": "large"}]))
        self.bad_tasks = self.tasks_dir / "bad.yaml"
        self.bad_tasks.write_text(yaml.safe_dump([{"goal": "a", "model": "no-such-model-xyz"}]))

    @property
    def watched(self) -> tuple[Path, ...]:
        return (self.home, self.explicit_dir, self.work, self.tasks_dir, ROOT / "configs")


@pytest.fixture
def world(tmp_path: Path, providers: LoopbackPair, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(tmp_path, providers)
    monkeypatch.setenv("HOME", str(w.home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(w.xdg))
    monkeypatch.setenv("HERMES_HOME", str(w.hermes_home))
    monkeypatch.setenv("BETA_KEY_FOR_NO_WRITES", "sk-beta-no-writes-key")
    monkeypatch.chdir(w.work)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield w
    root.handlers[:], root.level = handlers, level  # cli.main replaces the root handlers


def cli_run(argv: list[str]) -> int:
    return cli.main(argv, io.StringIO())


# (argv, expected exit code); {explicit}, {tasks}, … are filled from the World
COMMANDS = [
    (["resolve", "small"], 0), (["resolve", "large", "--json"], 0), (["resolve", "no-such-model-xyz"], 2),
    (["models"], 0), (["models", "--json"], 0), (["doctor"], 0), (["doctor", "--json"], 0),
    (["run", "{tasks}"], 0), (["run", "{tasks}", "--json"], 0), (["-vv", "run", "{tasks}"], 0),
    (["run", "{bad_tasks}"], 2), (["run", "{tasks_dir}/missing.yaml"], 2),
    (["run", "{tasks}", "--config", "{explicit}"], 0), (["doctor", "--config", "{explicit}"], 0),
    (["models", "--config", "{broken}"], 2), (["doctor", "--config", "{invalid}"], 2),
    (["run", "{tasks}", "--config", "{explicit_dir}/absent.yaml"], 2),
]


def test_cli_commands_write_nothing(world: World, providers: LoopbackPair):
    fill = {"tasks": world.tasks, "bad_tasks": world.bad_tasks, "tasks_dir": world.tasks_dir,
            "explicit": world.explicit, "explicit_dir": world.explicit_dir, "broken": world.broken,
            "invalid": world.invalid}
    before = snapshot(*world.watched)
    assert str(world.project) in before and str(world.hermes_config) in before
    for argv, expected in COMMANDS:
        args = [a.format(**{k: str(v) for k, v in fill.items()}) for a in argv]
        assert cli_run(args) == expected, args
        assert snapshot(*world.watched) == before, f"`hermes-delegate {' '.join(argv)}` changed files"
    # failing provider runs: every task fails, still nothing written
    providers.alpha.set_fault("500")
    providers.beta.set_fault("reset")
    assert cli_run(["run", str(world.tasks)]) == 1
    assert cli_run(["run", str(world.tasks), "--json", "--config", str(world.explicit)]) == 1
    assert snapshot(*world.watched) == before


def test_demo_writes_nothing(world: World):
    before = snapshot(*world.watched)
    assert cli_run(["demo"]) == 0
    assert cli_run(["demo", "--json"]) == 0
    assert snapshot(*world.watched) == before


def test_engine_and_tools_write_nothing(world: World, providers: LoopbackPair):
    before = snapshot(*world.watched)
    cfg = load_config()  # the XDG default
    assert cfg.source == str(world.project)
    d = Delegator(cfg)
    assert d.run_sync(["one", {"goal": "two", "model": "large"}]).ok
    tools = DelegateTools(d)
    json.loads(tools.list_models_sync())
    json.loads(tools.list_models_sync({"model": "small"}))
    assert [r["status"] for r in json.loads(tools.delegate_task_sync({"goal": "three"}))["results"]] == ["completed"]
    providers.alpha.set_fault("429_no_retry_after")
    out = json.loads(tools.delegate_task_sync({"tasks": [{"goal": "four"}, {"goal": "five", "model": "nope-xyz"}]}))
    assert out["type"] == "invalid_tasks"
    json.loads(tools.delegate_task_sync({"goal": "six"}))
    assert snapshot(*world.watched) == before


def test_hermes_style_config_is_read_never_written(world: World, providers: LoopbackPair):
    """The hermes plugin's view of $HERMES_HOME/config.yaml (its `hermes_delegate:` block and the LiteLLM
    file it references), read the way the plugin reads it, then used for a run."""
    from hermes_delegate_hermes.settings import plugin_dict  # shipped with the package (stdlib-only at import)

    before = snapshot(*world.watched)
    raw = yaml.safe_load(world.hermes_config.read_text())
    cfg = config_from_dict(plugin_dict(raw), source=str(world.hermes_config), base_dir=world.hermes_home)
    assert cfg.litellm_config == str(world.hermes_home / "litellm.yaml")
    assert Delegator(cfg).run_sync(["from hermes's config"]).ok
    assert snapshot(*world.watched) == before


@pytest.mark.slow
def test_real_hermes_run_leaves_its_config_and_litellm_file_untouched(tmp_path: Path, providers: LoopbackPair):
    """A real hermes-agent process (plugin loaded, one routed delegate_task call) never writes the user's
    config.yaml nor the LiteLLM file it references (hermes's own session/log files may appear)."""
    pytest.importorskip("run_agent")
    from hermes_helpers import make_home, parent_responder, run_scenario

    from hermes_delegate.loopback import LoopbackProvider

    home = make_home(tmp_path, {"tiers": {"small": "alpha"}, "model": "small", "litellm_config": "./litellm.yaml"},
                     builtin=True)
    (home / "litellm.yaml").write_text("# user's LiteLLM file\n" + _litellm_yaml(providers))
    watched = [home / "config.yaml", home / "litellm.yaml"]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in watched}
    parent = LoopbackProvider("parent", responder=parent_responder({"go": {"tasks": [{"goal": "g1"}]}})).start()
    try:
        out = run_scenario(home, parent_url=parent.base_url,
                           conversations=[{"user": "run:go", "disabled_toolsets": [], "stateless": True}])
    finally:
        parent.stop()
    assert out["conversations"][0]["completed"], out
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in watched} == before
    assert sorted(p.name for p in home.glob("*.yaml")) == ["config.yaml", "litellm.yaml"]
