"""`hermes-delegate`: resolve, models, run, doctor, demo.

Exit codes: 0 all tasks completed (or the command succeeded), 1 some tasks did not complete
(or doctor found problems), 2 usage, spec or config error (message on stderr).
Only `run` and `demo` import litellm; the others answer in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from ..core.config import Config
from ..sources.config_file import load_config
from ..core.credentials import deployment_credentials, unset_refs
from ..core.errors import DelegateError
from .render import for_people, utf8
from ..core.redact import default_redactor, install_log_filter, redact
from ..core.resolver import Resolver
from ..sources.groups import resolver_for

__all__ = ["main"]

EXIT_OK, EXIT_TASKS_FAILED, EXIT_USAGE = 0, 1, 2


def _finite(obj: Any) -> Any:
    """The same data with NaN/Infinity floats as null, so the JSON printed is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _print_json(obj: Any, out: TextIO) -> None:
    text = json.dumps(_finite(obj), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    print(utf8(redact(text)), file=out, flush=True)


@contextlib.contextmanager
def _quiet_stdout():
    """Keep third-party prints (litellm's "Provider List: …") out of our stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    install_log_filter(["", "hermes_delegate"], default_redactor())
    if verbosity >= 2:
        os.environ.setdefault("HERMES_DELEGATE_LITELLM_LOGS", "1")


# -- commands ---------------------------------------------------------------------------------
def cmd_resolve(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    res = resolver_for(cfg).resolve(args.spec)
    if args.json:
        _print_json(res.to_dict(), out)
    else:
        print(f"{res.input.strip()} → {res.model}  (provider {res.provider or '?'}, via {res.resolved_via})", file=out)
        if len(res.chain) > 2:
            print("  chain: " + " → ".join(res.chain), file=out)
    return EXIT_OK


def _try(resolver: Resolver, name: str) -> dict[str, Any]:
    try:
        return resolver.resolve(name).to_dict()
    except DelegateError as exc:
        return {"input": name, "error": str(exc)}


def models_inventory(cfg: Config, env: Any = None) -> dict[str, Any]:
    from ..core.catalog import FAMILIES  # noqa: PLC0415

    resolver = resolver_for(cfg, env=env)
    groups = {}
    for name, deps in resolver.groups.items():
        groups[name] = [{"model": d.litellm_params.get("model"), **deployment_credentials(d.litellm_params, resolver.env).to_dict()}
                        for d in deps]
    inv = {
        "default": cfg.delegation.model,
        "aliases": {a: _try(resolver, a) for a in cfg.delegation.aliases},
        "groups": groups,
        "families": {f: resolver.catalog.family(f) for f in FAMILIES},
        "allow": cfg.delegation.allow,
    }
    inv.update(learned_limits(cfg, resolver))
    return inv


def learned_limits(cfg: Config, resolver: Resolver) -> dict[str, Any]:
    """Limits processes learned from this config's deployments, when they share them through the Redis
    the router_settings name: {"learned_limits": {deployment id: {...}}}, or the reason they cannot be
    read ({"learned_limits_error": ...}); {} without Redis (a process keeps what it learns to itself)."""
    settings = cfg.router.router_settings
    if not (settings.get("redis_host") or settings.get("redis_url")):
        return {}
    from ..core.env_refs import resolve_env_ref  # noqa: PLC0415
    from ..ratelimit.redis_windows import read_learned  # noqa: PLC0415

    env = cfg.env_lookup(os.environ)
    conn = {k: resolve_env_ref(v, env) if isinstance(v, str) else v for k, v in settings.items()
            if k in ("redis_host", "redis_port", "redis_url", "redis_password")}
    ours = {(d.model_name, d.litellm_params.get("model")) for d in resolver.model_list}
    ids = {str(d.model_info["id"]) for d in resolver.model_list if d.model_info.get("id")}
    try:
        found = read_learned(conn)
    except DelegateError as exc:
        return {"learned_limits_error": redact(exc.message)}
    return {"learned_limits": {k: v for k, v in sorted(found.items())
                               if k in ids or (v.get("group"), v.get("model")) in ours}}


def _learned_line(row: dict[str, Any], now: float) -> str:
    parts = [f"{key} {row[key]:g}" for key in ("rpm", "tpm") if isinstance(row.get(key), (int, float))]
    age = max(0.0, now - float(row.get("at") or now))
    ago = f"{age:.0f} s ago" if age < 120 else f"{age / 60:.0f} min ago"
    return f"  {row.get('group')} ({row.get('model')}): {', '.join(parts)} (learned from {row.get('learned_from')}, {ago})"


def cmd_models(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    inv = models_inventory(cfg)
    if args.json:
        _print_json(inv, out)
        return EXIT_OK
    print(f"default model: {inv['default'] or '(none)'}", file=out)
    if inv["aliases"]:
        print("aliases and tiers:", file=out)
        for name, r in inv["aliases"].items():
            print(f"  {name:<14} → {r.get('model') or 'ERROR: ' + r['error']}", file=out)
    if inv["groups"]:
        print("model groups (router.model_list):", file=out)
        for name, deps in inv["groups"].items():
            print(f"  {name:<14} → " + ", ".join(f"{d['model']} [{d['credentials']}]" for d in deps), file=out)
    print("built-in families:", file=out)
    for name, mid in inv["families"].items():
        print(f"  {name:<14} → {mid or '(not in catalog)'}", file=out)
    print("also: any LiteLLM id (provider/model), a bare catalog id (glm-4.7), or NAME --provider SLUG", file=out)
    if inv["allow"] is not None:
        print(f"allowed: {', '.join(inv['allow'])}", file=out)
    _print_learned(inv, out)
    return EXIT_OK


def _print_learned(report: dict[str, Any], out: TextIO) -> None:
    import time  # noqa: PLC0415

    if "learned_limits_error" in report:
        print(f"learned limits: not readable ({report['learned_limits_error']})", file=out)
    elif report.get("learned_limits"):
        print("learned limits (shared through Redis):", file=out)
        for row in report["learned_limits"].values():
            print(_learned_line(row, time.time()), file=out)


def cmd_doctor(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    resolver = resolver_for(cfg)
    problems: list[str] = []
    report: dict[str, Any] = {"config": cfg.source or "(defaults: no config file)", "deployments": [],
                              "aliases": {}, "problems": problems}
    for name in [*cfg.delegation.aliases, *([cfg.delegation.model] if cfg.delegation.model else [])]:
        r = _try(resolver, name)
        report["aliases"][name] = r.get("model") or r.get("error")
        if "error" in r:
            problems.append(f"{name}: {r['error']}")
        else:  # every deployment it reaches has an unset os.environ/ key or api_base: it cannot run
            try:
                resolver.check_callable(resolver.resolve(name))
            except DelegateError as exc:
                problems.append(f"{name}: {exc.message}")
    for dep in resolver.model_list:  # remote mode: the proxy's groups
        cred = deployment_credentials(dep.litellm_params, resolver.env)
        row = {"group": dep.model_name, "model": dep.litellm_params.get("model"), **cred.to_dict()}
        report["deployments"].append(row)
        if not cred.present:
            problems.append(f"{dep.model_name} ({row['model']}): credentials missing — set {cred.key_env}")
        for ref in unset_refs(dep.litellm_params, resolver.env):  # api_base and any other reference too
            if ref != cred.key_env:
                problems.append(f"{dep.model_name} ({row['model']}): os.environ/{ref} is not set")
    ignored = [f"{k} (proxy-server settings: not used by hermes-delegate)" for k in cfg.router.ignored_sections]
    report["ignored"] = ignored
    report.update(learned_limits(cfg, resolver))
    if "learned_limits_error" in report:  # every run would fail typed (limiter_unavailable)
        problems.append(f"router_settings: {report['learned_limits_error']}")
    if args.json:
        _print_json(report, out)
    else:
        print(f"config: {report['config']}", file=out)
        for line in ignored:
            print(f"  ignored: {line}", file=out)
        for row in report["deployments"]:
            env_txt = f" ({row['key_env']})" if row["key_env"] else ""
            print(f"  {row['group']:<20} {row['model']:<40} credentials {row['credentials']}{env_txt}", file=out)
        if report.get("learned_limits"):
            _print_learned(report, out)
        print("ok: no problems found" if not problems else f"{len(problems)} problem(s):", file=out)
        for p in problems:
            print(f"  - {p}", file=out)
    return EXIT_OK if not problems else EXIT_TASKS_FAILED


def _load_tasks(path: str) -> tuple[list[Any], str | None]:
    from ..sources.config_file import read_yaml_file  # noqa: PLC0415
    from ..core.errors import TaskPayloadError  # noqa: PLC0415

    shape = "Each task has goal (required), context and model."
    data = read_yaml_file(Path(path), "tasks file", TaskPayloadError, nested_hint=shape)
    if isinstance(data, dict):
        tasks = data.get("tasks")
        if tasks is None:
            tasks = []
        if not isinstance(tasks, list):
            raise TaskPayloadError(
                f"{path}: `tasks` must be a list of tasks or goal strings, got {type(tasks).__name__}.",
                hint="Write tasks: [{goal: ...}, ...] or tasks: [\"a goal\", ...]. " + shape)
        return tasks, data.get("model")
    if isinstance(data, list):
        return data, None
    raise TaskPayloadError(f"{path}: expected a list of tasks or a mapping with `tasks:`.", hint=shape)


def _run_batch(cfg: Config, tasks: list[Any], model: str | None, args: argparse.Namespace, out: TextIO,
               before: Callable[[TextIO], None] | None = None) -> int:
    from ..runtime.delegator import Delegator  # noqa: PLC0415
    from .render import Progress, summary_lines  # noqa: PLC0415
    from ..runtime.sync import run_sync, signals_interrupt  # noqa: PLC0415

    delegator = Delegator(cfg)
    planned, cap = delegator.plan(tasks, model=model, budget_usd=getattr(args, "budget", None))
    progress_out = sys.stderr if args.json else out
    if before and not args.json:
        before(out)
    # SIGINT, SIGTERM and SIGHUP interrupt the batch: unfinished tasks end `interrupted` and the results
    # already paid for are printed; a second signal only hurries that along (it never kills the process).
    with signals_interrupt(delegator.interrupt) as stop:
        goals = [p.goal for p in planned]
        with Progress(len(planned), out=progress_out, goals=goals) as progress, _quiet_stdout():
            batch = run_sync(lambda: delegator.run_planned(planned, cap=cap, on_event=progress,
                                                           max_concurrency=getattr(args, "concurrency", None)),
                             on_signal=stop)
        if args.json:
            _print_json(batch.to_dict(), out)
        else:
            for line in summary_lines(batch):
                print(utf8(line), file=out)
    return EXIT_OK if batch.ok else EXIT_TASKS_FAILED


def cmd_run(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    from .demo import refuse_loopback_outside_demo  # noqa: PLC0415

    refuse_loopback_outside_demo(cfg)
    tasks, file_model = _load_tasks(args.tasks)
    return _run_batch(cfg, tasks, args.model or file_model, args, out)


def cmd_demo(args: argparse.Namespace, cfg: Config | None, out: TextIO) -> int:
    from .demo import describe, find_demo_files, loopback_config  # noqa: PLC0415

    cfg_path, tasks_path = find_demo_files(args.demo_config or getattr(args, "config", None), args.tasks)
    providers: dict[str, Any] = {}
    try:
        demo_cfg = loopback_config(cfg_path, providers)
        tasks, file_model = _load_tasks(str(tasks_path))

        def intro(o: TextIO) -> None:
            print(f"hermes-delegate demo: {len(tasks)} tasks from {tasks_path.name}, config {cfg_path.name}", file=o)
            describe(providers, o)

        return _run_batch(demo_cfg, tasks, file_model, args, out, before=intro)
    finally:
        for p in providers.values():
            p.stop()


def cmd_mcp(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    """Serve the tools over MCP (stdio, or streamable HTTP with --http) until the client goes away."""
    import anyio  # noqa: PLC0415

    from .mcp_server import DEFAULT_TOKEN_ENV, serve_http, serve_stdio  # noqa: PLC0415

    if args.http:
        anyio.run(serve_http, cfg, args.http, args.token_env or DEFAULT_TOKEN_ENV)
    else:
        anyio.run(serve_stdio, cfg)
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="config file (else $HERMES_DELEGATE_CONFIG, "
                        "else ~/.config/hermes-delegate/config.yaml)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="-v info, -vv debug logs (stderr)")
    common.add_argument("--hermes", nargs="?", const="", default=argparse.SUPPRESS, metavar="HERMES_HOME",
                        help="use the hermes plugin's settings: HERMES_HOME/config.yaml (default $HERMES_HOME, "
                        "else ~/.hermes); autodetected when no --config is given and that file has a "
                        "hermes_delegate: block")
    p = argparse.ArgumentParser(prog="hermes-delegate", parents=[common],
                                description="Fan tasks out in parallel, each on the model it names.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("resolve", parents=[common], help="show what a model string resolves to")
    r.add_argument("spec", help='e.g. "haiku", "glm-4.7", "stepfun/step-3.5-flash --provider openrouter"')
    r.add_argument("--json", action="store_true")
    m = sub.add_parser("models", parents=[common], help="every name an agent may use, and what it resolves to")
    m.add_argument("--json", action="store_true")
    run = sub.add_parser("run", parents=[common], help="run a batch of tasks from a YAML file")
    run.add_argument("tasks", help="YAML: a list of {goal, context, model}, or {tasks: [...], model: ...}")
    run.add_argument("--model", help="call-level model for tasks that name none")
    run.add_argument("--budget", type=float, help="cost cap in USD for this run (≤ delegation.budget_usd)")
    run.add_argument("--concurrency", type=int, help="override delegation.max_concurrency")
    run.add_argument("--json", action="store_true", help="print the batch result as JSON")
    d = sub.add_parser("doctor", parents=[common], help="validate the config; list missing credentials by env var")
    d.add_argument("--json", action="store_true")
    demo = sub.add_parser("demo", parents=[common], help="run a mixed-model batch on embedded loopback providers")
    demo.add_argument("--demo-config", help="a config with loopback://NAME api_bases (also --config); "
                      "default: the demo's own")
    demo.add_argument("--tasks", help="default: the demo's own tasks")
    demo.add_argument("--json", action="store_true")
    mcp = sub.add_parser("mcp", parents=[common], help="serve delegate_task and list_models over MCP (stdio)")
    mcp.add_argument("--http", metavar="[HOST:]PORT", help="streamable HTTP instead of stdio (host 127.0.0.1 "
                     "unless given; any other host requires a bearer token)")
    mcp.add_argument("--token-env", metavar="VAR", help="env var holding the HTTP bearer token "
                     "(default HERMES_DELEGATE_MCP_TOKEN)")
    return p


COMMANDS = {"resolve": cmd_resolve, "models": cmd_models, "run": cmd_run, "doctor": cmd_doctor, "demo": cmd_demo,
            "mcp": cmd_mcp}


def _hermes_home(args: argparse.Namespace) -> str | None:
    """--hermes [HOME], else the autodetected HERMES_HOME (no --config, no $HERMES_DELEGATE_CONFIG,
    no default config file, and hermes's config.yaml has a hermes_delegate: block); None = ours."""
    if hasattr(args, "hermes"):
        return args.hermes
    if getattr(args, "config", None) or os.environ.get("HERMES_DELEGATE_CONFIG"):
        return None
    from ..sources.config_file import default_config_path  # noqa: PLC0415
    from ..sources.hermes_home import detect  # noqa: PLC0415

    if default_config_path(os.environ).exists():
        return None
    found = detect()
    return str(found) if found is not None else None


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    _setup_logging(getattr(args, "verbose", 0))
    try:
        hermes_home = _hermes_home(args)
        if args.command == "demo":
            cfg = None
        elif hermes_home is not None:
            from ..sources.hermes_home import config_for_home  # noqa: PLC0415

            cfg = config_for_home(hermes_home)
        else:
            cfg = load_config(getattr(args, "config", None))
        return COMMANDS[args.command](args, cfg, out)
    except BrokenPipeError:  # `hermes-delegate models --json | head`: the reader went away
        if out is sys.stdout:  # Python's recipe: point stdout at devnull so the exit flush is quiet
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
        return EXIT_TASKS_FAILED
    except DelegateError as exc:
        text = redact(for_people(exc))
        if _hermes_home(args) is not None:  # hints name the block a hermes user edits
            from ..sources.hermes_home import hermes_keys  # noqa: PLC0415

            text = hermes_keys(text)
        print(f"hermes-delegate: {utf8(text)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hermes-delegate: interrupted", file=sys.stderr)
        return EXIT_TASKS_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
