"""The simulated venue (:class:`engine.matching.SimulatedVenue`): fills, commissions, resting
orders, rejections, and the batch look-ahead the replay relies on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.matching import SimulatedVenue, VenueCosts
from engine.messages import (
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)

T0 = 1_700_000_000_000_000_000

INSTRUMENTS = InstrumentTable(
    [
        Instrument(id="ABC.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01),
        Instrument(id="XYZ.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01),
    ]
)

_ids = itertools.count(1)


COSTS = VenueCosts(taker_rate=0.001, maker_rate=0.0005)  # 10 bp taker, 5 bp maker


def venue(costs: VenueCosts = COSTS) -> tuple[SimulatedVenue, list[Message]]:
    events: list[Message] = []
    return SimulatedVenue("SIM", INSTRUMENTS, costs, "USD", events.append), events


def order(
    side: Side,
    quantity: float,
    *,
    instrument: str = "ABC.SIM",
    order_type: OrderType = OrderType.MARKET,
    limit: float | None = None,
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
        time_in_force=tif,
        ts_event=T0,
        ts_init=T0,
    )


def limit(side: Side, quantity: float, price: float, **kw: object) -> OrderRequest:
    return order(side, quantity, order_type=OrderType.LIMIT, limit=price, **kw)  # type: ignore[arg-type]


def kinds(events: list[Message]) -> list[str]:
    return [type(e).__name__ for e in events]


def only_fill(events: list[Message]) -> OrderFilled:
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert len(fills) == 1, kinds(events)
    return fills[0]


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


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_non_marketable_ioc_and_fok_expire_at_once(tif: TimeInForce) -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    o = limit(Side.BUY, 10.0, 99.00, tif=tif)
    v.submit(o, T0)
    assert kinds(events) == ["OrderAccepted", "OrderExpired"]
    assert isinstance(events[1], OrderExpired)
    assert events[1].client_order_id == o.client_order_id
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
    assert events[0].reason == "a limit order needs a positive limit price"  # type: ignore[attr-defined]


# --- cancels -----------------------------------------------------------------------------


def test_cancel_of_a_resting_order_emits_cancelled_and_it_never_fills() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    o = limit(Side.BUY, 10.0, 99.00)
    v.submit(o, T0)
    assert v.cancel(o.client_order_id, T0 + 5) is True
    assert kinds(events) == ["OrderAccepted", "OrderCancelled"]
    cancelled = events[1]
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.client_order_id, cancelled.ts_event) == (o.client_order_id, T0 + 5)
    v.on_quote(0, 98.00, 98.50, T0 + 6)
    assert kinds(events) == ["OrderAccepted", "OrderCancelled"]
    # the look-ahead agrees that nothing is left to fill
    assert v.scan(np.zeros(1, np.uint32), np.array([98.0]), np.array([98.5])) == 1


def test_cancel_of_an_unknown_or_filled_order_does_nothing() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    o = order(Side.BUY, 1.0)
    v.submit(o, T0)
    events.clear()
    assert v.cancel(o.client_order_id, T0) is False
    assert v.cancel("never-sent", T0) is False
    assert events == []


# --- what the venue does not do --------------------------------------------------------------


@pytest.mark.parametrize("order_type", [OrderType.STOP, OrderType.STOP_LIMIT])
def test_stop_orders_are_rejected_saying_they_are_not_supported(order_type: OrderType) -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(order(Side.BUY, 1.0, order_type=order_type, limit=101.0), T0)
    assert kinds(events) == ["OrderRejected"]
    reason = events[0].reason  # type: ignore[attr-defined]
    assert reason == f"{order_type.value} orders are not supported by the simulated venue yet"


def test_day_orders_are_rejected_saying_why() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.submit(order(Side.BUY, 1.0, tif=TimeInForce.DAY), T0)
    assert kinds(events) == ["OrderRejected"]
    reason = events[0].reason  # type: ignore[attr-defined]
    assert "DAY orders need a trading calendar" in reason
    assert "GTC, IOC, FOK" in reason


# --- batches and the look-ahead --------------------------------------------------------------


def quotes(rows: list[tuple[int, float, float]]) -> tuple[np.ndarray, ...]:
    inst = np.array([r[0] for r in rows], dtype=np.uint32)
    bid = np.array([r[1] for r in rows])
    ask = np.array([r[2] for r in rows])
    ts = T0 + 1_000 * np.arange(1, len(rows) + 1, dtype=np.int64)
    return inst, bid, ask, ts


def test_scan_finds_the_first_crossing_tick_and_the_batch_fills_there() -> None:
    v, events = venue()
    v.on_quote(0, 99.90, 100.00, T0)
    v.on_quote(1, 9.90, 10.00, T0)
    buy = limit(Side.BUY, 1.0, 99.50)
    sell = limit(Side.SELL, 1.0, 10.20, instrument="XYZ.SIM")
    v.submit(buy, T0)
    v.submit(sell, T0)
    inst, bid, ask, ts = quotes(
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
    v.on_quote_batch(inst, bid, ask, ts)
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [(f.client_order_id, f.last_px, f.ts_event) for f in fills] == [
        (sell.client_order_id, 10.20, int(ts[3])),
        (buy.client_order_id, 99.50, int(ts[4])),
    ]
    # the venue's book keeps the last quote of each instrument
    assert (v.bid[0], v.ask[0], v.bid[1], v.ask[1]) == (99.00, 99.10, 10.20, 10.30)
    assert v.now == int(ts[-1])
    assert v.scan(inst, bid, ask) == len(bid)  # nothing rests any more


def test_batch_and_one_quote_at_a_time_give_the_same_events(rand_seed: int) -> None:
    gen = np.random.default_rng(rand_seed)
    n = 5_000
    inst = gen.integers(0, 2, size=n).astype(np.uint32)
    base = np.array([100.0, 10.0])[inst]
    walk = np.cumsum(gen.integers(-1, 2, size=n)) * 0.01
    bid = np.round(base + walk, 2)
    ask = np.round(bid + 0.01 * gen.integers(1, 3, size=n), 2)
    ts = T0 + 1_000 * np.arange(n, dtype=np.int64)

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
        one.on_quote(int(inst[t]), float(bid[t]), float(ask[t]), int(ts[t]))
    cuts = [0, *sorted(gen.choice(np.arange(1, n), size=9, replace=False).tolist()), n]
    for a, b in itertools.pairwise(cuts):
        many.on_quote_batch(inst[a:b], bid[a:b], ask[a:b], ts[a:b])

    context = f"rand_seed={rand_seed}"
    assert many_events == one_events, context
    assert sum(isinstance(e, OrderFilled) for e in one_events) >= 1, context
    assert list(many.resting) == list(one.resting), context
    assert many.bid.tobytes() == one.bid.tobytes(), context
    assert many.ask.tobytes() == one.ask.tobytes(), context


# --- ids and determinism -------------------------------------------------------------------


def test_event_order_and_deterministic_venue_ids() -> None:
    def session() -> list[Message]:
        v, events = venue()
        v.on_quote(0, 99.90, 100.00, T0)
        v.submit(order(Side.BUY, 1.0, client_order_id="a"), T0)
        v.submit(limit(Side.SELL, 1.0, 101.0, client_order_id="b"), T0)
        v.submit(order(Side.BUY, 1.0, order_type=OrderType.STOP, client_order_id="c"), T0)
        v.on_quote(0, 101.0, 101.1, T0 + 1)
        return events

    events = session()
    assert [(type(e).__name__, e.client_order_id) for e in events] == [  # type: ignore[attr-defined]
        ("OrderAccepted", "a"),
        ("OrderFilled", "a"),
        ("OrderAccepted", "b"),
        ("OrderRejected", "c"),
        ("OrderFilled", "b"),
    ]
    accepted = [e for e in events if isinstance(e, OrderAccepted)]
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [e.venue_order_id for e in accepted] == ["SIM-1", "SIM-2"]
    assert [(f.venue_order_id, f.trade_id) for f in fills] == [
        ("SIM-1", "SIM-T1"),
        ("SIM-2", "SIM-T2"),
    ]
    assert session() == events  # a second venue given the same inputs says the same things
