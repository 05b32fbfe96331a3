"""`hermes-delegate`: resolve, models, run, doctor, spend, demo.

Exit codes: 0 all tasks completed (or the command succeeded), 1 some tasks did not complete
(or doctor found problems), 2 usage, spec or config error (message on stderr). `run` and `demo` are
never killed by SIGINT, SIGTERM or SIGHUP, from their first moment: a stop signal, even one while the
config loads or litellm starts, ends with the batch printed (unfinished tasks `interrupted`), exit 1.
Only `run` and `demo` import litellm; the others answer in milliseconds.

A host like any other: it imports only the public API (`hermes_delegate`), plus, as the hermes plugin
does, `sources.hermes_home` for `--hermes` (the contracts in pyproject.toml). Everything it writes,
to stdout and stderr, goes through the Delegator's redactor (`_Redacted`); its log handler carries
`Delegator.log_filter()`. `resolve`, `models` and `doctor` are rendered in cli_models.py.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable, Iterator, TextIO

from .. import Config, DelegateError, Delegator, load_config, load_tasks
from .cli_models import cmd_doctor, cmd_models, cmd_resolve
from .cli_spend import cmd_spend
from .render import for_people
from .textout import TextOut

__all__ = ["main"]

EXIT_OK, EXIT_TASKS_FAILED, EXIT_USAGE = 0, 1, 2


def _print_json(obj: Any, out: TextOut) -> None:
    print(Delegator.to_json(obj, indent=2), file=out, flush=True)


class _Redacted:
    """A text stream whose every write goes through the redactor of the Delegator in use (`ctx`), so
    nothing the CLI prints (JSON, summaries, progress lines, the live view, error messages) can carry a
    secret; text that cannot encode as UTF-8 is repaired. Anything else is the wrapped stream's."""

    def __init__(self, raw: TextIO, ctx: "_Context"):
        self.raw, self.ctx = raw, ctx

    def write(self, text: str) -> int:
        self.raw.write(self.ctx.delegator.redact(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:  # the wrapped stream's would not redact
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, …
        return getattr(self.raw, name)


class _Context:
    """One invocation: the Delegator in use (until a config is loaded, one on the default config)."""

    def __init__(self) -> None:
        self._delegator: Delegator | None = None

    @property
    def delegator(self) -> Delegator:
        if self._delegator is None:
            self._delegator = Delegator()
        return self._delegator

    def engine(self, cfg: Config) -> Delegator:
        self._delegator = Delegator(cfg, door="cli")  # its own spend session: this invocation
        return self._delegator


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
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
    handler.addFilter(Delegator.log_filter())  # every record it prints, whichever logger it came from
    if verbosity >= 2:
        os.environ.setdefault("HERMES_DELEGATE_LITELLM_LOGS", "1")


class _StopSignals:
    """`run` and `demo` from their start (before the config loads): a stop signal is recorded, never
    deadly. While a batch runs, `Delegator.interrupt_on_signals` handles them; one recorded before
    makes the batch start stopped (every task `interrupted`, nothing sent, the result printed)."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._saved: list[tuple[int, Any]] = []

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.seen.append(signum)

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (getattr(signal, n) for n in self.NAMES if hasattr(signal, n)):
                with contextlib.suppress(OSError, ValueError):
                    self._saved.append((sig, signal.signal(sig, self._on_signal)))
        return self

    def __exit__(self, *exc: Any) -> None:
        # after a stop signal (ours, or the batch's, whose handler then left SIG_IGN) the process is on its
        # way out: another one during the interpreter's teardown must not turn exit 1 into death by signal
        for sig, previous in self._saved:
            if self.seen or signal.getsignal(sig) is signal.SIG_IGN:
                signal.signal(sig, signal.SIG_IGN)
            elif previous is not None:
                signal.signal(sig, previous)


# -- commands ---------------------------------------------------------------------------------
def _load_tasks(path: str) -> tuple[list[Any], str | None]:
    return load_tasks(path)


def _run_batch(delegator: Delegator, tasks: list[Any], model: str | None, args: argparse.Namespace,
               out: TextOut, err: TextOut, before: Callable[[TextOut], None] | None = None,
               signals: _StopSignals | None = None) -> int:
    from .render import Progress, summary_lines  # noqa: PLC0415

    roots = [os.getcwd(), *getattr(args, "root", [])]  # where tasks' `files` may be read from
    planned, cap = delegator.plan(tasks, model=model, budget_usd=getattr(args, "budget", None), roots=roots)
    progress_out = err if args.json else out
    if before and not args.json:
        before(out)
    # SIGINT, SIGTERM and SIGHUP interrupt the batch: unfinished tasks end `interrupted` and the results
    # already paid for are printed; a second signal only hurries that along (it never kills the process).
    with delegator.interrupt_on_signals() as stop:
        if signals is not None and signals.seen:  # one came while the config loaded or tasks were planned
            stop()
        goals = [p.goal for p in planned]
        with Progress(len(planned), out=progress_out, goals=goals) as progress, _quiet_stdout():
            batch = delegator.run_planned_sync(planned, cap=cap, on_event=progress, on_signal=stop,
                                               max_concurrency=getattr(args, "concurrency", None))
        if args.json:
            _print_json(batch.to_dict(), out)
        else:
            for line in summary_lines(batch):
                print(line, file=out)
    return EXIT_OK if batch.ok else EXIT_TASKS_FAILED


def cmd_run(args: argparse.Namespace, delegator: Delegator, out: TextOut, err: TextOut,
            signals: _StopSignals | None = None) -> int:
    from .demo import refuse_loopback_outside_demo  # noqa: PLC0415

    refuse_loopback_outside_demo(delegator.config)
    tasks, file_model = _load_tasks(args.tasks)
    return _run_batch(delegator, tasks, args.model or file_model, args, out, err, signals=signals)


def cmd_demo(args: argparse.Namespace, ctx: _Context, out: TextOut, err: TextOut,
             signals: _StopSignals | None = None) -> int:
    from .demo import describe, find_demo_files, loopback_config  # noqa: PLC0415

    cfg_path, tasks_path = find_demo_files(args.demo_config or getattr(args, "config", None), args.tasks)
    providers: dict[str, Any] = {}
    try:
        delegator = ctx.engine(loopback_config(cfg_path, providers))
        tasks, file_model = _load_tasks(str(tasks_path))

        def intro(o: TextOut) -> None:
            print(f"hermes-delegate demo: {len(tasks)} tasks from {tasks_path.name}, config {cfg_path.name}", file=o)
            describe(providers, o)

        return _run_batch(delegator, tasks, file_model, args, out, err, before=intro, signals=signals)
    finally:
        for p in providers.values():
            p.stop()


def cmd_mcp(args: argparse.Namespace, cfg: Config, err: TextOut) -> int:
    """Serve the tools over MCP (stdio, or streamable HTTP with --http) until the client goes away."""
    try:
        import anyio  # noqa: PLC0415

        from .mcp_server import DEFAULT_TOKEN_ENV, serve_http, serve_stdio  # noqa: PLC0415
    except ImportError as exc:  # the [mcp] extra is not installed (mcp, mcp_types, uvicorn, …)
        print(f"hermes-delegate: `mcp` needs the MCP SDK, which is not installed ({exc.name or exc}).\n"
              "Install it with: pip install 'hermes-delegate[mcp]'", file=err)
        return EXIT_USAGE
    roots = {"roots": args.root}  # where tasks' `files` may be read from, besides the working directory
    if args.http:
        anyio.run(functools.partial(serve_http, allow_hosts=args.allow_host or (), **roots), cfg, args.http,
                  args.token_env or DEFAULT_TOKEN_ENV)
    else:
        anyio.run(functools.partial(serve_stdio, **roots), cfg)
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r} (e.g. "
                                         "--concurrency 4; leave it out to use delegation.max_concurrency)")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="config file (else $HERMES_DELEGATE_CONFIG, "
                        "else ~/.config/hermes-delegate/config.yaml)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="-v info, -vv debug logs (stderr)")
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
    run.add_argument("--concurrency", type=_positive_int, metavar="N",
                     help="override delegation.max_concurrency (a whole number ≥ 1)")
    run.add_argument("--json", action="store_true", help="print the batch result as JSON")
    d = sub.add_parser("doctor", parents=[common], help="validate the config; list missing credentials by env var")
    d.add_argument("--json", action="store_true")
    sp = sub.add_parser("spend", parents=[common], help="spend from the ledger by day, model, deployment, "
                        "host and session, and the headroom under each cap")
    sp.add_argument("--since", help="e.g. 7d, 24h, or a date 2026-12-01 (default: everything)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--plot", metavar="FILE.png", help="draw spend per day stacked by model (matplotlib)")
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
    mcp.add_argument("--allow-host", action="append", metavar="NAME", help="with --http: also accept requests "
                     "whose Host (and Origin) name NAME (repeatable); by default only the bound address "
                     "and, on loopback, localhost")
    for sp in (run, mcp):
        sp.add_argument("--root", action="append", default=[], metavar="DIR",
                        help="a directory tasks' `files` may be read from, besides the working directory "
                             "(repeatable; also delegation.files.roots)")
    return p


#: The commands that render what the Delegator reports (cli_models.py).
REPORTS = {"resolve": cmd_resolve, "models": cmd_models, "doctor": cmd_doctor, "spend": cmd_spend}


def _hermes_home(args: argparse.Namespace) -> str | None:
    """--hermes [HOME], else the autodetected HERMES_HOME (no --config, no $HERMES_DELEGATE_CONFIG,
    no default config file, and hermes's config.yaml has a hermes_delegate: block); None = ours."""
    if hasattr(args, "hermes"):
        home: str = args.hermes  # --hermes HOME, or "" for the default
        return home
    if getattr(args, "config", None):
        return None
    from ..sources.hermes_home import autodetect  # noqa: PLC0415

    found = autodetect()
    return str(found) if found is not None else None


def _config(args: argparse.Namespace, hermes_home: str | None) -> Config:
    if hermes_home is not None:
        from ..sources.hermes_home import config_for_home  # noqa: PLC0415

        return config_for_home(hermes_home)
    return load_config(getattr(args, "config", None))


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    # a batch command is never killed by a stop signal, from here on (the config's loading included)
    signals = _StopSignals() if args.command in ("run", "demo") else None
    with signals or contextlib.nullcontext():
        return _main(args, out, signals)


def _main(args: argparse.Namespace, out: TextIO, signals: _StopSignals | None) -> int:
    _setup_logging(getattr(args, "verbose", 0))
    ctx = _Context()
    stdout, stderr = _Redacted(out, ctx), _Redacted(sys.stderr, ctx)
    try:
        hermes_home = _hermes_home(args)
        if args.command == "demo":
            return cmd_demo(args, ctx, stdout, stderr, signals)
        cfg = _config(args, hermes_home)
        if args.command == "mcp":
            return cmd_mcp(args, cfg, stderr)
        delegator = ctx.engine(cfg)
        if args.command == "run":
            return cmd_run(args, delegator, stdout, stderr, signals)
        return REPORTS[args.command](args, delegator, stdout, _print_json)
    except BrokenPipeError:  # `hermes-delegate models --json | head`: the reader went away
        if out is sys.stdout:  # Python's recipe: point stdout at devnull so the exit flush is quiet
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
        return EXIT_TASKS_FAILED
    except DelegateError as exc:
        text = for_people(exc)
        if _hermes_home(args) is not None:  # hints name the block a hermes user edits
            from ..sources.hermes_home import hermes_keys  # noqa: PLC0415

            text = hermes_keys(text)
        print(f"hermes-delegate: {text}", file=stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hermes-delegate: interrupted", file=stderr)
        return EXIT_TASKS_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
