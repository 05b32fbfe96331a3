"""hermes's delegate_task with `model` (issue 11): first-delegation latency and per-call overhead.

One fresh process, one HERMES_HOME, loopback providers on 127.0.0.1 (no network, no API key):

(a) first delegation of a session after 5 s idle: time from the parent's delegate_task tool call
    (entering hermes's tool_execution middleware chain) to the first child request arriving at the
    provider. The plugin's background warm-up (litellm import, Router build) runs during the idle time.
    Also reported for later delegations, routed and built-in: the same interval, warm. Most of it is
    hermes's own child construction (`_build_child_agent`, ~200 ms here), paid by both.
(b) per LLM call of a child: the time hermes's llm_execution chain takes for one call, routed
    (through hermes-delegate's Router) vs built-in (hermes's own client), same provider, same latency.
    Reported: median of each and the difference.

    python bench/bench_hermes_delegation.py [--calls 15] [--idle 5]

Runs the measurement twice, each in a fresh interpreter: once with this process's environment as it
is, once with the CA-bundle variables hermes's SSL guard reads (HERMES_CA_BUNDLE, SSL_CERT_FILE,
REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) unset, hermes's default. hermes loads and parses every bundle
those name each time it builds an AIAgent (agent.ssl_guard.verify_ca_bundle), a child included; on a
machine whose variables point at the system bundle that is ~90 ms per child, paid by built-in
children too. `hermes_ssl_guard_ms` reports it for the first child.

Prints numbers only; asserts nothing. Foreground (stateless) batches, so each call is timed inline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


CA_VARS = ("HERMES_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--one", action="store_true", help="one measurement in this interpreter")
    ns = ap.parse_args()
    if not ns.one:
        out = {}
        for label, drop in (("environment_as_is", ()), ("ca_bundle_variables_unset", CA_VARS)):
            env = {k: v for k, v in os.environ.items() if k not in drop}
            cmd = [sys.executable, __file__, "--one", "--calls", str(ns.calls), "--idle", str(ns.idle)]
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            ca_vars = {k: os.environ[k] for k in CA_VARS if k in env}
            out[label] = {"ca_bundle_variables": ca_vars, **json.loads(run.stdout)}
        print(json.dumps(out, indent=2))
        return
    measure(ns)


def measure(ns: argparse.Namespace) -> None:
    if "run_agent" in sys.modules:
        raise SystemExit("run in a fresh interpreter")
    import yaml

    from hermes_delegate.loopback import LoopbackProvider

    def child(body: dict[str, Any], provider: Any) -> str:
        return "ok"

    def parent_model(body: dict[str, Any], provider: Any) -> Any:
        msgs = body.get("messages") or []
        if msgs and msgs[-1].get("role") == "tool":
            return "done"
        user = next((m.get("content") for m in msgs if m.get("role") == "user"), "")
        if "routed" in str(user):
            args = {"goal": "say ok", "model": "small"}
        elif "builtin" in str(user):
            args = {"goal": "say ok"}
        else:
            return "ok"
        return {"content": None, "tool_calls": [{"function": {"name": "delegate_task", "arguments": args}}]}

    alpha = LoopbackProvider("alpha", latency_s=0.05, responder=child).start()
    parent = LoopbackProvider("parent", responder=parent_model).start()
    home = Path(tempfile.mkdtemp(prefix="bench-hermes-deleg-"))
    cfg = {
        "plugins": {"enabled": ["hermes-delegate"]},
        # the built-in's children go to the same provider as the routed ones, directly
        "delegation": {"model": "alpha-model", "base_url": alpha.base_url, "api_key": "sk-bench"},
        "hermes_delegate": {"tiers": {"small": "fast"}, "router": {"model_list": [
            {"model_name": "fast", "litellm_params": {"model": "openai/alpha-model", "api_base": alpha.base_url,
                                                      "api_key": "sk-bench"}}],
            "router_settings": {"num_retries": 0}}},
    }
    (home / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.environ.update(HERMES_HOME=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True", NO_PROXY="127.0.0.1")
    t_start = time.perf_counter()
    from run_agent import AIAgent  # plugin registration (and the warm-up thread's start) happen here
    from gateway.session_context import declare_stateless_channel
    from hermes_cli.plugins import get_plugin_manager

    import_s = time.perf_counter() - t_start
    stamps: dict[str, list[float]] = {"tool_call": []}
    llm: list[tuple[str, float]] = []

    def stamp_tool(tool_name: str = "", next_call: Any = None, **_: Any) -> Any:
        if tool_name == "delegate_task":
            stamps["tool_call"].append(time.monotonic())
        return next_call()

    def time_llm(next_call: Any = None, session_id: str = "", **_: Any) -> Any:
        stamps.setdefault("llm_enter", []).append(time.monotonic())
        t0 = time.perf_counter()
        try:
            return next_call()
        finally:
            llm.append((session_id, time.perf_counter() - t0))

    import agent.ssl_guard as ssl_guard  # agent_init imports the guard at call time: time it here

    guard_ms: list[float] = []
    real_guard = ssl_guard.verify_ca_bundle_with_fallback

    def timed_guard() -> None:
        t0 = time.perf_counter()
        try:
            real_guard()
        finally:
            guard_ms.append((time.perf_counter() - t0) * 1000)

    ssl_guard.verify_ca_bundle_with_fallback = timed_guard
    mw = get_plugin_manager()._middleware  # bench-only: put the timers outermost
    mw.setdefault("tool_execution", []).insert(0, stamp_tool)
    mw.setdefault("llm_execution", []).insert(0, time_llm)
    declare_stateless_channel()

    agent = AIAgent(base_url=parent.base_url, api_key="sk-parent", model="parent-model", provider="custom",
                    quiet_mode=True, skip_context_files=True, skip_memory=True, max_iterations=4)
    agent._print_fn = lambda *a, **k: None
    time.sleep(ns.idle)  # the session sits idle; the warm-up runs now
    guard_ms.clear()
    warmed = "litellm" in sys.modules
    res = agent.run_conversation("first routed delegation", task_id="bench-0")
    first_child = min(r.time for r in alpha.requests) if alpha.requests else None
    first_ms = (first_child - stamps["tool_call"][0]) * 1000 if first_child else None
    child_enter = [t for t in stamps.get("llm_enter", []) if t > stamps["tool_call"][0]]
    build_ms = (child_enter[0] - stamps["tool_call"][0]) * 1000 if child_enter else None
    ok_first = '"completed"' in next((m["content"] for m in res["messages"] if m.get("role") == "tool"), "")

    to_first: dict[str, list[float]] = {"routed": [], "builtin": []}

    def child_calls(kind: str) -> list[float]:
        out: list[float] = []
        for i in range(ns.calls):
            llm.clear()
            seen = len(alpha.requests)
            a = AIAgent(base_url=parent.base_url, api_key="sk-parent", model="parent-model", provider="custom",
                        quiet_mode=True, skip_context_files=True, skip_memory=True, max_iterations=4)
            a._print_fn = lambda *x, **k: None
            a.run_conversation(f"{kind} {i}", task_id=f"bench-{kind}-{i}")
            out += [d for sid, d in llm if sid != a.session_id]
            arrivals = [r.time for r in alpha.requests[seen:]]
            if arrivals:
                to_first[kind].append((min(arrivals) - stamps["tool_call"][-1]) * 1000)
            a.close()
        return out

    routed = child_calls("routed")
    builtin = child_calls("builtin")
    med_r, med_b = statistics.median(routed), statistics.median(builtin)
    print(json.dumps({
        "import_run_agent_s": round(import_s, 3),
        "litellm_imported_before_first_delegation": warmed,
        "a_first_delegation_tool_call_to_first_child_request_ms": round(first_ms, 1) if first_ms else None,
        "a_of_which_until_child_llm_call_ms": round(build_ms, 1) if build_ms else None,
        "a_first_batch_completed": ok_first,
        "hermes_ssl_guard_ms": round(guard_ms[0], 1) if guard_ms else None,
        "warm_tool_call_to_first_child_request_median_ms": {k: round(statistics.median(v), 1)
                                                             for k, v in to_first.items() if v},
        "b_routed_child_llm_call_median_ms": round(med_r * 1000, 2),
        "b_builtin_child_llm_call_median_ms": round(med_b * 1000, 2),
        "b_added_per_call_median_ms": round((med_r - med_b) * 1000, 2),
        "b_calls": [len(routed), len(builtin)],
        "provider_latency_ms": 50,
    }, indent=2))
    agent.close()
    alpha.stop()
    parent.stop()


if __name__ == "__main__":
    main()
