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


@pytest.mark.parametrize("value", [".nan", ".inf", "-1", "0", "1" + "0" * 400, "true", "false", "abc"])
def test_config_budget_refused(tmp_path, value):
    """A bad budget_usd in a config is a BudgetError, as from every other door, still naming file and key."""
    cfg = tasks_file(tmp_path, f"delegation:\n  model: haiku\n  budget_usd: {value}\n", "cfg.yaml")
    with pytest.raises(BudgetError) as info:
        load_config(cfg)
    assert str(info.value).startswith(f"Invalid config {cfg}: delegation.budget_usd: ")
    raw = {".nan": math.nan, ".inf": math.inf, "true": True, "false": False, "abc": "abc"}.get(value)
    with pytest.raises(BudgetError):
        config_from_dict({"delegation": {"budget_usd": int(value) if raw is None else raw}})
    assert run(["models", "--config", cfg])[0] == 2


def test_a_true_budget_is_refused_not_read_as_one_dollar():
    with pytest.raises(BudgetError, match=r"delegation\.budget_usd: must be a number of US dollars, not true\."):
        config_from_dict({"delegation": {"budget_usd": True}}, source="c.yaml")
    assert config_from_dict({"delegation": {"budget_usd": 1}}).delegation.budget_usd == 1.0
    with pytest.raises(BudgetError):
        effective_cap(None, True)
    with pytest.raises(TaskPayloadError):
        tools._budget_field(True)


def test_other_config_errors_stay_config_errors_beside_a_bad_budget():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"delegation": {"budget_usd": -1, "max_tasks": 0}}, source="x.yaml")
    assert str(info.value) == ("Invalid config x.yaml: delegation.max_tasks: Input should be greater than or equal "
                               "to 1; delegation.budget_usd: Input should be greater than 0. Fix the named keys; "
                               "see configs/ for working examples.")


def test_a_bad_budget_in_the_hermes_block_names_the_hermes_key(tmp_path):
    from hermes_delegate.sources.hermes_home import config_for_home

    (tmp_path / "config.yaml").write_text("hermes_delegate:\n  budget_usd: .nan\n", encoding="utf-8")
    with pytest.raises(BudgetError, match=r"hermes_delegate\.budget_usd: Input should be a finite number\."):
        config_for_home(tmp_path, env={})


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


def _indented(doc, key="x"):
    return f"{key}:\n  " + doc.rstrip("\n").replace("\n", "\n  ") + "\n"


def test_alias_bomb_tasks_file_refused(tmp_path):
    path = tasks_file(tmp_path, "tasks: [{goal: x}]\n" + BOMB)
    with pytest.raises(TaskPayloadError) as info:
        cli._load_tasks(path)
    assert str(info.value).startswith(f"{path} (line 3): YAML aliases (*name) are not allowed in a tasks file.")
    assert run(["run", path, "--config", MINIMAL])[0] == 2


def test_any_alias_in_a_tasks_file_is_refused(tmp_path):
    for doc in ("base: &b {goal: x}\ntasks: [*b]\n", "base: &b {goal: x}\ntasks: [{<<: *b, model: m}]\n"):
        with pytest.raises(TaskPayloadError, match=r"aliases \(\*name\) are not allowed in a tasks file"):
            cli._load_tasks(tasks_file(tmp_path, doc))


@pytest.mark.parametrize("where", ["config", "litellm_config", "include", "hermes"])
def test_alias_bomb_config_refused_fast(tmp_path, where):
    """Config files may use aliases, but their expanded size is bounded while loading: a billion-laughs
    file (9**13 nodes) is refused after a few dozen, with a typed error naming the file."""
    import time

    from hermes_delegate.sources.hermes_home import config_for_home

    bomb = _indented(BOMB)
    top = tasks_file(tmp_path, "litellm_config: lc.yaml\n", "cfg.yaml")
    if where == "config":
        path = tasks_file(tmp_path, "delegation: {model: haiku}\n" + bomb, "cfg.yaml")
    elif where == "hermes":
        path = tasks_file(tmp_path, _indented(bomb, "hermes_delegate"), "config.yaml")
    elif where == "litellm_config":
        path = tasks_file(tmp_path, "model_list: []\n" + _indented(bomb, "router_settings"), "lc.yaml")
    else:
        tasks_file(tmp_path, "include: [models.yaml]\n", "lc.yaml")
        path = tasks_file(tmp_path, "model_list: []\n" + _indented(bomb, "router_settings"), "models.yaml")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        config_for_home(tmp_path, env={}) if where == "hermes" else load_config(top if "lite" in where
                                                                                or where == "include" else path)
    assert time.perf_counter() - t0 < 5  # measured: ~2 ms (unbounded, 9**13 nodes would never finish)
    assert str(info.value).startswith(f"{path} (line ")
    assert "more than 1,000,000 YAML nodes once its aliases are expanded" in str(info.value)


def test_a_recursive_alias_in_a_config_is_refused(tmp_path):
    path = tasks_file(tmp_path, "delegation: &d {aliases: {a: *d}}\n", "cfg.yaml")
    with pytest.raises(ConfigError, match=r"the alias \*d is used inside the node it names"):
        load_config(path)


def test_anchors_aliases_and_merge_keys_load_in_our_config(tmp_path):
    path = tasks_file(tmp_path, (
        "delegation:\n  model: a\n  aliases: &al {small: a}\n"
        "router:\n  model_list:\n"
        "    - model_name: a\n      litellm_params: &p {model: openai/m, api_base: 'http://127.0.0.1:9/v1'}\n"
        "    - model_name: b\n      litellm_params: {<<: *p, model: openai/n}\n"
        "  router_settings: {model_group_alias: *al}\n"), "cfg.yaml")
    cfg = load_config(path)
    assert [d.litellm_params for d in cfg.router.model_list] == [
        {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1"},
        {"model": "openai/n", "api_base": "http://127.0.0.1:9/v1"}]
    assert cfg.router.router_settings == {"model_group_alias": {"small": "a"}}


# -- size: at most MAX_YAML_BYTES (+1) is read, from a file, /dev/zero or a FIFO ----------------------

def test_size_cap_is_8_mib():
    from hermes_delegate.sources.config_file import MAX_YAML_BYTES

    assert MAX_YAML_BYTES == 8 * 1024 * 1024


@pytest.mark.parametrize("door", ["tasks", "config"])
def test_an_endless_file_is_refused_without_reading_it_whole(door):
    """/dev/zero (under `ulimit -v 3000000`: a MemoryError traceback before): one bounded read, typed."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(TaskPayloadError if door == "tasks" else ConfigError) as info:
            cli._load_tasks("/dev/zero") if door == "tasks" else load_config("/dev/zero")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    what = "tasks file" if door == "tasks" else "config file"
    assert str(info.value).startswith(f"Cannot read {what} /dev/zero: it is larger than 8 MiB, the limit for a "
                                      "YAML file. Split it")
    assert peak < 40 * 1024 * 1024, peak  # the bounded read (8 MiB + 1), not the stream
    argv = ["run", "/dev/zero", "--config", MINIMAL] if door == "tasks" else ["models", "--config", "/dev/zero"]
    assert run(argv) == (2, "")


def test_a_file_one_byte_over_the_cap_is_refused_before_parsing(tmp_path):
    from hermes_delegate.sources.config_file import MAX_YAML_BYTES

    path = tmp_path / "big.yaml"
    path.write_bytes(b"tasks: [x]\n" + b"#" * (MAX_YAML_BYTES - 11) + b"\n")  # a comment: cheap if parsed
    with pytest.raises(TaskPayloadError, match="larger than 8 MiB"):
        cli._load_tasks(str(path))
    with pytest.raises(ConfigError, match="larger than 8 MiB"):
        load_config(path)
    path.write_bytes(b"tasks: [x]\n" + b"#" * (MAX_YAML_BYTES - 12) + b"\n")  # exactly the cap: read
    assert cli._load_tasks(str(path)) == (["x"], None)


def test_an_endless_fifo_is_read_only_up_to_the_cap(tmp_path):
    import threading

    fifo = tmp_path / "tasks.fifo"
    os.mkfifo(fifo)
    written = []

    def writer():
        try:
            with open(fifo, "wb") as f:
                while True:
                    f.write(b"# " + b"x" * 65534)
                    written.append(1)
        except (BrokenPipeError, OSError):
            pass  # the reader stopped after the cap: the endless writer is told so

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    with pytest.raises(TaskPayloadError, match="larger than 8 MiB"):
        cli._load_tasks(str(fifo))
    t.join(timeout=30)
    assert not t.is_alive()


def test_tasks_file_directory_binary_deep(tmp_path):
    (tmp_path / "dir").mkdir()
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00tasks")
    deep = tasks_file(tmp_path, "[" * 50_000 + "]" * 50_000, "deep.yaml")
    for path in (str(tmp_path / "dir"), str(binary), deep):
        with pytest.raises(TaskPayloadError):
            cli._load_tasks(path)
        assert run(["run", path, "--config", MINIMAL]) == (2, "")


#: Run by test_unreadable_files in a child process: loads the `ok-` and `locked-` tasks and config files
#: (cwd-relative) as the user the child runs as, after dropping root's privileges (root reads any file).
_UNREADABLE_CHILD = r"""
import json, os, sys
from hermes_delegate.hosts import cli
from hermes_delegate.sources.config_file import load_config
cli._load_tasks("ok-tasks.yaml"); load_config("ok-config.yaml")  # every import done while readable
if os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)  # nobody: no CAP_DAC_OVERRIDE any more
out = {"uid": os.geteuid()}
for prefix in ("ok", "locked"):
    for what, load in (("tasks", cli._load_tasks), ("config", load_config)):
        try:
            load(f"{prefix}-{what}.yaml")
            out[f"{prefix} {what}"] = "loaded"
        except Exception as exc:
            out[f"{prefix} {what}"] = type(exc).__name__
print(json.dumps(out))
"""


def test_unreadable_files(tmp_path):
    """A file the process may not read is a typed error, not a traceback. As root (CI always is) the
    loaders run in a child that drops to `nobody` first; its readable sibling proves the file's mode,
    not the path, is what stops it."""
    import subprocess
    import sys

    locked_dir = tmp_path / "locked"
    locked_dir.mkdir()
    for prefix, mode in (("ok", 0o644), ("locked", 0)):  # the same texts; only the mode differs
        for what, text in (("tasks", "tasks: [{goal: x}]\n"), ("config", "delegation: {}\n")):
            (locked_dir / f"{prefix}-{what}.yaml").write_text(text, encoding="utf-8")
            os.chmod(locked_dir / f"{prefix}-{what}.yaml", mode)
    os.chmod(locked_dir, 0o711)  # searchable by anyone: the child reaches the files from its cwd
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "-c", _UNREADABLE_CHILD], cwd=locked_dir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("uid") != 0
    assert out == {"ok tasks": "loaded", "ok config": "loaded",
                   "locked tasks": "TaskPayloadError", "locked config": "ConfigError"}
    if os.geteuid() != 0:  # and in this process, where it can be (root reads anything)
        with pytest.raises(TaskPayloadError):
            cli._load_tasks(str(locked_dir / "locked-tasks.yaml"))
        with pytest.raises(ConfigError):
            load_config(str(locked_dir / "locked-config.yaml"))


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


@pytest.mark.slow
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
    assert code == 2 and "  Task 2 (tasks[1]) [no-such-model-xyz]:" in err and "Task 1 " not in err
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


# -- messages: each sentence ends with a full stop; no pydantic "Value error, "; file kinds lower-case ----

def test_config_messages_read_as_sentences(tmp_path):
    bad = tasks_file(tmp_path, "delegation:\n  budget_usd: .inf\n", "cfgb.yaml")
    with pytest.raises(BudgetError) as info:
        load_config(bad)
    assert str(info.value) == (f"Invalid config {bad}: delegation.budget_usd: Input should be a finite number. "
                               "Set budget_usd to a positive number of US dollars (e.g. 0.5), or leave it out "
                               "for no cap.")
    dep = {"model_name": "m", "litellm_params": {"model": "openai/x"}, "model_info": {"id": "same"}}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"router": {"model_list": [dep, dep]}}, source="x.yaml")
    assert str(info.value) == ("Invalid config x.yaml: router.model_list: model_info.id 'same' is given to more "
                               "than one deployment; give each deployment its own id, or leave model_info.id "
                               "out. Fix the named keys; see configs/ for working examples.")
    missing = str(tmp_path / "c.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"Config file not found: {missing}. Check the path, or pass --config PATH."
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"Cannot read config file {tmp_path}: is a directory."
    with pytest.raises(TaskPayloadError) as info:
        cli._load_tasks(str(tmp_path / "t.yaml"))
    assert str(info.value) == f"Tasks file not found: {tmp_path / 't.yaml'}."


def test_batch_validation_error_numbers_tasks_from_one_with_the_json_index():
    from hermes_delegate.core.errors import BatchValidationError, TaskProblem

    err = BatchValidationError([TaskProblem(1, "nope-zz", "Unknown model.", "unknown_model", ["haiku"]),
                                TaskProblem(2, None, "The task has no goal.", "payload")])
    assert str(err) == ("2 tasks cannot run; nothing was started.\n"
                        "  Task 2 (tasks[1]) [nope-zz]: Unknown model. (try: haiku)\n"
                        "  Task 3 (tasks[2]): The task has no goal.")
    assert [t["index"] for t in err.to_dict()["tasks"]] == [1, 2]  # JSON keeps the 0-based index


# -- tool output: strict JSON, valid UTF-8 -------------------------------------------------------------

def test_tool_strings_always_encode_as_utf8(providers):
    from conftest import loopback_config
    from hermes_delegate import DelegateTools, Delegator, WorkerOutput

    t = DelegateTools(Delegator(loopback_config(providers)))
    out = t.delegate_task_sync({"tasks": [{"goal": "x", "model": "m\udfff"}]})
    out.encode("utf-8")
    assert json.loads(out)["tasks"][0]["model"] == "m\ufffd"
    body = tools.tool_error(TaskPayloadError("bad \ud800 text", hint="h\udc00"))
    json.dumps(body, ensure_ascii=False).encode("utf-8")
    assert body["error"] == "bad \ufffd text" and body["hint"] == "h\ufffd"

    class Echo:  # a provider whose reply carries a lone surrogate (and a split pair)
        async def run(self, job):
            return WorkerOutput(summary="reply \ud800 and \ud83d\ude00", output={"k\udfff": ["\udc01"]})

    out = DelegateTools(Delegator(loopback_config(providers), worker=Echo())).delegate_task_sync(
        {"goal": "hi", "model": "alpha", "detail": "full"})  # the full report: every string in it
    out.encode("utf-8")
    result = json.loads(out)["results"][0]
    assert result["summary"] == "reply \ufffd and \U0001f600"


def test_tool_output_is_strict_json_even_for_a_nan_answer(providers):
    from conftest import loopback_config
    from hermes_delegate import DelegateTools, Delegator, WorkerOutput

    class NaNs:  # structured output parsed from a provider's text: json.loads accepts NaN
        async def run(self, job):
            return WorkerOutput(summary="ok", output={"x": math.nan, "y": [math.inf, 1.5]}, cost_usd=math.nan)

    out = DelegateTools(Delegator(loopback_config(providers), worker=NaNs())).delegate_task_sync(
        {"goal": "hi", "model": "alpha"})
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["results"][0]["output"] == {"x": None, "y": [None, 1.5]}, out
