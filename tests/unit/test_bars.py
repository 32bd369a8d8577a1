"""Bars from trade ticks (engine/bars.py): hand-computed time and volume bars, chunked
aggregation equal to one-shot, and the vendor's 1-minute bars of IBM and BAC rebuilt from
their trade ticks (shared/data, SOURCES.md section 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.lean import read_equity_trade_ticks, read_minute_trade_bars
from engine.bars import BarAggregator, time_bars, volume_bars
from engine.ticks import BAR_DTYPE, TRADE_DTYPE, open_bars, save_bars
from tests.shared_data import shared_data_dir

S = 1_000_000_000
MIN = 60 * S


def trades(rows: list[tuple[int, int, float, float]]) -> np.ndarray:
    """(ts_event ns, instrument, price, size) rows."""
    out = np.zeros(len(rows), dtype=TRADE_DTYPE)
    for i, (ts, inst, price, size) in enumerate(rows):
        out[i] = (ts, ts, inst, 0, price, size)
    return out


def as_tuples(bars: np.ndarray) -> list[tuple[int, int, float, float, float, float, float]]:
    fields = ("open", "high", "low", "close", "volume")
    return [
        (int(b["ts_event"]), int(b["instrument"]), *(float(b[c]) for c in fields)) for b in bars
    ]


def test_minute_bars_are_first_high_low_last_and_sum_and_close_at_the_minute_end() -> None:
    t = trades(
        [
            (10 * MIN + 1 * S, 0, 100.0, 5),
            (10 * MIN + 20 * S, 0, 101.5, 1),
            (10 * MIN + 40 * S, 0, 99.5, 2),
            (10 * MIN + 59 * S, 0, 100.5, 3),
            (12 * MIN, 0, 102.0, 7),  # minute 11 has no trade: no bar
        ]
    )
    bars = time_bars(t, MIN)
    assert bars.dtype == BAR_DTYPE
    assert as_tuples(bars) == [
        (11 * MIN, 0, 100.0, 101.5, 99.5, 100.5, 11.0),
        (13 * MIN, 0, 102.0, 102.0, 102.0, 102.0, 7.0),
    ]
    assert (bars["interval_ns"] == MIN).all()
    assert (bars["ts_init"] == bars["ts_event"]).all()


def test_a_trade_exactly_on_the_boundary_opens_the_next_bar() -> None:
    bars = time_bars(trades([(MIN - 1, 0, 1.0, 1), (MIN, 0, 2.0, 1)]), MIN)
    assert [(int(b["ts_event"]), float(b["close"])) for b in bars] == [(MIN, 1.0), (2 * MIN, 2.0)]


def test_origin_aligns_bars_to_a_local_session() -> None:
    # hour bars starting at :30 (origin 30 minutes)
    t = trades([(30 * MIN, 0, 1.0, 1), (89 * MIN, 0, 2.0, 1), (90 * MIN, 0, 3.0, 1)])
    bars = time_bars(t, 60 * MIN, origin_ns=30 * MIN)
    assert [int(b["ts_event"]) for b in bars] == [90 * MIN, 150 * MIN]
    assert [float(b["volume"]) for b in bars] == [2.0, 1.0]


def test_bars_of_several_instruments_come_out_by_close_time_then_instrument() -> None:
    t = trades(
        [
            (1 * S, 1, 10.0, 1),
            (2 * S, 0, 20.0, 1),
            (61 * S, 1, 11.0, 1),
            (125 * S, 0, 21.0, 1),
        ]
    )
    bars = time_bars(t, MIN)
    assert [(int(b["ts_event"]), int(b["instrument"])) for b in bars] == [
        (MIN, 0),
        (MIN, 1),
        (2 * MIN, 1),
        (3 * MIN, 0),
    ]


def test_a_bar_is_released_once_time_has_passed_its_close_even_without_its_own_trades() -> None:
    agg = BarAggregator(interval_ns=MIN)
    assert len(agg.update(trades([(10 * S, 0, 1.0, 1)]))) == 0  # minute 0 still open
    # a trade of another instrument after 1:00 closes instrument 0's first minute
    out = agg.update(trades([(70 * S, 1, 5.0, 1)]))
    assert [(int(b["ts_event"]), int(b["instrument"])) for b in out] == [(MIN, 0)]
    assert [(int(b["ts_event"]), int(b["instrument"])) for b in agg.flush()] == [(2 * MIN, 1)]


def test_chunked_aggregation_equals_one_shot(rand_seed: int) -> None:
    rng = np.random.default_rng(rand_seed)
    n = 5_000
    ts = np.sort(rng.integers(0, 30 * MIN, size=n))
    t = np.zeros(n, dtype=TRADE_DTYPE)
    t["ts_event"] = ts
    t["instrument"] = rng.integers(0, 3, size=n)
    t["price"] = np.round(100 + np.cumsum(rng.normal(0, 0.01, size=n)), 2)
    t["size"] = rng.integers(1, 500, size=n)
    for make, kwargs in ((time_bars, {"interval_ns": MIN}), (volume_bars, {"volume": 2_000.0})):
        whole = make(t, **kwargs)
        agg = BarAggregator(**kwargs)
        cuts = sorted(rng.choice(np.arange(1, n), size=40, replace=False).tolist())
        parts = [agg.update(t[a:b]) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
        parts.append(agg.flush())
        chunked = np.concatenate(parts)
        assert np.array_equal(chunked, whole), f"{make.__name__} (rand_seed={rand_seed})"
        assert (np.diff(chunked["ts_event"]) >= 0).all()


def test_volume_bars_hold_exactly_the_threshold_and_split_a_block_at_its_price() -> None:
    t = trades([(1 * S, 0, 10.0, 60), (2 * S, 0, 11.0, 250), (3 * S, 0, 9.0, 90)])
    bars = volume_bars(t, 100.0)
    # 400 traded: four full bars; the block of 250 at 11 completes three of them
    assert as_tuples(bars) == [
        (2 * S, 0, 10.0, 11.0, 10.0, 11.0, 100.0),  # 60 at 10, then 40 of the block
        (2 * S, 0, 11.0, 11.0, 11.0, 11.0, 100.0),  # 100 more of the block
        (2 * S, 0, 11.0, 11.0, 11.0, 11.0, 100.0),  # and 100 more
        (3 * S, 0, 11.0, 11.0, 9.0, 9.0, 100.0),  # the block's last 10, then 90 at 9
    ]
    assert (bars["interval_ns"] == 0).all()


def test_a_partly_filled_volume_bar_is_not_emitted() -> None:
    bars = volume_bars(trades([(1 * S, 0, 10.0, 150)]), 100.0)
    assert [float(b["volume"]) for b in bars] == [100.0]


def test_trades_out_of_time_order_are_refused() -> None:
    agg = BarAggregator(interval_ns=MIN)
    agg.update(trades([(10 * S, 0, 1.0, 1)]))
    with pytest.raises(ValueError, match="time order"):
        agg.update(trades([(5 * S, 0, 1.0, 1)]))
    with pytest.raises(ValueError, match="exactly one"):
        BarAggregator(interval_ns=MIN, volume=10.0)


# --- the vendor's minute bars (shared/data section 3) ------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize(("ticker", "date"), [("ibm", "20131007"), ("bac", "20131008")])
def test_minute_bars_from_trades_match_the_vendor_minutes_and_volumes(
    ticker: str, date: str
) -> None:
    usa = shared_data_dir() / "lean/Data/equity/usa"
    ticks = read_equity_trade_ticks(usa / f"tick/{ticker}/{date}_trade.zip", drop_suspicious=True)
    vendor = read_minute_trade_bars(usa / f"minute/{ticker}/{date}_trade.zip")
    ours = time_bars(ticks, MIN)
    # SOURCES.md: a naive aggregation gives exactly the vendor's set of minutes ...
    assert len(ours) == len(vendor) == {"ibm": 453, "bac": 573}[ticker]
    assert np.array_equal(ours["ts_event"], vendor["ts_event"])
    # ... and the same volume in about 99% of them
    same_volume = float(np.mean(ours["volume"] == vendor["volume"]))
    assert same_volume >= 0.98
    # every trade is in exactly one bar
    assert ours["volume"].sum() == ticks["size"].sum()


def test_bars_round_trip_through_a_memory_mapped_file(tmp_path: Path) -> None:
    bars = time_bars(trades([(1 * S, 0, 10.0, 5), (61 * S, 0, 11.0, 7)]), MIN)
    save_bars(tmp_path / "bars.npy", bars)
    back = open_bars(tmp_path / "bars.npy")
    assert np.array_equal(back, bars)
    with pytest.raises(ValueError, match="not a bar array"):
        save_bars(tmp_path / "x.npy", trades([(1, 0, 1.0, 1)]))


# --- closing on a clock, and the look-ahead ----------------------------------------------------


def test_close_until_completes_the_bars_that_have_ended_and_no_others() -> None:
    agg = BarAggregator(interval_ns=MIN)
    assert agg.next_close_ns() is None
    assert len(agg.update(trades([(10 * S, 0, 1.0, 1), (50 * S, 1, 7.0, 2)]))) == 0
    assert agg.next_close_ns() == MIN
    assert len(agg.close_until(MIN - 1)) == 0
    # no trade at or after 1:00 has come, yet both minutes are over
    assert as_tuples(agg.close_until(MIN)) == [
        (MIN, 0, 1.0, 1.0, 1.0, 1.0, 1.0),
        (MIN, 1, 7.0, 7.0, 7.0, 7.0, 2.0),
    ]
    assert agg.next_close_ns() is None
    agg.update(trades([(75 * S, 1, 8.0, 3)]))
    assert agg.next_close_ns() == 2 * MIN
    assert as_tuples(agg.close_until(10 * MIN + 5 * S)) == [(2 * MIN, 1, 8.0, 8.0, 8.0, 8.0, 3.0)]
    assert agg.next_close_ns() is None
    assert len(agg.flush()) == 0  # nothing left open: nothing emitted twice


def test_after_close_until_a_trade_for_a_closed_bar_is_refused_and_a_new_one_is_taken() -> None:
    agg = BarAggregator(interval_ns=MIN, origin_ns=30 * S)
    agg.update(trades([(40 * S, 0, 1.0, 1)]))
    assert [int(b["ts_event"]) for b in agg.close_until(95 * S)] == [90 * S]
    assert agg.latest_ns == 90 * S  # the boundary passed, not the time asked
    with pytest.raises(ValueError, match="time order"):
        agg.update(trades([(89 * S, 0, 2.0, 1)]))
    assert len(agg.update(trades([(90 * S, 0, 3.0, 1)]))) == 0
    assert as_tuples(agg.flush()) == [(150 * S, 0, 3.0, 3.0, 3.0, 3.0, 1.0)]


def test_volume_bars_do_not_close_on_time() -> None:
    agg = BarAggregator(volume=10.0)
    agg.update(trades([(1 * S, 0, 1.0, 4)]))
    assert len(agg.close_until(100 * MIN)) == 0
    assert agg.next_close_ns() is None
    assert [float(b["volume"]) for b in agg.update(trades([(2 * S, 0, 1.0, 6)]))] == [10.0]


@pytest.mark.parametrize("kwargs", [{"interval_ns": MIN}, {"volume": 2_000.0}])
def test_first_completion_finds_the_trade_that_completes_a_bar_and_changes_nothing(
    rand_seed: int, kwargs: dict[str, float]
) -> None:
    rng = np.random.default_rng(rand_seed)
    n = 4_000
    t = np.zeros(n, dtype=TRADE_DTYPE)
    t["ts_event"] = np.sort(rng.integers(0, 30 * MIN, size=n))
    t["instrument"] = rng.integers(0, 3, size=n)
    t["price"] = np.round(100 + np.cumsum(rng.normal(0, 0.01, size=n)), 2)
    t["size"] = rng.integers(1, 500, size=n)
    t["size"][rng.choice(n, size=20, replace=False)] = 5_000  # blocks: several bars at once
    agg = BarAggregator(**kwargs)  # type: ignore[arg-type]
    parts = []
    pos = completions = 0
    while pos < n:
        k = agg.first_completion(t[pos:])
        assert agg.first_completion(t[pos:]) == k  # it changed nothing
        assert len(agg.update(t[pos : pos + k])) == 0, f"rand_seed={rand_seed}"
        if pos + k == n:
            break
        out = agg.update(t[pos + k : pos + k + 1])
        assert len(out) >= 1, f"rand_seed={rand_seed}"
        parts.append(out)
        completions += 1
        pos += k + 1
    parts.append(agg.flush())
    whole = time_bars(t, MIN) if "interval_ns" in kwargs else volume_bars(t, kwargs["volume"])
    assert completions > 20
    assert np.array_equal(np.concatenate(parts), whole), f"rand_seed={rand_seed}"
