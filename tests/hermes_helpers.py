"""Run real hermes-agent scenarios in a fresh subprocess, for tests/test_hermes_plugin.py.

Why a subprocess: hermes keeps module-global state (plugin manager, tool registry, HERMES_HOME
resolved at import), so each scenario gets a clean interpreter with HERMES_HOME set before
`import run_agent`. The loopback providers live in the pytest process; the subprocess only talks
HTTP to them on 127.0.0.1.

Pytest side:  make_home(), run_scenario(), parent_responder().
Subprocess:   python tests/hermes_helpers.py SPEC.json  (see _main)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import yaml

HERE = Path(__file__).resolve().parent
PLUGIN_SRC = HERE.parent / "plugins" / "hermes"
PLACEHOLDER_HOST = "hermes-delegate.invalid"

_PROBE_INIT = '''
import json, os
def _log(kind, kw):
    path = os.path.join(os.environ["HERMES_HOME"], "hook-events.jsonl")
    with open(path, "a") as fh:
        fh.write(json.dumps({"hook": kind, **{k: v for k, v in kw.items() if isinstance(v, (str, int, float, type(None)))}}) + "\\n")
def register(ctx):
    ctx.register_hook("subagent_start", lambda **kw: _log("subagent_start", kw))
    ctx.register_hook("subagent_stop", lambda **kw: _log("subagent_stop", kw))
'''


# -- pytest side --------------------------------------------------------------------------------
def _append_printed(lines: list[str], *a: Any, **_k: Any) -> None:
    lines.append(" ".join(str(x) for x in a))


def make_home(root: Path, block: Mapping[str, Any] | None, *, enabled: Sequence[str] = ("hermes-delegate",),
              extra: Mapping[str, Any] | None = None, builtin: bool = False) -> Path:
    """A HERMES_HOME with config.yaml enabling `enabled` plus a hook-probe plugin.

    builtin: keep hermes's `delegation` toolset (the built-in delegate_task, which the plugin extends)
    enabled."""
    home = root / "hermes-home"
    probe = home / "plugins" / "hook-probe"
    probe.mkdir(parents=True, exist_ok=True)
    (probe / "plugin.yaml").write_text("name: hook-probe\nversion: 0.0.1\n")
    (probe / "__init__.py").write_text(_PROBE_INIT)
    cfg: dict[str, Any] = {"plugins": {"enabled": [*enabled, "hook-probe"]}}
    if not builtin:
        cfg["agent"] = {"disabled_toolsets": ["delegation"]}
    if block is not None:
        cfg["hermes_delegate"] = dict(block)
    cfg.update(extra or {})
    (home / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return home


def hook_events(home: Path) -> list[dict[str, Any]]:
    path = home / "hook-events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def run_scenario(home: Path, *, parent_url: str | None = None, conversations: Sequence[Mapping[str, Any]] = (),
                 timeout: float = 120, probe_only: bool = False, break_hermes: bool = False,
                 exit_after_s: float | None = None, fresh: bool = False) -> dict[str, Any]:
    """exit_after_s: instead of conversations, build one agent, wait that long and exit; the names of
    the plugin's threads still alive after its atexit handler land in HOME/exit-threads.json.

    The scenario runs in a warm Python (helpers.warm_command: litellm and openai already imported, ~2 s
    of CPU less); fresh=True runs it in a new interpreter, for a test of what importing hermes pulls in
    (`litellm_after_import`, `pydantic_after_import` are True in a warm one)."""
    spec = {"home": str(home), "parent_url": parent_url, "conversations": list(conversations),
            "probe_only": probe_only, "break_hermes": break_hermes, "out": str(home / "scenario-out.json"),
            "exit_after_s": exit_after_s}
    spec_path = home / "scenario.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    env.update(HERMES_HOME=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    # a hang prints every thread's stack (faulthandler) and exits before our own timeout, so the
    # failure shows where it stopped instead of a bare TimeoutExpired
    env["HD_SCENARIO_DUMP_AFTER_S"] = str(max(5.0, timeout - 15))
    script = Path(__file__).resolve()
    if fresh:
        cmd = [sys.executable, str(script), str(spec_path)]
    else:
        from helpers import warm_command

        cmd = warm_command(script, spec_path)
    proc = subprocess.run(cmd, env=env,
                          cwd=str(home), capture_output=True, text=True, timeout=timeout)
    out_path = Path(spec["out"])
    if proc.returncode != 0 or not out_path.exists():
        raise AssertionError(f"hermes scenario failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    data = json.loads(out_path.read_text())
    data["stderr"] = proc.stderr
    data["hooks"] = hook_events(home)
    return data


def parent_responder(calls: Mapping[str, Mapping[str, Any] | None], tool: str = "delegate_task"):
    """The parent model: on a user message `run:NAME` it calls delegate_task with calls[NAME]
    (or `{"tool": NAME, "arguments": {...}}`); after the tool result it answers `done NAME`.
    Any other user message (a subagent's goal) gets a plain answer."""

    def respond(body: dict[str, Any], provider: Any) -> Any:
        msgs = body.get("messages") or []
        user = next((m.get("content") for m in msgs if m.get("role") == "user"), "") or ""
        name = str(user).rsplit("run:", 1)[-1].strip()
        if msgs and msgs[-1].get("role") == "tool":
            return f"done {name}"
        args = calls.get(name)
        if args is None:
            return f"nothing to do for {name}"
        name_ = tool
        if "tool" in args:  # {"tool": "list_models", "arguments": {...}}
            name_, args = args["tool"], args.get("arguments") or {}
        return {"content": None, "tool_calls": [{"function": {"name": name_, "arguments": dict(args)}}]}

    return respond


@contextlib.contextmanager
def flag_when(predicate: Callable[[], Any], path: Path) -> Iterator[str]:
    """While the block runs, touch `path` once `predicate()` is true (polled in a thread of this, the
    test's, process); yields str(path) for a conversation's `interrupt_after_file`, so the scenario
    interrupts on what happened (a request reached a provider), not after a guessed delay."""
    import threading
    import time

    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if predicate():
                path.touch()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield str(path)
    finally:
        done.set()
        thread.join(5)


def tool_results(conv: Mapping[str, Any]) -> list[Any]:
    """The parsed delegate_task tool results the parent received."""
    out = []
    for content in conv.get("tool_messages", []):
        try:
            out.append(json.loads(content))
        except ValueError:
            out.append(content)
    return out


# -- subprocess side ----------------------------------------------------------------------------
def _guard_network(log: list[Any]) -> None:
    """Record every connect and DNS lookup; refuse anything that is not loopback."""
    import socket

    orig_connect, orig_gai = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, addr: Any) -> Any:
        log.append(["connect", list(addr) if isinstance(addr, tuple) else str(addr)])
        host = addr[0] if isinstance(addr, tuple) else ""
        if host not in ("127.0.0.1", "::1", "localhost") and self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"test guard: connection to {addr!r} refused")
        return orig_connect(self, addr)

    def getaddrinfo(host: Any, *a: Any, **k: Any) -> Any:
        log.append(["dns", host if isinstance(host, str) else repr(host)])
        if host not in ("127.0.0.1", "::1", "localhost", None):
            raise socket.gaierror(f"test guard: lookup of {host!r} refused")
        return orig_gai(host, *a, **k)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


def _main(spec_path: str) -> None:
    import threading
    import time

    spec = json.loads(Path(spec_path).read_text())
    os.environ["HERMES_HOME"] = spec["home"]
    if spec.get("exit_after_s") is not None:
        import atexit

        def _threads_at_finalization() -> None:
            # registered before the plugin loads, so it runs after the plugin's own atexit handler:
            # what is still alive here is what the interpreter's finalisation would kill mid-step
            alive = sorted(t.name for t in threading.enumerate() if t.name.startswith("hermes-delegate"))
            Path(spec["home"], "exit-threads.json").write_text(json.dumps(alive))

        atexit.register(_threads_at_finalization)
    net: list[Any] = []
    _guard_network(net)
    out: dict[str, Any] = {"network": net, "conversations": []}
    if spec.get("break_hermes"):
        # simulate a hermes upgrade that changed a private helper's signature (positional callers work)
        import tools.delegate_tool as dt

        orig = dt._emit_parent_console
        dt._emit_parent_console = lambda *a: orig(*a)
    t0 = time.perf_counter()
    import run_agent  # noqa: F401 - plugin discovery happens here
    from hermes_cli.plugins import get_plugin_manager
    from tools.registry import registry

    out["import_s"] = round(time.perf_counter() - t0, 3)
    out["litellm_after_import"] = "litellm" in sys.modules
    out["pydantic_after_import"] = "pydantic" in sys.modules
    pm = get_plugin_manager()
    out["plugins"] = [{k: p.get(k) for k in ("key", "enabled", "error", "source")} for p in pm.list_plugins()
                      if p.get("source") != "bundled"]
    out["middleware"] = {k: len(v) for k, v in getattr(pm, "_middleware", {}).items()}
    out["registered"] = {n: getattr(registry.get_entry(n), "toolset", None) for n in ("delegate_tasks", "list_models")}
    entry = registry.get_entry("list_models")
    out["handler_module"] = getattr(getattr(entry, "handler", None), "__module__", None)
    if spec["probe_only"]:
        Path(spec["out"]).write_text(json.dumps(out))
        return
    from run_agent import AIAgent

    def new_agent(model: str = "parent-model", **kw: Any) -> AIAgent:
        return AIAgent(base_url=spec["parent_url"], api_key="sk-parent-test", model=model, provider="custom",
                       quiet_mode=True, skip_context_files=True, skip_memory=True, **kw)

    if spec.get("exit_after_s") is not None:  # a session that ends while the plugin's warm-up may run
        agent = new_agent(max_iterations=1, disabled_toolsets=[])
        out["tools"] = sorted(t["function"]["name"] for t in agent.tools or [])  # the schema build starts it
        time.sleep(spec["exit_after_s"])
        agent.close()
        Path(spec["out"]).write_text(json.dumps(out))
        return
    for conv in spec["conversations"]:
        agent = new_agent(conv.get("model", "parent-model"), max_iterations=6,
                          disabled_toolsets=conv.get("disabled_toolsets", ["delegation"]))
        warm = None
        if conv.get("wait_warm"):  # the plugin's background warm-up, before any delegation
            from hermes_delegate_hermes import runtime as _rt

            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not any(d.router.built for d in list(_rt._handles.values())):
                time.sleep(0.1)
            warm = {"litellm": "litellm" in sys.modules,
                    "router_built": any(d.router.built for d in list(_rt._handles.values()))}
        if conv.get("parent_depth") is not None:
            agent._delegate_depth = conv["parent_depth"]
        lines: list[str] = []
        agent._print_fn = functools.partial(_append_printed, lines)  # this conversation's lines, not a later one's
        trigger = conv.get("interrupt_on_line")
        interrupted_at: list[float] = []
        if trigger:
            # this conversation's objects are bound as arguments: a watcher outliving its conversation
            # must not read (and interrupt) the next one's
            def watch(agent: Any, conv: dict[str, Any], lines: list[str], trigger: str,
                      interrupted_at: list[float]) -> None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if any(trigger in ln for ln in lines):
                        flag = conv.get("interrupt_after_file")  # the test process's word that it is time
                        while flag and not Path(flag).exists() and time.monotonic() < deadline:
                            time.sleep(0.02)
                        time.sleep(conv.get("interrupt_delay_s", 0.2))
                        interrupted_at.append(time.perf_counter())
                        agent.interrupt("test: stop")
                        return
                    time.sleep(0.02)
            threading.Thread(target=watch, args=(agent, conv, lines, trigger, interrupted_at), daemon=True).start()
        if conv.get("stateless"):  # like `hermes -z`: no late background completion possible
            from gateway.session_context import declare_stateless_channel

            declare_stateless_channel()
        bg_trigger = conv.get("interrupt_background_on_line")
        if bg_trigger:
            def stop_background(conv: dict[str, Any], lines: list[str], bg_trigger: str) -> None:
                from tools.async_delegation import interrupt_all

                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if any(bg_trigger in ln for ln in lines):
                        flag = conv.get("interrupt_after_file")
                        while flag and not Path(flag).exists() and time.monotonic() < deadline:
                            time.sleep(0.02)
                        time.sleep(0.05 if flag else 0.3)
                        interrupt_all("test: /stop")
                        return
                    time.sleep(0.02)
            threading.Thread(target=stop_background, args=(conv, lines, bg_trigger), daemon=True).start()
        start = time.perf_counter()
        res = agent.run_conversation(conv["user"], task_id=f"task-{len(out['conversations'])}")
        end = time.perf_counter()
        background = None
        if conv.get("wait_background"):
            import queue as _queue

            from tools.process_registry import process_registry

            try:
                evt = process_registry.completion_queue.get(timeout=conv.get("wait_background_s", 90))
                background = {k: evt.get(k) for k in ("type", "status", "is_batch", "results", "goals", "error",
                                                      "parent_session_id")}
            except _queue.Empty:
                background = {"type": "timeout"}
        tool_msgs = [m.get("content") for m in res.get("messages", []) if m.get("role") == "tool"]
        out["conversations"].append({
            "final": res.get("final_response"), "completed": res.get("completed"),
            "interrupted": res.get("interrupted"), "tool_messages": tool_msgs, "lines": lines,
            "elapsed_s": round(end - start, 3),
            "after_interrupt_s": round(end - interrupted_at[0], 3) if interrupted_at else None,
            "tools_seen": sorted(t["function"]["name"] for t in agent.tools or []),
            "active_children_after": len(getattr(agent, "_active_children", []) or []),
            "background": background, "session_id": agent.session_id, "warm": warm,
        })
        agent.close()
    Path(spec["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(float(os.environ.get("HD_SCENARIO_DUMP_AFTER_S", "105")), exit=True)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # no test module shadows hermes's
    _main(sys.argv[1])
