"""The actor base: one bounded inbox, one task, synchronous decisions.

An actor subclass implements three hooks. The runtime calls them in this order::

    on_start()              builds working state; runs again after every restart
      on_message(msg) ...   one message at a time, in inbox order
    on_stop()               last words: release resources (not called after a crash
                            past the restart budget if it raises)

An actor that must wait on the outside world (a socket, a database) does that in a task
it owns: :meth:`Actor.own_task` starts it (from ``on_start``, on the running loop), and
``on_stop`` asks it to finish; the runtime then awaits it (:meth:`Actor.join_tasks`), so
no task outlives its actor.

``on_message`` is synchronous: it decides and calls :meth:`Actor.emit` to send on a
named output port. Sends that find the receiver's inbox full (for a blocking or
conflating edge) are held and delivered before the next message is taken, so the actor
waits for its receivers and never holds more than one message's worth of output. That
is back-pressure without letting decisions await.

Lifecycle::

    CREATED --start--> RUNNING --crash--> RESTARTING --on_start--> RUNNING
                          |                   |
                          |            (budget spent)--> FAULTED
                          +--stop--> STOPPED
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec
import numpy as np
import structlog

from engine.clock import Clock, TimerHandle, stopwatch_ns
from engine.mailbox import EMPTY, STOP, Edge, Mailbox, Quiescence
from engine.messages import TimerFired

if TYPE_CHECKING:
    from engine.config import AccountConfig
    from engine.instruments import InstrumentTable

__all__ = [
    "STOP",
    "Actor",
    "ActorConfig",
    "ActorState",
    "ActorStats",
    "HandleTimes",
    "RunContext",
]


class ActorState(enum.StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    STOPPED = "STOPPED"
    FAULTED = "FAULTED"


class ActorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings every actor has. Actor kinds subclass this with their own fields.

    ``critical`` defaults to the kind's own judgement (risk gate and router are critical).
    Restart back-off doubles from ``backoff_initial_s`` up to ``backoff_max_s``; it is
    real time in live and paper mode, and no time in a replay.
    """

    kind: str
    inbox: int = 1024
    critical: bool | None = None
    restart_budget: int = 3
    restart_window_s: float = 60.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.inbox < 1:
            raise ValueError("inbox must hold at least 1 message")
        if self.restart_budget < 0:
            raise ValueError("restart_budget must be 0 or more")


class RunContext:
    """What every actor of one run shares: the clock, the instruments, the account, and
    the folder of the configuration file (``base_dir``, what relative paths in it are
    relative to; None: the working directory)."""

    __slots__ = ("account", "base_dir", "clock", "instruments", "quiescence")

    def __init__(
        self,
        clock: Clock,
        instruments: InstrumentTable,
        account: AccountConfig,
        quiescence: Quiescence | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.clock = clock
        self.instruments = instruments
        self.account = account
        self.quiescence = quiescence if quiescence is not None else Quiescence()
        self.base_dir = base_dir


class HandleTimes:
    """The distribution of one actor's per-message handling time, in power-of-two buckets.

    ``counts[i]`` is how many messages took ``t`` ns with ``t.bit_length() == i``, that is
    ``2**(i-1) <= t < 2**i`` (``counts[0]``: 0 ns, a clock too coarse to see it); the last
    bucket also holds anything slower. A fixed list of ints: one increment per message,
    no allocation, and no quantile estimate in-process (Prometheus does that).
    ``sum_ns`` is the total of the times recorded.
    """

    BUCKETS: ClassVar[int] = 40
    """``2**39`` ns is about 9 minutes: no handler should get near it."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.sum_ns = 0

    def record(self, took_ns: int) -> None:
        i = took_ns.bit_length()
        self.counts[i if i < self.BUCKETS else self.BUCKETS - 1] += 1
        self.sum_ns += took_ns

    @property
    def count(self) -> int:
        return sum(self.counts)

    def upper_bounds_ns(self) -> list[int]:
        """The inclusive upper bound of each bucket but the last (which is unbounded)."""
        return [(1 << i) - 1 for i in range(self.BUCKETS - 1)]


class ActorStats:
    """Counters of one actor, for metrics and the run summary.

    ``handle_times`` is None unless :meth:`track_handle_times` was called: the handling
    time of every message is then also recorded in a histogram (what the daemon exports
    to Prometheus). Off by default, so a replay's dispatch loop does no work for it.
    """

    __slots__ = ("errors", "handle_ns", "handle_times", "max_handle_ns", "processed", "restarts")

    def __init__(self) -> None:
        self.processed = 0
        self.errors = 0
        self.restarts = 0
        self.handle_ns = 0
        self.max_handle_ns = 0
        self.handle_times: HandleTimes | None = None

    def track_handle_times(self, enabled: bool = True) -> None:
        """Start (or stop) recording each message's handling time in ``handle_times``.
        Starting again keeps the counts already recorded."""
        if not enabled:
            self.handle_times = None
        elif self.handle_times is None:
            self.handle_times = HandleTimes()

    def as_dict(self, inbox: Mailbox) -> dict[str, int]:
        return {
            "processed": self.processed,
            "errors": self.errors,
            "restarts": self.restarts,
            "handle_ns": self.handle_ns,
            "max_handle_ns": self.max_handle_ns,
            "inbox_depth": inbox.size,
            "inbox_high_water": inbox.high_water,
            "inbox_capacity": inbox.capacity,
            "blocked": inbox.blocked,
            "conflated": inbox.conflated,
            "dropped": inbox.dropped,
        }


C = TypeVar("C", bound=ActorConfig)


class Actor(Generic[C]):
    """Base of every actor. See the module docstring for the hooks and their order."""

    Config: ClassVar[type[ActorConfig]] = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    """Names of the output ports the wiring may connect."""
    is_strategy: ClassVar[bool] = False
    """A strategy: the console lists it and can stop, start and retune it."""
    broker_session: ClassVar[bool] = False
    """Holds the session with a broker (or the simulated venue standing in for one): while
    it is down the broker is disconnected, and the supervisor says so in an alert."""
    market_data_ports: ClassVar[frozenset[str]] = frozenset()
    """Output ports that carry market data: it may not take the reserved slots of the
    inboxes it enters (``Mailbox.reserve``), which stay free for order traffic."""
    critical_by_default: ClassVar[bool] = False
    observer: ClassVar[bool] = False
    """An observer only follows the others (a mirror of the state for other processes): it
    starts before every actor that is not one and stops after them, so it also receives
    what they send as they stop."""
    join_timeout_s: float = 10.0
    """How long :meth:`join_tasks` waits for owned tasks before cancelling them."""

    def __init__(self, name: str, config: C, ctx: RunContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        self.clock = ctx.clock
        self.inbox = Mailbox(name, config.inbox, ctx.quiescence)
        self.ports: dict[str, list[Edge]] = {port: [] for port in self.outputs}
        self.stats = ActorStats()
        self.state = ActorState.CREATED
        self.log = structlog.get_logger("tradingd").bind(actor=name)
        self._staged: list[tuple[Edge, Any]] = []
        self._timers: dict[str, TimerHandle] = {}
        self._ready = False  # queued to run (inline execution)
        self._owned: list[asyncio.Task[None]] = []

    @property
    def critical(self) -> bool:
        return self.critical_by_default if self.config.critical is None else self.config.critical

    # --- hooks ---------------------------------------------------------------------------

    def check_config(self) -> None:
        """Check the configuration against the run (its instruments, its account) when the
        system is built, before anything starts. Raise ValueError ending in
        `` - at `$.field` `` to name the offending field."""

    def on_start(self) -> None:
        """Build working state. Runs at start and again after every restart."""

    def on_message(self, msg: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} handles no messages")

    def on_stop(self) -> None:
        """Release resources; the inbox has been drained up to the stop request."""

    def scan_batch(self, batch: np.ndarray, instrument_ids: tuple[str, ...]) -> int:
        """Look-ahead for replay (optional): the index of the first tick in ``batch`` at
        which this actor would send anything, or ``len(batch)`` if none.

        Must not change any state. Actors that may act on market data and receive
        :class:`~engine.messages.QuoteBatch` override this; the replay scheduler cuts
        every batch just after the earliest such tick. The default means "never acts on
        market data alone".
        """
        return len(batch)

    @property
    def scans_batches(self) -> bool:
        return type(self).scan_batch is not Actor.scan_batch

    @property
    def may_act_on_market_data(self) -> bool:
        """Whether :meth:`scan_batch` could find anything now (False lets the replay skip
        the look-ahead, e.g. a venue with no resting orders)."""
        return self.scans_batches

    # --- sending -------------------------------------------------------------------------

    def emit(self, port: str, msg: Any) -> None:
        """Send ``msg`` on every edge wired to ``port``. Never waits; see module docstring."""
        staged = self._staged
        for edge in self.ports[port]:
            types = edge.types
            if types is not None and type(msg) not in types:
                continue
            if staged:
                staged.append((edge, msg))
            elif edge.fast:
                if not edge.target.offer_block(msg):
                    staged.append((edge, msg))
            elif not edge.offer(msg):
                staged.append((edge, msg))

    def wired(self, port: str) -> bool:
        return bool(self.ports[port])

    async def _flush(self) -> None:
        staged = self._staged
        i = 0
        try:
            while i < len(staged):
                edge, msg = staged[i]
                await edge.put(msg)
                i += 1
        finally:
            del staged[:i]

    # --- timers --------------------------------------------------------------------------

    def timer_at(self, ts: int, name: str, payload: Any = None, *, drain: bool = False) -> None:
        """Deliver ``TimerFired(name, payload)`` to this actor's inbox at clock time ``ts``.

        Setting a timer with a name already pending replaces it.
        """
        self.cancel_timer(name)
        self._timers[name] = self.clock.at(
            ts, lambda t: self._timer_due(name, payload, t, repeating=False), drain=drain
        )

    def timer_every(
        self, interval_ns: int, name: str, payload: Any = None, *, start: int | None = None
    ) -> None:
        """Deliver ``TimerFired(name, payload)`` every ``interval_ns`` of clock time."""
        self.cancel_timer(name)
        self._timers[name] = self.clock.every(
            interval_ns, lambda t: self._timer_due(name, payload, t, repeating=True), start=start
        )

    def cancel_timer(self, name: str) -> bool:
        handle = self._timers.pop(name, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def cancel_all_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _timer_due(self, name: str, payload: Any, ts: int, *, repeating: bool) -> None:
        if not repeating:
            self._timers.pop(name, None)
        self.inbox.put_nowait(
            TimerFired(name=name, payload=payload, ts_event=ts, ts_init=self.clock.now())
        )

    # --- owned tasks -------------------------------------------------------------------

    def own_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task this actor owns, on the running loop (call from
        ``on_start``). ``on_stop`` must ask it to finish; the runtime awaits it after
        ``on_stop`` (:meth:`join_tasks`). A task that raised is logged there."""
        self._owned = [t for t in self._owned if not t.done()]
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._owned.append(task)
        return task

    async def join_tasks(self) -> None:
        """Await the tasks this actor owns (``on_stop`` has asked them to finish); cancel
        those still running after ``join_timeout_s`` and await them too. Called by the
        runtime after the final ``on_stop``; returns at once for an actor that owns none."""
        if not self._owned:
            return
        tasks, self._owned = self._owned, []
        _, pending = await asyncio.wait(tasks, timeout=self.join_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            self.log.error("owned tasks did not finish in time; cancelled", tasks=len(pending))
            await asyncio.wait(pending)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                self.log.error(
                    "owned task failed", task=task.get_name(), error=repr(task.exception())
                )

    # --- the loop ------------------------------------------------------------------------

    async def run_loop(self) -> None:
        """Take messages until ``STOP``. An exception from a hook propagates (to the
        supervisor) after the message has been counted and its sends delivered."""
        inbox = self.inbox
        stats = self.stats
        quiescence = inbox.quiescence
        handle = self.on_message
        staged = self._staged
        get_nowait = inbox.get_nowait
        while True:
            msg = get_nowait()
            if msg is EMPTY:
                msg = await inbox.get()
            if msg is STOP:
                return
            started = stopwatch_ns()
            try:
                handle(msg)
            except Exception:
                stats.errors += 1
                await self._finish_message(started, quiescence)
                raise
            took = stopwatch_ns() - started
            stats.processed += 1
            stats.handle_ns += took
            stats.max_handle_ns = max(stats.max_handle_ns, took)
            if stats.handle_times is not None:
                stats.handle_times.record(took)
            if staged:
                try:
                    await self._flush()
                finally:
                    quiescence.done()
            else:
                quiescence.done()

    async def _finish_message(self, started: int, quiescence: Quiescence) -> None:
        """Count a message whose handling raised, and deliver what it had sent."""
        took = stopwatch_ns() - started
        self.stats.processed += 1
        self.stats.handle_ns += took
        if self.stats.handle_times is not None:
            self.stats.handle_times.record(took)
        try:
            if self._staged:
                await self._flush()
        finally:
            quiescence.done()

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON values: name, state, the counters of :meth:`ActorStats.as_dict`, and,
        while handling times are tracked, ``handle_times``: ``{"counts": [...], "sum_ns"}``
        (see :class:`HandleTimes`)."""
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state.value,
            **self.stats.as_dict(self.inbox),
        }
        times = self.stats.handle_times
        if times is not None:
            out["handle_times"] = {"counts": list(times.counts), "sum_ns": times.sum_ns}
        return out

    def timed_handler(self) -> Callable[[Any], None]:
        """``on_message``, wrapped to record each call's handling time in
        ``stats.handle_times`` while that is on (the inline executor times a run of
        messages, not each one). A message that raises is recorded too, as it is counted
        in ``processed``."""
        handle = self.on_message
        times = self.stats.handle_times
        if times is None:
            return handle
        record = times.record

        def timed(msg: Any) -> None:
            started = stopwatch_ns()
            try:
                handle(msg)
            finally:
                record(stopwatch_ns() - started)

        return timed

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.state.value}>"
