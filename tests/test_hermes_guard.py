"""The hermes version guard (plugins/hermes/hermes_api.py) and the parent lookup (parent.py).

The guard reads hermes's source code, not its comments or strings: each case below copies the
installed hermes-agent's files into a temporary tree, changes one thing the plugin relies on so
that only a comment (or a docstring) still mentions it, and expects the guard to say so. The
unchanged copy passes. No hermes module is imported here.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
import tomllib
import types
from pathlib import Path

import pytest

from hermes_delegate_hermes import hermes_api, parent

REPO = Path(__file__).resolve().parents[1]


def _hermes_root() -> Path:
    try:
        dist = importlib.metadata.distribution("hermes-agent")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("hermes-agent is not installed (pip install -e '.[test]')")
    return Path(str(dist.locate_file("")))


FILES = sorted({*hermes_api.AGENT_ATTRS.values(), hermes_api.PLUGIN_MANAGER_FILE, hermes_api.SPINNER_METHOD[0],
                "tools/delegate_tool.py", *(rel for rel, _, _ in hermes_api.FRAME_LOCALS)})


@pytest.fixture
def hermes_tree(tmp_path: Path) -> Path:
    """A copy of the installed hermes-agent's files the guard reads."""
    src = _hermes_root()
    for rel in FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, tmp_path / rel)
    return tmp_path


def _edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {rel}: hermes changed; update this test"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_installed_hermes_passes(hermes_tree):
    assert hermes_api.source_problems(hermes_tree) == []


def test_an_agent_attribute_set_only_in_a_comment_is_reported(hermes_tree):
    _edit(hermes_tree, "agent/tool_executor.py", "agent._delegate_spinner = ", "# agent._delegate_spinner = ")
    assert hermes_api.source_problems(hermes_tree) == [
        "AIAgent._delegate_spinner is no longer set in agent/tool_executor.py"]


def test_an_agent_attribute_only_read_is_not_set(hermes_tree):
    _edit(hermes_tree, "agent/agent_init.py", "._delegate_depth =", "._delegate_depth ==")
    assert "AIAgent._delegate_depth is no longer set in agent/agent_init.py" in hermes_api.source_problems(hermes_tree)


def test_a_result_key_left_only_in_a_comment_or_a_docstring_is_reported(hermes_tree):
    _edit(hermes_tree, "tools/delegate_tool.py", '"_child_cost_usd": (', '"child_cost": (  # was "_child_cost_usd":')
    _edit(hermes_tree, "tools/delegate_tool.py", "\ndef _run_single_child(",
          '\ndef _unused():\n    """{"tokens": 1}"""\n\n\ndef _run_single_child(')
    _edit(hermes_tree, "tools/delegate_tool.py", '"tokens": {', '"token_counts": {')
    found = hermes_api.source_problems(hermes_tree)
    assert "_run_single_child() no longer returns '_child_cost_usd'" in found
    assert "_run_single_child() no longer returns 'tokens'" in found


def test_the_plugin_managers_cli_reference_and_the_spinners_print_above_are_checked(hermes_tree):
    _edit(hermes_tree, "hermes_cli/plugins.py", "self._cli_ref = None", "# self._cli_ref = None")
    _edit(hermes_tree, "agent/display.py", "    def print_above(",
          "    # def print_above(self, text)\n    def print_line(")
    assert hermes_api.source_problems(hermes_tree) == [
        "the plugin manager no longer sets _cli_ref (hermes_cli/plugins.py)",
        "the spinner has no print_above() (agent/display.py)",
    ]


def test_the_call_stack_names_the_parent_lookup_walks_are_checked(hermes_tree):
    _edit(hermes_tree, "agent/tool_executor.py", "def execute_tool_calls_sequential(agent,",
          "def execute_tool_calls_sequential(the_agent,")
    assert hermes_api.source_problems(hermes_tree) == [
        "execute_tool_calls_sequential() in agent/tool_executor.py no longer holds the agent as 'agent' "
        "(parent lookup)"]
    assert set(parent._NAMES) == {name for _, _, name in hermes_api.FRAME_LOCALS}


def test_is_spawn_paused_is_checked_with_the_private_functions():
    """A tools.delegate_tool with every function we call but is_spawn_paused."""
    fake = types.ModuleType("tools.delegate_tool")
    for name, params in hermes_api.FUNCTIONS.items():
        if name != "is_spawn_paused":
            exec(f"def {name}({', '.join(params)}): pass", fake.__dict__)
    assert hermes_api.function_problems(fake) == ["tools.delegate_tool.is_spawn_paused is missing"]


def test_supported_is_the_hermes_extras_range_and_the_guard_names_it():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    pin = next(d for d in extras["hermes"] if d.startswith("hermes-agent"))
    assert pin == f"hermes-agent{hermes_api.SUPPORTED}"
    assert f"`{hermes_api.SUPPORTED}`" in (REPO / "docs" / "hermes.md").read_text(encoding="utf-8")


# -- parent lookup ---------------------------------------------------------------------------------
class AIAgent:
    """Stands in for run_agent.AIAgent: find_parent only checks the class and `session_id`."""

    def __init__(self, session_id: str):
        self.session_id = session_id


@pytest.fixture
def agent_class(monkeypatch: pytest.MonkeyPatch) -> type:
    monkeypatch.setitem(sys.modules, "run_agent", types.SimpleNamespace(AIAgent=AIAgent))
    monkeypatch.setattr(hermes_api, "cli_agent", lambda: None)  # no interactive CLI in this process
    return AIAgent


def execute_tool_calls_sequential(agent: AIAgent, session_id: str):  # the name hermes's frame has
    return parent.find_parent(session_id)


def test_the_agent_on_the_call_stack_is_found(agent_class):
    mine = agent_class("session-mine")
    assert execute_tool_calls_sequential(mine, "session-mine") is mine


def test_an_agent_off_the_call_stack_is_never_returned_even_with_the_same_session(agent_class):
    """Before: a gc scan of every object returned any live AIAgent with that session_id (another
    call's, or a stale one). Only the call stack and the interactive CLI's agent are asked now."""
    elsewhere = [agent_class("session-x")]  # alive, held by someone else
    assert parent.find_parent("session-x") is None
    assert elsewhere[0].session_id == "session-x"
