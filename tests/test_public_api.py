"""The public surface is exactly `hermes_delegate.__all__`, sorted, and every name in it exists."""

import importlib.metadata

import hermes_delegate


def test_all_is_sorted_and_complete():
    assert hermes_delegate.__all__ == sorted(hermes_delegate.__all__)
    for name in hermes_delegate.__all__:
        assert hasattr(hermes_delegate, name), name


def test_public_members_are_exported():
    """Every public object defined by the package and re-exported at the top is in __all__ (httpx's rule)."""
    public = {name for name, value in vars(hermes_delegate).items()
              if not name.startswith("_") and getattr(value, "__module__", "").startswith("hermes_delegate.")}
    assert public <= set(hermes_delegate.__all__), sorted(public - set(hermes_delegate.__all__))


def test_hosts_get_the_tools_from_the_top():
    from hermes_delegate import DelegateTools, tool_error  # noqa: F401
    from hermes_delegate.core.errors import ConfigError

    body = tool_error(ConfigError("bad", hint="fix it"))
    assert body["type"] and "bad" in body["error"] and body["hint"] == "fix it"


def test_version_comes_from_the_package_metadata():
    assert hermes_delegate.__version__ == importlib.metadata.version("hermes-delegate")


def test_hermes_plugin_manifest_version_is_the_package_version():
    """hermes reads a directory plugin's version from its plugin.yaml (hermes_cli.plugins: the manifest's
    `version`), so the file keeps one, written by hand: it must name the release the package metadata names."""
    from pathlib import Path

    import yaml

    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "plugins" / "hermes" / "plugin.yaml").read_text())
    assert str(manifest["version"]) == importlib.metadata.version("hermes-delegate")


def test_hosts_get_what_they_need_from_the_delegator(tmp_path):
    """What the CLI (a host, held to the public API by import-linter) needs: the tasks file reader,
    the one listing and its checks, the one redactor, a sync run under signal handling."""
    from hermes_delegate import Delegator, config_from_dict, load_tasks

    path = tmp_path / "tasks.yaml"
    path.write_text("model: small\ntasks: [a goal, {goal: another}]\n", encoding="utf-8")
    assert load_tasks(path) == (["a goal", {"goal": "another"}], "small")
    secret = "literal-key-0123456789"
    d = Delegator(config_from_dict({"router": {"model_list": [
        {"model_name": "g", "litellm_params": {"model": "openai/m", "api_key": secret}}]}}), env={})
    assert d.redact(f"key {secret} and sk-abcdefghijkl") == "key *** and sk-***"
    assert list(d.model_listing_sync()["groups"]) == ["g"]
    assert d.doctor()["deployments"] == [{"group": "g", "model": "openai/m", "credentials": "set", "key_env": None}]
    assert d.learned_limits() == {}
    for name in ("check_model", "run_planned_sync", "interrupt_on_signals", "log_filter"):
        assert callable(getattr(d, name)), name


def test_text_helpers_are_internal_hosts_get_strict_json_and_safe_text_from_the_delegator():
    """`finite` and `utf8` are not public (issue 24): a host gets strict JSON from `Delegator.to_json`
    and text it can always write from `Delegator.redact`."""
    import json

    from hermes_delegate import Delegator

    assert not {"finite", "utf8"} & set(hermes_delegate.__all__)
    assert not hasattr(hermes_delegate, "finite") and not hasattr(hermes_delegate, "utf8")
    text = Delegator.to_json({"cost": float("nan"), "cap": float("inf"), "summary": "half \ud83d pair"}, indent=2)
    assert json.loads(text) == {"cost": None, "cap": None, "summary": "half \ufffd pair"}
    text.encode("utf-8")  # never a UnicodeEncodeError
    assert Delegator(env={}).redact("echoed \udcff byte") == "echoed \ufffd byte"
