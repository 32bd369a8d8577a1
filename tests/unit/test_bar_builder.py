"""The bar builder (actors/bar_builder.py): in a small replayed system (feed, validator,
builder, a tape recording what it is sent) and driven directly on a replay clock. Time bars
go out at their close on the clock, with the OHLCV of ``engine.bars.time_bars``; volume bars
on the print that fills them, as ``engine.bars.volume_bars``; the same bars at the same
times batched and one print at a time; open bars survive a restart and are not sent on stop.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import numpy as np
import pytest

from actors.bar_builder import BarBuilder, BarBuilderConfig
from engine.actor import Actor, ActorConfig, RunContext
from engine.backtest import run_backtest
from engine.bars import time_bars, volume_bars
from engine.clock import ReplayClock
from engine.config import AccountConfig, parse_config
from engine.errors import ConfigError
from engine.instruments import Instrument, InstrumentTable
from engine.mailbox import EMPTY, Edge, Mailbox, Overflow, Quiescence
from engine.messages import Bar, BarBatch, TradeBatch, TradeTick
from engine.replay import ChunkedSource
from engine.ticks import BAR_DTYPE, TRADE_DTYPE
from engine.wiring import BUILTIN_KINDS, System, resolve_kind

S = 1_000_000_000
MIN = 60 * S
T0 = 1_723_161_600 * S  # 2024-08-09 00:00 UTC, a whole minute
AAA, BBB = "AAA.SIM", "BBB.SIM"


class BarTape(Actor[ActorConfig]):
    """Records what it is sent, and the clock's time when it was handled."""

    Config = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    seen: ClassVar[list[tuple[int, Any]]] = []

    def on_message(self, msg: Any) -> None:
        BarTape.seen.append((self.clock.now(), msg))


def _toml(builder: str, *, per_tick: bool, batch_size: int) -> str:
    return f"""
mode = "backtest"

[account]
currency = "USD"
starting_balance = 1_000_000.0

[[instruments]]
id = "{AAA}"
asset_class = "equity"
quote_currency = "USD"
price_increment = 0.01

[[instruments]]
id = "{BBB}"
asset_class = "equity"
quote_currency = "USD"
price_increment = 0.01

[replay]
per_tick = {str(per_tick).lower()}
batch_size = {batch_size}

[actors.feed]
kind = "replay_feed"
per_tick = {str(per_tick).lower()}

[actors.validator]
kind = "validator"

[actors.builder]
kind = "bar_builder"
{builder}

[actors.tape]
kind = "tests.unit.test_bar_builder:BarTape"

[[edges]]
from = "feed.ticks"
to = "validator"

[[edges]]
from = "validator.ticks"
to = "builder"

[[edges]]
from = "builder.bars"
to = "tape"

[[edges]]
from = "validator.ticks"
to = "tape"
"""


def replay(
    prints: np.ndarray, builder: str, *, per_tick: bool = False, batch_size: int = 16_384
) -> list[tuple[int, Any]]:
    """Replay ``prints`` through feed, validator and a builder configured by the TOML lines
    ``builder``; what the tape saw, with the clock's time at each message."""
    config = parse_config(_toml(builder, per_tick=per_tick, batch_size=batch_size))
    system = System(config, ReplayClock())
    BarTape.seen = []
    asyncio.run(run_backtest(system, ChunkedSource(iter([prints]), TRADE_DTYPE)))
    return BarTape.seen


def bars_of(seen: list[tuple[int, Any]]) -> tuple[np.ndarray, list[int]]:
    """The bars on the tape as one BAR_DTYPE array (instrument numbered as in the run), and
    the clock's time at which each was received."""
    ids = (AAA, BBB)
    rows: list[tuple[Any, ...]] = []
    at: list[int] = []
    for now, msg in seen:
        match msg:
            case BarBatch(data=data):
                rows.extend(data.tolist())
                at.extend([now] * len(data))
            case Bar():
                rows.append(
                    (
                        msg.ts_event,
                        msg.ts_init,
                        ids.index(msg.instrument_id),
                        msg.interval_ns,
                        msg.open,
                        msg.high,
                        msg.low,
                        msg.close,
                        msg.volume,
                    )
                )
                at.append(now)
    return np.array(rows, dtype=BAR_DTYPE), at


def prints_of(rows: list[tuple[int, int, float, float]]) -> np.ndarray:
    """(ts_event ns, instrument, price, size) rows."""
    out = np.zeros(len(rows), dtype=TRADE_DTYPE)
    for i, (ts, inst, price, size) in enumerate(rows):
        out[i] = (ts, ts, inst, 1, price, size)
    return out


def random_prints(seed: int, n: int = 3_000, minutes: int = 40) -> np.ndarray:
    """Two instruments' prints over ``minutes``, with quiet spells and blocks."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(T0, T0 + minutes * MIN, size=n))
    # a quiet spell of several minutes without any print
    ts = ts[(ts < T0 + 12 * MIN) | (ts >= T0 + 17 * MIN + 30 * S)]
    out = np.zeros(len(ts), dtype=TRADE_DTYPE)
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["instrument"] = rng.integers(0, 2, size=len(ts))
    out["aggressor"] = 1
    out["price"] = np.round(100 + np.cumsum(rng.normal(0, 0.02, size=len(ts))), 2)
    out["size"] = rng.integers(1, 300, size=len(ts)).astype(np.float64)
    out["size"][rng.choice(len(ts), size=15, replace=False)] = 2_500.0
    return out


# --- in a replayed system ---------------------------------------------------------------------


@pytest.mark.parametrize("per_tick", [False, True])
def test_a_time_bar_goes_out_at_its_close_though_the_next_print_comes_hours_later(
    per_tick: bool,
) -> None:
    prints = prints_of(
        [
            (T0 + 10 * S, 0, 100.0, 5),
            (T0 + 20 * S, 0, 101.0, 1),
            (T0 + 59 * S, 1, 50.0, 2),
            (T0 + 3 * 3_600 * S, 0, 99.0, 3),  # three hours later
        ]
    )
    seen = replay(prints, "interval_s = 60", per_tick=per_tick)
    bars, at = bars_of(seen)
    assert [tuple(b) for b in bars.tolist()] == [
        (T0 + MIN, T0 + MIN, 0, MIN, 100.0, 101.0, 100.0, 101.0, 6.0),
        (T0 + MIN, T0 + MIN, 1, MIN, 50.0, 50.0, 50.0, 50.0, 2.0),
    ]
    assert at == [T0 + MIN, T0 + MIN]  # sent when the minute ended, by the clock
    kinds = [type(m) for _, m in seen]
    first_bar = next(i for i, k in enumerate(kinds) if k in (Bar, BarBatch))
    late_print = seen[-1][1]
    assert isinstance(late_print, TradeTick | TradeBatch)
    assert first_bar < len(seen) - 1  # before the print three hours later reached anyone
    assert kinds.count(BarBatch) == (0 if per_tick else 1)  # one time: one batch
    if not per_tick:
        # the first batch ends at the last print before the close, so the timer fires first
        assert [len(m.data) for _, m in seen if isinstance(m, TradeBatch)] == [3, 1]
    # the minute of the last print never ended within the data: no bar for it


def test_time_bars_are_the_one_shot_bars_of_the_same_prints_at_the_same_times(
    rand_seed: int,
) -> None:
    prints = random_prints(rand_seed)
    last = int(prints["ts_event"][-1])
    expected = time_bars(prints, MIN)
    expected = expected[expected["ts_event"] <= last]  # the rest never closed in the data
    runs = {
        "batched": replay(prints, "interval_s = 60.0"),
        "per tick": replay(prints, "interval_s = 60.0", per_tick=True),
        "batches of 37": replay(prints, "interval_s = 60.0", batch_size=37),
    }
    seed = f"(rand_seed={rand_seed})"
    for name, seen in runs.items():
        bars, at = bars_of(seen)
        assert len(bars) == len(expected) > 40, f"{name} {seed}"
        for col in ("ts_event", "instrument", "interval_ns", "open", "high", "low", "close"):
            assert np.array_equal(bars[col], expected[col]), f"{name}: {col} {seed}"
        assert np.array_equal(bars["volume"], expected["volume"]), f"{name} {seed}"
        assert np.array_equal(bars["ts_init"], bars["ts_event"]), f"{name} {seed}"
        assert at == bars["ts_event"].tolist(), f"{name} {seed}"
    # the quiet spell: its minutes have no bars, and the bar before it closed on time
    assert not (
        (expected["ts_event"] > T0 + 13 * MIN) & (expected["ts_event"] <= T0 + 17 * MIN)
    ).any()


def test_volume_bars_are_the_one_shot_bars_sent_with_the_print_that_fills_them(
    rand_seed: int,
) -> None:
    prints = random_prints(rand_seed)
    expected = volume_bars(prints[prints["instrument"] == 1], 1_000.0)
    expected["instrument"] = 1
    config = f'volume = 1_000.0\ninstruments = ["{BBB}"]'
    seed = f"(rand_seed={rand_seed})"
    outcomes = []
    for kwargs in ({}, {"per_tick": True}, {"batch_size": 37}):
        seen = replay(prints, config, **kwargs)  # type: ignore[arg-type]
        bars, at = bars_of(seen)
        assert len(bars) == len(expected) > 50, seed
        for col in ("ts_event", "instrument", "interval_ns", "open", "high", "low", "close"):
            assert np.array_equal(bars[col], expected[col]), f"{kwargs}: {col} {seed}"
        assert (bars["volume"] == 1_000.0).all(), seed
        # sent with the print that filled it: no later print had been released
        assert np.array_equal(bars["ts_init"], bars["ts_event"]), seed
        assert at == bars["ts_event"].tolist(), seed
        outcomes.append((bars.tobytes(), at))
    assert outcomes[1] == outcomes[0] and outcomes[2] == outcomes[0], seed


def test_batched_volume_bars_cut_the_replay_at_the_print_that_fills_a_bar() -> None:
    prints = prints_of([(T0 + k * S, 0, 100.0 + k, 40) for k in range(10)])
    seen = replay(prints, "volume = 100.0")
    batches = [m for _, m in seen if isinstance(m, TradeBatch)]
    # bars fill on the 3rd (120 units so far), 5th (200), 8th (320) and 10th (400) prints:
    # a batch ends at each
    assert [len(b.data) for b in batches] == [3, 2, 3, 2]
    bars = [m for _, m in seen if isinstance(m, BarBatch)]
    assert [b.data["close"].tolist() for b in bars] == [[102.0], [104.0], [107.0], [109.0]]


def test_the_builder_is_a_built_in_kind_and_its_configuration_is_checked() -> None:
    assert BUILTIN_KINDS["bar_builder"] == "actors.bar_builder:BarBuilder"
    assert resolve_kind("bar_builder") is BarBuilder
    for lines, where in (
        ("interval_s = 60\nvolume = 1.0", "$.actors.builder"),
        ("", "$.actors.builder"),
        ("interval_s = -60", "$.actors.builder.interval_s"),
        ("volume = 0.0", "$.actors.builder.volume"),
        ('interval_s = 60\ninstruments = ["ZZZ.SIM"]', "$.actors.builder.instruments[0]"),
        ("interval_s = 60\nperiod = 5", "$.actors.builder"),
    ):
        with pytest.raises(ConfigError) as info:
            System(parse_config(_toml(lines, per_tick=False, batch_size=64)), ReplayClock())
        assert info.value.path == where, lines
    assert "period" in str(info.value)


# --- driven directly ----------------------------------------------------------------------------


class Harness:
    """One builder on a replay clock; its bars go into an inbox we read."""

    def __init__(self, **config: Any) -> None:
        self.clock = ReplayClock(start_ns=T0)
        table = InstrumentTable(
            Instrument(id=i, asset_class="equity", quote_currency="USD", price_increment=0.01)
            for i in (AAA, BBB)
        )
        ctx = RunContext(self.clock, table, AccountConfig(currency="USD", starting_balance=1e6))
        self.builder = BarBuilder("builder", BarBuilderConfig(kind="bar_builder", **config), ctx)
        self.builder.check_config()
        self.sink = Mailbox("sink", 1_000_000, Quiescence())
        self.builder.ports["bars"].append(Edge("builder.bars", self.sink, Overflow.BLOCK))
        self.builder.on_start()

    def tick(self, ts: int, price: float, size: float, inst: str = AAA) -> list[Any]:
        """A print stamped ``ts`` (the clock is not moved); what the builder sent."""
        self.builder.on_message(
            TradeTick(
                instrument_id=inst,
                price=price,
                size=size,
                ts_event=ts,
                ts_init=self.clock.now(),
            )
        )
        return self.sent()

    def advance(self, ts: int) -> list[Any]:
        """Move the clock to ``ts``, handle the timers that came due; what was sent."""
        self.clock.advance_to(ts)
        inbox = self.builder.inbox
        while (msg := inbox.get_nowait()) is not EMPTY:
            self.builder.on_message(msg)
        return self.sent()

    def restart(self) -> None:
        """What the supervisor does to restart a crashed actor."""
        self.builder.on_stop()
        self.builder.cancel_all_timers()
        self.builder.on_start()

    def sent(self) -> list[Any]:
        out = []
        while (msg := self.sink.get_nowait()) is not EMPTY:
            out.append(msg)
        return out


def test_open_bars_survive_a_restart_and_the_close_timer_is_set_again() -> None:
    h = Harness(interval_s=60.0)
    h.clock.set_time(T0 + 10 * S)
    assert h.tick(T0 + 10 * S, 100.0, 2) == []
    h.clock.set_time(T0 + 30 * S)
    assert h.tick(T0 + 30 * S, 103.0, 1) == []
    h.restart()
    assert h.clock.next_timer_ts() == T0 + MIN
    h.clock.set_time(T0 + 40 * S)
    h.tick(T0 + 40 * S, 98.0, 4)
    sent = h.advance(T0 + MIN)
    assert sent == [
        Bar(
            instrument_id=AAA,
            interval_ns=MIN,
            open=100.0,
            high=103.0,
            low=98.0,
            close=98.0,
            volume=7.0,
            ts_event=T0 + MIN,
            ts_init=T0 + MIN,
        )
    ]
    assert h.clock.next_timer_ts() is None  # nothing open: no timer


def test_a_bar_whose_close_passed_during_a_restart_goes_out_at_once() -> None:
    h = Harness(interval_s=60.0)
    h.tick(T0 + 5 * S, 100.0, 1)
    h.builder.cancel_all_timers()  # crashed: its timers are gone
    h.clock.set_time(T0 + 3 * MIN)  # back much later
    h.builder.on_stop()
    h.builder.on_start()
    sent = h.advance(T0 + 3 * MIN)
    assert [(b.ts_event, b.ts_init, b.close) for b in sent] == [(T0 + MIN, T0 + 3 * MIN, 100.0)]


def test_on_stop_a_partly_built_bar_is_not_sent() -> None:
    for config in ({"interval_s": 60.0}, {"volume": 10.0}):
        h = Harness(**config)
        h.tick(T0 + 5 * S, 100.0, 4)
        h.builder.on_stop()
        h.builder.cancel_all_timers()
        assert h.sent() == []
        assert h.builder.open_bars() == 1
        assert h.builder.bars_sent == 0


def test_a_print_stamped_past_the_close_before_the_clock_gets_there_waits_for_the_timer() -> None:
    # live: the exchange's clock is ahead of ours
    h = Harness(interval_s=60.0)
    h.clock.set_time(T0 + 5 * S)
    h.tick(T0 + 10 * S, 100.0, 1)
    h.clock.set_time(T0 + 58 * S)
    assert h.tick(T0 + 61 * S, 105.0, 2) == []  # completes minute 0, but it is 0:58 here
    assert h.clock.next_timer_ts() == T0 + MIN
    sent = h.advance(T0 + MIN)
    assert [(b.ts_event, b.ts_init, b.close, b.volume) for b in sent] == [
        (T0 + MIN, T0 + MIN, 100.0, 1.0)
    ]
    sent = h.advance(T0 + 2 * MIN)
    assert [(b.ts_event, b.close, b.volume) for b in sent] == [(T0 + 2 * MIN, 105.0, 2.0)]


def test_a_late_print_for_a_bar_already_sent_is_dropped_and_counted() -> None:
    h = Harness(interval_s=60.0)
    h.tick(T0 + 10 * S, 100.0, 1)
    assert len(h.advance(T0 + MIN + 200_000_000)) == 1  # the timer a little late, live
    assert h.tick(T0 + 59 * S, 90.0, 5) == []  # belongs to the minute already sent
    assert h.builder.late_prints == 1
    h.tick(T0 + MIN + 100_000_000, 101.0, 1)  # in the new minute, though before "now"
    assert h.builder.late_prints == 1
    sent = h.advance(T0 + 2 * MIN)
    assert [(b.ts_event, b.open, b.volume) for b in sent] == [(T0 + 2 * MIN, 101.0, 1.0)]


def test_only_the_chosen_instruments_make_bars_and_bars_batch_by_close_time() -> None:
    h = Harness(interval_s=60.0, instruments=[BBB])
    batch = prints_of(
        [
            (T0 + 1 * S, 0, 10.0, 1),
            (T0 + 2 * S, 1, 20.0, 1),
            (T0 + 70 * S, 1, 21.0, 1),
        ]
    )
    h.clock.set_time(T0 + 2 * S)
    h.builder.on_message(
        TradeBatch(data=batch[:2], instrument_ids=(AAA, BBB), ts_event=0, ts_init=0)
    )
    sent = h.advance(T0 + MIN)
    assert len(sent) == 1 and isinstance(sent[0], BarBatch)
    assert sent[0].data["instrument"].tolist() == [1] and sent[0].instrument_ids == (AAA, BBB)
    # a batch numbered the other way round is read by its own instrument_ids
    swapped = batch[2:].copy()
    swapped["instrument"] = 0
    h.builder.on_message(TradeBatch(data=swapped, instrument_ids=(BBB, AAA), ts_event=0, ts_init=0))
    sent = h.advance(T0 + 2 * MIN)
    assert [(b.data["instrument"].tolist(), b.data["close"].tolist()) for b in sent] == [
        ([1], [21.0])
    ]
