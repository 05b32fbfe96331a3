"""Property-based tests for every door that takes text, numbers or files (issue 13).

Each generated input either succeeds or ends in one of the package's typed errors (DelegateError):
tasks files and config files (generated YAML, including aliases, merge keys and deep nesting), the
tool arguments an LLM sends (DelegateTools), and CLI flags. For input that planning must refuse, the
real loopback provider behind the config sees no request. Every example has a deadline (5 s, generous:
the slowest takes well under a second), and the file and config doors a memory bound (tracemalloc peak).
Text includes lone surrogates. Run time stays modest: 50 examples each (30 for a real run), ~15 s in all.
"""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import loopback_config, loopback_dict
from hermes_delegate import DelegateTools, Delegator
from hermes_delegate.hosts import cli
from hermes_delegate.sources.config_file import load_config
from hermes_delegate.core.errors import DelegateError
from helpers import examples

MINIMAL = os.path.join(os.path.dirname(__file__), "..", "configs", "minimal.yaml")
DEADLINE = timedelta(seconds=5)
FUZZ = settings(max_examples=examples(50), deadline=DEADLINE, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])
#: The most a file or config door may allocate for one generated document (all of them are small).
PEAK_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """First-use costs (catalog, jsonschema, argparse) are paid here, not by the first timed example."""
    cli.main(["resolve", "haiku", "--config", MINIMAL], out=io.StringIO())
    Delegator(load_config(MINIMAL)).plan(["x"])


def _bounded(fn: Any, *args: Any) -> Any:
    """fn(*args) with the peak of what it allocates checked: a document never costs more than PEAK_BYTES."""
    tracemalloc.start()
    try:
        return fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_BYTES, f"{fn.__name__} allocated {peak:,} bytes"


# Any code point, lone surrogates (U+D800–U+DFFF) drawn often, not once in a thousand examples.
chars = st.one_of(st.characters(exclude_categories=()), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
# Text as users and LLMs really produce it: any code point (lone surrogates included), YAML-ish tokens.
text = st.one_of(st.text(alphabet=chars, max_size=40), st.sampled_from(
    ["", " ", "~", "null", "nan", ".nan", "-.inf", "1e400", "0x10", "&a", "*a", "<<", "- -", "{", "[", "\ud83d",
     "alpha", "alpha --provider x --provider y", "openai/", "os.environ/", "os.environ/HOME"]))
numbers = st.one_of(st.integers(min_value=-10**30, max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
                    st.just(10**400))
leaf = st.one_of(st.none(), st.booleans(), numbers, text)
json_value = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                       st.dictionaries(text, kids, max_size=4)), max_leaves=20)


def _yaml_text(value: Any) -> str:
    try:
        return yaml.safe_dump(value, allow_unicode=True)
    except (yaml.YAMLError, UnicodeError, ValueError, OverflowError):
        return json.dumps(value, default=str)


# Hand-made shapes yaml.safe_dump never writes: aliases, merge keys, deep nesting, tabs, binary.
hostile = st.one_of(
    st.integers(1, 8).map(lambda n: "a: &a [x]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i-1}'}, "
                                                             f"*{'a' if i == 0 else f'b{i-1}'}]\n" for i in range(n))
                          + f"tasks: *b{n - 1}\n"),
    st.integers(1, 12).map(lambda n: "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(  # billion laughs
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, n)) + f"tasks: *l{n - 1}\n"),
    st.integers(1, 200).map(lambda n: "tasks: " + "[" * n + "x" + "]" * n + "\n"),  # deeper: `deep` below
    st.integers(1, 120).map(lambda n: "tasks:\n" + "".join("  " * i + "- \n" for i in range(n))),
    st.just("base: &b {goal: x}\ntasks: [{<<: *b}]\n"),
    st.just("tasks:\n\t- x\n"),
    st.just("\x00\x01binary"),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
)
yaml_doc = st.one_of(json_value.map(_yaml_text), hostile,
                     st.lists(st.one_of(text, st.dictionaries(st.sampled_from(["goal", "context", "model", "x"]),
                                                              leaf, max_size=3)), max_size=4)
                     .map(lambda ts: _yaml_text({"tasks": ts})))


def _write(tmp: Path, name: str, doc: str) -> str:
    p = tmp / name
    p.write_bytes(doc.encode("utf-8", "surrogatepass"))
    return str(p)


@FUZZ
@given(doc=yaml_doc)
def test_tasks_files_load_and_plan_or_raise_typed(tmp_path: Path, doc: str):
    path = _write(tmp_path, "tasks.yaml", doc)
    try:
        tasks, model = _bounded(cli._load_tasks, path)
        Delegator(load_config(MINIMAL)).plan(tasks, model=model)
    except DelegateError as exc:
        str(exc).encode("utf-8", "surrogatepass")  # renders


@FUZZ
@given(doc=st.one_of(yaml_doc, json_value.map(lambda v: _yaml_text({"router": {"model_list": v}})),
                     json_value.map(lambda v: _yaml_text({"delegation": v}))))
def test_config_files_load_or_raise_typed(tmp_path: Path, doc: str):
    path = _write(tmp_path, "config.yaml", doc)
    try:
        _bounded(load_config, path)
    except DelegateError as exc:
        str(exc).encode("utf-8", "surrogatepass")


task_obj = st.dictionaries(st.sampled_from(["goal", "context", "model", "output_schema", "extra"]), json_value,
                           max_size=4)
tool_args = st.one_of(json_value, st.fixed_dictionaries(
    {"tasks": st.one_of(st.lists(st.one_of(task_obj, text), max_size=4), json_value)},
    optional={"model": json_value, "budget_usd": json_value, "context": json_value}),
    json_value.map(lambda v: json.dumps(v, default=str)))


@FUZZ
@given(args=tool_args)
def test_tool_arguments_parse_or_refuse_without_a_request(providers, args: Any):
    tools = DelegateTools(Delegator(loopback_config(providers)))
    before = len(providers.alpha.requests) + len(providers.beta.requests)
    try:
        tasks, model, budget = tools.parse_call(args)
        tools.delegator.plan(tasks, model=model, budget_usd=budget)
    except DelegateError:
        out = tools.delegate_task_sync(args)  # the tool itself: a JSON error string, valid UTF-8
        out.encode("utf-8")
        assert "type" in json.loads(out)
        assert len(providers.alpha.requests) + len(providers.beta.requests) == before, "nothing was sent"


flag = st.one_of(text, numbers.map(str))


@FUZZ
@given(model=flag, budget=flag, concurrency=flag)
def test_cli_flags_exit_with_a_code_never_a_traceback(tmp_path: Path, model: str, budget: str, concurrency: str):
    tasks = _write(tmp_path, "tasks.yaml", "model: no-such-model-anywhere\ntasks: [x]\n")
    for argv in (["resolve", model, "--config", MINIMAL],
                 ["run", tasks, "--config", MINIMAL, "--budget", budget, "--concurrency", concurrency, "--json"]):
        try:
            code = cli.main([a.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for a in argv],
                            out=io.StringIO())
        except SystemExit as exc:  # argparse on a malformed flag
            code = exc.code
        assert code in (0, 1, 2), argv
        if argv[0] == "run":
            assert code == 2, "an unknown model is refused at planning"


@pytest.fixture(scope="module")
def runnable(providers, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A config on the loopback providers and a one-task tasks file that plans: flags reach the run."""
    tmp = tmp_path_factory.mktemp("runnable")
    cfg = tmp / "loopback.yaml"
    cfg.write_text(yaml.safe_dump(loopback_dict(providers)), encoding="utf-8")
    tasks = _write(tmp, "tasks.yaml", "tasks: [{goal: say hi, model: priced}]\n")
    assert cli.main(["run", tasks, "--config", str(cfg), "--json"], out=io.StringIO()) == 0  # warm: litellm
    return str(cfg), tasks


# --concurrency as people type it: integers (below 1 refused), and whatever argparse refuses (not an int).
concurrency_flag = st.one_of(st.integers(1, 64).map(str), st.integers(-10**6, 10**6).map(str), st.sampled_from(["1.5", "", " ", "1e3", "nan", "two"]),
                             st.text(alphabet=chars, max_size=8).filter(lambda t: not t.strip().lstrip("+-").isdigit()))
budget_flag = st.one_of(numbers.map(str), st.sampled_from(["0.000001", "1", "$1", "1e-300", "5e-324"]), text)


@settings(FUZZ, max_examples=examples(30))
@given(concurrency=concurrency_flag, budget=st.one_of(st.none(), st.sampled_from(["1", "0.5", "$1"]), budget_flag))
def test_numeric_flags_on_a_batch_that_runs_end_in_an_exit_code(runnable: tuple[str, str], concurrency: str,
                                                                 budget: str | None):
    """The flags reach a batch that plans (so --concurrency is used, not refused with the model): the
    command ends in 0, 1 or argparse's/our typed 2, and its stdout is strict JSON or empty."""
    cfg, tasks = runnable
    argv = ["run", tasks, "--config", cfg, "--concurrency", concurrency, "--json"]
    if budget is not None:
        argv += ["--budget", budget]
    out = io.StringIO()
    try:
        code = cli.main([a.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for a in argv], out=out)
    except SystemExit as exc:  # argparse on a malformed flag
        code = exc.code
    event(f"exit {code}")  # --hypothesis-show-statistics: how many examples ran a batch (exit 0)
    assert code in (0, 1, 2), argv
    if concurrency.strip().lstrip("-").isdigit() and int(concurrency) < 1:
        assert code == 2 and out.getvalue() == "", argv
    if out.getvalue():
        json.loads(out.getvalue(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@pytest.mark.parametrize("value", ["-1", "0"])
def test_concurrency_below_one_is_a_usage_error(runnable: tuple[str, str], value: str):
    cfg, tasks = runnable
    try:
        code = cli.main(["run", tasks, "--config", cfg, "--concurrency", value, "--json"], out=io.StringIO())
    except SystemExit as exc:
        code = exc.code
    assert code == 2


# Nesting deep enough for a RecursionError, flow and block style. Timed but not traced: tracemalloc's cost
# grows with the stack's depth (a 3,000-deep document: 0.6 s untraced, 16 s traced).
deep = st.one_of(st.integers(150, 3000).map(lambda n: "tasks: " + "[" * n + "x" + "]" * n + "\n"),
                 st.integers(100, 600).map(lambda n: "tasks:\n" + "".join("  " * i + "- \n" for i in range(n))))


@pytest.mark.slow
@pytest.mark.timing  # each example within the deadline
@settings(FUZZ, max_examples=examples(20))
@given(doc=deep, door=st.sampled_from(["tasks", "config"]))
def test_deep_nesting_is_typed_in_time(tmp_path: Path, doc: str, door: str):
    path = _write(tmp_path, "deep.yaml", doc)
    try:
        cli._load_tasks(path) if door == "tasks" else load_config(path)
    except DelegateError:
        pass


@pytest.mark.parametrize("depth", [10, 200, 5000])
def test_deep_json_tool_arguments_are_typed(providers, depth: int):
    args = '{"tasks": ' + "[" * depth + '"x"' + "]" * depth + "}"
    out = DelegateTools(Delegator(loopback_config(providers))).delegate_task_sync(args)
    assert json.loads(out)["type"] != "internal", out
