"""`import hermes_delegate` and everything pure (resolve, load a config, plan a batch, price it under a
budget) must not import litellm: that costs seconds and ~200 MB, and is only needed to run tasks.

Runs in a fresh interpreter, since this test session may have imported litellm already. Nothing is timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.litellm  # what litellm's import pulls in

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import hermes_delegate
    from hermes_delegate import Delegator, Resolver, Task, load_config

    cfg = load_config(sys.argv[1])
    d = Delegator(cfg, parent_model="glm-4.7")
    r = Resolver(cfg)
    names = ["haiku", "glm-4.7", "small", "team", "openrouter/stepfun/step-3.5-flash:free",
             "kimi-k2 --provider kimi"]
    resolved = {n: r.resolve(n).model for n in names}
    resolved_d = {n: d.resolver.resolve(n).model for n in names}
    planned, cap = d.plan([Task("a", model="small"), {"goal": "b"}, "c", Task("d", model="deepseek-chat")],
                          budget_usd=0.5)
    print(json.dumps({
        "resolved": resolved,
        "same": resolved == resolved_d,
        "plan": [[p.index, p.model_source, p.resolution.model, p.reserve_usd] for p in planned],
        "cap": cap,
        "litellm_modules": sorted(m for m in sys.modules if m == "litellm" or m.startswith("litellm.")),
    }))
""")

CONFIG = """
delegation:
  model: small
  aliases: {small: haiku}
  budget_usd: 1.0
  max_tokens: 1000
router:
  model_list:
    - model_name: team
      litellm_params: {model: openai/team-model, api_base: "http://127.0.0.1:9/v1", api_key: sk-not-used}
"""


def test_import_resolve_load_and_plan_do_not_import_litellm(tmp_path: Path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(cfg)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["litellm_modules"] == [], out["litellm_modules"]
    assert out["same"] is True
    assert out["resolved"]["glm-4.7"] == "zai/glm-4.7"
    assert out["resolved"]["team"] == "team"
    assert out["resolved"]["small"] == out["resolved"]["haiku"]
    assert out["resolved"]["kimi-k2 --provider kimi"] == "moonshot/kimi-k2"
    assert [p[:2] for p in out["plan"]] == [[0, "task"], [1, "config"], [2, "config"], [3, "task"]]
    assert out["plan"][3][2] == "deepseek/deepseek-chat"
    assert all(isinstance(p[3], float) and p[3] > 0 for p in out["plan"])  # priced from the catalog
    assert out["cap"] == 0.5
