"""What enabling the hermes plugin adds to hermes start-up.

Each run is a fresh interpreter with its own HERMES_HOME. It imports run_agent with plugin discovery
skipped (HERMES_SAFE_MODE=1), then times `discover_plugins(force=True)`: the discovery hermes runs
while `import model_tools` loads. The same happens with `plugins.enabled: []` and with
`plugins.enabled: [hermes-delegate]`, and the difference is what registration costs. Each run also
reports whether litellm or pydantic were imported, and how long the first tool-schema build takes.
That first build is where DelegateTools's live schema (the engine, pydantic) loads, during the first
AIAgent's construction, after the openai SDK has already imported pydantic.

Also reported: the wall time of `import run_agent` with discovery on (noisier).

    python bench/bench_plugin_load.py [--runs 15]

Prints numbers only; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time
os.environ["HERMES_SAFE_MODE"] = "1"
t0 = time.perf_counter()
import run_agent  # discovery skipped
os.environ.pop("HERMES_SAFE_MODE")
from hermes_cli.plugins import discover_plugins, get_plugin_manager
t1 = time.perf_counter()
discover_plugins(force=True)
t2 = time.perf_counter()
out = {"discover_ms": (t2 - t1) * 1000, "litellm": "litellm" in sys.modules, "pydantic": "pydantic" in sys.modules,
       "loaded": [p["key"] for p in get_plugin_manager().list_plugins() if p["enabled"] and p["source"] != "bundled"]}
from tools.registry import registry
if registry.get_entry("list_models") is not None:
    t3 = time.perf_counter()
    registry.get_definitions({"delegate_task", "list_models"}, quiet=True)  # the extended built-in
    out["first_schema_ms"] = (time.perf_counter() - t3) * 1000
    out["litellm_after_schema"] = "litellm" in sys.modules
print(json.dumps(out))
"""

IMPORT_ONLY = r"""
import json, sys, time
t0 = time.perf_counter()
import run_agent
print(json.dumps({"import_ms": (time.perf_counter() - t0) * 1000, "litellm": "litellm" in sys.modules}))
"""


def _home(root: Path, enabled: list[str]) -> Path:
    home = Path(tempfile.mkdtemp(dir=root))
    (home / "config.yaml").write_text(json.dumps({"plugins": {"enabled": enabled}}))  # JSON is YAML
    return home


def _run(code: str, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERMES_")}
    env.update(HERMES_HOME=str(home), LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=str(home))
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stats(xs: list[float]) -> str:
    return (f"median {statistics.median(xs):7.2f} ms   min {min(xs):7.2f}   max {max(xs):7.2f}   "
            f"(n={len(xs)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        off_home, on_home = _home(root, []), _home(root, ["hermes-delegate"])
        _run(CHILD, off_home), _run(CHILD, on_home)  # warm the OS file cache and .pyc files
        off, on = [], []
        for _ in range(ns.runs):  # interleaved so drift hits both sides alike
            off.append(_run(CHILD, off_home))
            on.append(_run(CHILD, on_home))
        imp_off, imp_on = [], []
        for _ in range(ns.runs):
            imp_off.append(_run(IMPORT_ONLY, off_home)["import_ms"])
            imp_on.append(_run(IMPORT_ONLY, on_home)["import_ms"])

    d_off, d_on = [r["discover_ms"] for r in off], [r["discover_ms"] for r in on]
    print(f"hermes plugin discovery, plugin disabled: {_stats(d_off)}")
    print(f"hermes plugin discovery, plugin enabled:  {_stats(d_on)}")
    added = statistics.median(d_on) - statistics.median(d_off)
    print(f"added by registering hermes-delegate:     {added:7.2f} ms (medians), "
          f"{min(d_on) - min(d_off):.2f} ms (minima)")
    print(f"plugin loaded in every enabled run:       {all('hermes-delegate' in r['loaded'] for r in on)}")
    print(f"litellm imported by registration:         {any(r['litellm'] for r in on)}")
    print(f"pydantic imported by registration:        {any(r['pydantic'] for r in on)}")
    schema = [r["first_schema_ms"] for r in on if "first_schema_ms" in r]
    if schema:
        print(f"first live tool-schema build (later, at the first AIAgent): {_stats(schema)}")
        print(f"litellm imported by the schema build:     {any(r.get('litellm_after_schema') for r in on)}")
    print(f"import run_agent (discovery on), disabled: {_stats(imp_off)}")
    print(f"import run_agent (discovery on), enabled:  {_stats(imp_on)}")
    print(f"  difference: medians {statistics.median(imp_on) - statistics.median(imp_off):+.2f} ms, "
          f"minima {min(imp_on) - min(imp_off):+.2f} ms (a whole import is noisy: ±tens of ms)")


if __name__ == "__main__":
    main()
