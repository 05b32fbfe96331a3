"""`hermes-delegate resolve`, `models` and `doctor`: what a name resolves to, what may be used, and
what is wrong with the config. The data is the Delegator's (`model_listing`, `learned_limits`,
`doctor`: the same listing the tools' list_models returns); this module only renders it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from .. import DelegateError, Delegator
from .textout import TextOut

__all__ = ["cmd_resolve", "cmd_models", "cmd_doctor", "models_inventory"]

EXIT_OK, EXIT_TASKS_FAILED = 0, 1

PrintJson = Callable[[Any, TextOut], None]


def cmd_resolve(args: argparse.Namespace, delegator: Delegator, out: TextOut, print_json: PrintJson) -> int:
    res = delegator.resolver.resolve(args.spec)
    if args.json:
        print_json(res.to_dict(), out)
    else:
        print(f"{res.input.strip()} → {res.model}  (provider {res.provider or '?'}, via {res.resolved_via})", file=out)
        if len(res.chain) > 2:
            print("  chain: " + " → ".join(res.chain), file=out)
    return EXIT_OK


def models_inventory(delegator: Delegator) -> dict[str, Any]:
    """`models --json`: {default, aliases (name → resolution), groups (name → [{model, credentials,
    key_env}]), families, allow[, learned_limits]}. The groups are the one listing's (the Resolver's
    deployments: a remote proxy's groups in remote mode), as list_models shows them."""
    cfg, resolver = delegator.config, delegator.resolver
    listing = delegator.model_listing_sync()
    groups = {name: [{"model": d["model"], "credentials": d["credentials"], "key_env": d["key_env"],
                      **({"problem": d["problem"]} if d.get("problem") else {})}
                     for d in group["deployments"]]
              for name, group in listing["groups"].items()}
    inv = {
        "default": cfg.delegation.model,
        "aliases": {a: resolver.resolve_or_error(a) for a in cfg.delegation.aliases},
        "groups": groups,
        "families": {f: resolver.catalog.family(f) for f in resolver.names()["families"]},
        "allow": cfg.delegation.allow,
    }
    inv.update(delegator.learned_limits())
    return inv


def _learned_line(row: dict[str, Any], now: float) -> str:
    parts = [f"{key} {row[key]:g}" for key in ("rpm", "tpm") if isinstance(row.get(key), (int, float))]
    age = max(0.0, now - float(row.get("at") or now))
    ago = f"{age:.0f} s ago" if age < 120 else f"{age / 60:.0f} min ago"
    named = row.get("refused")
    refused: dict[str, Any] = named if isinstance(named, dict) else {}
    said = "; ".join(f"{k} {v.get('value')} refused: {v.get('reason')}" for k, v in refused.items()
                     if isinstance(v, dict))
    return (f"  {row.get('group')} ({row.get('model')}): {', '.join(parts) or 'no limits'} (learned from "
            f"{row.get('learned_from')}, {ago})" + (f" — {said}" if said else ""))


def _print_learned(report: dict[str, Any], out: TextOut) -> None:
    if "learned_limits_error" in report:
        print(f"learned limits: not readable ({report['learned_limits_error']})", file=out)
    elif report.get("learned_limits"):
        print("learned limits (shared through Redis):", file=out)
        for row in report["learned_limits"].values():
            print(_learned_line(row, time.time()), file=out)


def cmd_models(args: argparse.Namespace, delegator: Delegator, out: TextOut, print_json: PrintJson) -> int:
    inv = models_inventory(delegator)
    if args.json:
        print_json(inv, out)
        return EXIT_OK
    print(f"default model: {inv['default'] or '(none)'}", file=out)
    if inv["aliases"]:
        print("aliases and tiers:", file=out)
        for name, r in inv["aliases"].items():
            print(f"  {name:<14} → {r.get('model') or 'ERROR: ' + r['error']}", file=out)
    if inv["groups"]:
        where = "router.model_list" if delegator.config.remote is None else "the remote LiteLLM proxy"
        print(f"model groups ({where}):", file=out)
        for name, deps in inv["groups"].items():
            print(f"  {name:<14} → " + ", ".join(f"{d['model']} [{d['credentials']}]"
                                                  + (f" PROBLEM: {d['problem']}" if d.get("problem") else "")
                                                  for d in deps), file=out)
    if delegator.resolver.proxy_only:
        print("only the proxy's groups (and aliases of them) run: remote.allow_direct is off", file=out)
    else:
        print("built-in families:", file=out)
        for name, mid in inv["families"].items():
            print(f"  {name:<14} → {mid or '(not in catalog)'}", file=out)
        print("also: any LiteLLM id (provider/model), a bare catalog id (glm-4.7), or NAME --provider SLUG",
              file=out)
    if inv["allow"] is not None:
        print(f"allowed: {', '.join(inv['allow'])}", file=out)
    _print_learned(inv, out)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, delegator: Delegator, out: TextOut, print_json: PrintJson) -> int:
    from .demo import refuse_loopback_outside_demo  # noqa: PLC0415

    report = delegator.doctor()
    problems = report["problems"]
    try:  # `run` refuses loopback:// api_bases up front (only `demo` fills them in): a problem here too
        refuse_loopback_outside_demo(delegator.config)
    except DelegateError as exc:
        problems.append(str(exc))
    if args.json:
        print_json(report, out)
    else:
        print(f"config: {report['config']}", file=out)
        for line in report["ignored"]:
            print(f"  ignored: {line}", file=out)
        for row in report["deployments"]:
            env_txt = f" ({row['key_env']})" if row["key_env"] else ""
            print(f"  {row['group']:<20} {row['model']:<40} credentials {row['credentials']}{env_txt}", file=out)
        if report.get("learned_limits"):
            _print_learned(report, out)
        spend = report.get("spend") or {}
        print(f"ledger: {spend.get('ledger') or 'off'}", file=out)
        for cap in spend.get("caps") or []:
            left = f", spent ${cap['spent_usd']:.6f}, left ${cap['left_usd']:.6f}" if "left_usd" in cap else ""
            print(f"  {cap['scope']}: ${cap['cap_usd']:g}{left}", file=out)
        print("ok: no problems found" if not problems else f"{len(problems)} problem(s):", file=out)
        for p in problems:
            print(f"  - {p}", file=out)
    return EXIT_OK if not problems else EXIT_TASKS_FAILED
