"""Hostile inputs at every door: non-finite budgets, odd tasks files, alias bombs, broken pipes."""

from __future__ import annotations

import io
import json
import math
import os

import pytest

import hermes_delegate
from hermes_delegate.hosts import cli
from hermes_delegate.tools import delegate_tools as tools
from hermes_delegate.core.budget import effective_cap
from hermes_delegate.sources.config_file import config_from_dict, load_config
from hermes_delegate.core.errors import BudgetError, ConfigError, TaskPayloadError

MINIMAL = os.path.join(os.path.dirname(__file__), "..", "configs", "minimal.yaml")
BAD_BUDGETS = [math.nan, math.inf, -math.inf, -1, 0, 10**400]


def run(argv):
    out = io.StringIO()
    return cli.main(argv, out=out), out.getvalue()


def tasks_file(tmp_path, text, name="tasks.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize("cap", BAD_BUDGETS)
@pytest.mark.parametrize("config_cap", [None, 1.0])
def test_effective_cap_refuses_non_finite_and_huge(cap, config_cap):
    with pytest.raises(BudgetError):
        effective_cap(config_cap, cap)


@pytest.mark.parametrize("cap", BAD_BUDGETS)
def test_delegator_plan_refuses_bad_budget(cap):
    from hermes_delegate.runtime.delegator import Delegator

    with pytest.raises(BudgetError):
        Delegator(load_config(MINIMAL)).plan([{"goal": "x"}], budget_usd=cap)


@pytest.mark.parametrize("value", [math.nan, math.inf, 10**400, "nan", "inf", "1e400", "-inf"])
def test_tool_budget_field_non_finite_is_budget_error(value):
    with pytest.raises(BudgetError):
        tools._budget_field(value)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "0", "1" + "0" * 400])
def test_cli_run_budget_refused(tmp_path, text):
    path = tasks_file(tmp_path, "tasks: [{goal: x}]\n")
    code, out = run(["run", path, "--config", MINIMAL, "--budget", text])
    assert code == 2 and out == ""


@pytest.mark.parametrize("value", [".nan", ".inf", "-1", "1" + "0" * 400])
def test_config_budget_refused(tmp_path, value):
    cfg = tasks_file(tmp_path, f"delegation:\n  model: haiku\n  budget_usd: {value}\n", "cfg.yaml")
    with pytest.raises(ConfigError):
        load_config(cfg)
    with pytest.raises(ConfigError):
        config_from_dict({"delegation": {"budget_usd": float(value.replace(".", "")) if "." in value
                                         else int(value)}})


def test_print_json_is_strict():
    out = io.StringIO()
    cli._print_json({"a": math.nan, "b": [math.inf, 1.5]}, out)
    assert json.loads(out.getvalue(), parse_constant=lambda c: pytest.fail(c)) == {"a": None, "b": [None, 1.5]}


@pytest.mark.parametrize("text", ["tasks: hello\n", "tasks: {goal: x}\n", "tasks: 3\n"])
def test_tasks_must_be_a_list(tmp_path, text):
    path = tasks_file(tmp_path, text)
    with pytest.raises(TaskPayloadError) as err:
        cli._load_tasks(path)
    assert err.value.hint
    assert run(["run", path, "--config", MINIMAL]) == (2, "")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(12))


def test_alias_bomb_tasks_file_refused(tmp_path):
    path = tasks_file(tmp_path, "tasks: [{goal: x}]\n" + BOMB)
    with pytest.raises(TaskPayloadError, match="alias"):
        cli._load_tasks(path)
    assert run(["run", path, "--config", MINIMAL])[0] == 2


def test_alias_bomb_config_refused(tmp_path):
    path = tasks_file(tmp_path, "delegation: {model: haiku}\nx: " + BOMB.replace("\n", "\n  "), "cfg.yaml")
    with pytest.raises(ConfigError, match="alias"):
        load_config(path)
    assert run(["models", "--config", path])[0] == 2


def test_tasks_file_directory_binary_deep(tmp_path):
    (tmp_path / "dir").mkdir()
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00tasks")
    deep = tasks_file(tmp_path, "[" * 50_000 + "]" * 50_000, "deep.yaml")
    for path in (str(tmp_path / "dir"), str(binary), deep):
        with pytest.raises(TaskPayloadError):
            cli._load_tasks(path)
        assert run(["run", path, "--config", MINIMAL]) == (2, "")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable_files(tmp_path):
    path = tasks_file(tmp_path, "tasks: [{goal: x}]\n")
    os.chmod(path, 0)
    with pytest.raises(TaskPayloadError):
        cli._load_tasks(path)
    with pytest.raises(ConfigError):
        load_config(path)


def test_config_directory_binary_deep(tmp_path):
    (tmp_path / "dir").mkdir()
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00delegation")
    deep = tasks_file(tmp_path, "a: " + "[" * 50_000 + "]" * 50_000, "deep.yaml")
    for path in (str(tmp_path / "dir"), str(binary), deep):
        with pytest.raises(ConfigError):
            load_config(path)
        assert run(["models", "--config", path])[0] == 2


class _ClosedPipe(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_pipe_exits_quietly(capsys):
    code = cli.main(["models", "--json", "--config", MINIMAL], out=_ClosedPipe())
    assert code in (0, 1)
    assert "Traceback" not in capsys.readouterr().err


# -- lone surrogates: refused at planning, before any request; output always encodes -----------------

SURROGATE_TEXTS = ["half \ud83d a pair", "\udfff", "ok \ud83d\ude00 then \udc00"]


@pytest.mark.parametrize("text", SURROGATE_TEXTS)
@pytest.mark.parametrize("field", ["goal", "context"])
def test_lone_surrogate_is_refused_before_any_request(providers, text, field):
    from conftest import loopback_config
    from hermes_delegate import DelegateTools, Delegator
    from hermes_delegate.core.errors import BatchValidationError

    before = len(providers.alpha.requests)
    task = {"goal": "say hi", field: text, "model": "alpha"}
    with pytest.raises(BatchValidationError) as info:
        Delegator(loopback_config(providers)).plan([task])
    assert info.value.problems[0].type == "payload" and "surrogate" in info.value.problems[0].problem
    out = DelegateTools(Delegator(loopback_config(providers))).delegate_task_sync({"tasks": [task]})
    out.encode("utf-8")  # the tool's answer is valid UTF-8 text
    assert json.loads(out)["type"] in ("invalid_tasks", "payload") and "surrogate" in out
    assert len(providers.alpha.requests) == before, "nothing was sent"


def test_cli_refuses_a_surrogate_goal_from_a_json_tasks_file(tmp_path, capsys):
    path = tasks_file(tmp_path, '{"tasks": [{"goal": "x \\ud83d y"}]}', name="tasks.json")
    code, out = run(["run", path, "--config", MINIMAL, "--json"])
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert "surrogate" in err
    err.encode("utf-8")


def test_cli_output_always_encodes():
    out = io.StringIO()
    cli._print_json({"answer": "echoed \ud83d back"}, out)
    out.getvalue().encode("utf-8")
    assert json.loads(out.getvalue())["answer"].startswith("echoed ")


# -- first run: the demo ships in the package; loopback:// outside the demo is refused up front ------

def test_demo_files_ship_in_the_package_and_match_the_checkout_copies():
    from pathlib import Path

    from hermes_delegate.hosts.demo import DEMO_DATA, find_demo_files

    cfg, tasks = find_demo_files()
    assert cfg.parent == tasks.parent == DEMO_DATA
    assert DEMO_DATA.parent == Path(hermes_delegate.__file__).resolve().parent  # inside the package, not configs/
    root = Path(__file__).resolve().parents[1] / "configs"
    assert cfg.read_text(encoding="utf-8") == (root / "demo.yaml").read_text(encoding="utf-8")
    assert tasks.read_text(encoding="utf-8") == (root / "demo-tasks.yaml").read_text(encoding="utf-8")


def test_demo_runs_from_another_directory(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "-m", "hermes_delegate.hosts.cli", "demo", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {t["status"] for t in json.loads(proc.stdout)["results"]} == {"completed"}


def test_demo_missing_file_names_the_flag(tmp_path, capsys):
    code, _ = run(["demo", "--tasks", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "--tasks" in err and "nope.yaml" in err


def test_run_refuses_loopback_config_outside_demo(tmp_path, capsys):
    from pathlib import Path

    demo_cfg = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    code, out = run(["run", tasks_file(tmp_path, "tasks: [hi]\n"), "--config", str(demo_cfg), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert "only works under `hermes-delegate demo`" in err and "python -m hermes_delegate.loopback" in err


def test_live_view_shows_loading_then_pending_rows_with_elapsed_time():
    from hermes_delegate.hosts.render import Progress
    from hermes_delegate.core.results import ProgressEvent

    now = [100.0]
    p = Progress(2, out=io.StringIO(), live=False, goals=["first goal", "second goal"], clock=lambda: now[0])
    now[0] = 102.5
    assert p.lines() == ["loading providers… (2.5s)", "· [1/2] first goal (pending 2.5s)",
                         "· [2/2] second goal (pending 2.5s)"]
    p(ProgressEvent("start", 0, 2, "first goal", "alpha"))
    now[0] = 104.0
    assert p.lines() == ["… [1/2] first goal · alpha (1.5s)", "· [2/2] second goal (pending 4.0s)"]


def test_duplicate_deployment_ids_are_a_config_error():
    dep = {"model_name": "m", "litellm_params": {"model": "openai/x"}, "model_info": {"id": "same"}}
    with pytest.raises(ConfigError, match="model_info.id 'same'"):
        config_from_dict({"router": {"model_list": [dep, {**dep, "model_name": "n"}]}}, source="x.yaml")
    other = {**dep, "model_info": {"id": "other"}}
    assert len(config_from_dict({"router": {"model_list": [dep, other]}}).router.model_list) == 2


def test_cli_numbers_tasks_from_one_and_json_keeps_the_index(tmp_path, capsys):
    path = tasks_file(tmp_path, "tasks: [{goal: fine, model: haiku}, {goal: bad, model: no-such-model-xyz}]\n")
    code, out = run(["run", path, "--config", MINIMAL])
    err = capsys.readouterr().err
    assert code == 2 and "  task 2 [no-such-model-xyz]:" in err and "task 1 " not in err
    from hermes_delegate.runtime.delegator import Delegator
    from hermes_delegate.core.errors import BatchValidationError

    with pytest.raises(BatchValidationError) as info:
        Delegator(load_config(MINIMAL)).plan([{"goal": "fine"}, {"goal": "bad", "model": "no-such-model-xyz"}])
    assert info.value.to_dict()["tasks"][0]["index"] == 1  # 0-based in JSON


def test_a_litellm_proxy_file_as_config_gets_the_litellm_config_hint(tmp_path):
    path = tasks_file(tmp_path, "model_list:\n  - {model_name: m, litellm_params: {model: openai/x}}\n",
                      name="proxy.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"litellm_config: {path}" in info.value.hint


def test_task_numbers_in_messages_for_people_are_1_based():
    """Messages name the n-th task as people count (1-based); JSON `index` stays 0-based."""
    from hermes_delegate.runtime.delegator import coerce_tasks
    from hermes_delegate.core.errors import TaskPayloadError

    with pytest.raises(TaskPayloadError, match=r"^Task 2 has unknown keys: bogus\."):
        coerce_tasks([{"goal": "a"}, {"goal": "b", "bogus": 1}])
    with pytest.raises(TaskPayloadError, match=r"^Task 3 is not an object \(got int\)\."):
        coerce_tasks([{"goal": "a"}, "b", 7])
