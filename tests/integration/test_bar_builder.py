"""Bars built from prints, traded by a strategy, through the whole pipeline on the bundled
Binance sample: feed -> validator -> bar_builder -> trend -> risk gate -> router ->
sim_exchange (filling against the quotes) -> portfolio. The strategy gets exactly the bars
``engine.bars`` makes of the same prints, and trades the same batched, one tick at a time,
and in batches of 37 ticks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from engine.actor import Actor, ActorConfig
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.bars import time_bars, volume_bars
from engine.messages import Bar, BarBatch, OrderFilled, OrderRequest
from engine.ticks import BAR_DTYPE, save_ticks

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "binance-btcusdt"
BTC = "BTCUSDT.BINANCE"
MIN = 60_000_000_000


class Tape(Actor[ActorConfig]):
    """Records the bars and orders it is sent, with the clock's time at each."""

    Config = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    seen: ClassVar[list[tuple[int, Any]]] = []

    def on_message(self, msg: Any) -> None:
        Tape.seen.append((self.clock.now(), msg))


@pytest.fixture(scope="module")
def prints() -> np.ndarray:
    # Prints carry the exchange's clock, quotes the capturing host's (about 1.27 s behind,
    # see the sample's README): put both on the host's clock, as test_prints_replay does.
    trades = np.load(SAMPLE / "trades.npy")
    trades["ts_event"] = trades["ts_init"]
    return trades[np.argsort(trades["ts_event"], kind="stable")]


@pytest.fixture(scope="module")
def trades_file(prints: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "trades.npy"
    save_ticks(path, prints)
    return path


def _config(tmp: Path, trades: Path, bars: str) -> Path:
    text = f"""
mode = "backtest"

[account]
currency = "USDT"
starting_balance = 100_000.0
type = "margin"
oms = "netting"

[[instruments]]
id = "{BTC}"
asset_class = "crypto"
base_currency = "BTC"
quote_currency = "USDT"
price_increment = 0.01
size_increment = 0.00001

[replay]
quotes = [{{ path = "{SAMPLE / "quotes.npy"}", instrument = "{BTC}" }}]
trades = [{{ path = "{trades}", instrument = "{BTC}" }}]

[actors.feed]
kind = "replay_feed"

[actors.validator]
kind = "validator"

[actors.bars]
kind = "bar_builder"
{bars}

[actors.trend]
kind = "trend"
instruments = ["{BTC}"]
fast = 3            # bars
slow = 5            # bars
notional = 5_000.0  # USDT
allow_short = true

[actors.risk]
kind = "risk_gate"
limits = {{ max_order_notional = 50_000.0, max_order_quantity = 1.0 }}

[actors.router]
kind = "router"

[actors.exchange]
kind = "sim_exchange"
venue = "BINANCE"
costs = {{ taker_rate = 0.001, maker_rate = 0.001 }}

[actors.portfolio]
kind = "portfolio"
trading_days_per_year = 365
# hourly: timers on whole minutes would end batches at the bars' closes by themselves
sample_interval_s = 3_600.0

[actors.events]
kind = "event_log"

[actors.tape]
kind = "tests.integration.test_bar_builder:Tape"

[[edges]]
from = "feed.ticks"
to = "validator"

[[edges]]
from = "validator.ticks"
to = "bars"

[[edges]]
from = "validator.ticks"
to = "exchange"

[[edges]]
from = "validator.ticks"
to = "risk"

[[edges]]
from = "validator.ticks"
to = "portfolio"

[[edges]]
from = "bars.bars"
to = "trend"

[[edges]]
from = "bars.bars"
to = "tape"

[[edges]]
from = "trend.orders"
to = "risk"

[[edges]]
from = "trend.orders"
to = "events"

[[edges]]
from = "trend.orders"
to = "tape"

[[edges]]
from = "risk.approved"
to = "router"

[[edges]]
from = "risk.events"
to = "events"

[[edges]]
from = "risk.events"
to = "trend"

[[edges]]
from = "router.venue"
to = "exchange"

[[edges]]
from = "router.events"
to = "events"

[[edges]]
from = "router.events"
to = "trend"

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
to = "trend"

[[edges]]
from = "exchange.events"
to = "events"

[[edges]]
from = "exchange.events"
to = "tape"
only = ["OrderFilled"]
"""
    path = tmp / "bars.toml"
    path.write_text(text)
    return path


def _run(
    config: Path, *, per_tick: bool = False, batch_size: int | None = None
) -> tuple[BacktestResult, list[tuple[int, Any]]]:
    system, _ = load_backtest(config, per_tick=per_tick, batch_size=batch_size)
    Tape.seen = []
    result = asyncio.run(run_backtest(system))
    return result, Tape.seen


def _bars(seen: list[tuple[int, Any]]) -> tuple[np.ndarray, list[int]]:
    """The bars on the tape as BAR_DTYPE rows, and the clock's time when each came."""
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
                        0,
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


def _same_bars(got: np.ndarray, expected: np.ndarray) -> None:
    assert len(got) == len(expected)
    for col in ("ts_event", "instrument", "interval_ns", "open", "high", "low", "close", "volume"):
        assert np.array_equal(got[col], expected[col]), col


@pytest.mark.parametrize(
    ("bars", "expected_bars"),
    [
        ("interval_s = 60", lambda p: time_bars(p, MIN)),
        ("volume = 0.5  # BTC", lambda p: volume_bars(p, 0.5)),
    ],
    ids=["minute-bars", "volume-bars"],
)
def test_the_strategy_trades_the_bars_of_the_prints_the_same_in_every_delivery(
    tmp_path: Path, trades_file: Path, prints: np.ndarray, bars: str, expected_bars: Any
) -> None:
    config = _config(tmp_path, trades_file, bars)
    expected = expected_bars(prints)
    # the bar open when the data ends never closes (time) or never fills (volume)
    expected = expected[expected["ts_event"] <= int(prints["ts_event"][-1])]
    batched, seen = _run(config)
    got, at = _bars(seen)
    _same_bars(got, expected)
    if "interval_s" in bars:
        assert len(got) == 11  # 23:55 to 00:05: every minute of the sample had prints
        assert (got["ts_event"] % MIN == 0).all()
    else:
        assert len(got) > 800
        assert (got["volume"] == 0.5).all()
    # each bar reached the strategy at its close, in data time
    assert at == got["ts_event"].tolist()
    assert np.array_equal(got["ts_init"], got["ts_event"])

    orders = [(now, m) for now, m in seen if isinstance(m, OrderRequest)]
    assert len(orders) >= 2 and batched.orders == len(orders)
    assert batched.fills >= 2
    # an order is decided on the close of a bar, when the bar arrives
    closes = set(got["ts_event"].tolist())
    assert all(now in closes and m.ts_event == now for now, m in orders)
    # market orders fill against the book quoted at the time, not at the bar's close
    quotes = np.load(SAMPLE / "quotes.npy")
    for now, fill in seen:
        if isinstance(fill, OrderFilled):
            book = quotes[quotes["ts_event"] <= now][-1]
            assert fill.last_px == (book["ask"] if fill.side.value == "BUY" else book["bid"])
    assert batched.ticks == len(quotes) + len(prints)

    per_tick = _run(config, per_tick=True)
    for other, other_seen in (per_tick, _run(config, batch_size=37)):
        assert other.events_sha256 == batched.events_sha256
        assert other.final_balance == batched.final_balance
        assert other.positions == batched.positions
        other_bars, other_at = _bars(other_seen)
        assert other_bars.tobytes() == got.tobytes()
        assert other_at == at
    assert batched.batches < per_tick[0].batches  # the batched replay was batched
