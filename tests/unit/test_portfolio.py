"""Netting-account accounting of :class:`engine.portfolio.Portfolio`.

Expected figures are worked out by hand in each test (prices chosen so that the arithmetic
is exact in binary floating point), never taken from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.portfolio import Portfolio

START = 100_000.0


def stock(symbol: str = "ABC", multiplier: float = 1.0) -> Instrument:
    return Instrument(
        id=f"{symbol}.SIM",
        asset_class="equity",
        quote_currency="USD",
        price_increment=0.01,
        multiplier=multiplier,
    )


def book(*instruments: Instrument, balance: float = START) -> Portfolio:
    return Portfolio(InstrumentTable(instruments or (stock(),)), balance)


def position(p: Portfolio, instrument_id: str = "ABC.SIM") -> tuple[float, float, float]:
    """(quantity, average price, realised P&L) of one position."""
    v = p.position(instrument_id)
    return v.quantity, v.avg_price, v.realized_pnl


# --- fills -------------------------------------------------------------------------------


def test_open_long_from_flat_sets_quantity_and_entry_price() -> None:
    p = book()
    realized = p.apply_fill("ABC.SIM", 100.0, 10.0, 0.0)
    assert realized == 0.0
    assert position(p) == (100.0, 10.0, 0.0)
    assert p.balance == START
    assert p.fills == 1


def test_adding_to_a_long_moves_the_average_price() -> None:
    p = book()
    p.apply_fill("ABC.SIM", 100.0, 10.0, 0.0)
    p.apply_fill("ABC.SIM", 50.0, 13.0, 0.0)
    # (100 * 10 + 50 * 13) / 150 = 1650 / 150
    assert position(p) == (150.0, 11.0, 0.0)
    assert p.balance == START


def test_partial_close_realises_pnl_on_the_closed_part_only() -> None:
    p = book()
    p.apply_fill("ABC.SIM", 100.0, 10.0, 0.0)
    p.apply_fill("ABC.SIM", 50.0, 13.0, 0.0)  # 150 @ 11
    realized = p.apply_fill("ABC.SIM", -60.0, 12.5, 0.0)
    assert realized == 60 * 1.5
    assert position(p) == (90.0, 11.0, 90.0)  # the average price does not move on a close
    assert p.balance == START + 90.0


def test_close_to_flat_realises_the_rest_and_clears_the_entry_price() -> None:
    p = book()
    p.apply_fill("ABC.SIM", 100.0, 10.0, 0.0)
    p.apply_fill("ABC.SIM", -40.0, 12.0, 0.0)  # +80
    realized = p.apply_fill("ABC.SIM", -60.0, 9.0, 0.0)  # 60 * (9 - 10) = -60
    assert realized == -60.0
    assert position(p) == (0.0, 0.0, 20.0)
    assert p.balance == START + 20.0
    assert p.realized_pnl == 20.0


def test_flip_through_zero_opens_the_remainder_at_the_fill_price() -> None:
    p = book()
    p.apply_fill("ABC.SIM", 100.0, 10.0, 0.0)
    realized = p.apply_fill("ABC.SIM", -150.0, 12.0, 0.0)
    assert realized == 200.0  # only the 100 that closed: 100 * (12 - 10)
    assert position(p) == (-50.0, 12.0, 200.0)
    # and back: buy 80 at 11 closes the short 50 (+50) and opens long 30 at 11
    realized = p.apply_fill("ABC.SIM", 80.0, 11.0, 0.0)
    assert realized == 50.0
    assert position(p) == (30.0, 11.0, 250.0)
    assert p.balance == START + 250.0


def test_short_position_gains_when_the_price_falls() -> None:
    p = book()
    p.apply_fill("ABC.SIM", -100.0, 20.0, 0.0)
    assert position(p) == (-100.0, 20.0, 0.0)
    p.apply_fill("ABC.SIM", -100.0, 22.0, 0.0)  # add to the short: average 21
    assert position(p) == (-200.0, 21.0, 0.0)
    realized = p.apply_fill("ABC.SIM", 50.0, 18.0, 0.0)  # cover 50 at 18: 50 * 3
    assert realized == 150.0
    realized = p.apply_fill("ABC.SIM", 150.0, 23.0, 0.0)  # cover the rest at 23: 150 * -2
    assert realized == -300.0
    assert position(p) == (0.0, 0.0, -150.0)
    assert p.balance == START - 150.0


def test_multiplier_scales_pnl_and_traded_notional() -> None:
    es = stock("ES", multiplier=50.0)
    p = book(es)
    p.apply_fill("ES.SIM", 2.0, 4000.0, 0.0)
    realized = p.apply_fill("ES.SIM", -2.0, 4010.5, 0.0)
    assert realized == 2 * 10.5 * 50  # 1,050
    assert p.balance == START + 1050.0
    assert p.traded_notional == 2 * 4000 * 50 + 2 * 4010.5 * 50
    p.mark(0, 4000.0, 4001.0)  # flat: nothing unrealised whatever the price
    assert p.unrealized_pnl == 0.0


def test_commissions_reduce_the_balance_at_every_fill() -> None:
    p = book()
    p.apply_fill("ABC.SIM", 100.0, 10.0, 1.25)
    assert p.balance == START - 1.25
    p.apply_fill("ABC.SIM", -100.0, 11.0, 1.5)
    assert p.realized_pnl == 100.0  # realised P&L is before commission
    assert p.commissions == 2.75
    assert p.balance == START + 100.0 - 2.75
    assert p.position("ABC.SIM").commissions == 2.75


def test_balance_and_figures_stay_plain_floats() -> None:
    """A numpy scalar in the result makes ``tradingd backtest --json`` fail to encode it."""
    p = book(stock("ES", multiplier=50.0))
    p.apply_fill("ES.SIM", 2.0, 4000.0, 1.0)
    p.apply_fill("ES.SIM", -2.0, 4010.0, 1.0)
    p.mark(0, 4010.0, 4011.0)
    for name in ("balance", "equity", "realized_pnl", "unrealized_pnl", "commissions"):
        assert type(getattr(p, name)) is float, name


# --- marks, equity, drawdown ---------------------------------------------------------------


def test_equity_is_balance_plus_unrealised_at_the_mid() -> None:
    p = book(stock("ABC"), stock("XYZ"))
    p.apply_fill("ABC.SIM", 100.0, 10.0, 2.0)
    p.apply_fill("XYZ.SIM", -10.0, 50.0, 3.0)
    assert p.unrealized_pnl == 0.0  # never marked: nothing to value it at yet
    p.mark(0, 10.75, 11.25)  # mid 11: +100 on the long
    p.mark(1, 51.5, 52.5)  # mid 52: -20 on the short
    assert p.position("ABC.SIM").unrealized_pnl == 100.0
    assert p.position("XYZ.SIM").unrealized_pnl == -20.0
    assert p.balance == START - 5.0
    assert p.equity == START - 5.0 + 80.0
    # a fill re-marks at the last mid at once: selling half books +50 and halves the rest
    p.apply_fill("ABC.SIM", -50.0, 11.0, 0.0)
    assert p.position("ABC.SIM").unrealized_pnl == 50.0
    assert p.equity == START - 5.0 + 50.0 + 50.0 - 20.0


def test_max_drawdown_in_money_and_as_a_fraction_of_the_peak() -> None:
    # long 10 at 100 on a 1,000 account: equity = 1000 + 10 * (mid - 100)
    p = book(balance=1_000.0)
    p.apply_fill("ABC.SIM", 10.0, 100.0, 0.0)
    for mid in (80.0, 200.0, 170.0, 190.0):  # equity 800, 2000, 1700, 1900
        p.mark(0, mid - 0.5, mid + 0.5)
    # the largest loss in money is 2000 -> 1700; the largest as a fraction is 1000 -> 800
    assert p.max_drawdown == 300.0
    assert p.max_drawdown_fraction == 200.0 / 1000.0
    assert p.equity == 1900.0


def test_a_commission_alone_is_a_drawdown() -> None:
    p = book(balance=1_000.0)
    p.apply_fill("ABC.SIM", 1.0, 100.0, 5.0)
    assert p.equity == 995.0
    assert p.max_drawdown == 5.0
    assert p.max_drawdown_fraction == 5.0 / 1000.0


# --- batch marks against one mark at a time -------------------------------------------------


def test_mark_batch_is_bit_identical_to_marking_tick_by_tick(rand_seed: int) -> None:
    instruments = (stock("A"), stock("B", multiplier=50.0), stock("C", multiplier=0.1))
    one = book(*instruments)
    batch = book(*instruments)
    gen = np.random.default_rng(rand_seed)
    n = 20_000
    inst_col = gen.integers(0, len(instruments), size=n).astype(np.uint32)
    mids = np.array([100.0, 4000.0, 20.0])[inst_col] * np.exp(
        np.cumsum(gen.normal(0.0, 2e-4, size=n))
    )
    bid = np.round(mids - 0.01 * gen.integers(1, 4, size=n), 2)
    ask = np.round(mids + 0.01 * gen.integers(1, 4, size=n), 2)
    cuts = np.sort(gen.choice(np.arange(1, n), size=40, replace=False))
    start = 0
    for end in [*cuts.tolist(), n]:
        # a random fill between the segments, identical in both books
        k = int(gen.integers(0, len(instruments)))
        qty = float(gen.integers(-5, 6)) or 1.0
        price = float(np.round(mids[start] * (1 + gen.normal(0, 1e-3)), 2))
        commission = float(np.round(gen.uniform(0, 3), 2))
        for p in (one, batch):
            p.apply_fill(instruments[k].id, qty, price, commission)
        for t in range(start, end):
            one.mark(int(inst_col[t]), float(bid[t]), float(ask[t]))
        batch.mark_batch(inst_col[start:end], bid[start:end], ask[start:end])
        start = end

    context = f"rand_seed={rand_seed}"
    assert one.mark_price.tobytes() == batch.mark_price.tobytes(), context
    assert one.unrealized.tobytes() == batch.unrealized.tobytes(), context
    assert one.curve.tobytes() == batch.curve.tobytes(), context
    assert one.equity == batch.equity, context
    assert one.max_drawdown > 0.0, context  # the walk did move the equity


def test_mark_batch_of_nothing_changes_nothing() -> None:
    p = book()
    p.apply_fill("ABC.SIM", 10.0, 100.0, 0.0)
    p.mark(0, 99.0, 101.0)
    before = p.curve.copy()
    empty_f = np.empty(0, dtype=np.float64)
    p.mark_batch(np.empty(0, dtype=np.uint32), empty_f, empty_f)
    assert p.curve.tobytes() == before.tobytes()


def test_unknown_instrument_is_refused() -> None:
    p = book()
    with pytest.raises(KeyError, match=r"NOPE\.SIM"):
        p.apply_fill("NOPE.SIM", 1.0, 1.0, 0.0)
