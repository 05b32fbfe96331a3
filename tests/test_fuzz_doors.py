"""Property-based tests for every door that takes text, numbers or files (issue 13).

Each generated input either succeeds or ends in one of the package's typed errors (DelegateError):
tasks files and config files (generated YAML, including aliases, merge keys and deep nesting), the
tool arguments an LLM sends (DelegateTools), and CLI flags. For input that planning must refuse, the
real loopback provider behind the config sees no request. Run time stays modest: 50 examples each.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import loopback_config
from hermes_delegate import DelegateTools, Delegator
from hermes_delegate.hosts import cli
from hermes_delegate.sources.config_file import load_config
from hermes_delegate.core.errors import DelegateError

MINIMAL = os.path.join(os.path.dirname(__file__), "..", "configs", "minimal.yaml")
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# Text as users and LLMs really produce it: any code point (lone surrogates included), YAML-ish tokens.
text = st.one_of(st.text(max_size=40), st.sampled_from(
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
    st.integers(1, 3000).map(lambda n: "tasks: " + "[" * n + "x" + "]" * n + "\n"),
    st.integers(1, 3000).map(lambda n: "tasks:\n" + "".join("  " * i + "- \n" for i in range(min(n, 400)))),
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
        tasks, model = cli._load_tasks(path)
        Delegator(load_config(MINIMAL)).plan(tasks, model=model)
    except DelegateError:
        pass


@FUZZ
@given(doc=st.one_of(yaml_doc, json_value.map(lambda v: _yaml_text({"router": {"model_list": v}})),
                     json_value.map(lambda v: _yaml_text({"delegation": v}))))
def test_config_files_load_or_raise_typed(tmp_path: Path, doc: str):
    path = _write(tmp_path, "config.yaml", doc)
    try:
        load_config(path)
    except DelegateError:
        pass


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


@pytest.mark.parametrize("depth", [10, 200, 5000])
def test_deep_json_tool_arguments_are_typed(providers, depth: int):
    args = '{"tasks": ' + "[" * depth + '"x"' + "]" * depth + "}"
    out = DelegateTools(Delegator(loopback_config(providers))).delegate_task_sync(args)
    assert json.loads(out)["type"] != "internal", out
