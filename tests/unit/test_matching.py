"""The simulated venue (:class:`engine.matching.SimulatedVenue`): fills against displayed
size, market remainders working over successive quotes, limits, stops and stop-limits,
time in force (GTC, DAY, IOC, FOK), cancels, rejections, and the batch look-ahead the
replay relies on. Commission schedules and the cost fields are in test_venue_costs.py."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

import numpy as np
import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.matching import SimulatedVenue, VenueCosts, next_session_close
from engine.messages import (
    CancelOrder,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)

T0 = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC

INSTRUMENTS = InstrumentTable(
    [
        Instrument(id="ABC.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01),
        Instrument(id="XYZ.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01),
    ]
)

_ids = itertools.count(1)


COSTS = VenueCosts(taker_rate=0.001, maker_rate=0.0005)  # 10 bp taker, 5 bp maker


def venue(
    costs: VenueCosts = COSTS, *, day_close: str = "00:00", timezone: str = "UTC"
) -> tuple[SimulatedVenue, list[Message]]:
    events: list[Message] = []
    v = SimulatedVenue(
        "SIM", INSTRUMENTS, costs, "USD", events.append, day_close=day_close, timezone=timezone
    )
    return v, events


def cancel_of(client_order_id: str, instrument: str = "ABC.SIM") -> CancelOrder:
    return CancelOrder(
        client_order_id=client_order_id,
        strategy_id="test",
        instrument_id=instrument,
        ts_event=T0,
        ts_init=T0,
    )


def order(
    side: Side,
    quantity: float,
    *,
    instrument: str = "ABC.SIM",
    order_type: OrderType = OrderType.MARKET,
    limit: float | None = None,
    stop: float | None = None,
    tif: TimeInForce = TimeInForce.GTC,
    client_order_id: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id or f"o-{next(_ids)}",
        strategy_id="test",
        instrument_id=instrument,
        side=side,
        quantity=quantity,
        order_type=order_type,
        limit_price=limit,
        stop_price=stop,
        time_in_force=tif,
        ts_event=T0,
        ts_init=T0,
    )


def limit(side: Side, quantity: float, price: float, **kw: object) -> OrderRequest:
    return order(side, quantity, order_type=OrderType.LIMIT, limit=price, **kw)  # type: ignore[arg-type]


def stop(side: Side, quantity: float, stop_price: float, **kw: object) -> OrderRequest:
    return order(side, quantity, order_type=OrderType.STOP, stop=stop_price, **kw)  # type: ignore[arg-type]


def stop_limit(
    side: Side, quantity: float, stop_price: float, limit_price: float, **kw: object
) -> OrderRequest:
    return order(
        side,
        quantity,
        order_type=OrderType.STOP_LIMIT,
        stop=stop_price,
        limit=limit_price,
        **kw,  # type: ignore[arg-type]
    )


def kinds(events: list[Message]) -> list[str]:
    return [type(e).__name__ for e in events]


def only_fill(events: list[Message]) -> OrderFilled:
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert len(fills) == 1, kinds(events)
    return fills[0]


def executions(events: list[Message]) -> list[tuple[str, float, float, float, str, int]]:
    """Each fill as (event, last_qty, last_px, leaves_qty, liquidity, ts_event)."""
    return [
        (type(e).__name__, e.last_qty, e.last_px, e.leaves_qty, e.liquidity, e.ts_event)
        for e in events
        if isinstance(e, OrderPartiallyFilled)  # OrderFilled is a subclass
    ]


def utc(text: str) -> int:
    """An ISO time with offset as integer nanoseconds since the epoch."""
    return int(dt.datetime.fromisoformat(text).timestamp()) * 1_000_000_000


# --- market orders -----------------------------------------------------------------------


def test_market_buy_fills_at_the_ask_and_sell_at_the_bid() -> None:
    v, events = venue()
    v.on_quote(0, 123.70, 123.80, T0)
    buy = order(Side.BUY, 7.0)
    v.submit(buy, T0 + 1)
    assert kinds(events) == ["OrderAccepted", "OrderFilled"]
    fill = only_fill(events)
    assert (fill.side, fill.last_px, fill.last_qty, fill.leaves_qty) == (Side.BUY, 123.80, 7.0, 0.0)
    assert fill.client_order_id == buy.client_order_id
    assert fill.liquidity == "TAKER"
    assert fill.ts_event == T0 + 1
    # 0.1% of 7 * 123.80 = 0.8666: rounded to the cent, not truncated
    assert fill.commission == 0.87
    assert fill.commission_currency == "USD"

    events.clear()
    v.submit(order(Side.SELL, 7.0), T0 + 2)
    fill = only_fill(events)
    assert (fill.side, fill.last_px) == (Side.SELL, 123.70)
    assert fill.commission == 0.87  # 0.86590 -> 0.87


def test_commission_rounds_half_cents_the_way_python_round_does() -> None:
    v, events = venue(VenueCosts(taker_rate=0.00002))
    v.on_quote(0, 1.10000, 1.10002, T0)
    v.submit(order(Side.BUY, 100_000.0), T0)
    assert only_fill(events).commission == round(1.10002 * 100_000.0 * 0.00002, 2) == 2.2


def test_commission_rounding_step_other_than_cents() -> None:
    v, events = venue(VenueCosts(taker_rate=0.001, rounding=1.0))
    v.on_quote(0, 123.70, 123.80, T0)
    v.submit(order(Side.BUY, 7.0), T0)
    assert only_fill(events).commission == 1.0  # 0.8666 to the whole unit


def test_market_order_without_a_quote_is_rejected_with_a_reason() -> None:
    v, events = venue()
    v.on_quote(1, 10.0, 10.1, T0)  # a quote for another instrument does not count
    v.submit(order(Side.BUY, 1.0), T0)
    assert kinds(events) == ["OrderRejected"]
    rejected = events[0]
    assert isinstance(rejected, OrderRejected)
    assert rejected.reason == "no market in ABC.SIM yet"


def test_unknown_instrument_is_rejected() -> None:
    v, events = venue()
    v.submit(order(Side.BUY, 1.0, instrument="NOPE.SIM"), T0)
    assert kinds(events) == ["OrderRejected"]
    assert "does not list NOPE.SIM" in events[0].reason  # type: ignore[attr-defined]


def test_duplicate_client_order_id_of_a_working_order_is_rejected() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(limit(Side.BUY, 1.0, 99.00, client_order_id="dup"), T0)
    v.submit(limit(Side.BUY, 2.0, 98.00, client_order_id="dup"), T0 + 1)
    assert kinds(events) == ["OrderAccepted", "OrderRejected"]
    assert events[1].reason == "duplicate client order id dup"  # type: ignore[attr-defined]
    assert v.resting["dup"].leaves == 1.0  # the first one is untouched


# --- displayed size: partial fills, market orders working over successive quotes ---------


def test_market_order_larger_than_the_displayed_size_fills_at_successive_prices() -> None:
    """The issue's Done-when: ask 100.00 x 3, buy 10 -> 3 @ 100.00; the rest works on the
    next quotes at their prices and sizes: 4 @ 100.05, then the last 3 @ 100.10."""
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 3.0)
    buy = order(Side.BUY, 10.0)
    v.submit(buy, T0 + 1)
    assert kinds(events) == ["OrderAccepted", "OrderPartiallyFilled"]
    assert list(v.resting) == [buy.client_order_id]  # the remainder is still working

    v.on_quote(0, 100.03, 100.05, T0 + 2, 50.0, 4.0)
    v.on_quote(0, 100.08, 100.10, T0 + 3, 50.0, 10.0)
    assert executions(events) == [
        ("OrderPartiallyFilled", 3.0, 100.00, 7.0, "TAKER", T0 + 1),
        ("OrderPartiallyFilled", 4.0, 100.05, 3.0, "TAKER", T0 + 2),
        ("OrderFilled", 3.0, 100.10, 0.0, "TAKER", T0 + 3),
    ]
    fills = [e for e in events if isinstance(e, OrderPartiallyFilled)]
    assert {f.client_order_id for f in fills} == {buy.client_order_id}
    assert {f.venue_order_id for f in fills} == {"SIM-1"}
    assert [f.trade_id for f in fills] == ["SIM-T1", "SIM-T2", "SIM-T3"]
    # 0.1% of 300.00, of 400.20, of 300.30
    assert [f.commission for f in fills] == [0.30, 0.40, 0.30]
    assert sum(f.last_qty * f.last_px for f in fills) == pytest.approx(1000.50)
    assert not v.resting
    v.on_quote(0, 100.00, 100.01, T0 + 4, 50.0, 10.0)  # done: nothing more
    assert len(events) == 4


def test_market_sell_larger_than_the_displayed_bid_walks_down() -> None:
    v, events = venue()
    v.on_quote(0, 50.00, 50.02, T0, 2.0, 100.0)
    v.submit(order(Side.SELL, 5.0), T0)
    v.on_quote(0, 49.99, 50.01, T0 + 1, 0.0, 100.0)  # bid size unknown: all the rest
    assert executions(events) == [
        ("OrderPartiallyFilled", 2.0, 50.00, 3.0, "TAKER", T0),
        ("OrderFilled", 3.0, 49.99, 0.0, "TAKER", T0 + 1),
    ]


def test_orders_on_one_quote_share_its_displayed_size() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 4.0)
    first, second = order(Side.BUY, 3.0), order(Side.BUY, 3.0)
    v.submit(first, T0 + 1)
    v.submit(second, T0 + 2)
    # the first takes 3 of the 4 shown, the second the 1 left; it gets the rest next quote
    v.on_quote(0, 99.99, 100.01, T0 + 3, 50.0, 5.0)
    fills = [e for e in events if isinstance(e, OrderPartiallyFilled)]
    assert [(f.client_order_id, f.last_qty, f.last_px, f.leaves_qty) for f in fills] == [
        (first.client_order_id, 3.0, 100.00, 0.0),
        (second.client_order_id, 1.0, 100.00, 2.0),
        (second.client_order_id, 2.0, 100.01, 0.0),
    ]
    assert kinds(events) == [
        "OrderAccepted",
        "OrderFilled",
        "OrderAccepted",
        "OrderPartiallyFilled",
        "OrderFilled",
    ]


def test_an_order_arriving_after_the_displayed_size_is_taken_waits_for_the_next_quote() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 2.0)
    v.submit(order(Side.BUY, 2.0), T0)
    late = order(Side.BUY, 1.0)
    v.submit(late, T0 + 1)
    assert kinds(events) == ["OrderAccepted", "OrderFilled", "OrderAccepted"]  # nothing left
    # a new quote is a new displayed size, even at the same price
    v.on_quote(0, 99.98, 100.00, T0 + 2, 50.0, 2.0)
    assert executions(events)[-1] == ("OrderFilled", 1.0, 100.00, 0.0, "TAKER", T0 + 2)


def test_displayed_size_is_per_side_and_per_instrument() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 1.0, 10.0)  # a small bid does not limit a buy
    v.on_quote(1, 9.98, 10.00, T0, 1.0, 1.0)  # another instrument's sizes do not count
    v.submit(order(Side.BUY, 10.0), T0)
    assert executions(events) == [("OrderFilled", 10.0, 100.00, 0.0, "TAKER", T0)]


def test_size_zero_means_unknown_and_does_not_limit_the_fill() -> None:
    v, events = venue()
    v.on_quote(0, 1.10000, 1.10002, T0)  # FX without sizes: 0 and 0
    v.submit(order(Side.BUY, 5_000_000.0), T0)
    v.submit(order(Side.BUY, 5_000_000.0), T0)  # and nothing is used up either
    assert [x[:4] for x in executions(events)] == [("OrderFilled", 5e6, 1.10002, 0.0)] * 2


def test_market_ioc_takes_the_displayed_size_and_expires_the_rest() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 3.0)
    ioc = order(Side.BUY, 10.0, tif=TimeInForce.IOC)
    v.submit(ioc, T0)
    assert kinds(events) == ["OrderAccepted", "OrderPartiallyFilled", "OrderExpired"]
    assert executions(events) == [("OrderPartiallyFilled", 3.0, 100.00, 7.0, "TAKER", T0)]
    expired = events[2]
    assert isinstance(expired, OrderExpired)
    assert (expired.client_order_id, expired.ts_event) == (ioc.client_order_id, T0)
    assert expired.reason == "IOC: the rest could not trade on arrival"
    assert not v.resting
    v.on_quote(0, 99.98, 100.00, T0 + 1, 50.0, 30.0)
    assert len(events) == 3


def test_cancel_stops_a_market_remainder() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 3.0)
    o = order(Side.BUY, 10.0)
    v.submit(o, T0)
    assert v.cancel(cancel_of(o.client_order_id), T0 + 1) is True
    v.on_quote(0, 99.98, 100.00, T0 + 2, 50.0, 30.0)
    assert kinds(events) == ["OrderAccepted", "OrderPartiallyFilled", "OrderCancelled"]


# --- limit orders ------------------------------------------------------------------------


def test_marketable_limit_fills_at_the_touch_as_taker() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(limit(Side.BUY, 10.0, 100.50), T0)
    fill = only_fill(events)
    assert (fill.last_px, fill.liquidity) == (100.00, "TAKER")  # the ask, not the limit
    assert fill.commission == 1.0  # taker rate: 0.1% of 1,000
    events.clear()
    v.submit(limit(Side.SELL, 10.0, 99.90), T0)  # at the bid exactly is marketable
    fill = only_fill(events)
    assert (fill.last_px, fill.liquidity) == (99.90, "TAKER")
    assert not v.resting


def test_marketable_limit_takes_the_displayed_size_then_rests_and_fills_as_maker() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 4.0)
    buy = limit(Side.BUY, 10.0, 100.02)
    v.submit(buy, T0 + 1)
    # 4 at the ask as taker; the other 6 rest at 100.02
    assert kinds(events) == ["OrderAccepted", "OrderPartiallyFilled"]
    assert v.resting[buy.client_order_id].leaves == 6.0
    v.on_quote(0, 100.03, 100.05, T0 + 2, 50.0, 50.0)  # ask above the limit: nothing
    assert len(events) == 2
    v.on_quote(0, 100.00, 100.02, T0 + 3, 50.0, 50.0)  # ask back at the limit
    assert executions(events) == [
        ("OrderPartiallyFilled", 4.0, 100.00, 6.0, "TAKER", T0 + 1),
        ("OrderFilled", 6.0, 100.02, 0.0, "MAKER", T0 + 3),
    ]
    fills = [e for e in events if isinstance(e, OrderPartiallyFilled)]
    # taker: 0.1% of 400.00 = 0.40; maker: 0.05% of 600.12 = 0.30006
    assert [f.commission for f in fills] == [0.40, 0.30]


def test_marketable_limit_never_takes_beyond_its_limit_price() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 2.0, 50.0)
    sell = limit(Side.SELL, 5.0, 99.95)
    v.submit(sell, T0)  # sell: 2 at the bid 99.98
    v.on_quote(0, 99.94, 99.96, T0 + 1, 10.0, 10.0)  # bid under the limit: nothing
    v.on_quote(0, 99.96, 99.99, T0 + 2, 1.0, 10.0)  # bid above the limit, 1 shown
    v.on_quote(0, 99.95, 99.97, T0 + 3, 9.0, 10.0)
    assert executions(events) == [
        ("OrderPartiallyFilled", 2.0, 99.98, 3.0, "TAKER", T0),
        ("OrderPartiallyFilled", 1.0, 99.95, 2.0, "MAKER", T0 + 2),
        ("OrderFilled", 2.0, 99.95, 0.0, "MAKER", T0 + 3),
    ]


def test_resting_buy_limit_fills_at_its_price_as_maker_when_the_ask_reaches_it() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    buy = limit(Side.BUY, 4.0, 99.50)
    v.submit(buy, T0)
    assert kinds(events) == ["OrderAccepted"]
    v.on_quote(0, 99.45, 99.51, T0 + 1)  # ask one cent above the limit: nothing
    v.on_quote(1, 1.00, 99.00, T0 + 2)  # another instrument's ask below it: nothing
    assert kinds(events) == ["OrderAccepted"]
    v.on_quote(0, 99.30, 99.40, T0 + 3)  # ask through the limit
    fill = only_fill(events)
    assert fill.client_order_id == buy.client_order_id
    assert fill.venue_order_id == events[0].venue_order_id  # type: ignore[attr-defined]
    assert (fill.last_px, fill.liquidity, fill.ts_event) == (99.50, "MAKER", T0 + 3)
    assert fill.commission == 0.2  # maker rate: 0.05% of 398 = 0.199
    assert not v.resting


def test_resting_limit_fills_for_at_most_the_displayed_size_per_quote() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0, 10.0, 10.0)
    v.submit(limit(Side.BUY, 10.0, 99.50), T0)
    v.on_quote(0, 99.40, 99.50, T0 + 1, 10.0, 6.0)
    v.on_quote(0, 99.40, 99.45, T0 + 2, 10.0, 3.0)
    v.on_quote(0, 99.40, 99.45, T0 + 3, 10.0, 3.0)
    assert executions(events) == [
        ("OrderPartiallyFilled", 6.0, 99.50, 4.0, "MAKER", T0 + 1),
        ("OrderPartiallyFilled", 3.0, 99.50, 1.0, "MAKER", T0 + 2),
        ("OrderFilled", 1.0, 99.50, 0.0, "MAKER", T0 + 3),
    ]


def test_resting_sell_limit_fills_when_the_bid_reaches_it_and_not_before() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(limit(Side.SELL, 4.0, 101.00), T0)
    v.on_quote(0, 100.99, 101.20, T0 + 1)  # ask above the limit does not matter for a sell
    assert kinds(events) == ["OrderAccepted"]
    v.on_quote(0, 101.00, 101.10, T0 + 2)  # bid at the limit
    fill = only_fill(events)
    assert (fill.side, fill.last_px, fill.liquidity, fill.ts_event) == (
        Side.SELL,
        101.00,
        "MAKER",
        T0 + 2,
    )


def test_several_resting_orders_fill_in_arrival_order_on_one_quote() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    first = limit(Side.BUY, 1.0, 99.00)
    second = limit(Side.BUY, 2.0, 99.50)
    far = limit(Side.BUY, 3.0, 98.00)
    for o in (first, second, far):
        v.submit(o, T0)
    events.clear()
    v.on_quote(0, 98.80, 98.90, T0 + 1)
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [(f.client_order_id, f.last_px) for f in fills] == [
        (first.client_order_id, 99.00),
        (second.client_order_id, 99.50),
    ]
    assert list(v.resting) == [far.client_order_id]


def test_resting_orders_share_the_displayed_size_in_arrival_order() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    first = limit(Side.BUY, 3.0, 99.00)
    second = limit(Side.BUY, 3.0, 99.50)
    v.submit(first, T0)
    v.submit(second, T0)
    v.on_quote(0, 98.80, 98.90, T0 + 1, 10.0, 4.0)
    fills = [e for e in events if isinstance(e, OrderPartiallyFilled)]
    assert [(f.client_order_id, f.last_qty, f.last_px, f.leaves_qty) for f in fills] == [
        (first.client_order_id, 3.0, 99.00, 0.0),
        (second.client_order_id, 1.0, 99.50, 2.0),
    ]


def test_limit_order_before_any_quote_rests() -> None:
    v, events = venue()
    v.submit(limit(Side.BUY, 1.0, 50.00), T0)
    assert kinds(events) == ["OrderAccepted"]
    v.on_quote(0, 49.90, 50.00, T0 + 1)
    assert only_fill(events).last_px == 50.00


@pytest.mark.parametrize("price", [None, 0.0, -1.0])
def test_limit_order_needs_a_positive_limit_price(price: float | None) -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(order(Side.BUY, 1.0, order_type=OrderType.LIMIT, limit=price), T0)
    assert kinds(events) == ["OrderRejected"]
    assert events[0].reason == "a LIMIT order needs a positive limit price"  # type: ignore[attr-defined]


# --- stops and stop-limits ---------------------------------------------------------------


def test_buy_stop_waits_for_the_ask_to_reach_it_then_trades_as_a_market_order() -> None:
    v, events = venue()
    v.on_quote(0, 100.48, 100.50, T0, 50.0, 50.0)
    buy = stop(Side.BUY, 10.0, 101.00)
    v.submit(buy, T0)
    v.on_quote(0, 100.97, 100.99, T0 + 1, 50.0, 50.0)  # one cent short: not triggered
    assert kinds(events) == ["OrderAccepted"]
    assert v.resting[buy.client_order_id].stop == 101.00
    # the ask reaches the stop (and more): a market order now, at the touch, for the size shown
    v.on_quote(0, 101.00, 101.02, T0 + 2, 50.0, 4.0)
    v.on_quote(0, 101.03, 101.05, T0 + 3, 50.0, 10.0)
    assert executions(events) == [
        ("OrderPartiallyFilled", 4.0, 101.02, 6.0, "TAKER", T0 + 2),
        ("OrderFilled", 6.0, 101.05, 0.0, "TAKER", T0 + 3),
    ]
    assert not v.resting


def test_sell_stop_triggers_when_the_bid_reaches_it() -> None:
    v, events = venue()
    v.on_quote(0, 99.50, 99.52, T0)
    sell = stop(Side.SELL, 5.0, 99.00)
    v.submit(sell, T0)
    v.on_quote(0, 99.01, 99.03, T0 + 1)
    assert kinds(events) == ["OrderAccepted"]
    v.on_quote(0, 98.97, 98.99, T0 + 2)  # gapped through: fills at the bid, not the stop
    assert executions(events) == [("OrderFilled", 5.0, 98.97, 0.0, "TAKER", T0 + 2)]
    assert only_fill(events).side is Side.SELL


def test_stop_at_exactly_the_touch_triggers() -> None:
    v, events = venue()
    v.on_quote(0, 99.50, 99.52, T0)
    v.submit(stop(Side.BUY, 1.0, 99.60), T0)
    v.submit(stop(Side.SELL, 1.0, 99.40), T0)
    v.on_quote(0, 99.58, 99.60, T0 + 1)  # ask == buy stop
    v.on_quote(0, 99.40, 99.42, T0 + 2)  # bid == sell stop
    assert [x[2] for x in executions(events)] == [99.60, 99.40]


def test_stop_already_through_the_market_on_arrival_trades_at_once() -> None:
    v, events = venue()
    v.on_quote(0, 100.00, 100.02, T0)
    v.submit(stop(Side.BUY, 3.0, 99.00), T0 + 1)
    assert executions(events) == [("OrderFilled", 3.0, 100.02, 0.0, "TAKER", T0 + 1)]


def test_stop_before_any_quote_rests_and_triggers_on_the_first_quote_through_it() -> None:
    v, events = venue()
    v.submit(stop(Side.SELL, 2.0, 50.00), T0)
    assert kinds(events) == ["OrderAccepted"]
    v.on_quote(0, 49.90, 49.95, T0 + 1)
    assert executions(events) == [("OrderFilled", 2.0, 49.90, 0.0, "TAKER", T0 + 1)]


def test_buy_stop_limit_triggers_into_a_marketable_limit_then_rests_as_maker() -> None:
    v, events = venue()
    v.on_quote(0, 100.48, 100.50, T0, 50.0, 50.0)
    o = stop_limit(Side.BUY, 10.0, 101.00, 101.05)
    v.submit(o, T0)
    # the ask is below the limit but has not reached the stop: not triggered, no fill
    v.on_quote(0, 100.93, 100.95, T0 + 1, 50.0, 50.0)
    assert kinds(events) == ["OrderAccepted"]
    v.on_quote(0, 101.00, 101.03, T0 + 2, 50.0, 5.0)  # triggered; 101.03 within the limit
    v.on_quote(0, 101.06, 101.08, T0 + 3, 50.0, 50.0)  # ask above the limit: rests
    v.on_quote(0, 101.03, 101.05, T0 + 4, 50.0, 50.0)  # ask at the limit
    assert executions(events) == [
        ("OrderPartiallyFilled", 5.0, 101.03, 5.0, "TAKER", T0 + 2),
        ("OrderFilled", 5.0, 101.05, 0.0, "MAKER", T0 + 4),
    ]


def test_stop_limit_triggered_beyond_its_limit_rests_at_the_limit() -> None:
    v, events = venue()
    v.on_quote(0, 100.48, 100.50, T0)
    o = stop_limit(Side.BUY, 2.0, 101.00, 101.00)
    v.submit(o, T0)
    v.on_quote(0, 101.00, 101.02, T0 + 1)  # triggered, but the ask is above the limit
    assert kinds(events) == ["OrderAccepted"]
    working = v.resting[o.client_order_id]
    assert (working.stop, working.limit, working.maker) == (None, 101.00, True)
    v.on_quote(0, 100.98, 101.00, T0 + 2)
    assert executions(events) == [("OrderFilled", 2.0, 101.00, 0.0, "MAKER", T0 + 2)]


def test_sell_stop_limit_triggers_on_the_bid_and_takes_within_its_limit() -> None:
    v, events = venue()
    v.on_quote(0, 99.50, 99.52, T0)
    v.submit(stop_limit(Side.SELL, 4.0, 99.00, 98.90), T0)
    v.on_quote(0, 98.95, 98.97, T0 + 1, 3.0, 10.0)  # 3 at 98.95, the last one rests at 98.90
    v.on_quote(0, 98.85, 98.88, T0 + 2, 10.0, 10.0)  # bid under the limit
    v.on_quote(0, 98.90, 98.92, T0 + 3, 10.0, 10.0)
    assert executions(events) == [
        ("OrderPartiallyFilled", 3.0, 98.95, 1.0, "TAKER", T0 + 1),
        ("OrderFilled", 1.0, 98.90, 0.0, "MAKER", T0 + 3),
    ]


def test_cancelled_stop_never_triggers() -> None:
    v, events = venue()
    v.on_quote(0, 99.50, 99.52, T0)
    o = stop(Side.BUY, 1.0, 100.00)
    v.submit(o, T0)
    assert v.cancel(cancel_of(o.client_order_id), T0 + 1)
    v.on_quote(0, 100.50, 100.52, T0 + 2)
    assert kinds(events) == ["OrderAccepted", "OrderCancelled"]
    assert v.scan(np.zeros(1, np.uint32), np.array([100.5]), np.array([100.52])) == 1


@pytest.mark.parametrize(
    ("order_type", "limit_price", "stop_price", "reason"),
    [
        (OrderType.STOP, None, None, "a STOP order needs a positive stop price"),
        (OrderType.STOP, None, 0.0, "a STOP order needs a positive stop price"),
        (OrderType.STOP_LIMIT, 101.0, None, "a STOP_LIMIT order needs a positive stop price"),
        (OrderType.STOP_LIMIT, 101.0, -1.0, "a STOP_LIMIT order needs a positive stop price"),
        (OrderType.STOP_LIMIT, None, 101.0, "a STOP_LIMIT order needs a positive limit price"),
    ],
)
def test_stop_orders_need_their_prices(
    order_type: OrderType, limit_price: float | None, stop_price: float | None, reason: str
) -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(order(Side.BUY, 1.0, order_type=order_type, limit=limit_price, stop=stop_price), T0)
    assert kinds(events) == ["OrderRejected"]
    assert events[0].reason == reason  # type: ignore[attr-defined]
    assert not v.resting


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
@pytest.mark.parametrize("order_type", [OrderType.STOP, OrderType.STOP_LIMIT])
def test_stop_orders_with_ioc_or_fok_are_rejected(order_type: OrderType, tif: TimeInForce) -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(order(Side.BUY, 1.0, order_type=order_type, limit=101.0, stop=101.0, tif=tif), T0)
    assert kinds(events) == ["OrderRejected"]
    assert events[0].reason == f"{tif.value} makes no sense for a stop order"  # type: ignore[attr-defined]


# --- IOC and FOK -------------------------------------------------------------------------


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_non_marketable_ioc_and_fok_expire_at_once(tif: TimeInForce) -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    o = limit(Side.BUY, 10.0, 99.00, tif=tif)
    v.submit(o, T0)
    assert kinds(events) == ["OrderAccepted", "OrderExpired"]
    assert isinstance(events[1], OrderExpired)
    assert events[1].client_order_id == o.client_order_id
    assert events[1].reason == f"{tif.value}: the rest could not trade on arrival"
    assert not v.resting
    v.on_quote(0, 98.00, 98.50, T0 + 1)  # it is gone: no fill later
    assert kinds(events) == ["OrderAccepted", "OrderExpired"]


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_marketable_ioc_and_fok_fill(tif: TimeInForce) -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(limit(Side.SELL, 10.0, 99.80, tif=tif), T0)
    assert kinds(events) == ["OrderAccepted", "OrderFilled"]
    assert only_fill(events).last_px == 99.90


def test_ioc_limit_fills_what_is_displayed_within_its_limit_and_expires_the_rest() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 4.0)
    v.submit(limit(Side.BUY, 10.0, 100.05, tif=TimeInForce.IOC), T0 + 1)
    assert kinds(events) == ["OrderAccepted", "OrderPartiallyFilled", "OrderExpired"]
    assert executions(events) == [("OrderPartiallyFilled", 4.0, 100.00, 6.0, "TAKER", T0 + 1)]
    assert events[2].ts_event == T0 + 1
    assert not v.resting


def test_fok_larger_than_the_displayed_size_expires_untouched() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 50.0, 4.0)
    fok = order(Side.BUY, 10.0, tif=TimeInForce.FOK)
    v.submit(fok, T0)
    assert kinds(events) == ["OrderAccepted", "OrderExpired"]
    assert events[1].reason == "FOK: not enough displayed size to fill in full"  # type: ignore[attr-defined]
    # it took nothing: the 4 shown are all there for the next order
    v.submit(order(Side.BUY, 4.0), T0 + 1)
    assert executions(events) == [("OrderFilled", 4.0, 100.00, 0.0, "TAKER", T0 + 1)]


def test_fok_fills_in_full_when_enough_is_displayed() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 10.0, 10.0)
    v.submit(limit(Side.SELL, 10.0, 99.95, tif=TimeInForce.FOK), T0)
    assert executions(events) == [("OrderFilled", 10.0, 99.98, 0.0, "TAKER", T0)]


def test_fok_counts_only_the_size_left_by_earlier_orders_on_the_quote() -> None:
    v, events = venue()
    v.on_quote(0, 99.98, 100.00, T0, 10.0, 4.0)
    v.submit(order(Side.BUY, 3.0), T0)
    v.submit(order(Side.BUY, 2.0, tif=TimeInForce.FOK), T0)  # 1 left of 4
    v.submit(order(Side.BUY, 1.0, tif=TimeInForce.FOK), T0)  # exactly 1 left
    assert kinds(events) == [
        "OrderAccepted",
        "OrderFilled",
        "OrderAccepted",
        "OrderExpired",
        "OrderAccepted",
        "OrderFilled",
    ]


def test_fok_with_unknown_size_fills() -> None:
    v, events = venue()
    v.on_quote(0, 1.1000, 1.1001, T0)
    v.submit(order(Side.BUY, 1e6, tif=TimeInForce.FOK), T0)
    assert executions(events) == [("OrderFilled", 1e6, 1.1001, 0.0, "TAKER", T0)]


# --- DAY orders and the session close ------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "close", "zone", "expected"),
    [
        # New York in summer time: 16:00 EDT is 20:00 UTC
        ("2013-10-07T14:00:00+00:00", "16:00", "America/New_York", "2013-10-07T20:00:00+00:00"),
        ("2013-10-07T19:59:59+00:00", "16:00", "America/New_York", "2013-10-07T20:00:00+00:00"),
        # at or after the close: the next day's
        ("2013-10-07T20:00:00+00:00", "16:00", "America/New_York", "2013-10-08T20:00:00+00:00"),
        ("2013-10-07T23:30:00+00:00", "16:00", "America/New_York", "2013-10-08T20:00:00+00:00"),
        # after midnight UTC but still the evening before in New York
        ("2013-10-08T02:00:00+00:00", "16:00", "America/New_York", "2013-10-08T20:00:00+00:00"),
        # back to standard time on Sunday 2013-11-03: 16:00 EST is 21:00 UTC
        ("2013-11-01T21:00:00+00:00", "16:00", "America/New_York", "2013-11-02T20:00:00+00:00"),
        ("2013-11-02T21:00:00+00:00", "16:00", "America/New_York", "2013-11-03T21:00:00+00:00"),
        ("2013-11-04T14:30:00+00:00", "16:00", "America/New_York", "2013-11-04T21:00:00+00:00"),
        # and forward to summer time on Sunday 2014-03-09
        ("2014-03-08T22:00:00+00:00", "16:00", "America/New_York", "2014-03-09T20:00:00+00:00"),
        ("2014-03-07T15:00:00+00:00", "16:00", "America/New_York", "2014-03-07T21:00:00+00:00"),
        # London (BST until 2013-10-27), and the default: midnight UTC
        ("2013-10-25T12:00:00+00:00", "16:30", "Europe/London", "2013-10-25T15:30:00+00:00"),
        ("2013-10-28T12:00:00+00:00", "16:30", "Europe/London", "2013-10-28T16:30:00+00:00"),
        ("2013-10-07T14:00:00+00:00", "00:00", "UTC", "2013-10-08T00:00:00+00:00"),
    ],
)
def test_next_session_close(now: str, close: str, zone: str, expected: str) -> None:
    assert next_session_close(utc(now), close, zone) == utc(expected)


def test_next_session_close_is_exact_to_the_nanosecond_around_the_close() -> None:
    close = utc("2013-10-07T20:00:00+00:00")
    assert next_session_close(close - 1, "16:00", "America/New_York") == close
    assert next_session_close(close, "16:00", "America/New_York") == close + 86_400 * 10**9
    assert next_session_close(close + 1, "16:00", "America/New_York") == close + 86_400 * 10**9


def test_day_order_works_until_the_session_close_and_expires_then() -> None:
    monday = utc("2013-10-07T14:00:00+00:00")
    close = utc("2013-10-07T20:00:00+00:00")
    v, events = venue(day_close="16:00", timezone="America/New_York")
    v.on_quote(0, 99.90, 100.00, monday)
    day = limit(Side.BUY, 5.0, 99.00, tif=TimeInForce.DAY)
    gtc = limit(Side.BUY, 5.0, 98.00)
    v.submit(day, monday)
    v.submit(gtc, monday)
    assert kinds(events) == ["OrderAccepted", "OrderAccepted"]  # DAY is accepted
    assert v.next_expiry() == close
    assert v.expire_day_orders(close - 1) == 0  # not yet
    assert v.expire_day_orders(close) == 1
    assert kinds(events)[2:] == ["OrderExpired"]
    expired = events[2]
    assert isinstance(expired, OrderExpired)
    assert (expired.client_order_id, expired.ts_event) == (day.client_order_id, close)
    assert expired.reason == "DAY order: the session closed"
    assert list(v.resting) == [gtc.client_order_id]  # GTC keeps working
    assert v.next_expiry() is None
    v.on_quote(0, 97.00, 97.10, close + 1)  # through both limits: only the GTC fills
    assert [f.client_order_id for f in events if isinstance(f, OrderFilled)] == [
        gtc.client_order_id
    ]


def test_expire_day_orders_expires_only_the_due_ones() -> None:
    monday = utc("2013-10-07T14:00:00+00:00")
    tuesday = utc("2013-10-08T14:00:00+00:00")
    v, events = venue(day_close="16:00", timezone="America/New_York")
    v.on_quote(0, 99.90, 100.00, monday, 10.0, 2.0)
    first = limit(Side.BUY, 1.0, 99.00, tif=TimeInForce.DAY)
    remainder = order(Side.BUY, 5.0, tif=TimeInForce.DAY)  # a market order's remainder too
    v.submit(first, monday)
    v.submit(remainder, monday)
    second = limit(Side.SELL, 1.0, 101.00, tif=TimeInForce.DAY)
    v.submit(second, tuesday)
    events.clear()
    assert v.expire_day_orders(utc("2013-10-08T03:00:00+00:00")) == 2
    assert [(type(e).__name__, e.client_order_id) for e in events] == [  # type: ignore[attr-defined]
        ("OrderExpired", first.client_order_id),
        ("OrderExpired", remainder.client_order_id),
    ]
    assert list(v.resting) == [second.client_order_id]
    assert v.next_expiry() == utc("2013-10-08T20:00:00+00:00")


def test_a_filled_or_cancelled_day_order_does_not_expire() -> None:
    v, events = venue()  # close at midnight UTC
    v.on_quote(0, 99.90, 100.00, T0)
    filled = limit(Side.BUY, 1.0, 99.50, tif=TimeInForce.DAY)
    cancelled = limit(Side.BUY, 1.0, 90.00, tif=TimeInForce.DAY)
    v.submit(filled, T0)
    v.submit(cancelled, T0)
    v.on_quote(0, 99.40, 99.50, T0 + 1)
    v.cancel(cancel_of(cancelled.client_order_id), T0 + 2)
    assert v.next_expiry() is None
    assert v.expire_day_orders(utc("2023-11-15T00:00:00+00:00")) == 0
    assert "OrderExpired" not in kinds(events)


# --- cancels -----------------------------------------------------------------------------


def test_cancel_of_a_resting_order_emits_cancelled_and_it_never_fills() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    o = limit(Side.BUY, 10.0, 99.00)
    v.submit(o, T0)
    assert v.cancel(cancel_of(o.client_order_id), T0 + 5) is True
    assert kinds(events) == ["OrderAccepted", "OrderCancelled"]
    cancelled = events[1]
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.client_order_id, cancelled.ts_event) == (o.client_order_id, T0 + 5)
    v.on_quote(0, 98.00, 98.50, T0 + 6)
    assert kinds(events) == ["OrderAccepted", "OrderCancelled"]
    # the look-ahead agrees that nothing is left to fill
    assert v.scan(np.zeros(1, np.uint32), np.array([98.0]), np.array([98.5])) == 1


def test_cancel_of_an_unknown_or_filled_order_is_answered_with_a_rejection() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    o = order(Side.BUY, 1.0)
    v.submit(o, T0)
    events.clear()
    assert v.cancel(cancel_of(o.client_order_id), T0) is False
    assert v.cancel(cancel_of("never-sent"), T0) is False
    assert [type(e) for e in events] == [OrderCancelRejected, OrderCancelRejected]
    assert [e.client_order_id for e in events] == [o.client_order_id, "never-sent"]  # type: ignore[attr-defined]
    assert events[0].reason == f"{o.client_order_id} is not working at SIM"  # type: ignore[attr-defined]


# --- batches and the look-ahead --------------------------------------------------------------


def quotes(rows: list[tuple[int, float, float]]) -> tuple[np.ndarray, ...]:
    """Columns of a batch: instrument, bid, ask, ts, bid_size, ask_size (sizes unknown)."""
    inst = np.array([r[0] for r in rows], dtype=np.uint32)
    bid = np.array([r[1] for r in rows])
    ask = np.array([r[2] for r in rows])
    ts = T0 + 1_000 * np.arange(1, len(rows) + 1, dtype=np.int64)
    return inst, bid, ask, ts, np.zeros(len(rows)), np.zeros(len(rows))


def test_scan_finds_the_first_crossing_tick_and_the_batch_fills_there() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.on_quote(1, 9.90, 10.00, T0)
    buy = limit(Side.BUY, 1.0, 99.50)
    sell = limit(Side.SELL, 1.0, 10.20, instrument="XYZ.SIM")
    v.submit(buy, T0)
    v.submit(sell, T0)
    inst, bid, ask, ts, bid_size, ask_size = quotes(
        [
            (0, 99.50, 99.60),  # 0: ask above the buy limit
            (1, 10.10, 10.30),  # 1: bid below the sell limit
            (0, 99.60, 99.70),  # 2
            (1, 10.20, 10.30),  # 3: bid reaches the sell limit
            (0, 99.40, 99.50),  # 4: ask reaches the buy limit
            (0, 99.00, 99.10),  # 5
        ]
    )
    assert v.scan(inst, bid, ask) == 3
    assert v.scan(inst, bid, ask, 4) == 4
    assert v.scan(inst[:3], bid[:3], ask[:3]) == 3  # none: len
    assert not [e for e in events if isinstance(e, OrderFilled)]  # scanning changed nothing

    events.clear()
    v.on_quote_batch(inst, bid, ask, ts, bid_size, ask_size)
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [(f.client_order_id, f.last_px, f.ts_event) for f in fills] == [
        (sell.client_order_id, 10.20, int(ts[3])),
        (buy.client_order_id, 99.50, int(ts[4])),
    ]
    # the venue's book keeps the last quote of each instrument
    assert (v.bid[0], v.ask[0], v.bid[1], v.ask[1]) == (99.00, 99.10, 10.20, 10.30)
    assert v.now == int(ts[-1])
    assert v.scan(inst, bid, ask) == len(bid)  # nothing rests any more


def test_scan_finds_where_a_stop_triggers() -> None:
    v, _ = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(stop(Side.BUY, 1.0, 100.50), T0)
    v.submit(stop(Side.SELL, 1.0, 99.00, instrument="XYZ.SIM"), T0)
    inst, bid, ask, *_ = quotes(
        [
            (0, 100.30, 100.49),  # 0: one cent under the buy stop
            (1, 99.01, 99.03),  # 1: one cent over the sell stop
            (0, 100.48, 100.50),  # 2: the ask reaches the buy stop
            (1, 98.99, 99.00),  # 3: the bid passes the sell stop
        ]
    )
    assert v.scan(inst, bid, ask) == 2
    assert v.scan(inst, bid, ask, 3) == 3
    assert v.scan(inst[:2], bid[:2], ask[:2]) == 2


def test_batch_keeps_the_displayed_size_of_each_instruments_last_quote() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    inst, bid, ask, ts, _, _ = quotes([(0, 99.90, 100.00), (1, 9.9, 10.0), (0, 99.91, 100.01)])
    bid_size, ask_size = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    v.on_quote_batch(inst, bid, ask, ts, bid_size, ask_size)
    assert (v.bid_size[0], v.ask_size[0], v.bid_size[1], v.ask_size[1]) == (3.0, 6.0, 2.0, 5.0)
    v.submit(order(Side.BUY, 10.0), T0 + 10_000)
    assert executions(events) == [("OrderPartiallyFilled", 6.0, 100.01, 4.0, "TAKER", T0 + 10_000)]


def test_batch_and_one_quote_at_a_time_give_the_same_events(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    n = 5_000
    inst = gen.integers(0, 2, size=n).astype(np.uint32)
    base = np.array([100.0, 10.0])[inst]
    walk = np.cumsum(gen.integers(-1, 2, size=n)) * 0.01
    bid = np.round(base + walk, 2)
    ask = np.round(bid + 0.01 * gen.integers(1, 3, size=n), 2)
    ts = T0 + 1_000 * np.arange(n, dtype=np.int64)
    bid_size = gen.integers(0, 8, size=n).astype(np.float64)
    ask_size = gen.integers(0, 8, size=n).astype(np.float64)

    def resting_orders() -> list[OrderRequest]:
        out = []
        for k in range(12):
            i = int(gen.integers(0, 2))
            side = Side.BUY if k % 2 else Side.SELL
            offset = float(gen.uniform(0.02, 0.4)) * (-1 if side is Side.BUY else 1)
            out.append(
                limit(
                    side,
                    float(k + 1),
                    round([100.0, 10.0][i] + offset, 2),
                    instrument=INSTRUMENTS.at(i).id,
                    client_order_id=f"r-{k}",
                )
            )
        return out

    orders = resting_orders()
    one, one_events = venue()
    many, many_events = venue()
    for v in (one, many):
        v.on_quote(0, 99.99, 100.00, T0 - 1)
        v.on_quote(1, 9.99, 10.00, T0 - 1)
        for o in orders:
            v.submit(o, T0 - 1)
    for t in range(n):
        one.on_quote(
            int(inst[t]),
            float(bid[t]),
            float(ask[t]),
            int(ts[t]),
            float(bid_size[t]),
            float(ask_size[t]),
        )
    cuts = [0, *sorted(gen.choice(np.arange(1, n), size=9, replace=False).tolist()), n]
    for a, b in itertools.pairwise(cuts):
        many.on_quote_batch(inst[a:b], bid[a:b], ask[a:b], ts[a:b], bid_size[a:b], ask_size[a:b])

    context = f"rand_seed={rand_seed}"
    assert many_events == one_events, context
    assert sum(isinstance(e, OrderFilled) for e in one_events) >= 1, context
    assert list(many.resting) == list(one.resting), context
    assert np.array(many.bid).tobytes() == np.array(one.bid).tobytes(), context
    assert np.array(many.ask).tobytes() == np.array(one.ask).tobytes(), context
    assert np.array(many.ask_size).tobytes() == np.array(one.ask_size).tobytes(), context


_KINDS = [OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT]
_TIFS = [TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK]


def test_batch_and_one_at_a_time_agree_for_every_order_type_and_time_in_force(
    rand_seed: int,
) -> None:
    """Quotes with random displayed sizes (0: unknown), and between them market, limit, stop
    and stop-limit orders with every time in force, cancels and a DAY close: batches cut
    wherever the look-ahead says must give exactly the events of one quote at a time."""
    gen = np.random.default_rng(rand_seed)
    n = 6_000
    inst = gen.integers(0, 2, size=n).astype(np.uint32)
    base = np.array([100.0, 10.0])[inst]
    walk = np.cumsum(gen.integers(-1, 2, size=n)) * 0.01
    bid = np.round(base + walk, 2)
    ask = np.round(bid + 0.01 * gen.integers(1, 4, size=n), 2)
    bid_size = gen.integers(0, 9, size=n).astype(np.float64)
    ask_size = gen.integers(0, 9, size=n).astype(np.float64)
    second = 1_000_000_000
    ts = T0 + 2 * second * np.arange(1, n + 1, dtype=np.int64)  # 2 s apart, past midnight UTC
    close = utc("2023-11-15T00:00:00+00:00")
    close_at = int(np.searchsorted(ts, close))  # the first quote at or after the close
    assert 0 < close_at < n

    def new_order(k: int, v: SimulatedVenue) -> OrderRequest:
        i = int(gen.integers(0, 2))
        side = Side.BUY if gen.random() < 0.5 else Side.SELL
        sign = 1 if side is Side.BUY else -1
        kind = _KINDS[int(gen.integers(0, 4))]
        tif = _TIFS[int(gen.integers(0, 4))]
        if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and tif in (
            TimeInForce.IOC,
            TimeInForce.FOK,
        ):
            tif = TimeInForce.GTC if gen.random() < 0.9 else tif  # a few get rejected
        touch = float(v.ask[i] if side is Side.BUY else v.bid[i])
        limit_price = stop_price = None
        if kind is OrderType.LIMIT:
            limit_price = round(touch + sign * 0.01 * int(gen.integers(-6, 3)), 2)
        elif kind is not OrderType.MARKET:
            stop_price = round(touch + sign * 0.01 * int(gen.integers(0, 8)), 2)
            if kind is OrderType.STOP_LIMIT:
                limit_price = round(stop_price + sign * 0.01 * int(gen.integers(-2, 4)), 2)
        return order(
            side,
            float(gen.integers(1, 15)),
            instrument=INSTRUMENTS.at(i).id,
            order_type=kind,
            limit=limit_price,
            stop=stop_price,
            tif=tif,
            client_order_id=f"x-{k}",
        )

    # actions before quote t: ("submit", order) / ("cancel", id) / ("expire", ts), recorded
    # while the one-at-a-time venue runs, then replayed between batches of the other
    points = set(gen.choice(np.arange(1, n), size=150, replace=False).tolist())
    one, one_events = venue()
    actions: dict[int, list[tuple[str, object]]] = {}
    submitted = 0
    for t in range(n):
        todo: list[tuple[str, object]] = []
        if t == close_at:
            todo.append(("expire", close))
        if t == close_at - 10:  # one DAY order certain to be working at the close
            far = limit(Side.BUY, 1.0, 90.00, tif=TimeInForce.DAY, client_order_id="day")
            todo.append(("submit", far))
        if t in points:
            if one.working and gen.random() < 0.2:
                ids = sorted(one.working)
                todo.append(("cancel", ids[int(gen.integers(0, len(ids)))]))
            for _ in range(int(gen.integers(1, 3))):
                todo.append(("submit", new_order(submitted, one)))
                submitted += 1
        if todo:
            actions[t] = todo
            _apply(one, todo, int(ts[t]) - 1)
        one.on_quote(
            int(inst[t]),
            float(bid[t]),
            float(ask[t]),
            int(ts[t]),
            float(bid_size[t]),
            float(ask_size[t]),
        )

    many, many_events = venue()
    extra = gen.choice(np.arange(1, n), size=20, replace=False).tolist()
    cuts = sorted({0, n, *actions, *extra})
    for a, b in itertools.pairwise(cuts):
        if a in actions:
            _apply(many, actions[a], int(ts[a]) - 1)
        many.on_quote_batch(inst[a:b], bid[a:b], ask[a:b], ts[a:b], bid_size[a:b], ask_size[a:b])

    context = f"rand_seed={rand_seed}"
    assert len(many_events) == len(one_events), context
    for k, (got, want) in enumerate(zip(many_events, one_events, strict=True)):
        assert got == want, f"event {k}: {context}"
    assert list(many.resting) == list(one.resting), context
    # the sequence exercised what it is meant to
    count = Counter(kinds(one_events))
    assert count["OrderPartiallyFilled"] >= 10, (count, context)
    assert count["OrderFilled"] >= 30, (count, context)
    assert count["OrderCancelled"] >= 1, (count, context)
    reasons = {e.reason.split(":")[0] for e in one_events if isinstance(e, OrderExpired)}
    assert {"IOC", "FOK", "DAY order"} <= reasons, (reasons, context)
    by_id = {
        o.client_order_id: o
        for todo in actions.values()
        for _, o in todo
        if isinstance(o, OrderRequest)
    }
    filled_kinds = {
        (by_id[e.client_order_id].order_type, e.liquidity)
        for e in one_events
        if isinstance(e, OrderPartiallyFilled)
    }
    assert {
        (OrderType.MARKET, "TAKER"),
        (OrderType.LIMIT, "MAKER"),
        (OrderType.STOP, "TAKER"),
        (OrderType.STOP_LIMIT, "MAKER"),
    } <= filled_kinds, (filled_kinds, context)


def _apply(v: SimulatedVenue, todo: list[tuple[str, object]], ts: int) -> None:
    for what, arg in todo:
        if what == "submit":
            assert isinstance(arg, OrderRequest)
            v.submit(arg, ts)
        elif what == "cancel":
            assert isinstance(arg, str)
            v.cancel(cancel_of(arg), ts)
        else:
            assert isinstance(arg, int)
            v.expire_day_orders(arg)


# --- ids and determinism -------------------------------------------------------------------


def test_event_order_and_deterministic_venue_ids() -> None:
    def session() -> list[Message]:
        v, events = venue()
        v.on_quote(0, 99.90, 100.00, T0)
        v.submit(order(Side.BUY, 1.0, client_order_id="a"), T0)
        v.submit(limit(Side.SELL, 1.0, 101.0, client_order_id="b"), T0)
        v.submit(order(Side.BUY, 1.0, order_type=OrderType.STOP, client_order_id="c"), T0)
        v.submit(stop(Side.BUY, 1.0, 100.50, client_order_id="d"), T0)
        v.on_quote(0, 101.0, 101.1, T0 + 1)
        return events

    events = session()
    assert [(type(e).__name__, e.client_order_id) for e in events] == [  # type: ignore[attr-defined]
        ("OrderAccepted", "a"),
        ("OrderFilled", "a"),
        ("OrderAccepted", "b"),
        ("OrderRejected", "c"),  # a stop without a stop price
        ("OrderAccepted", "d"),
        ("OrderFilled", "b"),
        ("OrderFilled", "d"),
    ]
    accepted = [e for e in events if isinstance(e, OrderAccepted)]
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [e.venue_order_id for e in accepted] == ["SIM-1", "SIM-2", "SIM-3"]
    assert [(f.venue_order_id, f.trade_id) for f in fills] == [
        ("SIM-1", "SIM-T1"),
        ("SIM-2", "SIM-T2"),
        ("SIM-3", "SIM-T3"),
    ]
    assert session() == events  # a second venue given the same inputs says the same things
