"""The config file: validation, error messages (file + key path), safe YAML, litellm_config
passthrough, and where the file comes from (--config > $HERMES_DELEGATE_CONFIG > XDG default)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from hermes_delegate import (BudgetError, Config, ConfigError, Resolver, UsageError, config_from_dict,
                             load_config)
from hermes_delegate.sources.config_file import default_config_path

ROOT = Path(__file__).resolve().parents[1]

VALID = {
    "empty": "",
    "only-delegation": """
delegation:
  model: small
  aliases: {small: haiku, medium: sonnet, large: opus, fast: "glm-4.7 --provider zai"}
  max_concurrency: 8
  task_timeout_s: 120
  allow: [small, medium, "anthropic/*"]
  max_tasks: 20
  budget_usd: 1.5
  allow_unpriced: true
  max_tokens: 2048
""",
    "router": """
delegation: {model: team}
router:
  model_list:
    - model_name: team
      litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
      model_info: {id: team-1}
    - model_name: team
      litellm_params: {model: anthropic/claude-haiku-4-5, rpm: 50, weight: 2}
      extra_key_litellm_owns: yes
  router_settings: {routing_strategy: simple-shuffle, num_retries: 2, allowed_fails: 1}
  litellm_settings: {drop_params: true}
""",
    "nulls": """
delegation:
  model: null
  task_timeout_s: null
  allow: null
""",
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_examples_load(make_config, name: str):
    cfg = make_config(VALID[name])
    assert isinstance(cfg, Config)
    assert cfg.source == str(make_config.path())


def test_valid_example_values(make_config):
    cfg = make_config(VALID["router"])
    groups = Resolver(cfg).groups
    assert list(groups) == ["team"] and len(groups["team"]) == 2
    assert groups["team"][0].model_info == {"id": "team-1"}
    # LiteLLM's own keys pass through untouched
    assert groups["team"][1].litellm_params["weight"] == 2
    assert cfg.router.model_list[1].model_dump()["extra_key_litellm_owns"] is True
    assert cfg.router.router_settings["num_retries"] == 2
    d = make_config(VALID["only-delegation"]).delegation
    assert (d.model, d.max_concurrency, d.task_timeout_s, d.max_tasks, d.budget_usd) == ("small", 8, 120, 20, 1.5)
    assert d.aliases["fast"] == "glm-4.7 --provider zai"


_CONFIG_KEYS = {"delegation", "router", "litellm_config", "remote"}
_EXAMPLES = sorted((ROOT / "configs").glob("*.y*ml"))


def _is_delegate_config(p: Path) -> bool:
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    return isinstance(data, dict) and set(data) <= _CONFIG_KEYS


def _shipped_configs() -> list[Path]:
    return [p for p in _EXAMPLES if _is_delegate_config(p)]


def _other_examples() -> list[Path]:
    """LiteLLM proxy files (model_list, …) and task files (tasks): other formats that live next to the
    configs. They must not load as a hermes-delegate config."""
    return [p for p in _EXAMPLES if not _is_delegate_config(p)]


def test_configs_dir_has_both_kinds_of_examples():
    assert _shipped_configs(), "configs/ has no hermes-delegate example configs"
    assert _other_examples(), "configs/ has no non-config example (task file / LiteLLM proxy file)"


@pytest.mark.parametrize("path", _shipped_configs(), ids=lambda p: p.name)
def test_shipped_example_configs_load(path: Path):
    assert isinstance(load_config(path), Config)


@pytest.mark.parametrize("path", _other_examples(), ids=lambda p: p.name)
def test_non_config_examples_are_rejected_with_config_error(path: Path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message or path.name in message, message
    foreign = sorted(set(data) - _CONFIG_KEYS) if isinstance(data, dict) else []
    for key in foreign:
        assert key in message, f"{key!r} not named in: {message}"


# -- errors name the file and the key path ----------------------------------------------------
BAD = [
    ("alias-list", "delegation:\n  aliases:\n    small: [haiku, sonnet]\n", "delegation.aliases.small"),
    ("concurrency-0", "delegation:\n  max_concurrency: 0\n", "delegation.max_concurrency"),
    ("no-model", "router:\n  model_list:\n    - model_name: x\n      litellm_params: {api_base: 'http://h/v1'}\n",
     "router.model_list.0.litellm_params"),
    ("second-no-model", "router:\n  model_list:\n    - {model_name: a, litellm_params: {model: openai/a}}\n"
                        "    - {model_name: b, litellm_params: {model: ''}}\n", "router.model_list.1.litellm_params"),
    ("unknown-top", "delegaton:\n  model: haiku\n", "delegaton"),
    ("unknown-delegation-key", "delegation:\n  modle: haiku\n", "delegation.modle"),
    ("unknown-router-key", "router:\n  model_lst: []\n", "router.model_lst"),
    ("timeout-negative", "delegation: {task_timeout_s: -1}\n", "delegation.task_timeout_s"),
    ("alias-two-words", "delegation:\n  aliases: {'two words': haiku}\n", "delegation.aliases"),
    ("budget-zero", "delegation: {budget_usd: 0}\n", "delegation.budget_usd"),
]


@pytest.mark.parametrize(("name", "text", "key"), BAD, ids=[b[0] for b in BAD])
def test_errors_name_file_and_key_path(make_config, name: str, text: str, key: str):
    # a bad budget_usd is a BudgetError (as from the CLI, the tools and Python), named the same way
    with pytest.raises(BudgetError if key.endswith("budget_usd") else ConfigError) as info:
        make_config(text, name=f"{name}.yaml")
    msg = str(info.value)
    assert str(make_config.path(f"{name}.yaml")) in msg
    assert key in msg
    assert isinstance(info.value, UsageError)


def test_unknown_top_level_key_rejected(make_config):
    with pytest.raises(ConfigError, match="delegaton"):
        make_config({"delegaton": {"model": "haiku"}})
    with pytest.raises(ConfigError, match="model_list"):
        make_config({"model_list": []})  # a LiteLLM proxy file passed as our config


@pytest.mark.parametrize("text", [
    "delegation: !!python/object/apply:os.system ['echo pwned']\n",
    "delegation: !!python/object:collections.OrderedDict {}\n",
    "x: !!python/name:os.system\n",
])
def test_python_yaml_tags_refused(make_config, tmp_path: Path, text: str):
    with pytest.raises(ConfigError) as info:
        make_config(text, name="evil.yaml")
    assert str(make_config.path("evil.yaml")) in str(info.value)


@pytest.mark.parametrize(("text", "snippet"), [
    ("delegation: [\n", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("just a string\n", "top level must be a mapping"),
])
def test_malformed_files(make_config, text: str, snippet: str):
    with pytest.raises(ConfigError) as info:
        make_config(text, name="bad.yaml")
    assert snippet in str(info.value)
    assert str(make_config.path("bad.yaml")) in str(info.value)


def test_inline_config_errors_say_inline():
    with pytest.raises(ConfigError, match=r"\(inline\).*delegation\.max_concurrency"):
        config_from_dict({"delegation": {"max_concurrency": 0}})


# -- litellm_config passthrough ---------------------------------------------------------------
LITELLM_YAML = """
model_list:
  - model_name: fast
    litellm_params: {model: openai/fast-model, api_base: "http://127.0.0.1:9/v1", api_key: os.environ/FAST_KEY}
router_settings: {num_retries: 1}
litellm_settings: {drop_params: true}
general_settings: {master_key: sk-proxy-only}
environment_variables: {FOO: bar}
"""


def test_litellm_config_relative_to_config_file(make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture):
    make_config.write(LITELLM_YAML, "sub/litellm.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the path must not be resolved against the cwd
    with caplog.at_level(logging.WARNING, logger="hermes_delegate.sources.config_file"):
        cfg = make_config("delegation: {model: fast}\nlitellm_config: sub/litellm.yaml\n")
    assert Path(cfg.litellm_config) == make_config.path("sub/litellm.yaml")
    assert Path(cfg.litellm_config).is_absolute()
    assert list(Resolver(cfg).groups) == ["fast"]
    assert cfg.router.model_list[0].litellm_params["api_key"] == "os.environ/FAST_KEY"
    assert cfg.router.router_settings == {"num_retries": 1}
    assert cfg.router.litellm_settings == {"drop_params": True}
    # environment_variables feed os.environ/ lookups; general_settings (proxy server) is ignored, and
    # recorded so `doctor` can say so; neither is a warning, and the proxy's master key is kept nowhere
    assert cfg.router.environment_variables == {"FOO": "bar"}
    assert cfg.env_lookup({})["FOO"] == "bar"
    assert cfg.router.ignored_sections == ["general_settings"]
    assert not [r for r in caplog.records if r.name == "hermes_delegate.sources.config_file" and r.levelno >= logging.WARNING]
    assert "sk-proxy-only" not in repr(cfg.model_dump())


def test_litellm_config_without_proxy_sections_logs_nothing(make_config, caplog: pytest.LogCaptureFixture):
    make_config.write("model_list:\n  - {model_name: a, litellm_params: {model: openai/a}}\n", "lite.yaml")
    with caplog.at_level(logging.WARNING, logger="hermes_delegate.sources.config_file"):
        cfg = make_config("litellm_config: lite.yaml\n")
    assert list(Resolver(cfg).groups) == ["a"]
    assert not [r for r in caplog.records if r.name == "hermes_delegate.sources.config_file"]


def test_litellm_config_missing_file(make_config):
    with pytest.raises(ConfigError) as info:
        make_config("litellm_config: nothere.yaml\n")
    assert str(make_config.path("nothere.yaml")) in str(info.value)


def test_litellm_config_and_router_together_rejected(make_config):
    make_config.write(LITELLM_YAML, "lite.yaml")
    with pytest.raises(ConfigError, match="router"):
        make_config("litellm_config: lite.yaml\nrouter:\n  model_list:\n"
                    "    - {model_name: a, litellm_params: {model: openai/a}}\n")


def test_litellm_config_error_names_the_litellm_file(make_config):
    """A bad deployment inside the LiteLLM file is reported against that file and its own key path
    (model_list.0.litellm_params), not against the hermes-delegate config that points at it."""
    make_config.write("model_list:\n  - model_name: fast\n    litellm_params: {api_base: 'http://h/v1'}\n",
                      "lite.yaml")
    with pytest.raises(ConfigError) as info:
        make_config("litellm_config: lite.yaml\n")
    msg = str(info.value)
    assert str(make_config.path("lite.yaml")) in msg, msg
    assert "model_list.0.litellm_params" in msg


# -- where the config comes from --------------------------------------------------------------
@pytest.fixture
def three_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    xdg = Path(os.environ["XDG_CONFIG_HOME"])  # set per test by conftest
    default = xdg / "hermes-delegate" / "config.yaml"
    default.parent.mkdir(parents=True)
    default.write_text("delegation: {model: from-default}\n")
    env_file = tmp_path / "env.yaml"
    env_file.write_text("delegation: {model: from-env}\n")
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("delegation: {model: from-flag}\n")
    return {"default": default, "env": env_file, "explicit": explicit}


def test_precedence_flag_over_env_over_default(three_configs: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    assert default_config_path() == three_configs["default"]
    assert load_config().delegation.model == "from-default"
    monkeypatch.setenv("HERMES_DELEGATE_CONFIG", str(three_configs["env"]))
    assert load_config().delegation.model == "from-env"
    assert load_config(three_configs["explicit"]).delegation.model == "from-flag"
    assert load_config(str(three_configs["explicit"])).source == str(three_configs["explicit"])


def test_precedence_with_explicit_env_mapping(three_configs: dict[str, Path]):
    env = {"XDG_CONFIG_HOME": str(three_configs["default"].parents[1])}
    assert load_config(env=env).delegation.model == "from-default"
    env["HERMES_DELEGATE_CONFIG"] = str(three_configs["env"])
    assert load_config(env=env).delegation.model == "from-env"
    assert load_config(three_configs["explicit"], env=env).delegation.model == "from-flag"


def test_missing_explicit_file_is_an_error(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in str(info.value)


def test_missing_env_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    missing = tmp_path / "nope-env.yaml"
    monkeypatch.setenv("HERMES_DELEGATE_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="nope-env.yaml"):
        load_config()


def test_missing_default_file_is_an_empty_config():
    assert not default_config_path().exists()
    cfg = load_config()
    assert cfg == Config()
    assert cfg.router.model_list == [] and cfg.delegation.model is None and cfg.source is None


def test_empty_file_is_an_empty_config(make_config):
    cfg = make_config("")
    assert cfg.delegation == Config().delegation and cfg.router.model_list == []
