"""Files by path (issue 23 item 2): a task names `files`, the delegation side reads them into the child's
context. Every rule refuses the task with a typed error before anything is sent (the loopback provider
records no request); a task that would not fit its model's context window is refused with the models
that would. In hermes (children have file tools) the paths go into the goal as a hint instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import loopback_config, loopback_dict
from hermes_delegate import Config, DelegateTools, Delegator, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A project root with ordinary files, secrets, and a file outside it."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def answer():\n    return 42  # MARKER-APP\n", encoding="utf-8")
    (root / "README.md").write_text("# Project MARKER-README\n", encoding="utf-8")
    (root / ".env").write_text("API_KEY=sk-secret-env\n", encoding="utf-8")
    (root / ".env.local").write_text("API_KEY=sk-secret-env-local\n", encoding="utf-8")
    (root / "server.pem").write_text("-----BEGIN PRIVATE KEY-----\n", encoding="utf-8")
    (root / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n", encoding="utf-8")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[remote]\n", encoding="utf-8")
    (root / "blob.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "big.txt").write_text("x" * 2_000, encoding="utf-8")
    (tmp_path / "outside.txt").write_text("MARKER-OUTSIDE\n", encoding="utf-8")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    (root / "inside-link.txt").symlink_to(root / "README.md")
    (root / "secret-link.txt").symlink_to(root / ".env")
    os.mkfifo(root / "pipe")
    return root


def tools_for(providers, root: Path, **files: Any) -> DelegateTools:
    cfg = loopback_config(providers)
    if files:
        data = loopback_dict(providers)
        data["delegation"]["files"] = files
        cfg = config_from_dict(data)
    return DelegateTools(Delegator(cfg), roots=[root])


def call(tools: DelegateTools, args: dict[str, Any]) -> dict[str, Any]:
    return json.loads(tools.delegate_task_sync(args))


def sent(providers) -> list[Any]:
    return providers.alpha.requests + providers.beta.requests


def test_named_files_reach_the_child_and_not_the_parent(providers, tree):
    tools = tools_for(providers, tree)
    out = call(tools, {"tasks": [{"goal": "review the app", "model": "small", "files": ["src/app.py"]},
                                 {"goal": "review the readme", "model": "large"}],
                       "files": ["README.md", str(tree / "inside-link.txt")]})
    assert [r["status"] for r in out["results"]] == ["completed", "completed"], out
    (a,) = providers.alpha.requests
    (b,) = providers.beta.requests
    text_a, text_b = json.dumps(a.messages), json.dumps(b.messages)
    # call-level files go to every task, the task's own only to it; a symlink inside the roots is fine
    assert "MARKER-APP" in text_a and "MARKER-README" in text_a and 'src/app.py' in text_a
    assert "MARKER-README" in text_b and "MARKER-APP" not in text_b


REFUSALS = [
    ("outside the roots (relative)", "../outside.txt", "file_outside_roots"),
    ("outside the roots (absolute)", "/etc/hostname", "file_outside_roots"),
    ("a symlink leaving the roots", "escape.txt", "file_outside_roots"),
    ("a directory", "src", "file_directory"),
    ("a FIFO", "pipe", "file_special"),
    ("a binary file", "blob.bin", "file_binary"),
    ("not UTF-8", "latin1.txt", "file_binary"),
    (".env", ".env", "file_denied"),
    (".env.local", ".env.local", "file_denied"),
    ("a .pem", "server.pem", "file_denied"),
    ("an ssh key", "id_ed25519", "file_denied"),
    (".git internals", ".git/config", "file_denied"),
    ("a symlink to a secret", "secret-link.txt", "file_denied"),
    ("missing", "nope.py", "file_not_found"),
]


@pytest.mark.parametrize("path, kind", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_each_refusal_is_typed_and_nothing_is_sent(providers, tree, path, kind):
    tools = tools_for(providers, tree)
    out = call(tools, {"tasks": [{"goal": "fine", "model": "small", "files": ["README.md"]},
                                 {"goal": "bad", "model": "large", "files": [path]}]})
    assert out["type"] == "invalid_tasks", out
    (problem,) = out["tasks"]
    assert problem["index"] == 1 and problem["type"] == kind, problem
    assert path.split("/")[-1] in problem["problem"]
    assert sent(providers) == []
    # no secret was read into the error
    assert "sk-secret" not in json.dumps(out) and "PRIVATE KEY" not in json.dumps(out)


def test_a_device_is_refused(providers, tmp_path):
    tools = DelegateTools(Delegator(loopback_config(providers)), roots=[tmp_path, "/dev"])
    out = call(tools, {"goal": "read it", "model": "small", "files": ["/dev/null"]})
    assert out["tasks"][0]["type"] == "file_special" and "device" in out["tasks"][0]["problem"]
    assert sent(providers) == []


def test_size_caps_per_file_and_per_task(providers, tree):
    tools = tools_for(providers, tree, max_file_bytes=1_000, max_task_bytes=50_000)
    out = call(tools, {"goal": "too big", "model": "small", "files": ["big.txt"]})
    assert out["tasks"][0]["type"] == "file_too_large" and "per file" in out["tasks"][0]["problem"]
    tools = tools_for(providers, tree, max_file_bytes=10_000, max_task_bytes=2_010)
    out = call(tools, {"goal": "two together", "model": "small", "files": ["big.txt", "src/app.py"]})
    assert out["tasks"][0]["type"] == "file_too_large" and "per task" in out["tasks"][0]["problem"]
    assert sent(providers) == []


def test_deny_list_and_roots_are_configurable(providers, tree, tmp_path):
    tools = tools_for(providers, tree, deny=["*.md"], roots=[str(tmp_path)])
    out = call(tools, {"goal": "x", "model": "small", "files": ["README.md"]})
    assert out["tasks"][0]["type"] == "file_denied"
    # delegation.files.roots adds a root: the file outside the project is readable, and .env is not denied now
    out = call(tools, {"goal": "x", "model": "small", "files": [str(tmp_path / "outside.txt"), ".env"]})
    assert out["results"][0]["status"] == "completed"
    assert "MARKER-OUTSIDE" in json.dumps(providers.alpha.requests[0].messages)


def test_bad_files_argument_is_a_payload_error(providers, tree):
    tools = tools_for(providers, tree)
    out = call(tools, {"goal": "x", "files": [1, 2]})
    assert out["type"] == "payload" and "files must be a list of file paths" in out["error"]
    assert sent(providers) == []


def window_config(providers) -> Config:
    extra = [{"model_name": "tiny", "model_info": {"id": "tiny-1", "max_input_tokens": 300},
              "litellm_params": {"model": "openai/tiny-model", "api_base": providers.alpha.base_url,
                                 "api_key": "sk-loopback-test-key"}},
             {"model_name": "roomy", "model_info": {"id": "roomy-1", "max_input_tokens": 1_000_000},
              "litellm_params": {"model": "openai/roomy-model", "api_base": providers.beta.base_url,
                                 "api_key": "sk-loopback-test-key"}}]
    return loopback_config(providers, model_list_extra=extra)


def test_context_window_refusal_names_the_models_that_fit(providers, tree):
    (tree / "long.txt").write_text("word " * 600, encoding="utf-8")  # ~3,000 chars: ~1,000 tokens
    tools = DelegateTools(Delegator(window_config(providers)), roots=[tree])
    out = call(tools, {"tasks": [{"goal": "summarise", "model": "tiny", "files": ["long.txt"]},
                                 {"goal": "small one", "model": "tiny"}]})
    assert out["type"] == "invalid_tasks", out
    (problem,) = out["tasks"]
    assert problem["index"] == 0 and problem["type"] == "context_window"
    assert "roomy" in problem["suggestions"] and "tiny" not in problem["suggestions"]
    assert "context window of 300" in problem["problem"]
    assert sent(providers) == []
    # the suggested model runs it
    out = call(tools, {"goal": "summarise", "model": problem["suggestions"][0], "files": ["long.txt"]})
    assert out["results"][0]["status"] == "completed"


def test_hermes_style_files_are_a_hint_in_the_goal(providers, tree):
    tools = DelegateTools(Delegator(loopback_config(providers)), files="hint", index_key="task_index")
    out = call(tools, {"goal": "review", "model": "small", "files": ["src/app.py", "/etc/hostname"]})
    assert out["results"][0]["task_index"] == 0 and out["results"][0]["status"] == "completed"
    (req,) = providers.alpha.requests
    text = json.dumps(req.messages)
    assert "Files to read (use your file tools): src/app.py, /etc/hostname" in text
    assert "MARKER-APP" not in text  # nothing read by us


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "hermes_delegate.hosts.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_run_reads_files_from_its_working_directory_and_roots(providers, tree, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(loopback_dict(providers)), encoding="utf-8")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "notes.md").write_text("MARKER-EXTRA\n", encoding="utf-8")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump([{"goal": "review", "model": "small",
                                      "files": ["src/app.py", str(extra / "notes.md")]}]), encoding="utf-8")
    out = cli(["run", str(tasks), "--config", str(cfg), "--json", "--root", str(extra)], cwd=tree)
    assert out.returncode == 0, out.stderr
    full = json.loads(out.stdout)
    assert "deployment" in full["results"][0] and "attempt_log" in full["results"][0]  # --json keeps everything
    text = json.dumps(providers.alpha.requests[0].messages)
    assert "MARKER-APP" in text and "MARKER-EXTRA" in text
    # without --root the extra directory is outside: exit 2, typed, nothing sent
    before = len(providers.alpha.requests)
    out = cli(["run", str(tasks), "--config", str(cfg), "--json"], cwd=tree)
    assert out.returncode == 2 and "outside the allowed roots" in out.stderr
    assert len(providers.alpha.requests) == before
