"""The one way synchronous code runs the async engine (the CLI, `Delegator.run_sync`, sync tool calls).

    result = run_sync(lambda: delegator.run(tasks), on_signal=delegator.interrupt)

The coroutine runs under `asyncio.run` on this thread, or on a helper thread when this thread already
runs a loop (a host calling from inside its own loop). Before the loop ends, its pooled provider
connections are closed. With `on_signal`, SIGINT, SIGTERM and SIGHUP call it (on the main thread
only), so a batch is interrupted cleanly instead of the process dying with its results unprinted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from typing import Awaitable, Callable, TypeVar

from ._litellm import close_loop_clients

__all__ = ["run_sync", "INTERRUPT_SIGNALS"]

T = TypeVar("T")

#: What containers, systemd, CI runners and terminals send to stop a process.
INTERRUPT_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP"))
                          if s is not None)


def run_sync(make: Callable[[], Awaitable[T]], *, on_signal: Callable[[], None] | None = None) -> T:
    """Run `make()` to completion from synchronous code and return its result."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        installed = []
        if on_signal is not None and threading.current_thread() is threading.main_thread():
            for sig in INTERRUPT_SIGNALS:
                try:
                    previous = signal.getsignal(sig)
                    loop.add_signal_handler(sig, on_signal)
                    installed.append((sig, previous))
                except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - non-POSIX
                    pass
        try:
            return await make()
        finally:
            for sig, previous in installed:  # give back what was there (asyncio would set the default)
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)
            await close_loop_clients()  # this loop ends here: its pooled connections must not outlive it

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="delegate-sync") as pool:
        return pool.submit(lambda: asyncio.run(main())).result()
