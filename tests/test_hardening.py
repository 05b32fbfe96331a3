"""Hostile inputs at every door: non-finite budgets, odd tasks files, alias bombs, broken pipes."""

from __future__ import annotations

import io
import json
import math
import os

import pytest

from hermes_delegate import cli, tools
from hermes_delegate.budget import effective_cap
from hermes_delegate.config import config_from_dict, load_config
from hermes_delegate.errors import BudgetError, ConfigError, TaskPayloadError

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
    from hermes_delegate.engine import Delegator

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
