"""Point-in-time corporate actions (engine/corporate_actions.py) on Lean's factor and map
files (shared/data, SOURCES.md section 1) and on small hand-made tables.

Expected values come from SOURCES.md (split dates and sizes, the largest real moves, the map
file examples) or from the factor file rows themselves."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from adapters.lean import EQUITY_TIME_ZONE, read_daily_bars, read_factor_file, read_map_file
from engine.corporate_actions import (
    AdjustedHistory,
    FactorRow,
    FactorTable,
    MapRow,
    SecurityMaster,
    SymbolHistory,
    day_number,
    from_day_number,
    session_days,
)
from engine.ticks import BAR_DTYPE
from tests.shared_data import shared_data_dir

D = dt.date


@pytest.fixture(scope="module")
def usa() -> Path:
    return shared_data_dir() / "lean/Data/equity/usa"


def table_of(usa: Path, ticker: str) -> FactorTable:
    return FactorTable.from_rows(read_factor_file(usa / f"factor_files/{ticker}.csv"))


def daily(usa: Path, ticker: str) -> tuple[np.ndarray, np.ndarray]:
    bars = read_daily_bars(usa / f"daily/{ticker}.zip")
    return bars, session_days(bars["ts_event"], EQUITY_TIME_ZONE)


def close_returns(bars: np.ndarray) -> np.ndarray:
    c = bars["close"]
    return c[1:] / c[:-1] - 1.0


# --- hand-made tables --------------------------------------------------------------------------


def small_table() -> FactorTable:
    # a 2:1 split effective after 2020-01-10, a 1% dividend effective after 2020-01-20
    return FactorTable.from_rows(
        [
            FactorRow(date=D(2020, 1, 10), price_factor=0.99, split_factor=0.5),
            FactorRow(date=D(2020, 1, 20), price_factor=0.99, split_factor=1.0),
            FactorRow(date=D(2050, 12, 31), price_factor=1.0, split_factor=1.0),
        ]
    )


def bars_on(days: list[dt.date], closes: list[float]) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros(len(days), dtype=BAR_DTYPE)
    for i, c in enumerate(closes):
        out[i]["open"] = out[i]["high"] = out[i]["low"] = out[i]["close"] = c
        out[i]["volume"] = 1000.0
    return out, np.array([day_number(d) for d in days], dtype=np.int64)


def test_the_vendor_rule_takes_the_first_row_on_or_after_the_bar_date() -> None:
    t = small_table()
    days = [D(2020, 1, 9), D(2020, 1, 10), D(2020, 1, 13), D(2020, 1, 20), D(2020, 1, 21)]
    pf, sf = t.factors(np.array([day_number(d) for d in days]))
    assert sf.tolist() == [0.5, 0.5, 1.0, 1.0, 1.0]
    assert pf.tolist() == [0.99, 0.99, 0.99, 0.99, 1.0]


def test_as_of_a_day_only_earlier_rows_are_used_and_the_bar_of_the_day_is_raw() -> None:
    t = small_table()
    bars, days = bars_on([D(2020, 1, 9), D(2020, 1, 13)], [100.0, 50.0])
    # on the 13th the split is known (it took effect after the 10th), the dividend is not
    seen = t.adjust(bars, days, as_of=D(2020, 1, 13), adjustment="total")
    assert seen["close"].tolist() == [50.0, 50.0]
    assert seen["volume"].tolist() == [2000.0, 1000.0]
    # on the 10th nothing is known yet: the raw prices
    raw_day = t.adjust(bars[:1], days[:1], as_of=D(2020, 1, 10))
    assert raw_day["close"].tolist() == [100.0]
    # with the whole table (research, not trading) the future dividend is in too
    assert t.adjust(bars, days)["close"].tolist() == pytest.approx([49.5, 49.5])
    with pytest.raises(ValueError, match="had not happened yet"):
        t.adjust(bars, days, as_of=D(2020, 1, 12))


def test_known_at_is_the_table_a_vendor_would_have_published_that_day() -> None:
    t = small_table().known_at(D(2020, 1, 15))
    rows = t.rows()
    assert [r.date for r in rows] == [D(2020, 1, 10), D(2050, 12, 31)]
    assert rows[0].split_factor == 0.5
    assert rows[0].price_factor == pytest.approx(1.0)  # the dividend after the 20th is unknown
    events = t.events()
    assert [(e.last_day_before, e.split_ratio) for e in events] == [(D(2020, 1, 10), 0.5)]


# --- AAPL, BAC, GOOG: the real files ------------------------------------------------------------


@pytest.mark.shared_data
def test_aapl_factor_rows_turn_the_2014_seven_for_one_split_into_a_ratio_of_one_seventh(
    usa: Path,
) -> None:
    t = table_of(usa, "aapl")
    _, sf = t.factors(np.array([day_number(D(2014, 6, 6)), day_number(D(2014, 6, 9))]))
    assert sf[0] / sf[1] == pytest.approx(1 / 7, rel=1e-5)
    splits = [
        (e.last_day_before, round(1 / e.split_ratio, 3)) for e in t.events() if e.split_ratio != 1
    ]
    # SOURCES.md: 2000-06-21 (2:1), 2005-02-28 (2:1), 2014-06-09 (7:1), 2020-08-31 (4:1)
    assert splits == [
        (D(2000, 6, 20), 2.0),
        (D(2005, 2, 25), 2.0),
        (D(2014, 6, 6), 7.0),
        (D(2020, 8, 28), 4.0),
    ]


@pytest.mark.shared_data
def test_an_aapl_replay_adjusted_as_of_each_day_shows_no_split_jump(usa: Path) -> None:
    bars, days = daily(usa, "aapl")
    table = table_of(usa, "aapl")
    raw = close_returns(bars)
    assert raw.min() < -0.85  # the raw file has the 7:1 split (-85.5%, SOURCES.md)
    history = AdjustedHistory(table, adjustment="total")
    worst: list[tuple[float, dt.date]] = []
    for bar, day in zip(bars, days, strict=True):
        history.append(bar, int(day))
        window = history.bars
        if len(window) >= 2:
            # the last return the strategy sees at this day, on prices adjusted as of the day
            r = float(window["close"][-1] / window["close"][-2] - 1.0)
            worst.append((r, from_day_number(int(day))))
    worst.sort()
    # the largest move left is the real one: -51.6% on 2000-09-29 (SOURCES.md) ...
    assert worst[0][1] == D(2000, 9, 29)
    assert worst[0][0] == pytest.approx(-0.516, abs=0.001)
    # ... and every other day moves less than 20% either way: no split jump anywhere
    assert all(abs(r) < 0.2 for r, _ in worst[1:])
    assert [e.last_day_before for e in history.applied if e.split_ratio != 1] == [
        D(2000, 6, 20),
        D(2005, 2, 25),
        D(2014, 6, 6),
        D(2020, 8, 28),
    ]


@pytest.mark.shared_data
def test_the_history_seen_on_a_day_is_the_as_of_adjustment_and_never_uses_a_later_factor(
    usa: Path,
) -> None:
    bars, days = daily(usa, "aapl")
    table = table_of(usa, "aapl")
    as_of = D(2010, 6, 1)
    n = int(np.searchsorted(days, day_number(as_of), side="right"))
    history = AdjustedHistory(table)
    for bar, day in zip(bars[:n], days[:n], strict=True):
        history.append(bar, int(day))
    expected = table.adjust(bars[:n], days[:n], as_of=as_of)
    np.testing.assert_allclose(history.bars["close"], expected["close"], rtol=1e-12)
    # the window's last bar is the raw bar of the day: what traded
    assert history.bars["close"][-1] == bars["close"][n - 1]
    # 2010 saw AAPL at ~$250 raw; the 2014 and 2020 splits are in the future and unused
    assert 240 < expected["close"][-1] < 270

    # rewrite the future: a fake 10:1 split and a 10% dividend taking effect after
    # 2012-01-03. In a cumulative factor file that is a new row dated 2012-01-03 (with the
    # factors then in force) and every row up to it multiplied by the event's ratios.
    fake = D(2012, 1, 3)
    rows = table.rows()
    after = next(r for r in rows if r.date > fake)
    rows.append(
        FactorRow(date=fake, price_factor=after.price_factor, split_factor=after.split_factor)
    )
    altered = FactorTable.from_rows(
        FactorRow(
            date=r.date,
            price_factor=r.price_factor * (0.9 if r.date <= fake else 1.0),
            split_factor=r.split_factor * (0.1 if r.date <= fake else 1.0),
            reference_price=r.reference_price,
        )
        for r in sorted(rows, key=lambda r: r.date)
    )
    seen_altered = altered.adjust(bars[:n], days[:n], as_of=as_of)
    np.testing.assert_allclose(seen_altered["close"], expected["close"], rtol=1e-12)
    np.testing.assert_allclose(seen_altered["volume"], expected["volume"], rtol=1e-12)
    # whereas the whole table (a look-ahead backtest) sees the fake split in 2010 prices
    ahead = altered.adjust(bars[:n], days[:n])["close"][-1]
    assert ahead == pytest.approx(table.adjust(bars[:n], days[:n])["close"][-1] * 0.09)
    # and once the fake event's date has passed, the as-of view does see it
    later = day_number(D(2012, 1, 4))
    m = int(np.searchsorted(days, later, side="left"))
    seen_later = altered.adjust(bars[:m], days[:m], as_of=later)["close"][n - 1]
    assert seen_later == pytest.approx(
        table.adjust(bars[:m], days[:m], as_of=later)["close"][n - 1] * 0.09
    )


@pytest.mark.shared_data
def test_bac_traded_as_nb_until_1998_09_30_and_its_file_holds_those_rows(usa: Path) -> None:
    master = SecurityMaster(
        SymbolHistory(p.stem.upper(), tuple(read_map_file(p)))
        for p in sorted((usa / "map_files").glob("*.csv"))
    )
    assert master.ticker_on("BAC", D(1998, 9, 30)) == "NB"
    assert master.ticker_on("BAC", D(1998, 10, 1)) == "BAC"
    assert master.security_of("NB", D(1998, 5, 1)) == "BAC"
    # bac.zip holds the NB rows: its name maps to the security that existed then
    assert master.security_of("BAC", D(1998, 5, 1)) == "BAC"
    assert master.history("BAC").changes() == [(D(1998, 9, 30), "NB", "BAC")]


@pytest.mark.shared_data
def test_goog_and_googl_rows_go_to_the_share_class_that_used_the_ticker_that_day(
    usa: Path,
) -> None:
    master = SecurityMaster(
        SymbolHistory(p.stem.upper(), tuple(read_map_file(p)))
        for p in sorted((usa / "map_files").glob("*.csv"))
    )
    # goog.zip up to 2014-04-02 is the original share, today's GOOGL (SOURCES.md)
    assert master.security_of("GOOG", D(2008, 9, 30)) == "GOOGL"
    assert master.security_of("GOOG", D(2014, 4, 2)) == "GOOGL"
    assert master.security_of("GOOG", D(2014, 4, 3)) == "GOOG"
    assert master.security_of("GOOGL", D(2014, 4, 3)) == "GOOGL"
    # universes as of a date: who existed then, under which ticker
    assert master.universe(D(1998, 6, 1)) == {
        "AAPL": "AAPL",
        "BAC": "NB",
        "IBM": "IBM",
        "SPY": "SPY",
    }
    assert master.universe(D(2010, 1, 4)) == {
        "AAPL": "AAPL",
        "BAC": "BAC",
        "GOOGL": "GOOG",
        "IBM": "IBM",
        "IWM": "IWM",
        "SPY": "SPY",
    }
    u = master.universe(D(2014, 3, 28))
    assert (u["GOOG"], u["GOOGL"]) == ("GOOCV", "GOOG")  # the class C share, when issued
    u = master.universe(D(2015, 1, 2))
    assert (u["GOOG"], u["GOOGL"]) == ("GOOG", "GOOGL")


def test_a_delisted_security_is_in_the_universe_only_while_it_traded() -> None:
    master = SecurityMaster(
        [
            SymbolHistory(
                "LEH",
                (
                    MapRow(date=D(1998, 1, 2), ticker="LEH"),
                    MapRow(date=D(2008, 9, 17), ticker="LEH"),  # no 2050 row: delisted
                ),
            ),
            SymbolHistory(
                "META",
                (
                    MapRow(date=D(2012, 5, 18), ticker="FB"),
                    MapRow(date=D(2022, 6, 8), ticker="FB"),
                    MapRow(date=D(2050, 12, 31), ticker="META"),
                ),
            ),
        ]
    )
    assert master.universe(D(2008, 9, 17)) == {"LEH": "LEH"}
    assert master.universe(D(2008, 9, 18)) == {}
    assert master.universe(D(2015, 1, 2)) == {"META": "FB"}
    assert master.universe(D(2023, 1, 3)) == {"META": "META"}
    assert master.history("LEH").last_day == D(2008, 9, 17)
    assert master.history("META").last_day is None
    assert master.security_of("FB", D(2015, 1, 2)) == "META"
    assert master.security_of("FB", D(2023, 1, 3)) is None


def test_an_adjusted_history_window_rescales_on_the_ex_date_and_keeps_its_length() -> None:
    history = AdjustedHistory(small_table(), adjustment="split", maxlen=3)
    bar = np.zeros((), dtype=BAR_DTYPE)
    seen = []
    for day in (D(2020, 1, 8), D(2020, 1, 9), D(2020, 1, 10), D(2020, 1, 13), D(2020, 1, 14)):
        bar["close"] = 100.0 if day <= D(2020, 1, 10) else 50.0
        bar["volume"] = 1_000.0
        applied = history.append(bar, day)
        seen.append((day, [float(c) for c in history.bars["close"]], len(applied)))
    assert seen == [
        (D(2020, 1, 8), [100.0], 0),
        (D(2020, 1, 9), [100.0, 100.0], 0),
        (D(2020, 1, 10), [100.0, 100.0, 100.0], 0),
        (D(2020, 1, 13), [50.0, 50.0, 50.0], 1),  # the 2:1 split applies on its first day
        (D(2020, 1, 14), [50.0, 50.0, 50.0], 0),
    ]
    assert history.bars["volume"].tolist() == [2_000.0, 1_000.0, 1_000.0]
    assert [from_day_number(int(d)) for d in history.days] == [
        D(2020, 1, 10),
        D(2020, 1, 13),
        D(2020, 1, 14),
    ]
    with pytest.raises(ValueError, match="not after"):
        history.append(bar, D(2020, 1, 14))
