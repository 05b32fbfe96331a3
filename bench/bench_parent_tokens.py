"""What the parent model pays to delegate (issue 23), in tokens, offline.

    python bench/bench_parent_tokens.py          # both cases; writes bench/out/parent_tokens.json

Tokens are counted with litellm's `token_counter` (gpt-4o's tokenizer, bundled: no download).

1. **Result overhead.** A real 10-task `delegate_task` (DelegateTools over loopback providers, short
   answers). The tool's model-facing result (the compact JSON; over MCP also its text content) is
   measured against today's shape, the full report (`detail: "full"`, what MCP's structuredContent and
   the hermes tool result carried before), from the same run. Overhead = tokens of the result − tokens of
   the answers alone, per task. Goal: compact ≤ 40 tokens per task.
2. **Files by path.** "Review these 8 files" (8 of the project's own source files). Pasting: the parent
   reads each file (its own Read tool result), then writes their text into the call's context, then reads
   the result. By path: it writes the paths, then reads the result. Ratio = parent tokens by path ÷
   pasting. Goal: ≤ 0.10.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hermes_delegate import DelegateTools, Delegator, config_from_dict  # noqa: E402
from hermes_delegate.loopback import start_providers  # noqa: E402
from hermes_delegate.tools.compact import compact_batch  # noqa: E402

FILES = ["hermes_delegate/core/resolver.py", "hermes_delegate/ratelimit/redis_windows.py",
         "hermes_delegate/routing/router.py", "hermes_delegate/runtime/delegator.py",
         "hermes_delegate/ratelimit/gate.py", "hermes_delegate/tools/delegate_tools.py",
         "hermes_delegate/sources/config_file.py", "hermes_delegate/core/catalog.py"]
ANSWERS = ["42", "Yes.", "No issues found.", "Paris", "3 TODOs", "LGTM", "Two bugs: l.12, l.40.", "done",
           "7", "It returns None on an empty list."]


def tokens(text: str) -> int:
    import litellm

    return litellm.token_counter(model="gpt-4o", text=text)


def config(alpha, beta) -> dict:
    def dep(group: str, p) -> dict:
        return {"model_name": group, "litellm_params": {"model": f"openai/{group}-model", "api_base": p.base_url,
                                                         "api_key": "sk-loopback-bench"}}

    return {"delegation": {"aliases": {"small": "cheap", "large": "strong"}, "task_timeout_s": 60},
            "router": {"model_list": [dep("cheap", alpha), dep("strong", beta)],
                       "router_settings": {"num_retries": 0}}}


def mcp_text(data: dict) -> str:
    from hermes_delegate.hosts.mcp_server import to_call_result

    res = to_call_result(json.dumps(data))
    return "\n".join(c.text for c in res.content)


def result_overhead(tools: DelegateTools, alpha, beta) -> dict:
    import re

    def reply(body: dict, p: object) -> str:
        return ANSWERS[int(re.search(r"task (\d+)", json.dumps(body["messages"]))[1])]

    alpha.responder = beta.responder = reply
    tasks = [{"goal": f"task {i}", "model": "small" if i % 2 else "large"} for i in range(len(ANSWERS))]
    full = json.loads(tools.delegate_task_sync({"tasks": tasks, "detail": "full"}))
    assert [r["status"] for r in full["results"]] == ["completed"] * len(tasks), full
    full_text = tools._dump(full)  # what the tool returns: the same serialisation for both shapes
    compact = compact_batch(full)
    compact_text = tools._dump(compact)
    answer_tokens = sum(tokens(r["summary"]) for r in full["results"])
    n = len(tasks)
    out = {"tasks": n, "answer_tokens": answer_tokens}
    for name, text in (("full_report", full_text), ("compact_json", compact_text), ("mcp_text", mcp_text(compact))):
        t = tokens(text)
        out[name] = {"chars": len(text), "tokens": t, "overhead_per_task": round((t - answer_tokens) / n, 1)}
    return out


def files_ratio(tools: DelegateTools, alpha, beta) -> dict:
    review = "Found 2 issues: an unchecked None at l.40; a broad except at l.88."
    alpha.responder = beta.responder = lambda body, p: review
    contents = {f: (ROOT / f).read_text(encoding="utf-8") for f in FILES}
    by_path = {"tasks": [{"goal": f"Review {f} for bugs; answer in two lines.", "model": "small", "files": [f]}
                         for f in FILES]}
    pasted = {"tasks": [{"goal": f"Review {f} for bugs; answer in two lines.", "model": "small",
                         "context": f'<file path="{f}">\n{contents[f]}\n</file>'} for f in FILES]}
    out_path = tools.delegate_task_sync(by_path)
    data = json.loads(out_path)
    assert [r["status"] for r in data["results"]] == ["completed"] * len(FILES), data
    # what reached the children: each file's text, read on our side
    sent = " ".join(json.dumps(r.messages, ensure_ascii=False) for r in alpha.requests)
    assert all(json.dumps(contents[f][:200], ensure_ascii=False)[1:-1] in sent for f in FILES)
    out_pasted = tools.delegate_task_sync(pasted)
    read_by_parent = sum(tokens(c) for c in contents.values())  # its own Read tool results, before pasting
    with_files = tokens(json.dumps(by_path)) + tokens(out_path)
    with_paste = read_by_parent + tokens(json.dumps(pasted)) + tokens(out_pasted)
    return {"files": len(FILES), "file_chars": sum(map(len, contents.values())), "file_tokens": read_by_parent,
            "parent_tokens_by_path": with_files, "parent_tokens_pasting": with_paste,
            "ratio": round(with_files / with_paste, 4)}


def main() -> int:
    with start_providers([{"name": "alpha"}, {"name": "beta"}]) as (alpha, beta):
        tools = DelegateTools(Delegator(config_from_dict(config(alpha, beta))), roots=[ROOT])
        one = result_overhead(tools, alpha, beta)
        two = files_ratio(tools, alpha, beta)
    report = {"result_overhead": one, "files_by_path": two,
              "goals": {"compact_overhead_per_task_max": 40, "files_ratio_max": 0.10}}
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "parent_tokens.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ok = one["compact_json"]["overhead_per_task"] <= 40 and two["ratio"] <= 0.10
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
