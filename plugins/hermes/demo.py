"""Offline check of the hermes plugin: a real hermes agent delegates three tasks to three models
on two embedded loopback providers, in parallel.

    python -m hermes_delegate_hermes.demo [--keep-home]

Runs in a throwaway HERMES_HOME (your ~/.hermes is not touched) and needs no API key: the parent
model is a scripted loopback provider that calls hermes's own delegate_task with `model`, and the
children's models are served by two more. The demo is a one-shot run (like `hermes -z`), so the batch
runs in the foreground and the parent answers on the combined result. Prints the config it wrote, the
per-task progress lines, and the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TASKS = [
    {"goal": "List the risks in the rollout plan", "model": "small"},
    {"goal": "Review the API design for consistency", "model": "large"},
    {"goal": "Draft the release notes", "model": "writer"},
]


def _parent_model(body: dict[str, Any], _provider: Any) -> Any:
    """The scripted parent: delegate once, then report what came back."""
    msgs = body.get("messages") or []
    last = msgs[-1] if msgs else {}
    if last.get("role") == "tool":
        try:
            res = json.loads(last.get("content") or "{}")["results"]
            lines = [f"- {r['goal']}: {r['status']} on {r['model']} ({(r.get('deployment') or {}).get('api_host')})"
                     for r in res]
            return "All three subtasks are back:\n" + "\n".join(lines)
        except (ValueError, KeyError, TypeError):
            return f"The delegation returned: {last.get('content')}"
    if any(m.get("role") == "user" and "rollout" in str(m.get("content")) for m in msgs):
        return {"content": None, "tool_calls": [{"function": {"name": "delegate_task",
                                                              # the full report: the table below shows deployments
                                                              "arguments": {"tasks": TASKS, "detail": "full"}}}]}
    return "ok"


def _child_model(body: dict[str, Any], provider: Any) -> str:
    last = str((body.get("messages") or [{}])[-1].get("content"))
    return f"[{provider.name} / {body.get('model')}] done: {last[:60]}"


def _config(alpha: Any, beta: Any) -> dict[str, Any]:
    def dep(group: str, dep_id: str, model: str, p: Any) -> dict[str, Any]:
        return {"model_name": group, "litellm_params": {"model": model, "api_base": p.base_url, "api_key": "sk-demo"},
                "model_info": {"id": dep_id}}

    return {
        "plugins": {"enabled": ["hermes-delegate"]},
        "hermes_delegate": {
            "tiers": {"small": "fast", "large": "deep"},
            "aliases": {"writer": "prose"},
            "max_concurrency": 4,
            "router": {
                "model_list": [dep("fast", "alpha-fast", "openai/fast-model", alpha),
                               dep("deep", "beta-deep", "openai/deep-model", beta),
                               dep("prose", "alpha-prose", "openai/prose-model", alpha)],
                "router_settings": {"num_retries": 2},
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hermes_delegate_hermes.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep-home", action="store_true", help="keep the temporary HERMES_HOME for inspection")
    args = ap.parse_args(argv)
    if "run_agent" in sys.modules:
        print("run the demo in a fresh interpreter (hermes is already imported)", file=sys.stderr)
        return 2
    import yaml  # noqa: PLC0415

    from hermes_delegate.loopback import LoopbackProvider  # noqa: PLC0415

    home = Path(tempfile.mkdtemp(prefix="hermes-delegate-demo-"))
    alpha = LoopbackProvider("alpha", latency_s=0.8, responder=_child_model).start()
    beta = LoopbackProvider("beta", latency_s=1.2, responder=_child_model).start()
    parent = LoopbackProvider("parent", responder=_parent_model).start()
    try:
        (home / "config.yaml").write_text(yaml.safe_dump(_config(alpha, beta), sort_keys=False))
        print(f"HERMES_HOME={home}\n--- config.yaml ---\n{(home / 'config.yaml').read_text()}-------------------")
        os.environ["HERMES_HOME"] = str(home)  # before hermes is imported: plugins load at import
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        from run_agent import AIAgent  # noqa: PLC0415

        agent = AIAgent(base_url=parent.base_url, api_key="sk-demo", model="scripted-parent", provider="custom",
                        quiet_mode=True, skip_context_files=True, skip_memory=True, max_iterations=4)
        agent._print_fn = print
        from gateway.session_context import declare_stateless_channel  # noqa: PLC0415

        declare_stateless_channel()  # one-shot: no late background completion (as `hermes -z`)
        t0 = time.perf_counter()
        res = agent.run_conversation("Plan the rollout: delegate the three reviews.", task_id="demo")
        wall = time.perf_counter() - t0
        tool = next((m["content"] for m in res.get("messages", []) if m.get("role") == "tool"), "{}")
        data = json.loads(tool)
        print("\ntask                                      model   deployment   provider host         status     s")
        for r in data.get("results", []):
            dep = r.get("deployment") or {}
            print(f"{r['goal'][:40]:<41} {r['model']:<7} {str(dep.get('deployment_id')):<12} "
                  f"{str(dep.get('api_host')):<21} {r['status']:<10} {r['duration_s']:.1f}")
        if "error" in data:
            print(json.dumps(data, indent=2))
        print(f"\nparent's answer:\n{res.get('final_response')}")
        print(f"\nwall {wall:.1f} s for the turn; summed task time {data.get('sum_task_duration_s', 0):.1f} s")
        for p in (alpha, beta):
            print(f"{p.name} served: {sorted({r.model for r in p.requests if r.model is not None})}")
        agent.close()
        return 0 if data.get("counts") == {"completed": len(TASKS)} else 1
    finally:
        for p in (alpha, beta, parent):
            p.stop()
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
