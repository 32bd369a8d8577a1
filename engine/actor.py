"""The actor base: one bounded inbox, one task, synchronous decisions.

An actor subclass implements three hooks. The runtime calls them in this order::

    on_start()              builds working state; runs again after every restart
      on_message(msg) ...   one message at a time, in inbox order
    on_stop()               last words: release resources (not called after a crash
                            past the restart budget if it raises)

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

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec
import numpy as np
import structlog

from engine.clock import Clock, TimerHandle, stopwatch_ns
from engine.mailbox import EMPTY, STOP, Edge, Mailbox, Overflow, Quiescence
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
    "RunContext",
]


_BLOCK = Overflow.BLOCK  # a global: on Python 3.11 ``Overflow.BLOCK`` costs ten times more


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


class ActorStats:
    """Counters of one actor, for metrics and the run summary."""

    __slots__ = ("errors", "handle_ns", "max_handle_ns", "processed", "restarts")

    def __init__(self) -> None:
        self.processed = 0
        self.errors = 0
        self.restarts = 0
        self.handle_ns = 0
        self.max_handle_ns = 0

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
    critical_by_default: ClassVar[bool] = False

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
            elif edge.policy is _BLOCK:
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
        try:
            if self._staged:
                await self._flush()
        finally:
            quiescence.done()

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state.value, **self.stats.as_dict(self.inbox)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.state.value}>"
