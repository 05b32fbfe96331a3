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
import contextlib
import signal
import threading
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from ..routing._litellm import close_loop_clients

__all__ = ["run_sync", "signals_interrupt", "INTERRUPT_SIGNALS"]

T = TypeVar("T")

#: What containers, systemd, CI runners and terminals send to stop a process.
INTERRUPT_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP"))
                          if s is not None)


def run_sync(make: Callable[[], Awaitable[T]], *, on_signal: Callable[[], None] | None = None) -> T:
    """Run `make()` to completion from synchronous code and return its result."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_redis_ping)
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
            # Give back what was there. asyncio's remove_signal_handler sets the default, deadly handler
            # first: with the signals blocked meanwhile, one arriving now waits for the handler given
            # back instead of killing the process before its results print.
            with _blocked([sig for sig, _ in installed]):
                for sig, previous in installed:
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


@contextlib.contextmanager
def _blocked(signals: list[int]) -> Iterator[None]:
    """Hold these signals pending (POSIX; elsewhere a no-op) until the block ends."""
    block = getattr(signal, "pthread_sigmask", None)
    if not signals or block is None:
        yield
        return
    old = block(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, old)


def _quiet_redis_ping(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """LiteLLM's RedisCache starts a health ping it never awaits: with Redis down, its exception would
    print as 'Task exception was never retrieved'. The batch reports that outage itself (each limited
    task fails as `limiter_unavailable`), so that one message is dropped; every other one is kept."""
    future = context.get("future")
    coro = future.get_coro() if isinstance(future, asyncio.Task) else None
    if getattr(coro, "__qualname__", "") == "RedisCache.ping" and "never retrieved" in str(context.get("message")):
        return
    loop.default_exception_handler(context)


@contextlib.contextmanager
def signals_interrupt(interrupt: Callable[[], None]) -> Iterator[Callable[[], None]]:
    """For the whole command, not only while the loop runs: a stop signal (a first one, or a second
    one during shutdown or while the result prints) interrupts the batch and never kills the process,
    so what is known is always printed and the exit code is 1."""
    saved, seen = [], []

    def stop() -> None:
        seen.append(True)
        interrupt()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop()

    if threading.current_thread() is threading.main_thread():
        for sig in INTERRUPT_SIGNALS:
            with contextlib.suppress(OSError, ValueError):
                saved.append((sig, signal.signal(sig, on_signal)))
    try:
        yield stop  # the loop's own signal handler (sync.run_sync) calls this too
    finally:
        # After a stop signal the process is on its way out: one more during the interpreter's teardown
        # (which resets Python-level handlers to the default, deadly one) must not turn exit 1 into
        # death by signal, so from here on stop signals are ignored.
        for sig, previous in saved:
            signal.signal(sig, signal.SIG_IGN if seen else previous)
