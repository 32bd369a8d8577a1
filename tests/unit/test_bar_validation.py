"""Bar, trade and quote-stream checks (engine/bar_validation.py): each reason on hand-made
rows, and on the real daily files (shared/data, SOURCES.md sections 1 and 2) the known bad
prints caught and the known real moves left alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from adapters.importers.tabular import read_table
from adapters.lean import EQUITY_TIME_ZONE, read_daily_bars, read_factor_file
from engine.bar_validation import (
    BarRules,
    Check,
    TradeRules,
    quote_flags,
    validate_bars,
    validate_trades,
)
from engine.corporate_actions import FactorTable, from_day_number, session_days
from engine.ticks import BAR_DTYPE, QUOTE_DTYPE, TRADE_DTYPE
from tests.shared_data import shared_data_dir

DAY = 86_400_000_000_000
D = dt.date


def bars(rows: list[tuple[float, float, float, float]], *, volume: float = 100.0) -> np.ndarray:
    out = np.zeros(len(rows), dtype=BAR_DTYPE)
    for i, (o, h, lo, c) in enumerate(rows):
        out[i] = ((i + 1) * DAY, (i + 1) * DAY, 0, DAY, o, h, lo, c, volume)
    return out


def flat(n: int, price: float = 100.0) -> list[tuple[float, float, float, float]]:
    return [(price, price * 1.01, price * 0.99, price)] * n


def codes(b: np.ndarray, rules: BarRules | None = None) -> list[Check]:
    return [Check(c) for c in validate_bars(b, rules).codes]


def test_content_checks_come_first_in_their_order() -> None:
    b = bars(
        [
            (100, 101, 99, 100),
            (np.nan, 101, 99, 100),
            (100, 101, -1, 100),
            (100, 99, 98, 100),  # high below open and close
            (100, 101, 99, 100),
        ]
    )
    b["volume"][4] = -5
    assert codes(b) == [
        Check.OK,
        Check.NAN_PRICE,
        Check.NON_POSITIVE_PRICE,
        Check.OHLC_INCONSISTENT,
        Check.BAD_VOLUME,
    ]


def test_a_wick_far_outside_the_body_is_a_bad_print_and_a_normal_one_is_not() -> None:
    b = bars(
        [*flat(3), (675.0, 676.7, 67.5, 673.4), (100, 140, 60, 100), (79.1, 156.5, 74.0, 75.0)]
    )
    assert codes(b)[3:] == [Check.BAD_PRINT, Check.OK, Check.BAD_PRINT]
    assert codes(b, BarRules(max_wick_fraction=0.3))[4] == Check.BAD_PRINT


def test_order_and_duplicate_times_are_rejected_per_instrument() -> None:
    b = bars(flat(4))
    b["ts_event"][2] = b["ts_event"][1]  # a second bar for the same day
    b["ts_event"][3] = b["ts_event"][0]  # back in time
    assert codes(b) == [Check.OK, Check.OK, Check.DUPLICATE_TIME, Check.OUT_OF_ORDER]
    # another instrument at the same times is fine
    b["instrument"][2:] = 1
    b["ts_event"][3] = b["ts_event"][1] + DAY
    assert codes(b) == [Check.OK, Check.OK, Check.OK, Check.OK]


def test_a_close_that_jumps_and_comes_back_is_a_spike_and_one_that_stays_is_a_move() -> None:
    spike = bars([*flat(6), (100, 101, 70, 70), *flat(3, 101.0)])
    assert codes(spike)[6] == Check.SPIKE
    assert codes(spike).count(Check.SPIKE) == 1
    move = bars([*flat(6), (100, 101, 70, 70), *flat(3, 71.0)])
    assert Check.SPIKE not in codes(move)
    # judging on the move alone (a live feed cannot wait for the next bar) flags both
    live = BarRules(spike_revert=None)
    assert codes(move, live)[6] == Check.SPIKE
    # a move ten times away from the reference is absurd, reverting or not
    absurd = bars([*flat(6), (2000, 2001, 1999, 2000), *flat(2, 2000.0)])
    assert codes(absurd)[6] == Check.ABSURD_PRICE


def test_a_rejected_bar_does_not_become_the_reference_for_the_next() -> None:
    # two bad closes in a row: the second is judged against the good history
    b = bars([*flat(6), (100, 101, 70, 70), (100, 101, 70, 70), *flat(2)])
    assert codes(b, BarRules(spike_revert=None))[6:8] == [Check.SPIKE, Check.SPIKE]


def test_a_split_is_not_a_move_when_prices_are_compared_split_adjusted() -> None:
    b = bars([*flat(6), *flat(4, 5.0)])  # a 20:1 split after the sixth bar
    assert codes(b, BarRules(spike_revert=None))[6] == Check.ABSURD_PRICE
    mult = np.array([0.05] * 6 + [1.0] * 4)
    result = validate_bars(b, BarRules(spike_revert=None), multiplier=mult)
    assert result.counts() == {"ok": 10}


def test_a_long_silence_is_flagged_and_kept() -> None:
    b = bars(flat(3))
    b["ts_event"][2] += 10 * DAY
    result = validate_bars(b, BarRules(stale_after_ns=5 * DAY))
    assert [Check(c) for c in result.codes] == [Check.OK, Check.OK, Check.STALE]
    assert result.keep.all() and result.rejected == 0


def test_trade_repeats_are_kept_and_bad_trades_rejected() -> None:
    t = np.zeros(6, dtype=TRADE_DTYPE)
    t["ts_event"] = [1, 2, 2, 3, 4, 5]
    t["price"] = [10.0, 10.0, 10.0, 0.0, 10.01, 10.0]
    t["size"] = [100, 100, 100, 100, 0, 100]
    result = validate_trades(t)
    assert [Check(c) for c in result.codes] == [
        Check.OK,
        Check.OK,
        Check.REPEAT,  # same millisecond, same price and size: a separate print, kept
        Check.NON_POSITIVE_PRICE,
        Check.BAD_SIZE,
        Check.OK,
    ]
    assert result.keep.tolist() == [True, True, True, False, False, True]
    assert result.counts() == {"ok": 3, "bad_size": 1, "non_positive_price": 1, "repeat": 1}


def test_a_trade_print_far_from_the_tape_that_reverts_is_a_spike() -> None:
    n = 40
    t = np.zeros(n, dtype=TRADE_DTYPE)
    t["ts_event"] = np.arange(n)
    t["price"] = 100.0
    t["size"] = 10
    t["price"][30] = 80.0
    assert Check(validate_trades(t).codes[30]) == Check.SPIKE
    assert Check(validate_trades(t, TradeRules(spike_min_move=0.5)).codes[30]) == Check.OK


def test_quote_flags_duplicates_suspicious_and_silence() -> None:
    q = np.zeros(4, dtype=QUOTE_DTYPE)
    q["ts_event"] = [0, 1, 10_000, 10_001]
    q["bid"], q["ask"] = 10.0, 10.01
    q["bid"][2] = 10.005
    q["flags"][3] = 1
    flags = quote_flags(q, stale_after_ns=5_000)
    assert [Check(c) for c in flags.codes] == [
        Check.OK,
        Check.DUPLICATE_QUOTE,
        Check.STALE,
        Check.SUSPICIOUS,
    ]
    assert flags.keep.all()


# --- the real daily files ----------------------------------------------------------------------

BAD_PRINTS = [  # SOURCES.md section 1, "Bad prints, left in by the vendor"
    ("goog", D(2008, 9, 30)),  # O 395.98 H 489.36 L 0.01 C 294.57
    ("goog", D(2007, 12, 18)),  # L 67.50, O/C about 675
    ("aapl", D(2009, 9, 21)),
    ("aapl", D(2010, 8, 31)),
    ("aapl", D(2011, 1, 3)),
    ("iwm", D(2008, 9, 19)),  # H 156.51, O/C 79.11 / 75.04
    # not in SOURCES.md: O 159.58 (= H) between closes of 79.82 and 80.46; a backtest that
    # bought at this open lost half its money on paper in a day
    ("ibm", D(2002, 12, 23)),
]
REAL_MOVES = [  # SOURCES.md sections 1 and 2: real one-day moves
    ("aapl", D(2000, 9, 29)),  # -51.6% on adjusted prices
    ("bac", D(2009, 4, 9)),  # +37%
]


def lean_flagged(usa: Path, ticker: str) -> tuple[dict[dt.date, Check], np.ndarray]:
    b = read_daily_bars(usa / f"daily/{ticker}.zip")
    days = session_days(b["ts_event"], EQUITY_TIME_ZONE)
    table = FactorTable.from_rows(read_factor_file(usa / f"factor_files/{ticker}.csv"))
    result = validate_bars(b, multiplier=table.multiplier(days, "split"))
    flagged = {
        from_day_number(int(days[i])): Check(result.codes[i]) for i in np.flatnonzero(~result.keep)
    }
    return flagged, days


@pytest.mark.shared_data
def test_the_known_bad_prints_of_the_lean_daily_files_are_caught_and_nothing_else() -> None:
    usa = shared_data_dir() / "lean/Data/equity/usa"
    found: list[tuple[str, dt.date]] = []
    for ticker in ("aapl", "bac", "goog", "googl", "ibm", "iwm", "spy"):
        flagged, days = lean_flagged(usa, ticker)
        found.extend((ticker, d) for d in flagged)
        for t, d in REAL_MOVES:
            if t == ticker:
                assert d in {from_day_number(int(x)) for x in days}  # the day is in the file
                assert d not in flagged
    assert sorted(found) == sorted(BAD_PRINTS)


@pytest.mark.shared_data
def test_goog_2008_09_30_close_is_also_a_spike_when_the_low_is_not_looked_at() -> None:
    usa = shared_data_dir() / "lean/Data/equity/usa"
    b = read_daily_bars(usa / "daily/goog.zip")
    days = session_days(b["ts_event"], EQUITY_TIME_ZONE)
    i = int(np.flatnonzero(days == (D(2008, 9, 30) - D(1970, 1, 1)).days)[0])
    assert b["close"][i] == 294.57
    b["low"][i] = b["close"][i]  # hide the 0.01 print: the close alone still gives it away
    b["low"][days == (D(2007, 12, 18) - D(1970, 1, 1)).days] = 670.0
    result = validate_bars(b)
    assert [from_day_number(int(days[k])) for k in np.flatnonzero(~result.keep)] == [D(2008, 9, 30)]
    assert Check(result.codes[i]) == Check.SPIKE


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "day"), [("nvda-1999-2014.txt", D(2000, 3, 7)), ("yhoo-1996-2014.txt", D(2008, 2, 1))]
)
def test_real_moves_in_the_yahoo_files_are_not_flagged(name: str, day: dt.date) -> None:
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    path = shared_data_dir() / "backtrader/datas" / name
    ny = ZoneInfo("America/New_York")
    tables = read_table(
        path,
        kind="bars.1d",
        columns={
            "ts_event": "Date",
            "open": "Open",
            "high": "High",
            "low": "Low",
            "close": "Close",
            "volume": "Volume",
        },
        fmt="csv",
        tz=ny,
        time_format=None,
        price_scale=1.0,
        interval="1d",
        bar_time="end",
        session_close=dt.time(16),
        instrument="X.US",
    )
    b = tables["X.US"]
    days = session_days(b["ts_event"], ny)
    i = int(np.flatnonzero(days == (day - D(1970, 1, 1)).days)[0])
    assert b["close"][i] / b["close"][i - 1] - 1 > 0.4  # the real move (SOURCES.md: +42%, +48%)
    result = validate_bars(b)
    assert result.counts() == {"ok": len(b)}
