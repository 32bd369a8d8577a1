"""Square-root market impact on the simulated venue's taker fills."""

from __future__ import annotations

import math

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.matching import MarketImpact, SimulatedVenue, VenueCosts
from engine.messages import Message, OrderFilled, OrderRequest, OrderType, Side

T0 = 1_700_000_000_000_000_000
INSTRUMENTS = InstrumentTable(
    [Instrument(id="XYZ.SIM", asset_class="equity", quote_currency="USD", price_increment=0.01)]
)


def venue(model: MarketImpact) -> tuple[SimulatedVenue, list[Message]]:
    events: list[Message] = []
    v = SimulatedVenue(
        "SIM", INSTRUMENTS, VenueCosts(), "USD", events.append, impact={"XYZ.SIM": model}
    )
    v.on_quote(0, 99.99, 100.01, T0, 0.0, 0.0)  # sizes unknown: no displayed-size limit
    return v, events


def order(n: int, side: Side, qty: float, **kw: object) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"o-{n}",
        strategy_id="s",
        instrument_id="XYZ.SIM",
        side=side,
        quantity=qty,
        ts_event=T0,
        ts_init=T0,
        **kw,  # type: ignore[arg-type]
    )


def fills(events: list[Message]) -> list[OrderFilled]:
    return [e for e in events if isinstance(e, OrderFilled)]


def test_temporary_impact_is_the_square_root_law_on_the_touch() -> None:
    # 2% daily volatility, 1M shares a day, eta 0.5: 10,000 shares move it
    # 0.5 * 0.02 * sqrt(0.01) = 0.1% of the price
    model = MarketImpact(daily_volume=1_000_000, daily_volatility=0.02, eta=0.5)
    assert model.temporary(10_000) == pytest.approx(0.001)
    v, events = venue(model)
    v.submit(order(1, Side.BUY, 10_000), T0)
    (f,) = fills(events)
    assert f.last_px == round(100.01 * 1.001, 2) == 100.11
    assert f.impact_cost == pytest.approx((100.11 - 100.01) * 10_000)
    assert f.spread_cost == pytest.approx(0.01 * 10_000)  # measured at the touch, apart
    v.submit(order(2, Side.SELL, 40_000), T0)  # twice the impact: sqrt(0.04) = 0.2
    sold = fills(events)[1]
    assert sold.last_px == round(99.99 * (1 - 0.002), 2)
    assert sold.impact_cost > 0  # a cost for a sale too


def test_permanent_impact_moves_later_fills_and_decays() -> None:
    model = MarketImpact(
        daily_volume=1_000_000,
        daily_volatility=0.02,
        eta=0.0,
        gamma=1.0,
        permanent_half_life_s=60.0,
    )
    v, events = venue(model)
    v.submit(order(1, Side.BUY, 50_000), T0)  # no temporary part: fills at the touch
    assert fills(events)[0].last_px == 100.01
    # it leaves 1.0 * 0.02 * 0.05 = 0.1% in the price for the next buyer
    v.submit(order(2, Side.BUY, 1), T0)
    assert fills(events)[1].last_px == round(100.01 * 1.001, 2)
    # one half-life later, half of it is left
    v.submit(order(3, Side.BUY, 1), T0 + 60 * 1_000_000_000)
    assert fills(events)[2].last_px == round(100.01 * (1 + (0.001 + 0.02 / 1e6) / 2), 2)


def test_no_impact_for_makers_and_never_past_a_limit() -> None:
    model = MarketImpact(daily_volume=1_000, daily_volatility=0.05, eta=1.0)
    v, events = venue(model)
    # marketable limit: impact would take it to 100.01 * (1 + 0.05 * sqrt(0.1)) = 101.59
    v.submit(order(1, Side.BUY, 100, order_type=OrderType.LIMIT, limit_price=100.50), T0)
    assert fills(events)[0].last_px == 100.50
    assert fills(events)[0].impact_cost == pytest.approx(0.49 * 100)
    # a resting limit that later fills passively pays no impact
    v.submit(order(2, Side.BUY, 100, order_type=OrderType.LIMIT, limit_price=99.00), T0)
    v.on_quote(0, 98.90, 98.95, T0 + 1, 0.0, 0.0)
    maker = fills(events)[1]
    assert (maker.liquidity, maker.last_px, maker.impact_cost) == ("MAKER", 99.00, 0.0)


def test_impact_model_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="daily_volume"):
        MarketImpact(daily_volume=0, daily_volatility=0.02)
    with pytest.raises(ValueError, match="eta"):
        MarketImpact(daily_volume=1, daily_volatility=0.02, eta=-1)
    assert math.isclose(
        MarketImpact(daily_volume=4, daily_volatility=0.1, eta=1).temporary(1), 0.05
    )
