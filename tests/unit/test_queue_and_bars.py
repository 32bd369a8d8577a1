"""The simulated venue against prints (queue position), against bars (participation cap),
and across corporate actions; and the portfolio across splits and dividends."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from engine.corporate_actions import FactorRow, FactorTable
from engine.instruments import Instrument, InstrumentTable
from engine.matching import SimulatedVenue
from engine.messages import (
    OrderFilled,
    OrderPartiallyFilled,
    OrderType,
    Side,
)
from engine.portfolio import Portfolio
from engine.ticks import TRADE_DTYPE
from tests.unit.test_matching import T0, order, venue

S = 1_000_000_000
SELLER, BUYER, UNKNOWN = -1, 1, 0


def fills(events: list[object]) -> list[tuple[float, float, str]]:
    return [
        (e.last_qty, e.last_px, e.liquidity)
        for e in events
        if isinstance(e, OrderFilled | OrderPartiallyFilled)
    ]


def resting_buy(v: SimulatedVenue, qty: float, limit: float, ts: int = T0) -> None:
    v.submit(order(Side.BUY, qty, order_type=OrderType.LIMIT, limit=limit), ts)


# --- queue position against prints --------------------------------------------------------


def test_a_limit_order_is_not_filled_before_the_volume_ahead_of_it_has_traded() -> None:
    v, events = venue()
    v.on_quote(0, 100.00, 100.02, T0, bid_size=5.0, ask_size=4.0)
    resting_buy(v, 3.0, 100.00)  # joins the bid behind 5 displayed
    (w,) = v.working.values()
    assert w.queue_ahead == 5.0
    v.on_trade(0, 100.00, 3.0, SELLER, T0 + 1)
    assert fills(events) == []  # 3 of the 5 ahead have traded
    assert w.queue_ahead == 2.0
    v.on_trade(0, 100.00, 2.0, SELLER, T0 + 2)
    assert fills(events) == []  # the queue ahead is exactly cleared: nothing for us yet
    v.on_trade(0, 100.00, 1.0, SELLER, T0 + 3)
    assert fills(events) == [(1.0, 100.00, "MAKER")]
    v.on_trade(0, 100.00, 5.0, SELLER, T0 + 4)
    assert fills(events) == [(1.0, 100.00, "MAKER"), (2.0, 100.00, "MAKER")]
    assert not v.working


def test_only_what_is_left_of_a_print_after_the_queue_fills_us() -> None:
    v, events = venue()
    v.on_quote(0, 100.00, 100.02, T0, bid_size=5.0, ask_size=4.0)
    resting_buy(v, 10.0, 100.00)
    v.on_trade(0, 100.00, 7.0, SELLER, T0 + 1)  # 5 ahead of us, 2 for us
    assert fills(events) == [(2.0, 100.00, "MAKER")]


def test_prints_by_our_own_side_or_away_from_our_price_do_not_move_the_queue() -> None:
    v, events = venue()
    v.on_quote(0, 100.00, 100.02, T0, bid_size=5.0, ask_size=4.0)
    resting_buy(v, 1.0, 100.00)
    (w,) = v.working.values()
    v.on_trade(0, 100.00, 50.0, BUYER, T0 + 1)  # a buyer's print does not hit the bids
    v.on_trade(0, 100.01, 50.0, SELLER, T0 + 2)  # above our price
    assert fills(events) == [] and w.queue_ahead == 5.0
    v.on_trade(0, 100.00, 6.0, UNKNOWN, T0 + 3)  # no aggressor: counts for both sides
    assert fills(events) == [(1.0, 100.00, "MAKER")]


def test_a_smaller_displayed_size_shortens_the_queue_and_a_touch_through_us_empties_it() -> None:
    v, events = venue()
    v.on_quote(0, 100.00, 100.02, T0, bid_size=8.0, ask_size=4.0)
    resting_buy(v, 2.0, 100.00)
    (w,) = v.working.values()
    v.on_quote(0, 100.00, 100.02, T0 + 1, bid_size=3.0, ask_size=4.0)
    assert w.queue_ahead == 3.0  # cancels are taken to be ahead of us (risk averse)
    v.on_quote(0, 100.00, 100.02, T0 + 2, bid_size=9.0, ask_size=4.0)
    assert w.queue_ahead == 3.0  # new orders join behind us
    v.on_quote(0, 99.99, 100.01, T0 + 3, bid_size=9.0, ask_size=4.0)
    assert w.queue_ahead == 0.0  # the bid left our level: we are first in it
    v.on_trade(0, 100.00, 1.0, SELLER, T0 + 4)
    assert fills(events) == [(1.0, 100.00, "MAKER")]


def test_an_order_behind_the_touch_waits_to_see_its_level() -> None:
    v, events = venue()
    v.on_quote(0, 100.05, 100.07, T0, bid_size=5.0, ask_size=4.0)
    resting_buy(v, 1.0, 100.00)
    (w,) = v.working.values()
    assert math.isnan(w.queue_ahead)
    v.on_trade(0, 100.00, 100.0, SELLER, T0 + 1)  # level not seen at the touch: no fill
    assert fills(events) == []
    v.on_quote(0, 100.00, 100.02, T0 + 2, bid_size=4.0, ask_size=4.0)
    assert w.queue_ahead == 4.0
    v.on_trade(0, 99.98, 2.0, SELLER, T0 + 3)  # through our price: the level is gone
    assert fills(events) == [(1.0, 100.00, "MAKER")]


def test_a_print_batch_matches_prints_one_at_a_time() -> None:
    gen = np.random.default_rng(7)
    n = 3_000
    trades = np.zeros(n, dtype=TRADE_DTYPE)
    trades["ts_event"] = T0 + np.arange(n)
    trades["price"] = 100.00 + gen.integers(-3, 4, size=n) * 0.01
    trades["size"] = gen.integers(1, 6, size=n).astype(float)
    trades["aggressor"] = gen.choice([-1, 0, 1], size=n)
    outcomes = []
    for batched in (False, True):
        v, events = venue()
        v.on_quote(0, 100.00, 100.02, T0 - 1, bid_size=20.0, ask_size=20.0)
        resting_buy(v, 40.0, 100.00, T0 - 1)
        resting_buy(v, 40.0, 99.99, T0 - 1)
        v.submit(order(Side.SELL, 30.0, order_type=OrderType.LIMIT, limit=100.02), T0 - 1)
        if batched:
            for chunk in np.array_split(trades, 7):
                v.on_trade_batch(
                    chunk["instrument"],
                    chunk["price"],
                    chunk["size"],
                    chunk["aggressor"],
                    chunk["ts_event"],
                )
        else:
            for t in trades:
                v.on_trade(
                    int(t["instrument"]),
                    float(t["price"]),
                    float(t["size"]),
                    int(t["aggressor"]),
                    int(t["ts_event"]),
                )
        outcomes.append(
            [
                (type(e).__name__, *f)
                for e, f in zip(
                    [e for e in events if isinstance(e, OrderFilled | OrderPartiallyFilled)],
                    fills(events),
                    strict=True,
                )
            ]
        )
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0]) > 10


# --- bars ------------------------------------------------------------------------------------


def bar(v: SimulatedVenue, o: float, h: float, lo: float, c: float, vol: float, day: int) -> None:
    v.on_bar(0, o, h, lo, c, vol, T0 + day * 86_400 * S)


def test_a_market_order_on_bars_fills_at_the_next_open_within_the_participation_cap() -> None:
    v, events = venue()
    bar(v, 10.0, 11.0, 9.5, 10.5, 1_000.0, 0)
    v.submit(order(Side.BUY, 250.0), T0 + 1)  # decided on the close of day 0
    assert fills(events) == []  # nothing trades until the next bar
    bar(v, 10.8, 11.2, 10.6, 11.0, 1_000.0, 1)
    assert fills(events) == [(100.0, 10.8, "TAKER")]  # 10 % of 1,000 at the open
    bar(v, 11.1, 11.3, 10.9, 11.2, 2_000.0, 2)
    assert fills(events)[-1] == (150.0, 11.1, "TAKER")  # the rest, within 200
    assert not v.working
    # slippage is the move from the close the decision saw to the fill (a cost: positive)
    first = next(e for e in events if isinstance(e, OrderPartiallyFilled))
    assert first.slippage_cost == pytest.approx((10.8 - 10.5) * 100.0)


def test_a_limit_order_on_bars_fills_only_where_the_bar_traded() -> None:
    v, events = venue()
    bar(v, 10.0, 11.0, 9.5, 10.5, 10_000.0, 0)
    v.submit(order(Side.BUY, 10.0, order_type=OrderType.LIMIT, limit=10.0), T0 + 1)
    bar(v, 10.4, 10.9, 10.1, 10.6, 10_000.0, 1)  # never down to 10.00
    assert fills(events) == []
    bar(v, 10.3, 10.5, 9.8, 10.0, 10_000.0, 2)  # the low went through 10.00
    assert fills(events) == [(10.0, 10.0, "MAKER")]
    v.submit(order(Side.SELL, 10.0, order_type=OrderType.LIMIT, limit=10.2), T0 + 3 * 86_400 * S)
    bar(v, 10.5, 10.6, 10.3, 10.4, 10_000.0, 4)  # opened above the limit: filled at the open
    assert fills(events)[-1] == (10.0, 10.5, "TAKER")


def test_a_stop_on_bars_triggers_on_the_high_and_fills_no_better_than_the_open() -> None:
    v, events = venue()
    bar(v, 10.0, 10.2, 9.8, 10.0, 10_000.0, 0)
    v.submit(order(Side.BUY, 5.0, order_type=OrderType.STOP, stop=10.5), T0 + 1)
    bar(v, 10.1, 10.4, 10.0, 10.3, 10_000.0, 1)
    assert fills(events) == []
    bar(v, 10.8, 11.0, 10.7, 10.9, 10_000.0, 2)  # gapped over the stop: the open
    assert fills(events) == [(5.0, 10.8, "TAKER")]


def test_a_market_order_without_quotes_or_bars_is_still_rejected() -> None:
    v, events = venue()
    v.submit(order(Side.BUY, 1.0), T0)
    assert type(events[-1]).__name__ == "OrderRejected"


def test_a_bar_batch_matches_bars_one_at_a_time() -> None:
    gen = np.random.default_rng(3)
    n = 400
    closes = 50.0 * np.exp(np.cumsum(gen.normal(0, 0.02, n)))
    opens = closes * np.exp(gen.normal(0, 0.005, n))
    highs = np.maximum(opens, closes) * 1.01
    lows = np.minimum(opens, closes) * 0.99
    vols = gen.integers(100, 1_000, n).astype(float)
    inst = np.zeros(n, dtype=np.uint32)
    ts = T0 + np.arange(n, dtype=np.int64) * 86_400 * S
    results = []
    for batched in (False, True):
        v, events = venue()
        v.on_bar(0, opens[0], highs[0], lows[0], closes[0], vols[0], int(ts[0]))
        v.submit(order(Side.BUY, 500.0), int(ts[0]) + 1)
        v.submit(order(Side.SELL, 300.0, order_type=OrderType.LIMIT, limit=60.0), int(ts[0]) + 1)
        if batched:
            v.on_bar_batch(inst[1:], opens[1:], highs[1:], lows[1:], closes[1:], vols[1:], ts[1:])
        else:
            for k in range(1, n):
                v.on_bar(0, opens[k], highs[k], lows[k], closes[k], vols[k], int(ts[k]))
        results.append(fills(events))
    assert results[0] == results[1] and len(results[0]) > 2


# --- corporate actions -----------------------------------------------------------------------


def test_a_split_puts_working_orders_on_the_new_basis() -> None:
    v, _ = venue()
    v.on_quote(0, 100.00, 100.02, T0, bid_size=5.0, ask_size=4.0)
    resting_buy(v, 30.0, 99.00)
    v.on_corporate_action(0, 0.25, T0 + 1)  # 4:1
    (w,) = v.working.values()
    assert (w.leaves, w.limit) == (120.0, 24.75)
    assert v.buy_rest[0] == 24.75


def portfolio() -> Portfolio:
    table = InstrumentTable(
        [
            Instrument(
                id="AAPL.US", asset_class="equity", quote_currency="USD", price_increment=0.0001
            )
        ]
    )
    return Portfolio(table, 100_000.0)


def test_a_split_changes_neither_the_value_nor_the_pnl_of_a_position() -> None:
    pf = portfolio()
    pf.apply_fill("AAPL.US", 100.0, 400.0, 1.0)
    pf.mark(0, 420.0, 420.0)
    equity = pf._equity()
    pf.apply_corporate_action(0, 0.25, 0.0)  # 4:1: 400 shares, average 100
    assert float(pf.qty[0]) == 400.0 and float(pf.avg[0]) == 100.0
    assert pf._equity() == pytest.approx(equity)
    pf.mark(0, 105.0, 105.0)  # the first price after the split, on the new basis
    assert pf._equity() == pytest.approx(equity)


def test_a_dividend_is_paid_per_share_held_and_charged_to_a_short() -> None:
    pf = portfolio()
    pf.apply_fill("AAPL.US", 100.0, 400.0, 0.0)
    assert pf.apply_corporate_action(0, 1.0, 0.82) == pytest.approx(82.0)
    pf.apply_fill("AAPL.US", -300.0, 400.0, 0.0)  # now short 200
    assert pf.apply_corporate_action(0, 1.0, 0.5) == pytest.approx(-100.0)
    assert pf.dividends == pytest.approx(-18.0)


def test_the_factor_files_dividend_is_the_reference_close_times_the_ratio_taken() -> None:
    # AAPL's factor rows around its 2020-08-07 dividend of 0.82 (Lean's factor file)
    table = FactorTable.from_rows(
        [
            FactorRow(
                date=dt.date(2020, 8, 6),
                price_factor=0.9949942,
                split_factor=0.25,
                reference_price=455.61,
            ),
            FactorRow(
                date=dt.date(2020, 8, 28),
                price_factor=0.9967882,
                split_factor=0.25,
                reference_price=499.23,
            ),
            FactorRow(date=dt.date(2050, 12, 31), price_factor=1.0, split_factor=1.0),
        ]
    )
    dividend, split = table.events()
    assert dividend.last_day_before == dt.date(2020, 8, 6)
    assert dividend.dividend == pytest.approx(0.82, abs=0.005)
    assert split.split_ratio == 0.25 and split.dividend == pytest.approx(
        499.23 * (1 - 0.9967882), abs=1e-9
    )
