"""Small helpers shared by the tests: ``from tests.helpers import eventually, wait_until``.

Both poll a synchronous predicate until it returns something truthy, and return that
value. On timeout they raise ``AssertionError`` carrying ``message`` and the predicate's
last value, so a failing test says what it was waiting for and what it saw instead.
Exceptions raised by the predicate propagate at once (they are bugs, not "not yet").

``eventually`` is for async tests: it yields to the event loop between polls so the actors
under test get to run. ``wait_until`` is its blocking twin for system tests that watch a
separate process (a daemon, a Redis stream) from synchronous code.

These run on the wall clock on purpose: they bound how long a test waits, and never feed
the code under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually", "wait_until"]

T = TypeVar("T")


def _timeout_error(
    predicate: Callable[[], object], timeout: float, message: str | None, last: object
) -> AssertionError:
    name = getattr(predicate, "__qualname__", None) or repr(predicate)
    what = message or f"condition {name} was not met"
    return AssertionError(f"{what} within {timeout:g}s (last value: {last!r})")


async def eventually(
    predicate: Callable[[], T],
    timeout: float = 5.0,  # noqa: ASYNC109 (a polling deadline, not a cancellation scope)
    interval: float = 0.005,
    message: str | None = None,
) -> T:
    """Await until ``predicate()`` is truthy; return its value.

    The predicate is checked once more at the deadline, so a condition that became true
    while the loop was busy is not reported as a timeout.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"need timeout >= 0 and interval > 0, got {timeout=} {interval=}")
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(predicate, timeout, message, last)
        await asyncio.sleep(min(interval, remaining))


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | None = None,
) -> T:
    """Block until ``predicate()`` is truthy; return its value (for synchronous tests)."""
    if timeout < 0 or interval <= 0:
        raise ValueError(f"need timeout >= 0 and interval > 0, got {timeout=} {interval=}")
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(predicate, timeout, message, last)
        time.sleep(min(interval, remaining))
