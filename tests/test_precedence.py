"""Which model a task runs on: task > call > config > parent; None/blank fall through.

Pure: pick_model() directly, then the same rules through Delegator.plan (no litellm, no network).
"""

from __future__ import annotations

import pytest

from hermes_delegate import BatchValidationError, Delegator, Task, UsageError, config_from_dict
from hermes_delegate.core.precedence import is_unset, pick_model

UNSET = [None, "", " ", "\t\n "]


@pytest.mark.parametrize(("levels", "expected"), [
    (("t", "c", "g", "p"), ("t", "task")),
    ((None, "c", "g", "p"), ("c", "call")),
    ((None, None, "g", "p"), ("g", "config")),
    ((None, None, None, "p"), ("p", "parent")),
    (("t", None, None, None), ("t", "task")),
    (("t", None, "g", None), ("t", "task")),
    ((None, "c", None, "p"), ("c", "call")),
    (("", "  ", "g", "p"), ("g", "config")),
    ((" ", None, "", "p"), ("p", "parent")),
])
def test_levels_in_order(levels, expected):
    assert pick_model(*levels) == expected


@pytest.mark.parametrize("blank", UNSET)
def test_none_and_blank_fall_through_at_every_level(blank):
    assert pick_model(blank, "c", "g", "p") == ("c", "call")
    assert pick_model(blank, blank, "g", "p") == ("g", "config")
    assert pick_model(blank, blank, blank, "p") == ("p", "parent")
    assert is_unset(blank)


@pytest.mark.parametrize("levels", [(None, None, None, None), ("", " ", None, "\t"), ()])
def test_all_unset_is_a_usage_error(levels):
    with pytest.raises(UsageError) as info:
        pick_model(*levels)
    assert info.value.hint  # says what to do


def test_keywords_and_non_blank_values_win_as_given():
    assert pick_model(task=None, call=None, config=None, parent="p") == ("p", "parent")
    # a bad but non-blank choice is taken (and fails later), never skipped
    assert pick_model("not a model!", "c") == ("not a model!", "task")
    assert pick_model(0, "c") == (0, "task")
    assert not is_unset("x") and not is_unset(0)


# -- through Delegator.plan ----------------------------------------------------------------------
def _delegator(config_model: str | None = "cfgmodel", parent: str | None = "parentmodel") -> Delegator:
    cfg = config_from_dict({"delegation": {
        "model": config_model,
        "aliases": {"taskmodel": "openai/task-m", "callmodel": "openai/call-m", "cfgmodel": "openai/cfg-m",
                    "parentmodel": "openai/parent-m"},
    }})
    return Delegator(cfg, parent_model=parent, env={})


def test_plan_model_source_per_task():
    d = _delegator()
    tasks = [
        Task("a", model="taskmodel"),
        Task("b"),
        {"goal": "c", "model": "  "},
        {"goal": "d", "model": None},
        "e",
        {"goal": "f", "model": "taskmodel"},
    ]
    planned, cap = d.plan(tasks, model="callmodel")
    assert cap is None
    assert [(p.index, p.model_source, p.resolution.model) for p in planned] == [
        (0, "task", "openai/task-m"),
        (1, "call", "openai/call-m"),
        (2, "call", "openai/call-m"),
        (3, "call", "openai/call-m"),
        (4, "call", "openai/call-m"),
        (5, "task", "openai/task-m"),
    ]
    assert planned[0].model_requested == "taskmodel" and planned[1].model_requested == "callmodel"


@pytest.mark.parametrize(("call", "config", "parent", "source", "model"), [
    ("callmodel", "cfgmodel", "parentmodel", "call", "openai/call-m"),
    (None, "cfgmodel", "parentmodel", "config", "openai/cfg-m"),
    ("   ", "cfgmodel", "parentmodel", "config", "openai/cfg-m"),
    (None, None, "parentmodel", "parent", "openai/parent-m"),
    ("", None, "parentmodel", "parent", "openai/parent-m"),
    (None, None, "glm-4.7", "parent", "zai/glm-4.7"),
])
def test_plan_falls_through_levels(call, config, parent, source, model):
    planned, _ = _delegator(config, parent).plan([Task("x"), Task("y", model=" ")], model=call)
    assert [(p.model_source, p.resolution.model) for p in planned] == [(source, model)] * 2


def test_plan_all_unset_is_a_usage_error():
    d = _delegator(None, None)
    with pytest.raises(UsageError) as info:
        d.plan([Task("x"), Task("y", model="taskmodel")])
    err = info.value
    assert isinstance(err, BatchValidationError)
    assert [p.index for p in err.problems] == [0]  # only the task with no model at any level
    assert err.problems[0].type == "usage"


def test_plan_bad_task_model_is_an_error_not_a_fall_through():
    d = _delegator()
    with pytest.raises(BatchValidationError) as info:
        d.plan([Task("x", model="sonet"), Task("y"), Task("z", model="openrouter:stepfun/x")], model="callmodel")
    problems = info.value.problems
    assert [(p.index, p.type) for p in problems] == [(0, "unknown_model"), (2, "spec")]
    assert "sonnet" in problems[0].suggestions
    assert "stepfun/x --provider openrouter" in problems[1].suggestions
