"""`hermes-delegate --hermes [HERMES_HOME]`: the CLI reads the hermes plugin's settings (issue 11)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from hermes_delegate.hosts.cli import main
from hermes_delegate.sources.hermes_home import hermes_keys

BLOCK = {"tiers": {"small": "fast"}, "aliases": {"writer": "prose"},
         "router": {"model_list": [
             {"model_name": "fast", "litellm_params": {"model": "openai/fast-model", "api_base": "http://127.0.0.1:9/v1",
                                                       "api_key": "sk-cli-test-secret"}},
             {"model_name": "prose", "litellm_params": {"model": "openai/prose-model",
                                                        "api_base": "http://127.0.0.1:9/v1"}}]}}


def _home(tmp_path: Path, block: object = BLOCK, extra: dict | None = None) -> Path:
    home = tmp_path / "hh"
    home.mkdir()
    cfg = {"model": {"default": "x"}, "hermes_delegate": block, **(extra or {})}
    (home / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return home


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HERMES_DELEGATE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no standalone config
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    monkeypatch.delenv("HERMES_HOME", raising=False)


def test_resolve_and_models_read_the_hermes_block(tmp_path: Path, clean_env: None) -> None:
    home = _home(tmp_path)
    before = (home / "config.yaml").read_bytes()
    rc, text = _run(["--hermes", str(home), "resolve", "small", "--json"])
    assert rc == 0, text
    assert json.loads(text)["model"] == "fast"
    rc, text = _run(["--hermes", str(home), "models", "--json"])
    assert rc == 0 and "writer" in text and "sk-cli-test-secret" not in text
    assert (home / "config.yaml").read_bytes() == before


def test_autodetected_from_hermes_home(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(tmp_path)
    rc, text = _run(["resolve", "small", "--json"])
    assert rc != 0  # no config at all: "small" is not configured
    monkeypatch.setenv("HERMES_HOME", str(home))
    rc, text = _run(["resolve", "small", "--json"])
    assert rc == 0 and json.loads(text)["model"] == "fast"


def test_bad_block_error_names_the_hermes_key(tmp_path: Path, clean_env: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    home = _home(tmp_path, {**BLOCK, "max_concurrency": "many"})
    rc, _ = _run(["--hermes", str(home), "doctor"])
    err = capsys.readouterr().err
    assert rc != 0 and "hermes_delegate.max_concurrency" in err and "delegation.max_concurrency" not in err


def test_yaml_anchors_and_merge_keys_are_read_like_our_own_config(tmp_path: Path, clean_env: None,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """hermes's config.yaml may use anchors, aliases and merge keys (hermes reads it with PyYAML); an
    alias bomb is refused, fast, like in our own config."""
    home = tmp_path / "hh"
    home.mkdir()
    fast = BLOCK["router"]["model_list"][0]["litellm_params"]
    (home / "config.yaml").write_text(
        "anchors: &a {small: fast}\n"
        f"base: &p {{model: openai/fast-model, api_base: '{fast['api_base']}', api_key: {fast['api_key']}}}\n"
        "hermes_delegate:\n  tiers: *a\n  router:\n    model_list:\n"
        "      - {model_name: fast, litellm_params: *p}\n"
        "      - {model_name: slow, litellm_params: {<<: *p, model: openai/slow-model}}\n")
    rc, text = _run(["--hermes", str(home), "resolve", "small", "--json"])
    assert rc == 0 and json.loads(text)["model"] == "fast", text
    rc, text = _run(["--hermes", str(home), "resolve", "slow", "--json"])
    assert rc == 0 and json.loads(text)["model"] == "slow", text
    bomb = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 12))
    (home / "config.yaml").write_text(bomb + "hermes_delegate:\n  tiers: {small: fast}\n")
    capsys.readouterr()
    rc, _ = _run(["--hermes", str(home), "models"])
    assert rc == 2 and "once its aliases are expanded" in capsys.readouterr().err


def test_hints_name_hermes_delegate_keys_only_for_our_keys() -> None:
    text = hermes_keys("set delegation.allow_unpriced: true, or raise delegation.max_spawn_depth")
    assert text == "set hermes_delegate.allow_unpriced: true, or raise delegation.max_spawn_depth"
