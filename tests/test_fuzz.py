"""Issue #5, bad input: fuzz every door an LLM or a user can push data through. They may only raise the
project's own typed errors (DelegateError subclasses) — never KeyError, AttributeError, TypeError,
RecursionError or a traceback for the LLM — and huge input is refused with a clear message before
anything is called.

Nothing here can reach a provider: the fuzzed configs point at 127.0.0.1 ports nobody listens on, the
allowlist is empty (no model may run), and the worker is a tripwire that fails the test if called.
"""

from __future__ import annotations

import asyncio
import json
import string
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_delegate import (BudgetError, ConfigError, DelegateError, Delegator, Resolver, SpecError, Task,
                             TaskPayloadError, coerce_tasks, config_from_dict, load_config, parse_model_string)
from hermes_delegate.loopback import closed_port_url
from hermes_delegate.tools.delegate_tools import DelegateTools
from helpers import examples

#: Per example, generous: the slowest examples take well under a second (first-use costs are paid by `_warm`).
DEADLINE = timedelta(seconds=5)
FUZZ = settings(max_examples=examples(150), deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=examples(60), deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
DEAD = closed_port_url()
#: The most the config doors may allocate for one generated config (all are small).
PEAK_BYTES = 64 * 1024 * 1024
#: Config errors: a ConfigError, or a BudgetError when only budget_usd is wrong (as from every door).
CONFIG_ERRORS = (ConfigError, BudgetError)


class Tripwire:
    """A Worker that must never run: every fuzzed call has to stop before any work starts."""

    async def run(self, job: Any) -> Any:
        raise AssertionError(f"a fuzzed call started work: {job!r}")


def fuzz_config(**delegation: Any) -> Any:
    settings_ = {"aliases": {"small": "alpha", "cheap": "glm-4.7", "loop": "loop2", "loop2": "loop"},
                 "allow": [], "max_tasks": 20, "task_timeout_s": 1, **delegation}
    return config_from_dict({"delegation": settings_, "router": {"model_list": [
        {"model_name": "alpha", "litellm_params": {"model": "openai/alpha", "api_base": DEAD, "api_key": "x"}},
        {"model_name": "beta", "litellm_params": {"model": "openai/beta", "api_base": DEAD, "api_key": "x"}},
    ]}})


def delegator() -> Delegator:
    return Delegator(fuzz_config(), worker=Tripwire(), env={})


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """First-use costs (catalog, jsonschema, the listing) are paid here, not by the first timed example."""
    tools = DelegateTools(delegator())
    asyncio.run(tools.list_models({}))
    asyncio.run(tools.delegate_task({"goal": "x", "model": "alpha", "output_schema": {"type": "object"}}))


def traced(fn: Any, *args: Any) -> Any:
    """only_ours(fn, *args), its allocation peak checked against PEAK_BYTES."""
    tracemalloc.start()
    try:
        return only_ours(fn, *args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_BYTES, f"{fn.__name__} allocated {peak:,} bytes"


# Text with lone surrogates drawn often (an LLM's broken \ud83d escape), not once in a thousand examples.
chars = st.one_of(st.characters(exclude_categories=()), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))


# -- strategies ---------------------------------------------------------------------------------------
model_words = st.sampled_from(["haiku", "alpha", "beta", "small", "cheap", "loop", "glm-4.7", "gpt", "opus",
                               "openrouter:x/y", "--provider", "--global", "zai", "openai/gpt-4o", ":free",
                               "stepfun/step-3.5-flash", "tiny", "-", "--", "'", '"', "\\", "\x00", "é", " "])
model_strings = st.one_of(
    st.text(alphabet=chars, max_size=80),
    st.text(alphabet=string.printable, max_size=600),
    st.lists(model_words, max_size=6).map(" ".join),
    st.lists(st.one_of(model_words, st.text(max_size=5)), max_size=6).map("".join),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                         st.text(alphabet=chars, max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(alphabet=chars, max_size=10), inner, max_size=4)),
    max_leaves=25)
task_like = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"goal": st.one_of(st.text(alphabet=chars, max_size=40), json_values),
                                        "context": json_values, "model": st.one_of(model_strings, json_values)}),
    st.dictionaries(st.sampled_from(["goal", "context", "model", "task", "prompt", "tasks", "budget_usd", "x"]),
                    json_values, max_size=4),
)
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "goal": st.one_of(st.text(alphabet=chars, max_size=40), json_values), "context": json_values,
        "model": st.one_of(model_strings, json_values), "budget_usd": json_values,
        "tasks": st.one_of(st.lists(task_like, max_size=6), json_values, st.text(alphabet=chars, max_size=40))}),
)
config_keys = st.sampled_from(["delegation", "router", "litellm_config", "model", "aliases", "allow",
                               "max_tasks", "budget_usd", "model_list", "router_settings", "litellm_settings",
                               "model_name", "litellm_params", "task_timeout_s", "max_concurrency", "x"])
config_dicts = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(config_keys, st.text(max_size=8)), inner, max_size=4)),
    max_leaves=30)


def only_ours(fn: Any, *args: Any, **kw: Any) -> Any:
    """Call fn; a DelegateError is fine, anything else fails the test (with what it was)."""
    try:
        return fn(*args, **kw)
    except DelegateError as exc:
        str(exc), exc.to_dict()  # rendering the error must not fail either
        return exc


# -- the model-string parser and the resolver ---------------------------------------------------------
@FUZZ
@given(model_strings)
def test_parse_model_string_raises_only_spec_errors(text: str):
    out = only_ours(parse_model_string, text)
    assert isinstance(out, SpecError) or out.name


@FUZZ
@given(st.one_of(model_strings, json_values))
def test_resolver_raises_only_typed_errors(text: Any):
    out = only_ours(Resolver(fuzz_config(), env={}).resolve, text)
    if not isinstance(out, DelegateError):
        assert isinstance(out.model, str) and out.model


# -- the task payload ---------------------------------------------------------------------------------
@FUZZ
@given(st.one_of(st.lists(task_like, max_size=8), json_values), st.one_of(st.none(), model_strings))
def test_delegator_plan_raises_only_typed_errors(tasks: Any, model: Any):
    d = delegator()
    out = only_ours(d.plan, tasks if isinstance(tasks, list) else [tasks], model=model)
    # the allowlist is empty: nothing may ever be planned to run
    assert isinstance(out, DelegateError), out


@FUZZ
@given(payloads)
def test_delegate_task_tool_answers_every_payload_with_a_typed_json_error(args: Any):
    tools = DelegateTools(delegator())
    for form in (args, json.dumps(args, default=str)):
        text = asyncio.run(tools.delegate_task(form))
        text.encode("utf-8")  # always valid UTF-8, whatever surrogates the call carried
        out = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
        assert out.get("type") not in (None, "internal"), out
        assert "error" in out and "Traceback" not in text


@FAST
@given(st.one_of(json_values, st.text(max_size=40)))
def test_list_models_tool_never_fails_internally(args: Any):
    tools = DelegateTools(delegator())
    text = asyncio.run(tools.list_models(args))
    text.encode("utf-8")
    out = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert out.get("type") != "internal", out


# -- the config loader ----------------------------------------------------------------------------------
@FUZZ
@given(config_dicts)
def test_config_from_dict_raises_only_config_errors(data: Any):
    out = traced(config_from_dict, data if isinstance(data, dict) else {"delegation": data})
    assert not isinstance(out, DelegateError) or isinstance(out, CONFIG_ERRORS), type(out)


yaml_texts = st.one_of(
    st.text(alphabet=chars, max_size=200),
    config_dicts.map(lambda d: yaml.safe_dump(d, default_flow_style=False)),
    st.lists(st.sampled_from(["delegation:", "  model: x", "router:", "  model_list:", "    - model_name: a",
                              "      litellm_params: {model: openai/x}", "litellm_config: ./nope.yaml", "- a",
                              "  : :", "\t", "!!python/object/apply:os.system ['true']", "&a [*a]", "? x",
                              "%YAML 1.1", "---", "...", "x: &d {budget_usd: 1}", "  <<: *d", "y: *d",
                              "  budget_usd: true", "  budget_usd: .nan"]), max_size=8).map("\n".join),
)


@FUZZ
@given(yaml_texts)
def test_load_config_on_arbitrary_yaml_raises_only_config_errors(text: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a surrogate: bytes that are not UTF-8
        out = traced(load_config, path)
        assert not isinstance(out, DelegateError) or isinstance(out, CONFIG_ERRORS), type(out)


@pytest.mark.parametrize("evil", [
    "!!python/object/apply:os.system ['touch /tmp/hermes-delegate-pwned']",
    "delegation: !!python/object/new:subprocess.Popen [['true']]",
    "router: !!python/name:os.system",
    "delegation:\n  model: !!python/object:builtins.dict {}",
    "delegation: !!python/module:os",
])
def test_unsafe_yaml_is_refused_with_config_error(tmp_path: Path, evil: str):
    path = tmp_path / "config.yaml"
    path.write_text(evil)
    with pytest.raises(ConfigError):
        load_config(path)
    lc = tmp_path / "litellm.yaml"
    lc.write_text(evil.replace("delegation", "model_list").replace("router:", "router_settings:"))
    path.write_text("litellm_config: ./litellm.yaml\n")
    with pytest.raises(ConfigError):
        load_config(path)
    assert not Path("/tmp/hermes-delegate-pwned").exists()


# -- huge input: refused with a clear message, before any call ----------------------------------------
def test_ten_megabyte_goal_is_refused_before_any_call():
    d = delegator()
    t0 = time.perf_counter()
    with pytest.raises(DelegateError) as info:
        d.plan([Task("x" * 10_000_000, model="alpha")])
    assert "10,000,000 characters" in str(info.value) and "limit is 200,000" in str(info.value)
    tools = DelegateTools(delegator())
    out = json.loads(asyncio.run(tools.delegate_task({"goal": "y" * 10_000_000, "model": "alpha"})))
    assert out["type"] in ("payload", "invalid_tasks") and "10,000,000 characters" in json.dumps(out)
    assert time.perf_counter() - t0 < 5


def test_ten_thousand_tasks_are_refused_before_any_call():
    d = delegator()
    with pytest.raises(TaskPayloadError, match="10,000 tasks|10000 tasks"):
        d.plan([{"goal": f"g{i}", "model": "alpha"} for i in range(10_000)])
    tools = DelegateTools(delegator())
    out = json.loads(asyncio.run(tools.delegate_task({"tasks": [{"goal": f"g{i}"} for i in range(10_000)]})))
    assert out["type"] == "payload" and "limit is 20" in out["error"]


def _nested(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deeply_nested_context_is_a_clear_payload_error_in_the_engine(kind: str):
    """Decision: a context is a string, or a JSON list/object that is serialised to JSON (as the tool
    layer does) and then counted against max_input_chars. Nesting deeper than MAX_CONTEXT_DEPTH, or a
    value that is not JSON, is refused with TaskPayloadError, never a RecursionError."""
    from hermes_delegate.runtime.delegator import MAX_CONTEXT_DEPTH

    d = delegator()
    with pytest.raises(TaskPayloadError, match="nested"):
        d.plan([{"goal": "g", "context": _nested(10_000, kind), "model": "alpha"}])
    (task,) = coerce_tasks([{"goal": "g", "context": _nested(MAX_CONTEXT_DEPTH - 1, kind)}])
    assert isinstance(task.context, str) and json.loads(task.context) == _nested(MAX_CONTEXT_DEPTH - 1, kind)
    with pytest.raises(TaskPayloadError, match="not JSON"):
        coerce_tasks([{"goal": "g", "context": {"k": object()}}])


def test_context_size_is_counted_on_its_text_not_its_length():
    """A list of 3 strings of 100,000 characters has len() 3: the size cap must see 300,000+ characters."""
    d = delegator()
    with pytest.raises(DelegateError, match="limit is 200,000"):
        d.plan([{"goal": "g", "context": ["x" * 100_000] * 3, "model": "alpha"}])


@pytest.mark.parametrize("form", ["object", "json-string"])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deeply_nested_context_through_the_tool_is_a_payload_error(form: str, kind: str):
    tools = DelegateTools(delegator())
    args: Any = {"goal": "g", "model": "alpha", "context": _nested(10_000, kind)}
    if form == "json-string":
        args = '{"goal": "g", "model": "alpha", "context": ' + ("[" * 10_000 + "1" + "]" * 10_000 if kind == "list"
                                                                else '{"k": ' * 10_000 + "1" + "}" * 10_000) + "}"
    out = json.loads(asyncio.run(tools.delegate_task(args)))
    assert out["type"] == "payload", out
