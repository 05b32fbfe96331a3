"""Every hermes-agent internal the plugin uses, in one place, checked once at load.

Public seams used elsewhere (no entry needed here): `ctx.register_tool`, `ctx.register_middleware`
("tool_execution", "llm_execution"), `tools.registry.registry.get_entry(...).dynamic_schema_overrides`,
`tools.async_delegation.dispatch_async_delegation_batch`,
`gateway.session_context.async_delivery_supported`, `tools.approval.get_current_session_key`,
`hermes_cli.plugins.invoke_hook` / `get_plugin_manager`, `hermes_cli.config.read_raw_config` /
`get_config_path`, `model_tools.get_toolset_for_tool`, `tools.daemon_pool.DaemonThreadPoolExecutor`.

Everything else below is private (`_`-prefixed) in hermes 0.19.0; each entry says why no public
seam serves (and `is_spawn_paused`, public but checked with them). `check()` verifies all of it
(functions and their parameters, module attributes and their types, and, in hermes's source code,
not its comments or strings: the result keys we read, the agent attributes we read or set, the
plugin manager's CLI reference, the spinner's `print_above`, the call-stack names parent.py looks
for). If anything differs,
`compatible()` is False: the plugin logs one line and stays out of the way, so the built-in
`delegate_task` keeps working untouched.
"""

from __future__ import annotations

import ast
import inspect
import io
import logging
import sys
import threading
import tokenize
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, cast

log = logging.getLogger("hermes_delegate.hermes")

TESTED_WITH = "0.19.0"
#: the `hermes` extra's range in pyproject.toml: what CI tests; named in the guard's message
SUPPORTED = ">=0.19.0,<0.20"

#: tools.delegate_tool functions -> keyword parameters we pass. Why private: hermes 0.19 has no
#: public "build/run one child" API; using these is what gives our children exactly the built-in's
#: restrictions (blocked tools, toolset intersection, depth, credentials, interrupt registration,
#: subagent_start, live transcripts), instead of re-implementing them.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    # build a child AIAgent exactly as the built-in does (routed ones on our placeholder endpoint)
    "_build_child_agent": ("task_index", "goal", "context", "toolsets", "model", "max_iterations",
                           "task_count", "parent_agent", "override_provider", "override_base_url",
                           "override_api_key", "override_api_mode", "override_max_tokens", "role"),
    # run it with the built-in's heartbeat, timeout, result extraction and cleanup
    "_run_single_child": ("task_index", "goal", "child", "parent_agent"),
    # hermes's resolved `delegation:` settings (max_iterations default); read_raw_config has no defaults
    "_load_config": (),
    # delegation.max_spawn_depth with hermes's default and clamping
    "_get_max_spawn_depth": (),
    # delegation.max_concurrent_children with hermes's default (our concurrency default)
    "_get_max_concurrent_children": (),
    # the async pool's cap that the built-in passes to dispatch_async_delegation_batch
    "_get_max_async_children": (),
    # the built-in's spawn pause (public, but nothing else tells us it is still there)
    "is_spawn_paused": (),
    # progress lines to the parent's console, the way built-in children report
    "_emit_parent_console": ("parent_agent", "line"),
    # cut long summaries to the parent's context headroom (spills to a file), as the built-in does
    "_apply_summary_budget": ("results", "parent_agent"),
}
#: keys of _run_single_child's result we read (checked in its source)
RUN_RESULT_KEYS = ("status", "summary", "tokens", "_child_cost_usd", "error")
#: other module attributes: (module, name, kind) and why
ATTRIBUTES: tuple[tuple[str, str, type], ...] = (
    # child construction rewrites this global; the built-in saves/restores it the same way
    ("model_tools", "_last_resolved_tool_names", list),
    # hermes probes an endpoint's /models for the context window; we seed the answer for our
    # placeholder endpoint (never contacted) with the routed model's window
    ("agent.model_metadata", "_endpoint_model_metadata_cache", dict),
    ("agent.model_metadata", "_endpoint_model_metadata_cache_time", dict),
    ("agent.model_metadata", "_normalize_base_url", type(len)),
)
#: AIAgent attributes we read or set, and the hermes source that defines them. Why: a plugin tool
#: handler/middleware gets no agent object and no public accessors for depth, interrupt state,
#: active children, spinner, memory manager or fallback chain in 0.19.
AGENT_ATTRS: dict[str, str] = {
    "_delegate_depth": "agent/agent_init.py",  # depth limit (the built-in's gate)
    "_interrupt_requested": "agent/agent_init.py",  # parent interrupt -> stop the batch
    "_active_children": "agent/agent_init.py",  # detach background children like the built-in
    "_active_children_lock": "agent/agent_init.py",
    "_memory_manager": "agent/agent_init.py",  # memory provider's on_delegation notice
    "_fallback_chain": "agent/agent_init.py",  # a routed child must never fall back to hermes's provider
    "_fallback_model": "agent/agent_init.py",
    "_delegate_spinner": "agent/tool_executor.py",  # progress lines above the parent's spinner
    "_current_turn_id": "agent/turn_context.py",  # subagent_stop hook payload
    "_delegate_role": "tools/delegate_tool.py",  # subagent_stop hook payload
    "_delegate_saved_tool_names": "tools/delegate_tool.py",  # restored by the child's close()
}
#: the CLI object on the plugin manager (parent lookup fallback when the stack has no agent)
PLUGIN_MANAGER_ATTR = "_cli_ref"
PLUGIN_MANAGER_FILE = "hermes_cli/plugins.py"
#: the method progress lines go through when the parent shows a spinner (AIAgent._delegate_spinner)
SPINNER_METHOD = ("agent/display.py", "print_above")
#: where the running agent sits on a tool call's stack, for parent.find_parent: (file, function,
#: the parameter holding it). Why: hermes hands a tool handler no agent (model_tools.py l.1271-1277).
FRAME_LOCALS: tuple[tuple[str, str, str], ...] = (
    ("agent/tool_executor.py", "execute_tool_calls_sequential", "agent"),  # the sequential path
    ("agent/agent_runtime_helpers.py", "invoke_tool", "agent"),  # both paths
    ("run_agent.py", "_invoke_tool", "self"),  # AIAgent._invoke_tool, the concurrent path's thread
    ("tools/delegate_tool.py", "_run_single_child", "parent_agent"),  # a child's thread
)

_lock = threading.Lock()
_state: dict[str, Any] = {}


class HermesAPIError(RuntimeError):
    """The installed hermes-agent lacks a helper this plugin needs."""


def hermes_version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("hermes-agent")
    except Exception:  # noqa: BLE001
        return "unknown"


def problems() -> list[str]:
    """Everything the installed hermes lacks, as short phrases ([] = compatible)."""
    out: list[str] = []
    try:
        from tools import delegate_tool as dt  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        return [f"tools.delegate_tool does not import ({type(exc).__name__})"]
    out += function_problems(dt)
    for mod_name, attr, kind in ATTRIBUTES:
        try:
            mod = __import__(mod_name, fromlist=["_"])
        except Exception:  # noqa: BLE001
            out.append(f"{mod_name} does not import")
            continue
        if not hasattr(mod, attr) and _defined_later(mod, attr):
            continue  # plugins load while model_tools is still importing (model_tools.py l.206 < l.221)
        value = getattr(mod, attr, None)
        ok = callable(value) if kind is type(len) else isinstance(value, kind)
        if not ok:
            out.append(f"{mod_name}.{attr} is missing or not a {'function' if kind is type(len) else kind.__name__}")
    out += source_problems(Path(getattr(dt, "__file__", None) or ".").resolve().parent.parent)
    try:
        from tools.registry import registry  # noqa: PLC0415

        entry = registry.get_entry("delegate_task")
        if entry is None or not hasattr(entry, "dynamic_schema_overrides"):
            out.append("the delegate_task registry entry has no dynamic_schema_overrides")
        from hermes_cli import middleware as mw  # noqa: PLC0415

        if "tool_execution" not in getattr(mw, "VALID_MIDDLEWARE", ()):
            out.append("hermes has no tool_execution middleware")
        from tools import async_delegation  # noqa: PLC0415

        params = inspect.signature(async_delegation.dispatch_async_delegation_batch).parameters
        lacking = [p for p in ("goals", "runner", "interrupt_fn", "session_key", "max_async_children")
                   if p not in params]
        if lacking:
            out.append(f"dispatch_async_delegation_batch() has no parameter {', '.join(lacking)}")
    except Exception as exc:  # noqa: BLE001
        out.append(f"hermes's registry/middleware/async delegation differ ({type(exc).__name__})")
    return out


def function_problems(dt: ModuleType) -> list[str]:
    """What tools.delegate_tool (`dt`) lacks of FUNCTIONS: a function, or a parameter we pass."""
    out: list[str] = []
    for name, params in FUNCTIONS.items():
        fn = getattr(dt, name, None)
        if not callable(fn):
            out.append(f"tools.delegate_tool.{name} is missing")
            continue
        try:
            have = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        lacking = [p for p in params if p not in have]
        if lacking:
            out.append(f"{name}() has no parameter {', '.join(lacking)}")
    return out


def source_problems(root: Path) -> list[str]:
    """What hermes's source code (under `root`, hermes's site-packages) no longer has. Code only: a
    name in a comment or a string does not count. Searched as bytes and tokenized line by line around
    each mention (parsing hermes's large modules whole would cost registration ~1 s). A file that
    cannot be read counts as empty (what it should hold is reported missing); without
    tools/delegate_tool.py's source the result keys go unchecked (its signatures are checked)."""
    out: list[str] = []
    texts: dict[str, _Code] = {}

    def text(rel: str) -> _Code:
        if rel not in texts:
            try:
                texts[rel] = _Code((root / rel).read_bytes())
            except OSError:
                texts[rel] = _Code(b"")
        return texts[rel]

    body = _function_text(text("tools/delegate_tool.py"), "_run_single_child")
    if body is not None:
        out += [f"_run_single_child() no longer returns {k!r}" for k in RUN_RESULT_KEYS if not _dict_key(body, k)]
    for attr, rel in AGENT_ATTRS.items():
        if not _assigns(text(rel), attr):
            out.append(f"AIAgent.{attr} is no longer set in {rel}")
    if not _assigns(text(PLUGIN_MANAGER_FILE), PLUGIN_MANAGER_ATTR):
        out.append(f"the plugin manager no longer sets {PLUGIN_MANAGER_ATTR} ({PLUGIN_MANAGER_FILE})")
    rel, method = SPINNER_METHOD
    if _parameters(text(rel), method) is None:
        out.append(f"the spinner has no {method}() ({rel})")
    for rel, function, name in FRAME_LOCALS:
        params = _parameters(text(rel), function)
        if params is None or name not in params:
            out.append(f"{function}() in {rel} no longer holds the agent as {name!r} (parent lookup)")
    return out


def _code_lines(code: _Code, *needles: str) -> Iterator[list[tokenize.TokenInfo]]:
    """The tokens of each line of `code` that mentions a needle outside a triple-quoted string."""
    src = code.text
    for needle in needles:
        raw = needle.encode()
        pos = src.find(raw)
        while pos >= 0:
            start = src.rfind(b"\n", 0, pos) + 1
            end = src.find(b"\n", pos)
            end = len(src) if end < 0 else end
            if not code.in_docstring(start):
                yield _tokens(src[start:end].decode("utf-8", "replace"))
            pos = src.find(raw, end)


class _Code:
    """A source file's bytes (UTF-8; decoded only around what is looked for)."""

    def __init__(self, text: bytes):
        self.text = text

    def in_docstring(self, pos: int) -> bool:
        """Whether `pos` lies inside a triple-quoted string (an odd number of triple quotes before it)."""
        return (self.text.count(b'"""', 0, pos) + self.text.count(b"\'\'\'", 0, pos)) % 2 == 1


def _tokens(line: str) -> list[tokenize.TokenInfo]:
    out: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            out.append(tok)
    except (tokenize.TokenError, IndentationError, SyntaxError):  # a statement that goes on below
        pass
    return out


def _assigns(src: _Code, attr: str) -> bool:
    """Code sets `<something>.attr` (`x.attr = …`, `x.attr += …`, `x.attr: T = …`)."""
    for toks in _code_lines(src, "." + attr):
        for a, b, c in zip(toks, toks[1:], toks[2:], strict=False):  # each token with the two after it
            if (a.type == tokenize.OP and a.string == "." and b.type == tokenize.NAME and b.string == attr
                    and c.type == tokenize.OP and (c.string == ":" or (c.string.endswith("=") and c.string != "=="))):
                return True
    return False


def _dict_key(src: _Code, key: str) -> bool:
    """Code uses the string `key` as a mapping key (`{"key": …}` or `x["key"] = …`)."""
    for toks in _code_lines(src, f'"{key}"', f"'{key}'"):
        for i, tok in enumerate(toks[:-1]):
            if tok.type == tokenize.STRING and tok.string in (f'"{key}"', f"'{key}'") and (
                    toks[i + 1].string == ":" or (i > 0 and toks[i - 1].string == "[" and toks[i + 1].string == "]")):
                return True
    return False


def _parameters(code: _Code, function: str) -> list[str] | None:
    """The parameter names of the first `def function(` in code, or None when there is none."""
    src, head = code.text, f"def {function}(".encode()
    pos = src.find(head)
    while pos >= 0:
        start = src.rfind(b"\n", 0, pos) + 1
        line_head = src[start:pos].strip()
        if line_head in (b"", b"async") and not code.in_docstring(start):
            close = src.find(b":\n", pos)  # the signature ends with the first ':' closing a line
            while close >= 0:
                try:
                    tree = ast.parse(src[pos:close + 1].decode("utf-8", "replace") + " pass")
                except SyntaxError:
                    close = src.find(b":\n", close + 1)
                    if close - pos > 4000:
                        break
                    continue
                fn = tree.body[0]
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):  # `def …` parses as one
                    break
                args = fn.args
                return [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
        pos = src.find(head, pos + 1)
    return None


def _function_text(code: _Code, function: str) -> _Code | None:
    """A top-level function's text: from its `def` to the next top-level `def`."""
    src = code.text
    try:
        start = src.index(f"\ndef {function}(".encode())
    except ValueError:
        return None
    end = src.find(b"\ndef ", start + 1)
    return _Code(src[start:end if end > 0 else None])


def _defined_later(mod: ModuleType, attr: str) -> bool:
    """`attr` is a top-level assignment in `mod`'s source (mod is still being imported)."""
    try:
        src = Path(getattr(mod, "__file__", None) or "").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith((f"{attr}:", f"{attr} =")) for line in src.splitlines())


def check() -> ModuleType:
    """`tools.delegate_tool` once everything checks out; HermesAPIError with one clear message otherwise."""
    with _lock:
        if "ok" not in _state:
            found = problems()
            _state["ok"] = not found
            _state["message"] = "" if not found else (
                f"hermes-delegate was built against hermes-agent {TESTED_WITH}; the installed hermes-agent "
                f"{hermes_version()} differs: {'; '.join(found)}. hermes's built-in delegate_task runs "
                f"unchanged (no `model`). Install a hermes-delegate release for this hermes-agent, or pin "
                f"hermes-agent=={TESTED_WITH} (supported: hermes-agent{SUPPORTED}).")
        if not _state["ok"]:
            raise HermesAPIError(_state["message"])
    return sys.modules["tools.delegate_tool"]


def compatible() -> bool:
    try:
        check()
        return True
    except HermesAPIError:
        return False


def reset() -> None:
    """Forget the guard's verdict (tests)."""
    with _lock:
        _state.clear()


delegate_tool = check  # the name the adapter and worker call


def max_async_children() -> int:
    try:
        return int(check()._get_max_async_children())
    except Exception:  # noqa: BLE001
        return 3


def max_concurrent_children() -> int:
    try:
        return int(check()._get_max_concurrent_children())
    except Exception:  # noqa: BLE001
        return 3  # hermes 0.19's _DEFAULT_MAX_CONCURRENT_CHILDREN


def seed_context_window(base_url: str, model: str, window: int) -> None:
    """Answer hermes's context-window probe of `base_url` for `model` from its in-memory cache."""
    try:
        import time  # noqa: PLC0415

        from agent import model_metadata as mm  # noqa: PLC0415

        url = mm._normalize_base_url(base_url)
        entry = dict(mm._endpoint_model_metadata_cache.get(url) or {})
        entry[model] = {"context_length": window}
        mm._endpoint_model_metadata_cache[url] = entry
        mm._endpoint_model_metadata_cache_time[url] = time.time()
    except Exception:  # noqa: BLE001, S110 - hermes then probes (and falls back to its default window)
        pass


def cli_agent() -> Any:
    """The interactive CLI's agent, if any (hermes_cli.plugins manager's `_cli_ref`)."""
    try:
        from hermes_cli.plugins import get_plugin_manager  # noqa: PLC0415

        return getattr(getattr(get_plugin_manager(), PLUGIN_MANAGER_ATTR, None), "agent", None)
    except Exception:  # noqa: BLE001
        return None


def invoke_hook(name: str, **kwargs: Any) -> None:
    """Fire a hermes plugin hook for other plugins; never raises."""
    try:
        from hermes_cli.plugins import invoke_hook as _invoke  # noqa: PLC0415

        _invoke(name, **kwargs)
    except Exception:  # noqa: BLE001, S110 - another plugin's hook must not break delegation
        pass


def thread_pool(max_workers: int, prefix: str) -> Any:
    """hermes's daemon pool (abandoned children never block interpreter exit), else the stdlib's."""
    try:
        from tools.daemon_pool import DaemonThreadPoolExecutor as Pool  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        from concurrent.futures import ThreadPoolExecutor as Pool  # noqa: PLC0415
    try:
        return Pool(max_workers=max_workers, thread_name_prefix=prefix)
    except TypeError:
        return Pool(max_workers=max_workers)


def toolset_of(tool_name: str) -> str | None:
    try:
        import model_tools  # noqa: PLC0415

        return cast("str | None", model_tools.get_toolset_for_tool(tool_name))
    except Exception:  # noqa: BLE001
        return None


def saved_tool_names() -> list[str] | None:
    try:
        import model_tools  # noqa: PLC0415

        return list(model_tools._last_resolved_tool_names)
    except Exception:  # noqa: BLE001
        return None


def restore_tool_names(names: list[str] | None) -> None:
    """Child construction overwrites this global; the built-in restores it the same way."""
    if names is None:
        return
    try:
        import model_tools  # noqa: PLC0415

        model_tools._last_resolved_tool_names = names
    except Exception:  # noqa: BLE001, S110 - no such global in this hermes: nothing to restore
        pass
