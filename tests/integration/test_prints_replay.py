"""Quotes and prints together through the whole pipeline, on the bundled Binance sample:
passive limit orders that join the touch fill only when prints clear the queue ahead of
them (or the market quotes through them), identically batched and one tick at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.messages import OrderFilled, OrderPartiallyFilled
from engine.ticks import save_ticks

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "binance-btcusdt"


@pytest.fixture(scope="module")
def trades_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The capture stamps quotes with the host's receive time and prints with the exchange's
    # (about 1.27 s ahead, see the sample's README): put both on the receive clock.
    trades = np.load(SAMPLE / "trades.npy")
    trades["ts_event"] = trades["ts_init"]
    trades = trades[np.argsort(trades["ts_event"], kind="stable")]
    path = tmp_path_factory.mktemp("prints") / "trades.npy"
    save_ticks(path, trades)
    return path


def _config(tmp: Path, trades: Path | None) -> Path:
    text = (ROOT / "config" / "backtest.toml").read_text()
    text = text.replace(
        "quantity = 0.1      # BTC", 'quantity = 0.1      # BTC\norder_type = "LIMIT"'
    )
    quotes = str(SAMPLE / "quotes.npy")
    line = f'quotes = [{{ path = "{quotes}", instrument = "BTCUSDT.BINANCE" }}]'
    if trades is not None:
        line += f'\ntrades = [{{ path = "{trades}", instrument = "BTCUSDT.BINANCE" }}]'
    text = text.replace(
        'quotes = [{ path = "../data/sample/binance-btcusdt/quotes.npy", '
        'instrument = "BTCUSDT.BINANCE" }]',
        line,
    )
    path = tmp / ("with-prints.toml" if trades else "quotes-only.toml")
    path.write_text(text)
    return path


def _run(config: Path, per_tick: bool = False, batch_size: int | None = None) -> BacktestResult:
    system, _ = load_backtest(config, per_tick=per_tick, batch_size=batch_size)
    return asyncio.run(run_backtest(system))


def test_prints_replay_the_same_batched_and_one_at_a_time(
    tmp_path: Path, trades_file: Path
) -> None:
    config = _config(tmp_path, trades_file)
    batched = _run(config)
    assert batched.ticks == len(np.load(SAMPLE / "quotes.npy")) + len(np.load(trades_file))
    assert batched.fills > 5
    for other in (_run(config, per_tick=True), _run(config, batch_size=37)):
        assert other.events_sha256 == batched.events_sha256
        assert other.final_balance == batched.final_balance


def test_prints_fill_resting_orders_that_quotes_alone_would_not(
    tmp_path: Path, trades_file: Path
) -> None:
    quotes_only = _run(_config(tmp_path, None))
    with_prints = _run(_config(tmp_path, trades_file))
    # joining the touch, an order fills on quotes only when the far side comes to it; the
    # prints at its price fill it once the queue ahead has traded, so more orders fill
    assert with_prints.fills > quotes_only.fills
    assert with_prints.events_sha256 != quotes_only.events_sha256


def test_every_maker_fill_is_at_a_price_that_traded_or_was_quoted_through(
    tmp_path: Path, trades_file: Path
) -> None:
    system, _ = load_backtest(_config(tmp_path, trades_file))
    seen: list[OrderFilled | OrderPartiallyFilled] = []
    venue = system.actors["exchange"]
    emit = venue._emit_event

    def spy(event: object) -> None:
        if isinstance(event, OrderFilled | OrderPartiallyFilled):
            seen.append(event)
        emit(event)  # type: ignore[arg-type]

    venue._emit_event = spy  # type: ignore[method-assign]
    asyncio.run(run_backtest(system))
    quotes = np.load(SAMPLE / "quotes.npy")
    trades = np.load(trades_file)
    makers = [f for f in seen if f.liquidity == "MAKER"]
    assert makers
    for f in makers:
        at = f.ts_event
        buy = f.side.value == "BUY"
        q = quotes[quotes["ts_event"] == at]
        t = trades[trades["ts_event"] == at]
        quoted = bool(len(q)) and bool(
            (q["ask"] <= f.last_px).any() if buy else (q["bid"] >= f.last_px).any()
        )
        printed = bool(len(t)) and bool(
            ((t["price"] <= f.last_px) & (t["aggressor"] <= 0)).any()
            if buy
            else ((t["price"] >= f.last_px) & (t["aggressor"] >= 0)).any()
        )
        assert quoted or printed, f
