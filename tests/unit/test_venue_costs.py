"""What the simulated venue charges and measures on a fill: commission schedules (per share
with a minimum and a maximum, basis points of notional, per contract; by asset class and by
instrument; maker and taker; rounding) and the spread and slippage cost fields."""

from __future__ import annotations

import itertools
import math
import tomllib

import msgspec
import pytest

from adapters.sim_exchange import SimExchangeConfig
from engine.instruments import Instrument, InstrumentTable
from engine.matching import CommissionSchedule, SimulatedVenue, VenueCosts
from engine.messages import (
    Message,
    OrderPartiallyFilled,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)

T0 = 1_700_000_000_000_000_000

ABC = Instrument(id="ABC.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01)
EURUSD = Instrument(
    id="EURUSD.SIM",
    asset_class="fx",
    quote_currency="USD",
    base_currency="EUR",
    price_increment=0.00001,
)
# CME euro FX future: 125,000 EUR a contract, quoted in USD per EUR
SIX_E = Instrument(
    id="6E.SIM",
    asset_class="future",
    quote_currency="USD",
    price_increment=0.00005,
    multiplier=125_000.0,
)
ES = Instrument(
    id="ES.SIM", asset_class="future", quote_currency="USD", price_increment=0.25, multiplier=50.0
)
INSTRUMENTS = InstrumentTable([ABC, EURUSD, SIX_E, ES])

# An IB-like fixed equity schedule: 0.005 a share, at least 1.00, at most 1% of the value
IB_EQUITY = CommissionSchedule(per_unit=0.005, minimum=1.00, maximum_rate=0.01)

COSTS = VenueCosts(
    taker_rate=0.0002,  # 2 bp of notional by default (here: FX)
    maker_rate=0.0001,
    by_asset_class={"equity": IB_EQUITY, "future": CommissionSchedule(per_unit=2.10)},
    by_instrument={"ES.SIM": CommissionSchedule(per_unit=1.50)},
)

_ids = itertools.count(1)


def venue(costs: VenueCosts = COSTS) -> tuple[SimulatedVenue, list[Message]]:
    events: list[Message] = []
    return SimulatedVenue("SIM", INSTRUMENTS, costs, "USD", events.append), events


def order(
    side: Side,
    quantity: float,
    instrument: Instrument = ABC,
    *,
    limit: float | None = None,
    tif: TimeInForce = TimeInForce.GTC,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"c-{next(_ids)}",
        strategy_id="test",
        instrument_id=instrument.id,
        side=side,
        quantity=quantity,
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=limit,
        time_in_force=tif,
        ts_event=T0,
        ts_init=T0,
    )


def fills(events: list[Message]) -> list[OrderPartiallyFilled]:
    return [e for e in events if isinstance(e, OrderPartiallyFilled)]


def quote(
    v: SimulatedVenue, inst: Instrument, bid: float, ask: float, ts: int, size: float = 0.0
) -> None:
    """A quote with ``size`` displayed on both sides (0: unknown)."""
    v.on_quote(INSTRUMENTS.index(inst.id), bid, ask, ts, size, size)


def cents(amount: float) -> float:
    """A cost figure to the cent, for comparing with hand-computed amounts."""
    return round(amount, 2) + 0.0  # + 0.0: no -0.0


# --- commission schedules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "price", "expected"),
    [
        (100, 10.00, 1.00),  # 0.50 by the share: the minimum
        (300, 25.00, 1.50),  # 300 x 0.005
        (1_000, 50.00, 5.00),
        (10_000, 0.50, 50.00),  # 50.00 by the share, and 1% of 5,000 is 50.00 too
        (10_000, 0.25, 25.00),  # 50.00 by the share, capped at 1% of 2,500
        (100, 0.50, 0.50),  # the 1% cap (0.50) wins over the 1.00 minimum
        (462, 12.34, 2.31),
    ],
)
def test_per_share_schedule_with_minimum_and_maximum(
    shares: int, price: float, expected: float
) -> None:
    assert IB_EQUITY.commission(shares * price, shares, maker=False) == expected
    assert IB_EQUITY.commission(shares * price, shares, maker=True) == expected  # no maker rate


def test_basis_points_of_notional_taker_and_maker() -> None:
    schedule = CommissionSchedule(taker_rate=0.0002, maker_rate=0.0001)
    notional = 100_000 * 1.10002  # 110,002.00
    assert schedule.commission(notional, 100_000, maker=False) == 22.00  # 22.0004
    assert schedule.commission(notional, 100_000, maker=True) == 11.00  # 11.0002


def test_maker_rate_none_is_the_taker_rate_and_zero_is_free() -> None:
    same = CommissionSchedule(taker_rate=0.001)
    assert same.commission(1_000.0, 10, maker=True) == same.commission(1_000.0, 10, maker=False)
    assert same.commission(1_000.0, 10, maker=True) == 1.00
    free = CommissionSchedule(taker_rate=0.001, maker_rate=0.0)
    assert free.commission(1_000.0, 10, maker=True) == 0.0


def test_rate_and_per_unit_add_up_before_the_minimum() -> None:
    schedule = CommissionSchedule(taker_rate=0.0001, per_unit=0.01, minimum=20.0)
    assert schedule.commission(50_000.0, 1_000, maker=False) == 20.00  # 5 + 10 = 15: minimum
    assert schedule.commission(150_000.0, 1_000, maker=False) == 25.00  # 15 + 10


def test_per_contract_ignores_the_notional() -> None:
    schedule = CommissionSchedule(per_unit=2.10)
    # 3 contracts of 125,000 EUR at 1.1000: notional 412,500 USD
    assert schedule.commission(3 * 1.1 * 125_000, 3, maker=False) == 6.30
    assert schedule.commission(1 * 1.2 * 125_000, 1, maker=True) == 2.10


@pytest.mark.parametrize(
    ("rounding", "expected"),
    [(0.01, 0.87), (1.0, 1.0), (0.05, 0.85), (0.0, 0.8666)],
)
def test_rounding_step(rounding: float, expected: float) -> None:
    schedule = CommissionSchedule(taker_rate=0.001, rounding=rounding)
    assert schedule.commission(866.6, 7, maker=False) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("field", ["taker_rate", "per_unit", "minimum", "rounding"])
def test_negative_schedule_values_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must not be negative"):
        CommissionSchedule(**{field: -0.01})


def test_instrument_schedule_wins_over_asset_class_which_wins_over_the_default() -> None:
    assert COSTS.schedule_for(EURUSD) is COSTS  # no override for fx
    assert COSTS.schedule_for(ABC) is IB_EQUITY
    assert COSTS.schedule_for(SIX_E).per_unit == 2.10
    assert COSTS.schedule_for(ES).per_unit == 1.50  # a future, but its own schedule wins


def test_commission_schedules_from_toml() -> None:
    text = """
        kind = "sim_exchange"
        [costs]
        taker_rate = 0.0002
        [costs.by_asset_class.equity]
        per_unit = 0.005
        minimum = 1.0
        maximum_rate = 0.01
        [costs.by_instrument."ES.SIM"]
        per_unit = 1.50
    """
    config = msgspec.convert(tomllib.loads(text), SimExchangeConfig)
    assert config.costs.schedule_for(ABC) == IB_EQUITY
    assert config.costs.schedule_for(ES) == CommissionSchedule(per_unit=1.50)
    assert config.costs.schedule_for(SIX_E) is config.costs
    bad = text.replace("minimum = 1.0", "minimum_fee = 1.0")
    with pytest.raises(msgspec.ValidationError, match=r"minimum_fee.*\$\.costs\.by_asset_class"):
        msgspec.convert(tomllib.loads(bad), SimExchangeConfig)


def test_each_fill_is_charged_by_its_instruments_schedule() -> None:
    v, events = venue()
    quote(v, ABC, 9.99, 10.00, T0)
    quote(v, EURUSD, 1.10000, 1.10002, T0)
    quote(v, SIX_E, 1.10000, 1.10005, T0)
    quote(v, ES, 4500.00, 4500.25, T0)
    v.submit(order(Side.BUY, 100, ABC), T0)  # 0.50 by the share: the 1.00 minimum
    v.submit(order(Side.BUY, 1_000, ABC), T0)  # 5.00
    v.submit(order(Side.BUY, 100_000, EURUSD), T0)  # 2 bp of 110,002 = 22.0004
    v.submit(order(Side.SELL, 2, SIX_E), T0)  # 2 x 2.10
    v.submit(order(Side.BUY, 3, ES), T0)  # 3 x 1.50, its own schedule
    got = [(f.instrument_id, f.commission, f.commission_currency) for f in fills(events)]
    assert got == [
        ("ABC.SIM", 1.00, "USD"),
        ("ABC.SIM", 5.00, "USD"),
        ("EURUSD.SIM", 22.00, "USD"),
        ("6E.SIM", 4.20, "USD"),
        ("ES.SIM", 4.50, "USD"),
    ]


def test_maker_fills_pay_the_maker_rate_and_each_partial_fill_is_charged_on_its_own() -> None:
    v, events = venue()
    quote(v, EURUSD, 1.10000, 1.10002, T0)
    v.submit(order(Side.BUY, 200_000, EURUSD, limit=1.09990), T0)
    quote(v, EURUSD, 1.09980, 1.09990, T0 + 1, size=150_000)
    quote(v, EURUSD, 1.09980, 1.09985, T0 + 2, size=150_000)
    got = [(f.last_qty, f.last_px, f.liquidity, f.commission) for f in fills(events)]
    assert got == [
        (150_000, 1.09990, "MAKER", 16.50),  # 1 bp of 164,985.00 = 16.4985
        (50_000, 1.09990, "MAKER", 5.50),  # 1 bp of 54,995.00 = 5.4995
    ]


def test_the_minimum_applies_to_each_partial_fill() -> None:
    """A per-fill minimum: an order split by displayed size pays it on every piece."""
    v, events = venue()
    quote(v, ABC, 9.99, 10.00, T0, size=100)
    v.submit(order(Side.BUY, 300, ABC), T0)
    quote(v, ABC, 9.99, 10.00, T0 + 1, size=100)
    quote(v, ABC, 9.99, 10.00, T0 + 2, size=100)
    assert [(f.last_qty, f.commission) for f in fills(events)] == [(100, 1.00)] * 3


# --- spread and slippage -------------------------------------------------------------------


def test_taker_pays_half_the_spread_on_either_side() -> None:
    v, events = venue()
    quote(v, ABC, 100.00, 100.02, T0)
    v.submit(order(Side.BUY, 10, ABC), T0)
    v.submit(order(Side.SELL, 10, ABC), T0)
    got = [(f.side, f.last_px, cents(f.spread_cost), f.slippage_cost) for f in fills(events)]
    assert got == [
        (Side.BUY, 100.02, 0.10, 0.0),  # 0.01 from the mid x 10
        (Side.SELL, 100.00, 0.10, 0.0),
    ]


def test_spread_cost_counts_the_contract_multiplier() -> None:
    v, events = venue()
    quote(v, SIX_E, 1.10000, 1.10005, T0)
    v.submit(order(Side.BUY, 2, SIX_E), T0)
    (fill,) = fills(events)
    # half of 0.00005 x 2 contracts x 125,000
    assert fill.spread_cost == pytest.approx(6.25)
    assert fill.slippage_cost == 0.0


def test_slippage_of_a_market_order_walking_the_book_as_the_mid_moves_away() -> None:
    v, events = venue()
    quote(v, ABC, 99.98, 100.00, T0, size=3)  # decision mid 99.99
    v.submit(order(Side.BUY, 10, ABC), T0)
    quote(v, ABC, 100.03, 100.05, T0 + 1, size=4)  # mid 100.04
    quote(v, ABC, 100.08, 100.10, T0 + 2, size=10)  # mid 100.09
    got = [
        (f.last_qty, f.last_px, cents(f.spread_cost), cents(f.slippage_cost)) for f in fills(events)
    ]
    assert got == [
        (3, 100.00, 0.03, 0.0),
        (4, 100.05, 0.04, 0.20),  # (100.04 - 99.99) x 4
        (3, 100.10, 0.03, 0.30),  # (100.09 - 99.99) x 3
    ]


def test_a_sell_slips_when_the_mid_falls_and_gains_when_it_rises() -> None:
    v, events = venue()
    quote(v, ABC, 50.00, 50.02, T0, size=1)  # decision mid 50.01
    v.submit(order(Side.SELL, 3, ABC), T0)
    quote(v, ABC, 49.96, 49.98, T0 + 1, size=1)  # mid 49.97: 0.04 against the sell
    quote(v, ABC, 50.05, 50.07, T0 + 2, size=1)  # mid 50.06: 0.05 in its favour
    assert [cents(f.slippage_cost) for f in fills(events)] == [0.0, 0.04, -0.05]


def test_slippage_is_measured_from_the_decision_mid_given_to_the_venue() -> None:
    v, events = venue()
    quote(v, SIX_E, 1.10010, 1.10015, T0)  # mid at arrival 1.100125
    v.submit(order(Side.BUY, 2, SIX_E), T0, decision_mid=1.10000)
    (fill,) = fills(events)
    assert fill.slippage_cost == pytest.approx(0.000125 * 2 * 125_000)  # 31.25
    assert fill.spread_cost == pytest.approx(0.000025 * 2 * 125_000)  # 6.25
    # together: what the fill paid over the decision mid
    assert fill.spread_cost + fill.slippage_cost == pytest.approx(
        (fill.last_px - 1.10000) * 2 * 125_000
    )


def test_no_decision_mid_means_no_slippage_figure() -> None:
    v, events = venue()
    v.submit(order(Side.BUY, 5, ABC, limit=50.00), T0)  # before any quote: mid unknown
    quote(v, ABC, 49.90, 50.00, T0 + 1)
    (fill,) = fills(events)
    assert fill.slippage_cost == 0.0
    assert math.isfinite(fill.spread_cost)


def test_a_maker_fill_below_the_mid_earns_the_spread() -> None:
    v, events = venue()
    quote(v, ABC, 99.50, 99.60, T0)  # our bid joins at 99.50; the mid is 99.55
    v.submit(order(Side.BUY, 4, ABC, limit=99.50), T0)
    quote(v, ABC, 99.40, 99.50, T0 + 1)  # a seller comes down to our price
    (fill,) = fills(events)
    assert (fill.last_px, fill.liquidity) == (99.50, "MAKER")
    # bought 0.05 under the mid it rested at: the spread earned is a negative cost
    assert fill.spread_cost == pytest.approx(-0.20)
