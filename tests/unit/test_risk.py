"""Pre-trade risk (:class:`engine.risk.PreTradeRisk`): the gate fails closed, and every denial
is a sentence a person can act on."""

from __future__ import annotations

import itertools
import math

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import OrderFilled, OrderRequest, OrderType, Side, TradingState
from engine.risk import PreTradeRisk, RiskLimits

T0 = 1_700_000_000_000_000_000

INSTRUMENTS = InstrumentTable(
    [
        Instrument(id="ABC.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01),
        Instrument(
            id="ESZ4.CME",
            asset_class="future",
            quote_currency="USD",
            price_increment=0.25,
            multiplier=50.0,
        ),
        Instrument(
            id="BTCUSDT.SIM",
            asset_class="crypto",
            quote_currency="USD",
            price_increment=0.01,
            size_increment=0.00001,
        ),
        Instrument(
            id="LOT.SIM",
            asset_class="equity",
            quote_currency="USD",
            price_increment=0.01,
            size_increment=100.0,
        ),
    ]
)

_ids = itertools.count(1)


def gate(limits: RiskLimits | None = None) -> PreTradeRisk:
    return PreTradeRisk(INSTRUMENTS, limits or RiskLimits(), "USD")


def order(
    side: Side,
    quantity: float,
    *,
    instrument: str = "ABC.SIM",
    order_type: OrderType = OrderType.MARKET,
    limit: float | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"o-{next(_ids)}",
        strategy_id="test",
        instrument_id=instrument,
        side=side,
        quantity=quantity,
        order_type=order_type,
        limit_price=limit,
        ts_event=T0,
        ts_init=T0,
    )


def fill(o: OrderRequest, qty: float, leaves: float = 0.0) -> OrderFilled:
    return OrderFilled(
        client_order_id=o.client_order_id,
        venue_order_id="SIM-1",
        trade_id="SIM-T1",
        strategy_id=o.strategy_id,
        instrument_id=o.instrument_id,
        side=o.side,
        last_qty=qty,
        last_px=100.0,
        leaves_qty=leaves,
        commission=0.0,
        commission_currency="USD",
        liquidity="TAKER",
        ts_event=T0,
        ts_init=T0,
    )


def long_100() -> PreTradeRisk:
    """A gate that has seen a buy of 100 ABC fill, with a quote, then switched to REDUCING."""
    risk = gate()
    risk.on_quote(0, 99.0, 101.0)
    buy = order(Side.BUY, 100.0)
    assert risk.check(buy) is None
    risk.on_fill(fill(buy, 100.0))
    assert risk.position[0] == 100.0 and not risk.working
    risk.set_state(TradingState.REDUCING, "daily loss limit reached")
    return risk


# --- trading state -----------------------------------------------------------------------


def test_halted_denies_everything_and_says_why() -> None:
    risk = gate()
    risk.on_quote(0, 99.0, 101.0)
    assert risk.set_state(TradingState.HALTED, "operator pressed halt") is TradingState.ACTIVE
    for o in (
        order(Side.BUY, 1.0),
        order(Side.SELL, 1.0),
        order(Side.BUY, 1.0, order_type=OrderType.LIMIT, limit=90.0),
    ):
        reason = risk.check(o)
        assert reason == "trading is HALTED (operator pressed halt); no orders until it is resumed"
    assert risk.working == {}


def test_set_state_reports_no_change_when_already_there() -> None:
    risk = gate()
    assert risk.set_state(TradingState.ACTIVE, "again") is None
    assert risk.state_reason == "start"


def test_reducing_allows_orders_that_shrink_the_position() -> None:
    risk = long_100()
    assert risk.check(order(Side.SELL, 40.0)) is None
    assert risk.check(order(Side.SELL, 60.0)) is None  # together exactly flat: allowed


def test_reducing_counts_working_orders_so_two_cannot_flip_the_position() -> None:
    risk = long_100()
    assert risk.check(order(Side.SELL, 60.0)) is None  # working: 100 -> 40 if it fills
    reason = risk.check(order(Side.SELL, 60.0))
    assert reason == (
        "trading is REDUCING (daily loss limit reached): only orders that shrink a position "
        "pass; this one takes ABC.SIM from 40 to -20"
    )


def test_reducing_denies_a_flip_an_increase_and_anything_when_flat() -> None:
    risk = long_100()
    flip = risk.check(order(Side.SELL, 150.0))
    assert flip is not None and "from 100 to -50" in flip
    grow = risk.check(order(Side.BUY, 1.0))
    assert grow is not None and "from 100 to 101" in grow
    limit_buy = order(Side.BUY, 100.0, order_type=OrderType.LIMIT, limit=10.0, instrument="LOT.SIM")
    flat = risk.check(limit_buy)  # no position in LOT.SIM: nothing to reduce
    assert flat is not None and "takes LOT.SIM from 0 to 100" in flat
    assert list(risk.working) == []


def test_reducing_with_a_short_position() -> None:
    risk = gate()
    risk.on_quote(0, 99.0, 101.0)
    sell = order(Side.SELL, 50.0)
    assert risk.check(sell) is None
    risk.on_fill(fill(sell, 50.0))
    risk.set_state(TradingState.REDUCING, "drawdown")
    assert risk.check(order(Side.SELL, 1.0)) is not None
    assert risk.check(order(Side.BUY, 51.0)) is not None
    assert risk.check(order(Side.BUY, 50.0)) is None


# --- order notional ------------------------------------------------------------------------


def test_market_order_notional_is_priced_at_the_ask_for_buys_and_the_bid_for_sells() -> None:
    risk = gate(RiskLimits(max_order_notional=10_000.0))
    risk.on_quote(0, 99.0, 101.0)
    assert risk.check(order(Side.BUY, 99.0)) is None  # 99 * 101 = 9,999
    assert risk.check(order(Side.BUY, 100.0)) == (
        "order notional 10,100.00 USD exceeds the limit 10,000.00 USD"
    )
    assert risk.check(order(Side.SELL, 101.0)) is None  # 101 * 99 = 9,999
    assert risk.check(order(Side.SELL, 102.0)) == (
        "order notional 10,098.00 USD exceeds the limit 10,000.00 USD"
    )


def test_limit_order_notional_is_priced_at_the_limit() -> None:
    risk = gate(RiskLimits(max_order_notional=10_000.0))
    risk.on_quote(0, 99.0, 101.0)
    limit_buy = order(Side.BUY, 100.0, order_type=OrderType.LIMIT, limit=99.5)
    assert risk.check(limit_buy) is None  # 9,950 at the limit, though 10,100 at the ask
    too_big = order(Side.SELL, 100.0, order_type=OrderType.LIMIT, limit=100.5)
    assert risk.check(too_big) == "order notional 10,050.00 USD exceeds the limit 10,000.00 USD"


def test_notional_includes_the_multiplier() -> None:
    risk = gate(RiskLimits(max_order_notional=500_000.0))
    risk.on_quote(1, 4999.75, 5000.0)
    assert risk.check(order(Side.BUY, 2.0, instrument="ESZ4.CME")) is None  # 500,000
    assert risk.check(order(Side.BUY, 3.0, instrument="ESZ4.CME")) == (
        "order notional 750,000.00 USD exceeds the limit 500,000.00 USD"
    )


def test_max_order_quantity() -> None:
    risk = gate(RiskLimits(max_order_quantity=1_000.0))
    risk.on_quote(0, 99.0, 101.0)
    assert risk.check(order(Side.BUY, 1_000.0)) is None
    assert risk.check(order(Side.BUY, 1_001.0)) == "quantity 1001 exceeds the limit 1000"


@pytest.mark.parametrize(
    ("bid", "ask", "side"),
    [
        (math.nan, math.nan, Side.BUY),  # never quoted
        (99.0, math.nan, Side.BUY),  # the side a buy needs is missing
        (math.nan, 101.0, Side.SELL),  # the side a sell needs is missing
        (0.0, 0.0, Side.SELL),
    ],
)
def test_market_order_without_a_price_is_denied(bid: float, ask: float, side: Side) -> None:
    risk = gate(RiskLimits(max_order_notional=1e12))
    if not (math.isnan(bid) and math.isnan(ask)):
        risk.on_quote(0, bid, ask)
    reason = risk.check(order(side, 1.0))
    assert reason == "no market price for ABC.SIM; cannot value a market order"
    assert risk.working == {}


def test_market_order_without_a_price_is_denied_even_without_a_notional_limit() -> None:
    risk = gate()
    assert risk.check(order(Side.BUY, 1.0)) is not None


def test_limit_order_without_a_limit_price_is_denied() -> None:
    risk = gate()
    risk.on_quote(0, 99.0, 101.0)
    reason = risk.check(order(Side.BUY, 1.0, order_type=OrderType.LIMIT, limit=None))
    assert reason == "a LIMIT order needs a positive limit price"


# --- order sanity --------------------------------------------------------------------------


def test_unknown_instrument_is_denied() -> None:
    risk = gate()
    assert risk.check(order(Side.BUY, 1.0, instrument="NOPE.SIM")) == (
        "unknown instrument NOPE.SIM"
    )


def test_quantity_must_be_a_multiple_of_the_lot_size() -> None:
    risk = gate()
    risk.on_quote(3, 9.99, 10.01)
    assert risk.check(order(Side.BUY, 150.0, instrument="LOT.SIM")) == (
        "quantity 150.0 is not a multiple of the lot size 100.0"
    )
    assert risk.check(order(Side.BUY, 200.0, instrument="LOT.SIM")) is None
    # decimal lots whose quotient is not exact in binary still pass: 0.1 / 0.00001
    risk.on_quote(2, 60_000.0, 60_000.01)
    assert risk.check(order(Side.BUY, 0.1, instrument="BTCUSDT.SIM")) is None
    assert risk.check(order(Side.BUY, 0.123456, instrument="BTCUSDT.SIM")) is not None


@pytest.mark.parametrize("qty", [0.0, -5.0, math.nan, math.inf])
def test_quantity_must_be_positive_and_finite(qty: float) -> None:
    risk = gate()
    risk.on_quote(0, 99.0, 101.0)
    reason = risk.check(order(Side.BUY, qty))
    assert reason == f"quantity must be a positive number, got {qty}"


# --- working orders ------------------------------------------------------------------------


def test_approval_books_a_working_order_and_a_fill_releases_it() -> None:
    risk = gate()
    risk.on_quote(0, 99.0, 101.0)
    sell = order(Side.SELL, 30.0)
    assert risk.check(sell) is None
    assert risk.working == {sell.client_order_id: (0, -30.0)}
    risk.on_fill(fill(sell, 10.0, leaves=20.0))  # a partial fill leaves 20 working
    assert risk.working == {sell.client_order_id: (0, -20.0)}
    assert risk.position[0] == -10.0
    risk.on_fill(fill(sell, 20.0))
    assert risk.working == {}
    assert risk.position[0] == -30.0


def test_denied_orders_are_not_booked() -> None:
    risk = gate(RiskLimits(max_order_notional=100.0))
    risk.on_quote(0, 99.0, 101.0)
    assert risk.check(order(Side.BUY, 5.0)) is not None
    assert risk.working == {}


def test_cancel_reject_or_expiry_releases_a_working_order() -> None:
    risk = long_100()
    first = order(Side.SELL, 60.0)
    assert risk.check(first) is None
    second = order(Side.SELL, 60.0)
    assert risk.check(second) is not None  # would flip with the first still working
    risk.on_order_done(first.client_order_id)  # the first is cancelled
    assert risk.working == {}
    assert risk.check(second) is None  # now it only shrinks the position
    risk.on_order_done("never-sent")  # unknown ids are ignored
    assert list(risk.working) == [second.client_order_id]


def test_reducing_after_a_partial_fill_counts_only_the_leaves() -> None:
    risk = long_100()
    sell = order(Side.SELL, 80.0)
    assert risk.check(sell) is None
    risk.on_fill(fill(sell, 50.0, leaves=30.0))  # position 50, 30 still working: exposure 20
    assert risk.check(order(Side.SELL, 21.0)) is not None
    assert risk.check(order(Side.SELL, 20.0)) is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_order_notional must be positive"):
        RiskLimits(max_order_notional=0.0)
    with pytest.raises(ValueError, match="max_order_quantity must be positive"):
        RiskLimits(max_order_quantity=-1.0)


def _stop(side: Side, qty: float, stop: float | None, limit: float | None = None) -> OrderRequest:
    base = order(
        side, qty, order_type=OrderType.STOP_LIMIT if limit else OrderType.STOP, limit=limit
    )
    return OrderRequest(
        **{**{f: getattr(base, f) for f in base.__struct_fields__}, "stop_price": stop}
    )


def test_stop_orders_are_valued_at_the_worse_of_stop_and_touch() -> None:
    g = gate(RiskLimits(max_order_notional=10_000.0))
    g.on_quote(0, 99.0, 101.0)
    # a buy stop at 105 trades at the touch once the ask reaches 105: valued at 105
    assert g.check(_stop(Side.BUY, 95, 105.0)) is None  # 9,975
    denied = g.check(_stop(Side.BUY, 96, 105.0))  # 10,080
    assert denied is not None and "order notional 10,080.00 USD exceeds" in denied
    # a buy stop below the ask would trigger at once: valued at the ask, 101
    assert g.check(_stop(Side.BUY, 99, 90.0)) is None  # 9,999
    assert g.check(_stop(Side.BUY, 100, 90.0)) is not None  # 10,100
    # a sell stop at 95 is valued at the lower of 95 and the bid
    assert g.check(_stop(Side.SELL, 105, 95.0)) is None  # 9,975
    # a stop-limit is valued at its limit
    assert g.check(_stop(Side.BUY, 100, 105.0, limit=100.0)) is None  # 10,000
    assert g.check(_stop(Side.BUY, 100, 105.0, limit=100.5)) is not None


def test_stop_orders_need_a_stop_price_and_a_market() -> None:
    g = gate()
    assert g.check(_stop(Side.BUY, 1, None)) == "a STOP order needs a positive stop price"
    assert g.check(_stop(Side.BUY, 1, None, limit=100.0)) == (
        "a STOP_LIMIT order needs a positive stop price"
    )
    assert g.check(_stop(Side.BUY, 1, 105.0)) == (
        "no market price for ABC.SIM; cannot value a stop order"
    )
