"""A real quote day with bad ticks in it through the whole pipeline: IBM on 2013-10-07 (Lean /
AlgoSeek NBBO, ``shared/data`` section 3), read with :func:`adapters.lean.read_equity_quote_ticks`,
saved as the project's tick file and replayed by an EMA cross strategy.

The day opens with a lone ask row (its bid side is NaN) and holds 43 crossed NBBO updates
(42 in regular hours per ``SOURCES.md``, 43 over the whole day). The validator must reject
exactly those, none of them may reach the strategy or the portfolio, and batched and
per-tick replay must still trade the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pytest

from adapters.lean import read_equity_quote_ticks
from engine.actor import Actor, ActorConfig
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.messages import QuoteBatch, QuoteTick
from engine.ticks import QuoteArray, save_ticks
from tests.shared_data import shared_data_dir

pytestmark = pytest.mark.shared_data

QUOTES = "lean/Data/equity/usa/tick/ibm/20131007_quote.zip"
NBBO_UPDATES = 54_534  # 54,533 bid/ask pairs (SOURCES.md) and the lone ask row that opens the day
CROSSED = 43
LONE_ROW = 1


class TickRecorder(Actor[ActorConfig]):
    """Keeps ``(ts_event, bid, ask)`` of every tick that reaches it, batched or not."""

    Config = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ()

    def on_start(self) -> None:
        if getattr(self, "parts", None) is None:
            self.parts: list[np.ndarray] = []
            self.singles: list[tuple[int, float, float]] = []

    def on_message(self, msg: Any) -> None:
        match msg:
            case QuoteBatch(data=data):
                self.parts.append(np.array(data[["ts_event", "bid", "ask"]]))
            case QuoteTick(ts_event=ts, bid=bid, ask=ask):
                self.singles.append((ts, bid, ask))
            case _:
                pass

    def seen(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.singles:
            ts, bid, ask = zip(*self.singles, strict=True)
            return np.array(ts, dtype=np.int64), np.array(bid), np.array(ask)
        if not self.parts:
            return np.empty(0, np.int64), np.empty(0), np.empty(0)
        rows = np.concatenate(self.parts)
        return rows["ts_event"], rows["bid"], rows["ask"]


CONFIG = f"""
mode = "backtest"

[account]
currency = "USD"
starting_balance = 1_000_000.0

[[instruments]]
id = "IBM.NASDAQ"
asset_class = "equity"
quote_currency = "USD"
price_increment = 0.01
size_increment = 1.0

[replay]
batch_size = 65_536
quotes = [{{ path = "ibm_20131007_quotes.npy", instrument = "IBM.NASDAQ" }}]

[actors.feed]
kind = "replay_feed"

[actors.validator]
kind = "validator"
rules = {{ allow_locked = true }}   # crossed quotes and NaN sides are always rejected

[actors.ema]
kind = "ema_cross"
instrument = "IBM.NASDAQ"
fast = 10
slow = 20
warmup = 20
quantity = 100.0   # shares

[actors.risk]
kind = "risk_gate"
limits = {{ max_order_notional = 100_000.0 }}

[actors.router]
kind = "router"

[actors.exchange]
kind = "sim_exchange"
venue = "NASDAQ"
costs = {{ taker_rate = 0.0001 }}

[actors.portfolio]
kind = "portfolio"

[actors.events]
kind = "event_log"

[actors.seen]
kind = "{__name__}:TickRecorder"

[[edges]]
from = "feed.ticks"
to = "validator"

[[edges]]
from = "validator.ticks"
to = "exchange"

[[edges]]
from = "validator.ticks"
to = "risk"

[[edges]]
from = "validator.ticks"
to = "ema"

[[edges]]
from = "validator.ticks"
to = "portfolio"

[[edges]]
from = "validator.ticks"
to = "seen"

[[edges]]
from = "ema.orders"
to = "risk"

[[edges]]
from = "ema.orders"
to = "events"

[[edges]]
from = "risk.approved"
to = "router"

[[edges]]
from = "risk.events"
to = "events"

[[edges]]
from = "router.venue"
to = "exchange"

[[edges]]
from = "router.events"
to = "events"

[[edges]]
from = "exchange.events"
to = "portfolio"
only = ["OrderFilled", "OrderPartiallyFilled"]

[[edges]]
from = "exchange.events"
to = "risk"
only = ["OrderFilled", "OrderPartiallyFilled", "OrderRejected", "OrderCancelled", "OrderExpired"]

[[edges]]
from = "exchange.events"
to = "events"
"""


class Replay(NamedTuple):
    result: BacktestResult
    seen: tuple[np.ndarray, np.ndarray, np.ndarray]
    strategy_ticks: int


@pytest.fixture(scope="module")
def ticks() -> QuoteArray:
    return read_equity_quote_ticks(shared_data_dir() / QUOTES)


@pytest.fixture(scope="module")
def config_path(ticks: QuoteArray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ibm")
    save_ticks(folder / "ibm_20131007_quotes.npy", ticks)
    path = folder / "ibm.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def replay(config_path: Path, *, per_tick: bool) -> Replay:
    system, _ = load_backtest(config_path, per_tick=per_tick)
    result = asyncio.run(run_backtest(system))
    recorder = system.actors["seen"]
    assert isinstance(recorder, TickRecorder)
    strategy_ticks = system.actors["ema"].signal.count  # type: ignore[attr-defined]
    return Replay(result, recorder.seen(), strategy_ticks)


@pytest.fixture(scope="module")
def runs(config_path: Path) -> dict[str, Replay]:
    return {
        "batched": replay(config_path, per_tick=False),
        "per tick": replay(config_path, per_tick=True),
    }


def sound(ticks: QuoteArray) -> np.ndarray:
    """The rows a validator must let through, decided here from the raw columns."""
    bid, ask = ticks["bid"], ticks["ask"]
    return np.isfinite(bid) & np.isfinite(ask) & (bid <= ask)


def test_the_day_has_the_bad_ticks_we_expect(ticks: QuoteArray) -> None:
    assert len(ticks) == NBBO_UPDATES
    assert np.isnan(ticks["bid"][0]) and not np.isnan(ticks["ask"][0])  # the lone ask row
    assert int(np.count_nonzero(ticks["bid"] > ticks["ask"])) == CROSSED
    assert int(np.count_nonzero(sound(ticks))) == NBBO_UPDATES - CROSSED - LONE_ROW


@pytest.mark.parametrize("mode", ["batched", "per tick"])
def test_validator_counts_the_rejections(runs: dict[str, Replay], mode: str) -> None:
    r = runs[mode].result
    assert r.ticks == NBBO_UPDATES
    assert r.validation == {
        "accepted": NBBO_UPDATES - CROSSED - LONE_ROW,
        "non_positive_price": 0,
        "nan_price": LONE_ROW,
        "bad_size": 0,
        "crossed": CROSSED,
        "locked": 0,
        "wide_spread": 0,
        "out_of_order": 0,
        "spike": 0,
    }
    assert r.ticks_rejected == CROSSED + LONE_ROW


@pytest.mark.parametrize("mode", ["batched", "per tick"])
def test_no_rejected_tick_reaches_the_strategy(
    runs: dict[str, Replay], ticks: QuoteArray, mode: str
) -> None:
    run = runs[mode]
    accepted = NBBO_UPDATES - CROSSED - LONE_ROW
    ts, bid, ask = run.seen
    good = ticks[sound(ticks)]
    assert len(ts) == accepted
    assert np.array_equal(ts, good["ts_event"])
    assert np.array_equal(bid, good["bid"]) and np.array_equal(ask, good["ask"])
    assert not np.any(bid > ask)
    # the strategy, wired from the same port, counted exactly those ticks
    assert run.strategy_ticks == accepted


def test_batched_and_per_tick_replay_trade_the_same_way(runs: dict[str, Replay]) -> None:
    batched, per_tick = runs["batched"].result, runs["per tick"].result
    assert batched.fills > 10  # it did trade through the day
    assert batched.denied == 0 and batched.rejected == 0
    assert per_tick.batches == NBBO_UPDATES and batched.batches < NBBO_UPDATES
    assert per_tick.events_sha256 == batched.events_sha256
    assert (per_tick.orders, per_tick.fills) == (batched.orders, batched.fills)
    assert per_tick.final_balance == batched.final_balance
    assert per_tick.final_equity == batched.final_equity
    assert per_tick.max_drawdown == batched.max_drawdown
    assert per_tick.positions == batched.positions
