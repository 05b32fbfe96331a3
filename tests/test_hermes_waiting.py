"""A hermes thread waits on the plugin loop in short polls (plugins/hermes/waiting.py).

The race (issue 24): the future completes after `result(timeout)` gave up but before the caller
looks at it again. The caller must then report the call's real outcome, never a failure. The
window is made deterministic by a future whose timed `result` lets the real call finish, copies
its outcome and only then raises TimeoutError, as a timed wait that expired a moment too early.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import LoopbackPair, loopback_config
from hermes_delegate import Delegator, ProviderError
from hermes_delegate_hermes import middleware, runtime, waiting


class CompletesInTheWindow(concurrent.futures.Future):
    """Completed (with `source`'s outcome, or `value`) by its first timed wait, which still raises
    TimeoutError: the completion lands between `result(timeout)` raising and the caller's next look."""

    def __init__(self, source: concurrent.futures.Future | None = None, value: Any = None,
                 error: BaseException | None = None, cancel: bool = False):
        super().__init__()
        self.source, self.value, self.error, self.cancel_it = source, value, error, cancel
        self.timed_waits = 0

    def result(self, timeout: float | None = None) -> Any:
        if timeout is not None and not self.done():
            self.timed_waits += 1
            self._complete()
            raise concurrent.futures.TimeoutError()
        return super().result(timeout)

    def _complete(self) -> None:
        if self.cancel_it:
            self.cancel()
            return
        if self.source is not None:
            try:
                self.set_result(self.source.result(timeout=30))
            except BaseException as exc:  # noqa: BLE001 - copied as the outcome
                self.set_exception(exc)
        elif self.error is not None:
            self.set_exception(self.error)
        else:
            self.set_result(self.value)


def never(*_: Any) -> None:
    raise AssertionError("a poll found the future running, but it completed in the window")


# -- the helper, every outcome ----------------------------------------------------------------
def test_a_result_that_lands_in_the_window_is_returned():
    fut = CompletesInTheWindow(value={"ok": 1})
    assert waiting.wait(fut, 0.01, never) == {"ok": 1}
    assert fut.timed_waits == 1


def test_an_error_that_lands_in_the_window_is_raised_as_itself():
    fut = CompletesInTheWindow(error=ValueError("provider said no"))
    with pytest.raises(ValueError, match="provider said no"):
        waiting.wait(fut, 0.01, never)


def test_the_calls_own_timeout_is_raised_once_not_polled_forever():
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_exception(TimeoutError("the call timed out"))
    with pytest.raises(TimeoutError, match="the call timed out"):
        waiting.wait(fut, 0.01, never)


def test_a_cancel_in_the_window_raises_cancelled():
    with pytest.raises(concurrent.futures.CancelledError):
        waiting.wait(CompletesInTheWindow(cancel=True), 0.01, never)


def test_polls_call_between_until_the_future_is_done():
    fut: concurrent.futures.Future = concurrent.futures.Future()
    polls = []

    def between() -> None:
        polls.append(1)
        if len(polls) == 3:
            fut.set_result("done")

    assert waiting.wait(fut, 0.001, between) == "done"
    assert len(polls) == 3


# -- the llm_execution middleware, over a real Delegator and a loopback provider ----------------
@pytest.fixture
def plugin_loop() -> asyncio.AbstractEventLoop:
    """The plugin's own loop (a daemon thread, stopped at interpreter exit), as the worker passes it."""
    return runtime.loop()


@pytest.fixture
def window(monkeypatch: pytest.MonkeyPatch) -> list[CompletesInTheWindow]:
    """Every future the middleware submits completes in the window (the real call, the real loop)."""
    made: list[CompletesInTheWindow] = []
    real = asyncio.run_coroutine_threadsafe

    def submit(coro: Any, loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future:
        made.append(CompletesInTheWindow(real(coro, loop)))
        return made[-1]

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", submit)
    return made


def _session(providers: LoopbackPair, loop: asyncio.AbstractEventLoop) -> middleware.RoutedSession:
    d = Delegator(loopback_config(providers), env={})
    child = SimpleNamespace(_interrupt_requested=False)
    return middleware.RoutedSession(child, d.resolver.resolve("alpha"), d, loop)


def test_a_routed_call_that_completes_in_the_window_is_served_not_failed(providers, plugin_loop, window):
    providers.alpha.responder = lambda body, provider: "the answer"
    session = _session(providers, plugin_loop)
    response = session.serve({"messages": [{"role": "user", "content": "hi"}]})
    assert window and window[0].timed_waits == 1  # the window was hit
    assert session.failure is None and not session.interrupted
    assert response.choices[0].message.content == "the answer"
    assert len(session.completions) == 1 and session.completions[0].text == "the answer"


def test_a_routed_call_that_fails_in_the_window_is_reported_with_its_own_error(providers, plugin_loop, window):
    providers.alpha.set_fault("500")
    session = _session(providers, plugin_loop)
    response = session.serve({"messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(session.failure, ProviderError), session.failure
    assert "the model call failed" in response.choices[0].message.content
