"""Clocks: replay timers in virtual time, live timers on the event loop, actor timers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine.actor import Actor, ActorConfig, RunContext
from engine.clock import LiveClock, ReplayClock, pause
from engine.config import AccountConfig
from engine.instruments import Instrument, InstrumentTable
from engine.mailbox import EMPTY
from engine.messages import TimerFired
from tests.helpers import eventually

MS = 1_000_000


class Recorder:
    """A timer callback that records (label, ts fired with, clock time when fired)."""

    def __init__(self, clock: ReplayClock | LiveClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, label: str) -> Any:
        def fire(ts: int) -> None:
            self.calls.append((label, ts, self.clock.now()))

        return fire

    @property
    def labels(self) -> list[str]:
        return [c[0] for c in self.calls]


# --- ReplayClock -------------------------------------------------------------------------


def test_replay_clock_starts_where_told_and_only_moves_when_moved() -> None:
    clock = ReplayClock(start_ns=1_000)
    assert clock.now() == 1_000
    assert clock.is_replay
    clock.set_time(5_000)
    assert clock.now() == 5_000


def test_replay_time_never_goes_backwards() -> None:
    clock = ReplayClock(start_ns=5_000)
    clock.set_time(4_000)
    assert clock.now() == 5_000
    clock.advance_to(3_000)
    assert clock.now() == 5_000


def test_at_timers_fire_in_time_order_not_in_the_order_set() -> None:
    clock = ReplayClock()
    rec = Recorder(clock)
    clock.at(300, rec("c"))
    clock.at(100, rec("a"))
    clock.at(200, rec("b"))

    assert clock.advance_to(1_000) == 3
    assert rec.calls == [("a", 100, 100), ("b", 200, 200), ("c", 300, 300)]
    assert clock.now() == 1_000


def test_timers_due_at_the_same_time_fire_in_the_order_set() -> None:
    clock = ReplayClock()
    rec = Recorder(clock)
    for label in ("first", "second", "third", "fourth"):
        clock.at(500, rec(label))
    clock.at(400, rec("earlier"))

    assert clock.fire_next() == 1
    assert clock.fire_next() == 4
    assert rec.labels == ["earlier", "first", "second", "third", "fourth"]


def test_fire_next_moves_to_the_earliest_timer_and_fires_only_those_due_then() -> None:
    clock = ReplayClock(start_ns=10)
    rec = Recorder(clock)
    clock.at(50, rec("a"))
    clock.at(50, rec("b"))
    clock.at(70, rec("c"))

    assert clock.next_timer_ts() == 50
    assert clock.fire_next() == 2
    assert clock.now() == 50
    assert rec.labels == ["a", "b"]
    assert clock.next_timer_ts() == 70
    assert clock.fire_next() == 1
    assert clock.now() == 70
    assert clock.fire_next() == 0, "no timers left: nothing fires"
    assert clock.now() == 70
    assert clock.next_timer_ts() is None


def test_advance_to_fires_what_is_due_up_to_and_including_ts() -> None:
    clock = ReplayClock()
    rec = Recorder(clock)
    clock.at(100, rec("a"))
    clock.at(200, rec("b"))
    clock.at(201, rec("c"))

    assert clock.advance_to(200) == 2
    assert rec.labels == ["a", "b"]
    assert clock.now() == 200
    assert clock.next_timer_ts() == 201


def test_every_fires_on_a_fixed_grid_without_drift() -> None:
    clock = ReplayClock(start_ns=1_000)
    rec = Recorder(clock)
    clock.every(300, rec("tick"))  # first at now + interval

    clock.advance_to(2_000)
    assert [ts for _, ts, _ in rec.calls] == [1_300, 1_600, 1_900]

    # jumping far ahead fires every missed period at its own time, still on the grid
    clock.advance_to(3_000)
    assert [ts for _, ts, _ in rec.calls] == [1_300, 1_600, 1_900, 2_200, 2_500, 2_800]
    assert clock.next_timer_ts() == 3_100


def test_every_with_an_explicit_start() -> None:
    clock = ReplayClock()
    rec = Recorder(clock)
    clock.every(10, rec("t"), start=5)
    clock.advance_to(40)
    assert [ts for _, ts, _ in rec.calls] == [5, 15, 25, 35]


def test_every_refuses_a_non_positive_interval() -> None:
    clock = ReplayClock()
    with pytest.raises(ValueError, match="positive"):
        clock.every(0, lambda ts: None)
    with pytest.raises(ValueError, match="positive"):
        clock.every(-5, lambda ts: None)


def test_cancelled_timers_do_not_fire() -> None:
    clock = ReplayClock()
    rec = Recorder(clock)
    keep = clock.at(100, rec("keep"))
    gone = clock.at(50, rec("gone"))
    gone.cancel()

    assert clock.next_timer_ts() == 100, "a cancelled timer must not be reported as next"
    clock.advance_to(1_000)
    assert rec.labels == ["keep"]
    assert not keep.cancelled


def test_cancelling_a_repeating_timer_stops_it_even_from_its_own_callback() -> None:
    clock = ReplayClock()
    fired: list[int] = []
    handle = None

    def tick(ts: int) -> None:
        fired.append(ts)
        if len(fired) == 3:
            assert handle is not None
            handle.cancel()

    handle = clock.every(10, tick)
    clock.advance_to(1_000)
    assert fired == [10, 20, 30]
    assert clock.next_timer_ts() is None


def test_a_timer_set_in_the_past_fires_next_without_moving_time_back() -> None:
    clock = ReplayClock(start_ns=1_000)
    rec = Recorder(clock)
    clock.at(400, rec("late"))
    assert clock.next_timer_ts() == 400
    assert clock.fire_next() == 1
    assert rec.calls == [("late", 400, 1_000)]
    assert clock.now() == 1_000


def test_a_timer_set_from_a_callback_for_the_same_instant_fires_in_the_same_step() -> None:
    clock = ReplayClock()
    rec = Recorder(clock)

    def chain(ts: int) -> None:
        rec("first")(ts)
        clock.at(ts, rec("chained"))
        clock.at(ts + 5, rec("later"))

    clock.at(100, chain)
    assert clock.fire_next() == 2
    assert rec.labels == ["first", "chained"]
    assert clock.next_timer_ts() == 105


def test_pending_drain_timers_counts_live_order_traffic_timers() -> None:
    clock = ReplayClock()
    clock.at(10, lambda ts: None, drain=True)
    cancelled = clock.at(20, lambda ts: None, drain=True)
    clock.at(30, lambda ts: None)
    clock.every(5, lambda ts: None)
    assert clock.pending_drain_timers() == 2
    cancelled.cancel()
    assert clock.pending_drain_timers() == 1
    clock.advance_to(10)
    assert clock.pending_drain_timers() == 0


async def test_pause_takes_no_real_time_in_a_replay() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(pause(ReplayClock(), 3_600.0), 1.0)
    assert loop.time() - started < 1.0


# --- actor timers ------------------------------------------------------------------------


class TimerConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str = "timer_test"


def make_actor(clock: ReplayClock | LiveClock) -> Actor[TimerConfig]:
    instruments = InstrumentTable(
        [Instrument(id="A.SIM", asset_class="fx", quote_currency="USD", price_increment=0.01)]
    )
    ctx = RunContext(clock, instruments, AccountConfig(currency="USD", starting_balance=0.0))
    return Actor("algo", TimerConfig(), ctx)


def inbox_contents(actor: Actor[Any]) -> list[Any]:
    out = []
    while (msg := actor.inbox.get_nowait()) is not EMPTY:
        out.append(msg)
    return out


def test_timer_at_delivers_timer_fired_into_the_inbox() -> None:
    clock = ReplayClock(start_ns=1_000)
    actor = make_actor(clock)
    actor.timer_at(1_500, "slice", payload={"child": 1})

    clock.advance_to(1_499)
    assert actor.inbox.size == 0
    clock.advance_to(2_000)
    assert inbox_contents(actor) == [
        TimerFired(name="slice", payload={"child": 1}, ts_event=1_500, ts_init=1_500)
    ]
    assert actor.inbox.received == 1
    assert actor.ctx.quiescence.pending == 1, "a timer message counts until it is handled"


def test_timer_every_delivers_one_message_per_period() -> None:
    clock = ReplayClock()
    actor = make_actor(clock)
    actor.timer_every(100, "heartbeat", start=50)
    clock.advance_to(360)
    got = inbox_contents(actor)
    assert [(m.name, m.ts_event) for m in got] == [
        ("heartbeat", 50),
        ("heartbeat", 150),
        ("heartbeat", 250),
        ("heartbeat", 350),
    ]


def test_setting_a_timer_with_a_pending_name_replaces_it() -> None:
    clock = ReplayClock()
    actor = make_actor(clock)
    actor.timer_at(100, "expiry", payload="old")
    actor.timer_at(200, "expiry", payload="new")
    clock.advance_to(1_000)
    got = inbox_contents(actor)
    assert [(m.payload, m.ts_event) for m in got] == [("new", 200)]


def test_cancel_timer_and_cancel_all_timers() -> None:
    clock = ReplayClock()
    actor = make_actor(clock)
    actor.timer_at(100, "a")
    actor.timer_at(100, "b")
    actor.timer_every(10, "c")
    assert actor.cancel_timer("a") is True
    assert actor.cancel_timer("a") is False, "cancelling twice reports nothing to cancel"
    assert actor.cancel_timer("never-set") is False
    clock.advance_to(25)
    assert [m.name for m in inbox_contents(actor)] == ["c", "c"]

    actor.cancel_all_timers()
    clock.advance_to(1_000)
    assert inbox_contents(actor) == []
    assert clock.next_timer_ts() is None


def test_a_one_shot_timer_forgets_its_name_when_it_fires() -> None:
    clock = ReplayClock()
    actor = make_actor(clock)
    actor.timer_at(10, "once")
    clock.advance_to(10)
    assert actor.cancel_timer("once") is False


# --- LiveClock ---------------------------------------------------------------------------


async def test_live_clock_reads_the_wall_clock() -> None:
    clock = LiveClock()
    assert not clock.is_replay
    assert abs(clock.now() - time.time_ns()) < 1_000 * MS


async def test_live_at_timer_fires_after_its_time() -> None:
    clock = LiveClock()
    rec = Recorder(clock)
    due = clock.now() + 5 * MS
    clock.at(due, rec("a"))
    assert rec.calls == []
    await eventually(lambda: rec.calls, timeout=2.0)
    (label, ts, fired_at) = rec.calls[0]
    assert (label, ts) == ("a", due)
    assert fired_at >= due - 1 * MS  # the event loop may round a few microseconds early


async def test_live_timers_fire_in_time_order() -> None:
    clock = LiveClock()
    rec = Recorder(clock)
    now = clock.now()
    clock.at(now + 15 * MS, rec("c"))
    clock.at(now + 5 * MS, rec("a"))
    clock.at(now + 10 * MS, rec("b"))
    await eventually(lambda: len(rec.calls) == 3, timeout=2.0)
    assert rec.labels == ["a", "b", "c"]


async def test_live_every_keeps_its_grid_and_stops_when_cancelled() -> None:
    clock = LiveClock()
    rec = Recorder(clock)
    start = clock.now() + 5 * MS
    handle = clock.every(5 * MS, rec("t"), start=start)
    await eventually(lambda: len(rec.calls) >= 3, timeout=2.0)
    handle.cancel()
    n = len(rec.calls)
    assert [ts for _, ts, _ in rec.calls] == [start + i * 5 * MS for i in range(n)]
    # after cancelling, the next period passes without a call
    next_due = start + n * 5 * MS
    await eventually(lambda: clock.now() > next_due + 10 * MS, timeout=2.0)
    assert len(rec.calls) == n


async def test_live_cancelled_at_timer_does_not_fire() -> None:
    clock = LiveClock()
    rec = Recorder(clock)
    due = clock.now() + 5 * MS
    clock.at(due, rec("gone")).cancel()
    clock.at(due + 5 * MS, rec("kept"))
    await eventually(lambda: rec.calls, timeout=2.0)
    assert rec.labels == ["kept"]


async def test_live_actor_timer_delivers_timer_fired() -> None:
    clock = LiveClock()
    actor = make_actor(clock)
    due = clock.now() + 5 * MS
    actor.timer_at(due, "arrive", payload="order-1")
    await eventually(lambda: actor.inbox.size == 1, timeout=2.0)
    (msg,) = inbox_contents(actor)
    assert isinstance(msg, TimerFired)
    assert (msg.name, msg.payload, msg.ts_event) == ("arrive", "order-1", due)
    assert msg.ts_init >= msg.ts_event - 1 * MS
