"""Clocks: the only place in ``engine/`` and ``actors/`` that may know what time it is.

Every actor is handed a clock. In a replay it is a :class:`ReplayClock`, whose time only
moves when the replay scheduler moves it, which is what makes a backtest repeatable. In
paper and live trading it is a :class:`LiveClock` on the wall clock. Both run timers
(``at``, ``every``) that actors use for schedules.

``stopwatch_ns`` is a monotonic counter for measuring how long handling took (metrics
only). It must never feed a trading decision.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = [
    "NANOS_PER_SECOND",
    "Clock",
    "LiveClock",
    "ReplayClock",
    "TimerHandle",
    "pause",
    "stopwatch_ns",
]

NANOS_PER_SECOND = 1_000_000_000

stopwatch_ns: Callable[[], int] = time.perf_counter_ns
"""Monotonic nanoseconds for measuring handling time. Metrics only, never decisions."""

TimerCallback = Callable[[int], None]


class TimerHandle:
    """A scheduled timer. ``drain`` marks timers that carry order traffic (a simulated
    venue's latency): an orderly stop waits for them."""

    __slots__ = ("_live_handle", "callback", "cancelled", "drain", "interval", "ts")

    def __init__(self, ts: int, callback: TimerCallback, interval: int | None, drain: bool) -> None:
        self.ts = ts
        self.callback = callback
        self.interval = interval
        self.drain = drain
        self.cancelled = False
        self._live_handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self._live_handle is not None:
            self._live_handle.cancel()


class Clock(ABC):
    """Time in integer nanoseconds since the Unix epoch (UTC), and timers on it."""

    @abstractmethod
    def now(self) -> int: ...

    @abstractmethod
    def _schedule(self, handle: TimerHandle) -> None: ...

    @property
    @abstractmethod
    def is_replay(self) -> bool: ...

    @abstractmethod
    def pending_drain_timers(self) -> int:
        """How many timers carrying order traffic have not fired yet."""

    def at(self, ts: int, callback: TimerCallback, *, drain: bool = False) -> TimerHandle:
        """Call ``callback(ts)`` once the clock reaches ``ts`` (at once if it already has)."""
        handle = TimerHandle(ts, callback, None, drain)
        self._schedule(handle)
        return handle

    def every(
        self,
        interval_ns: int,
        callback: TimerCallback,
        *,
        start: int | None = None,
        drain: bool = False,
    ) -> TimerHandle:
        """Call ``callback(ts)`` every ``interval_ns``, first at ``start`` (default now+interval).

        Firing times do not drift: the n-th call is at ``start + n * interval_ns``.
        """
        if interval_ns <= 0:
            raise ValueError(f"timer interval must be positive, got {interval_ns} ns")
        first = self.now() + interval_ns if start is None else start
        handle = TimerHandle(first, callback, interval_ns, drain)
        self._schedule(handle)
        return handle


class ReplayClock(Clock):
    """Virtual time, moved forward only by the replay scheduler (or a test).

    Timers wait in a heap; :meth:`fire_next` advances to the earliest and runs every
    timer due at that instant, in the order they were set.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._heap: list[tuple[int, int, TimerHandle]] = []
        self._seq = 0

    @property
    def is_replay(self) -> bool:
        return True

    def now(self) -> int:
        return self._now

    def set_time(self, ts: int) -> None:
        """Move virtual time to ``ts``. Time never goes backwards."""
        self._now = max(self._now, ts)

    def _schedule(self, handle: TimerHandle) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (handle.ts, self._seq, handle))

    def next_timer_ts(self) -> int | None:
        """When the earliest live timer is due, or None when none is set."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pending_drain_timers(self) -> int:
        return sum(1 for _, _, h in self._heap if h.drain and not h.cancelled)

    def fire_next(self) -> int:
        """Advance to the earliest due timer and fire all timers due then; return how many."""
        ts = self.next_timer_ts()
        if ts is None:
            return 0
        self.set_time(ts)
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= ts:
            _, _, handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            if handle.interval is not None:
                handle.ts += handle.interval
                self._schedule(handle)
            handle.callback(ts)
            fired += 1
        return fired

    def advance_to(self, ts: int) -> int:
        """Fire every timer due up to ``ts`` in order, then set the time to ``ts`` (tests)."""
        fired = 0
        while (due := self.next_timer_ts()) is not None and due <= ts:
            fired += self.fire_next()
        self.set_time(ts)
        return fired


class LiveClock(Clock):
    """The wall clock (UTC), with timers on the running event loop."""

    def __init__(self) -> None:
        self._drain: set[TimerHandle] = set()

    @property
    def is_replay(self) -> bool:
        return False

    def now(self) -> int:
        return time.time_ns()

    def _schedule(self, handle: TimerHandle) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (handle.ts - time.time_ns()) / NANOS_PER_SECOND)
        handle._live_handle = loop.call_later(delay, self._fire, handle)
        if handle.drain:
            self._drain.add(handle)

    def pending_drain_timers(self) -> int:
        self._drain = {h for h in self._drain if not h.cancelled}
        return len(self._drain)

    def _fire(self, handle: TimerHandle) -> None:
        if handle.interval is None:
            self._drain.discard(handle)
        if handle.cancelled:
            return
        ts = handle.ts
        if handle.interval is not None:
            handle.ts += handle.interval
            self._schedule(handle)
        handle.callback(ts)


async def pause(clock: Clock, seconds: float) -> None:
    """Wait ``seconds`` of real time on a live clock; no time at all in a replay.

    For restart back-off: a replay must not spend virtual time on a crash.
    """
    if seconds > 0 and not clock.is_replay:
        await asyncio.sleep(seconds)
