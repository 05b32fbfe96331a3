"""Run a loopback provider from the command line.

    python -m hermes_delegate.loopback --port 0 --name p1 --latency 0.1 --rps 5 --models a,b
    python -m hermes_delegate.loopback --rps 5 --tpm 60000 --token-window 1 --ratelimit-headers anthropic \
        --retry-after auto

Prints the base URL (``http://127.0.0.1:PORT/v1``) on one line of stdout, then
serves until SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .responses import FAULTS
from .server import RATELIMIT_DIALECTS, LoopbackProvider


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "") else float(text)


def _retry_after(text: str) -> float | str | None:
    return "auto" if text.lower() == "auto" else _optional_float(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hermes_delegate.loopback", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--name", default="loopback")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per chat request")
    ap.add_argument("--rps", type=_optional_float, default=None, help="max requests per sliding 1 s window")
    ap.add_argument("--max-concurrent", type=int, default=None)
    ap.add_argument("--tpm", type=_optional_float, default=None,
                    help="max tokens per minute (prompt + max_tokens or reply)")
    ap.add_argument("--token-window", type=float, default=60.0,
                    help="seconds of the sliding token window (admits tpm * window / 60 tokens; default 60)")
    ap.add_argument("--ratelimit-headers", choices=RATELIMIT_DIALECTS, default="openai",
                    help="rate-limit header dialect (default openai)")
    ap.add_argument("--retry-after", type=_retry_after, default=1.0,
                    help="Retry-After seconds on 429 ('none' omits, 'auto' = the actual wait)")
    ap.add_argument("--models", default="", help="comma-separated ids for GET /v1/models")
    ap.add_argument("--fault", default=None, choices=sorted(FAULTS) + ["ok"],
                    help="fault applied to every chat request")
    args = ap.parse_args(argv)

    provider = LoopbackProvider(
        args.name,
        host=args.host,
        port=args.port,
        latency_s=args.latency,
        rps=args.rps,
        max_concurrent=args.max_concurrent,
        retry_after=args.retry_after,
        tpm=args.tpm,
        token_window_s=args.token_window,
        ratelimit_headers=args.ratelimit_headers,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
    )
    if args.fault:
        provider.set_fault(args.fault)

    done = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    provider.start()
    try:
        sys.stdout.write(provider.base_url + "\n")
        sys.stdout.flush()
        while not done.wait(0.5):
            pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
