"""Performance statistics (engine/performance.py) and the account history they are computed
from (engine.portfolio.AccountHistory).

Return statistics are checked against empyrical (a test-only dependency) on the same
returns. Everything else is checked against figures worked out by hand in the test.
"""

from __future__ import annotations

import itertools
import math

import empyrical
import numpy as np
import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.performance import (
    analyse,
    annual_return,
    annual_volatility,
    calmar_ratio,
    max_drawdown,
    round_trips,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
)
from engine.portfolio import DAY_NS, SAMPLE_KINDS, AccountHistory, Portfolio
from engine.ticks import QUOTE_DTYPE

S = 1_000_000_000  # one second in ns
T0 = 1_704_067_200 * S  # 2024-01-01 00:00:00 UTC, a Monday
MINUTE = 60 * S


def inst(
    symbol: str = "ABC",
    asset_class: str = "equity",
    *,
    region: str | None = None,
    lot: float = 1.0,
    multiplier: float = 1.0,
) -> Instrument:
    return Instrument(
        id=f"{symbol}.SIM",
        asset_class=asset_class,
        quote_currency="USD",
        price_increment=0.01,
        size_increment=lot,
        multiplier=multiplier,
        region=region,
    )


def history(
    *instruments: Instrument, balance: float = 100_000.0, interval_s: int = 60, **capacity: int
) -> AccountHistory:
    pf = Portfolio(InstrumentTable(instruments or (inst(),)), balance)
    return AccountHistory(pf, interval_s * S, cost_kinds=("spread",), **capacity)


def quotes(rows: list[tuple[int, int, float, float]]) -> np.ndarray:
    """(ts, instrument, bid, ask) rows as a quote batch."""
    out = np.zeros(len(rows), dtype=QUOTE_DTYPE)
    for k, (ts, i, bid, ask) in enumerate(rows):
        out[k]["ts_event"] = ts
        out[k]["instrument"] = i
        out[k]["bid"] = bid
        out[k]["ask"] = ask
    return out


# --- return statistics against empyrical -------------------------------------------------------


def random_returns(seed: int, n: int, drift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(drift, 0.01, size=n)


@pytest.mark.parametrize("periods_per_year", [252.0, 362_880.0], ids=["daily", "intraday 60s"])
@pytest.mark.parametrize("drift", [0.0008, -0.0005], ids=["gaining", "losing"])
def test_return_statistics_match_empyrical(
    rand_seed: int, periods_per_year: float, drift: float
) -> None:
    r = random_returns(rand_seed, 500, drift)
    ann = periods_per_year
    pairs = {
        "sharpe": (sharpe_ratio(r, ann), empyrical.sharpe_ratio(r, annualization=ann)),
        "sortino": (sortino_ratio(r, ann), empyrical.sortino_ratio(r, annualization=ann)),
        "annual_return": (annual_return(r, ann), empyrical.annual_return(r, annualization=ann)),
        "annual_volatility": (
            annual_volatility(r, ann),
            empyrical.annual_volatility(r, annualization=ann),
        ),
        # empyrical reports a drawdown as a negative fraction; we report its size
        "max_drawdown": (max_drawdown(r), -empyrical.max_drawdown(r)),
        "calmar": (calmar_ratio(r, ann), empyrical.calmar_ratio(r, annualization=ann)),
    }
    for name, (ours, theirs) in pairs.items():
        assert math.isfinite(theirs), name
        assert ours == pytest.approx(theirs, rel=1e-9), f"{name} (rand_seed={rand_seed})"
    assert pairs["max_drawdown"][0] > 0.01  # a real drawdown was measured


def test_statistics_of_returns_from_an_equity_series_match_empyrical() -> None:
    equity = np.array([100.0, 102.0, 99.96, 104.958, 104.958, 110.2059])
    r = simple_returns(equity)
    assert r == pytest.approx([0.02, -0.02, 0.05, 0.0, 0.05], rel=1e-12)
    assert max_drawdown(r) == pytest.approx(0.02, rel=1e-12)  # 102 down to 99.96
    assert sharpe_ratio(r, 252) == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-9)
    assert sortino_ratio(r, 252) == pytest.approx(empyrical.sortino_ratio(r), rel=1e-9)
    assert calmar_ratio(r, 252) == pytest.approx(empyrical.calmar_ratio(r), rel=1e-9)


def test_undefined_statistics_are_nan_as_in_empyrical() -> None:
    rising = np.array([0.01, 0.02, 0.01])
    assert math.copysign(1.0, max_drawdown(rising)) == 1.0  # 0.0, not -0.0 ("-0.00%")
    assert math.isnan(calmar_ratio(rising, 252))  # no drawdown: no Calmar
    assert math.isnan(empyrical.calmar_ratio(rising))
    one = np.array([0.01])
    for ours, theirs in (
        (sharpe_ratio(one, 252), empyrical.sharpe_ratio(one)),
        (annual_volatility(one, 252), empyrical.annual_volatility(one)),
        (sortino_ratio(one, 252), empyrical.sortino_ratio(one)),
    ):
        assert math.isnan(ours) and math.isnan(theirs)
    flat = np.zeros(10)
    assert math.isnan(sharpe_ratio(flat, 252))  # 0 / 0
    assert math.isnan(empyrical.sharpe_ratio(flat))


# --- when the account is sampled -----------------------------------------------------------------


def test_a_grid_sample_holds_every_tick_before_its_time_and_none_at_it() -> None:
    h = history()
    h.start(T0 + 10 * S)
    h.fill(T0 + 10 * S, "s", "ABC.SIM", 100.0, 10.0, 0.0)
    h.mark_batch(
        quotes(
            [
                (T0 + 30 * S, 0, 10.99, 11.01),  # mid 11: +100
                (T0 + MINUTE, 0, 11.99, 12.01),  # at the grid point itself: after the sample
                (T0 + 90 * S, 0, 12.99, 13.01),
            ]
        )
    )
    h.finish(T0 + 90 * S)
    c = h.curve()
    kinds = [SAMPLE_KINDS[k] for k in c["kind"].tolist()]
    assert kinds == ["start", "fill", "sample", "end"]
    assert c["ts"].tolist() == [T0 + 10 * S, T0 + 10 * S, T0 + MINUTE, T0 + 90 * S]
    assert c["equity"].tolist() == [100_000.0, 100_000.0, 100_100.0, 100_300.0]
    assert c["positions"][:, 0].tolist() == [0.0, 100.0, 100.0, 100.0]
    assert c["marks"][2, 0] == 11.0  # the mark before the grid point, not the one at it


def test_a_gap_without_events_keeps_one_sample_and_the_end_flushes_the_last_grid_point() -> None:
    h = history()
    h.start(T0)
    h.mark(0, 9.99, 10.01, T0 + 5 * S)
    h.mark(0, 9.99, 10.01, T0 + 10 * MINUTE + 5 * S)  # nine grid points with no event
    h.mark(0, 9.99, 10.01, T0 + 10 * MINUTE + 30 * S)
    h.finish(T0 + 11 * MINUTE + 1)
    s = h.samples
    grid = s["ts"][s["kind"] == 1].tolist()
    assert grid == [T0 + MINUTE, T0 + 11 * MINUTE]  # the first of the gap, and the flush


def test_day_closes_skip_days_without_data() -> None:
    h = history()
    h.start(T0 + 3600 * S)
    h.mark(0, 9.99, 10.01, T0 + 3600 * S)
    h.fill(T0 + 3601 * S, "s", "ABC.SIM", 10.0, 10.0, 1.0)
    h.mark(0, 10.99, 11.01, T0 + 2 * DAY_NS + 5)  # Wednesday: Tuesday had no data
    h.finish(T0 + 2 * DAY_NS + 5)
    assert h.day_ts.tolist() == [T0 + DAY_NS]  # Monday's close only
    assert h.day_equity.tolist() == pytest.approx([100_000.0 - 1.0])  # the commission


@pytest.mark.parametrize("instruments", [2, 1], ids=["two instruments", "one instrument"])
def test_batching_cannot_change_what_is_recorded(rand_seed: int, instruments: int) -> None:
    """The same ticks and fills, delivered in random batches or one at a time. (Batches of
    one instrument that cross many grid points are sampled without the batch kernel.)"""
    rng = np.random.default_rng(rand_seed)
    n = 4_000
    gaps = rng.integers(1, 200 * S, size=n)
    gaps[rng.random(n) < 0.3] = 0  # bursts of ticks stamped alike: the data is uneven
    ts = T0 + np.cumsum(gaps)
    ts[1000:] += 3 * DAY_NS  # a long gap, over midnights
    for k in rng.choice(np.arange(1, n), size=n // 20, replace=False).tolist():
        on_grid = -(-int(ts[k - 1]) // MINUTE) * MINUTE  # ticks exactly at a grid point
        if on_grid <= ts[k] and (k + 1 == n or on_grid <= ts[k + 1]):
            ts[k] = on_grid
    assert np.all(np.diff(ts) >= 0) and np.count_nonzero(ts % MINUTE == 0) > 50
    inst_col = rng.integers(0, instruments, size=n)
    mid = 100.0 + np.cumsum(rng.normal(0, 0.05, size=n))
    rows = quotes(
        [
            (int(t), int(i), round(m - 0.01, 2), round(m + 0.01, 2))
            for t, i, m in zip(ts, inst_col, mid, strict=True)
        ]
    )
    fill_at = set(rng.choice(n, size=60, replace=False).tolist())
    books = (inst("AAA"), inst("BBB", "fx"))[:instruments]

    def run(cuts: list[int] | None, **capacity: int) -> AccountHistory:
        """Batches cut at ``cuts`` (the numba kernel), or None: tick by tick (Python)."""
        h = history(*books, **capacity)
        h.start(int(ts[0]))
        bounds = [0, *[c for c in (cuts or range(1, n)) if 0 < c < n], n]
        for a, b in itertools.pairwise(bounds):
            if cuts is None:
                h.mark(int(inst_col[a]), float(rows[a]["bid"]), float(rows[a]["ask"]), int(ts[a]))
            else:
                h.mark_batch(rows[a:b], int(ts[b - 1]))
            if b - 1 in fill_at:  # a strategy acts on the last tick of a batch
                k = b - 1
                side = 1.0 if k % 3 else -1.0
                h.fill(
                    int(ts[k]),
                    f"s{k % 2}",
                    ["AAA.SIM", "BBB.SIM"][k % instruments],
                    side * 10.0,
                    float(mid[k]),
                    0.5,
                    (0.1,),
                )
        h.finish(int(ts[-1]))
        return h

    actions = sorted(k + 1 for k in fill_at)
    per_tick = run(None)
    random_cuts = sorted(
        set(actions) | set(rng.choice(np.arange(1, n), size=50, replace=False).tolist())
    )
    batched = run(random_cuts)
    one_batch_each = run(list(range(1, n)))  # the kernel, one tick at a time
    growing = run(random_cuts, capacity=2, fill_capacity=2)  # every column grows, often
    for other in (batched, one_batch_each, growing):
        for part in ("curve", "samples", "fill_log"):
            mine = getattr(per_tick, part)
            theirs = getattr(other, part)
            mine, theirs = (mine(), theirs()) if callable(mine) else (mine, theirs)
            for key, col in mine.items():
                same = np.array_equal(col, theirs[key], equal_nan=True)
                assert same, f"{part}[{key}] (rand_seed={rand_seed})"
        assert np.array_equal(per_tick.day_ts, other.day_ts)
        assert np.array_equal(per_tick.day_equity, other.day_equity)
    assert per_tick.n_days >= 4 and (per_tick.samples["kind"] == 1).sum() > 100


def test_partial_fills_that_add_up_to_the_position_close_it_exactly() -> None:
    parts = (0.07, 0.02, 0.01)  # they add up to 0.1 BTC
    naive = 0.1
    for part in parts:
        naive -= part
    assert naive != 0.0  # but not in binary floating point: 1.2e-17 would stay open
    h = history(inst("BTC", "crypto", lot=0.00001))
    h.start(T0)
    h.fill(T0, "s", "BTC.SIM", 0.1, 60_000.0, 0.0)
    for part in parts:
        h.fill(T0 + S, "s", "BTC.SIM", -part, 60_010.0, 0.0)
    assert h.portfolio.qty[0] == 0.0
    trips = round_trips(h.fill_log(), ["BTC.SIM"], h.strategies).rows()
    assert len(trips) == 1 and trips[0].exit_ts == T0 + S
    assert trips[0].pnl == pytest.approx(1.0, rel=1e-9)  # 0.1 BTC up 10


# --- round trips -------------------------------------------------------------------------------


def test_round_trips_scale_in_scale_out_and_flip() -> None:
    h = history()
    h.start(T0)
    h.fill(T0 + 1 * S, "trend", "ABC.SIM", 100.0, 10.0, 1.0)  # open long 100 @ 10
    h.fill(T0 + 2 * S, "trend", "ABC.SIM", 100.0, 12.0, 1.0)  # add 100 @ 12: avg 11
    h.fill(T0 + 3 * S, "trend", "ABC.SIM", -50.0, 13.0, 1.0)  # +100 on 50
    h.fill(T0 + 4 * S, "trend", "ABC.SIM", -250.0, 14.0, 5.0)  # +450 on 150, flip to -100
    h.fill(T0 + 5 * S, "trend", "ABC.SIM", 100.0, 13.5, 2.0)  # +50 on 100: flat
    trips = round_trips(h.fill_log(), ["ABC.SIM"], h.strategies).rows()
    assert len(trips) == 2
    first, second = trips
    assert (first.side, first.entry_ts, first.exit_ts) == ("LONG", T0 + S, T0 + 4 * S)
    assert first.quantity == 200.0
    assert first.entry_price == 11.0
    assert first.exit_price == pytest.approx((50 * 13.0 + 150 * 14.0) / 200)
    assert first.pnl == 550.0
    assert first.commission == pytest.approx(1.0 + 1.0 + 1.0 + 5.0 * 150 / 250)
    assert first.net_pnl == pytest.approx(550.0 - 6.0)
    assert first.fills == 4
    assert (second.side, second.entry_ts, second.exit_ts) == ("SHORT", T0 + 4 * S, T0 + 5 * S)
    assert (second.quantity, second.entry_price, second.exit_price) == (100.0, 14.0, 13.5)
    assert second.pnl == 50.0
    assert second.commission == pytest.approx(5.0 * 100 / 250 + 2.0)


# --- the analysis ------------------------------------------------------------------------------


def test_intraday_analysis_carries_samples_through_gaps_and_annualises_by_data_time() -> None:
    h = history(interval_s=60)
    h.start(T0)
    h.fill(T0, "s", "ABC.SIM", 1_000.0, 100.0, 0.0)
    prices = {2: 101.0, 3: 99.0, 7: 102.0}  # minute -> mid; nothing in minutes 4 to 6
    for minute, mid in prices.items():
        h.mark(0, mid - 0.01, mid + 0.01, T0 + minute * MINUTE - S)
    h.finish(T0 + 7 * MINUTE)
    perf = analyse(h, trading_days_per_year=252.0)
    m = perf.metrics
    assert m["periodicity"] == "intraday"
    assert m["periods_per_year"] == 252 * 24 * 60
    # equity at the start and minutes 1..7: the mark of minute 3 holds through minute 6
    equity = [100_000.0, 100_000.0, 101_000.0, 99_000.0, 99_000.0, 99_000.0, 99_000.0, 102_000.0]
    r = simple_returns(np.array(equity))
    assert m["returns"] == len(r) == 7
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=362_880), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(2_000.0 / 101_000.0, rel=1e-12)
    assert m["max_drawdown_peak"] == "2024-01-01T00:02:00Z"
    assert m["max_drawdown_trough"] == "2024-01-01T00:03:00Z"
    assert m["max_drawdown_recovery"] == "2024-01-01T00:07:00Z"
    assert m["max_drawdown_duration_s"] == 300.0
    assert m["total_return"] == pytest.approx(0.02, rel=1e-12)
    assert m["time_in_market"] == 1.0
    kinds = perf.curve.kind_names()
    assert kinds[0] == "start" and kinds[-1] == "end"


def test_daily_analysis_uses_day_closes_and_252_days_a_year() -> None:
    h = history(inst("ABC", region="US"))
    start = T0 + 15 * 3600 * S
    h.start(start)
    h.fill(start, "s", "ABC.SIM", 100.0, 100.0, 0.0)
    mids = []
    day = 0
    for week in range(5):
        for weekday in range(5):  # no data on weekends
            day = week * 7 + weekday
            mid = 100.0 + ((day * 7) % 11) - 5.0
            mids.append(mid)
            h.mark(0, mid - 0.01, mid + 0.01, T0 + day * DAY_NS + 20 * 3600 * S)
    h.finish(T0 + day * DAY_NS + 21 * 3600 * S)
    perf = analyse(h, trading_days_per_year=252.0)
    m = perf.metrics
    assert m["periodicity"] == "daily" and m["periods_per_year"] == 252.0
    equity = np.array([100_000.0] + [100_000.0 + 100.0 * (x - 100.0) for x in mids])
    r = simple_returns(equity)
    assert h.n_days == 24  # every weekday's close but the last day's, which is the end
    assert m["returns"] == 25 == len(r)
    assert perf.daily.date[:3] == ["2024-01-01", "2024-01-01", "2024-01-02"]
    assert perf.daily.date[6] == "2024-01-08"  # Monday after the weekend
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-9)
    assert m["sortino"] == pytest.approx(empyrical.sortino_ratio(r), rel=1e-9)
    assert m["annual_return"] == pytest.approx(empyrical.annual_return(r), rel=1e-9)
    assert m["calmar"] == pytest.approx(empyrical.calmar_ratio(r), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(r), rel=1e-9)
    assert list(m["monthly_returns"]) == ["2024-01", "2024-02"]
    days = [week * 7 + weekday for week in range(5) for weekday in range(5)]
    jan_close = equity[1 + max(i for i, d in enumerate(days) if d < 31)]  # Wednesday 31st
    assert m["monthly_returns"]["2024-01"] == pytest.approx(jan_close / 100_000.0 - 1.0)
    assert m["monthly_returns"]["2024-02"] == pytest.approx(equity[-1] / jan_close - 1.0)
    assert m["attribution"]["region"] == {"US": m["attribution"]["instrument"]["ABC.SIM"]}


def test_costs_exposure_and_attribution_add_up() -> None:
    fx = inst("EURUSD", "fx", region="EU")
    es = inst("ES", "future", region="US", multiplier=50.0)
    h = history(fx, es)
    h.start(T0)
    h.mark(0, 1.09, 1.11, T0)  # mid 1.10
    h.mark(1, 4999.0, 5001.0, T0)  # mid 5000
    h.fill(T0 + S, "carry", "EURUSD.SIM", 10_000.0, 1.11, 2.0, (100.0,))
    h.fill(T0 + S, "momentum", "ES.SIM", -2.0, 4999.0, 5.0, (100.0,))
    h.fill(T0 + 2 * S, "momentum", "EURUSD.SIM", 5_000.0, 1.11, 1.0, (50.0,))
    h.mark(0, 1.19, 1.21, T0 + 10 * S)  # mid 1.20
    h.mark(1, 4899.0, 4901.0, T0 + 10 * S)  # mid 4900
    h.finish(T0 + 20 * S)
    m = analyse(h).metrics
    assert m["costs"] == {"commission": 8.0, "spread": 250.0}
    assert m["costs_total"] == 258.0
    # exposure at the end: 15,000 EUR at 1.20 and 2 ES short at 4900 x 50
    assert h.curve()["positions"][-1].tolist() == [15_000.0, -2.0]
    att = m["attribution"]
    eur_pnl = 10_000.0 * (1.20 - 1.11) + 5_000.0 * (1.20 - 1.11)
    es_pnl = 2.0 * 50.0 * (4999.0 - 4900.0)
    assert att["instrument"]["EURUSD.SIM"]["pnl"] == pytest.approx(eur_pnl)
    assert att["instrument"]["ES.SIM"]["pnl"] == pytest.approx(es_pnl)
    assert att["strategy"]["carry"]["pnl"] == pytest.approx(10_000.0 * 0.09)
    assert att["strategy"]["momentum"]["pnl"] == pytest.approx(5_000.0 * 0.09 + es_pnl)
    assert att["strategy"]["momentum"]["commission"] == 6.0
    total = sum(b["net_pnl"] for b in att["strategy"].values())
    assert total == pytest.approx(m["final_equity"] - m["starting_equity"])
    assert set(att["asset_class"]) == {"fx", "future"}
    assert att["region"]["US"]["net_pnl"] == pytest.approx(es_pnl - 5.0)
    assert set(m["exposure_by_asset_class"]) == {"fx", "future"}
    assert m["time_in_market"] == pytest.approx(19 / 20)  # flat for the first second


def test_a_history_never_started_cannot_be_analysed() -> None:
    with pytest.raises(ValueError, match="never started"):
        analyse(history())
