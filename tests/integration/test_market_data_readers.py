"""The Binance capture and Lean tick readers, on the real files of ``shared/data`` and on small
hand-written files, and the quote validator on the real streams.

Expected figures come from ``shared/data/SOURCES.md`` (sections 3, 4 and 5) or from the raw
files themselves, never from the readers under test.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import zipfile
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from adapters.binance_capture import read_binance_capture
from adapters.lean import (
    FLAG_SUSPICIOUS,
    read_equity_quote_ticks,
    read_equity_trade_ticks,
    read_fx_quote_ticks,
)
from engine.errors import DataError
from engine.ticks import QuoteArray
from engine.validation import QuoteValidator, RejectReason, ValidatorConfig
from tests.shared_data import shared_data_dir

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return shared_data_dir()


def utc_ns(when: dt.datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1_000


# --- Binance spot capture (SOURCES.md section 5) ---------------------------------------------

BINANCE = "hftbacktest/examples/spot"


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "lines", "quotes", "trades", "depth", "snapshots"),
    [
        ("btcusdt_20240808.gz", 41249, 28040, 9757, 3451, 1),
        ("btcusdt_20240809.gz", 58325, 45134, 10147, 3044, 0),
    ],
)
def test_binance_capture_counts_and_quote_quality(
    data_dir: Path,
    *,
    name: str,
    lines: int,
    quotes: int,
    trades: int,
    depth: int,
    snapshots: int,
) -> None:
    capture = read_binance_capture(data_dir / BINANCE / name, instrument=3)
    c = capture.counts
    assert (c.lines, c.book_ticker, c.trade, c.depth, c.snapshot) == (
        lines,
        quotes,
        trades,
        depth,
        snapshots,
    )
    assert c.symbols == {"BTCUSDT"}
    assert len(capture.quotes) == quotes and len(capture.trades) == trades
    assert set(np.unique(capture.quotes["instrument"])) == {3}
    assert set(np.unique(capture.trades["instrument"])) == {3}

    q = capture.quotes
    validator = QuoteValidator(ValidatorConfig(allow_locked=False), n_instruments=4)
    assert validator.validate(q).all()
    assert validator.counts()["crossed"] == 0 and validator.counts()["locked"] == 0
    assert round(float(np.median(q["ask"] - q["bid"])), 8) == 0.01
    assert np.array_equal(q["ts_event"], q["ts_init"])

    t = capture.trades
    assert t["price"].min() >= 61556.04 and t["price"].max() <= 61860.80
    assert set(np.unique(t["aggressor"])) == {-1, 1}
    # local clock ~1.27 s behind the exchange's trade time T (SOURCES.md: clock skew)
    skew_ms = (t["ts_init"] - t["ts_event"]) / 1e6
    assert skew_ms.min() > -1300 and skew_ms.max() < -1000


@pytest.mark.shared_data
def test_binance_capture_rows_match_the_raw_lines(data_dir: Path) -> None:
    capture = read_binance_capture(data_dir / BINANCE / "btcusdt_20240808.gz")
    # SOURCES.md section 5, sample lines 3 and 4 of the file, verbatim
    first_quote = capture.quotes[0]
    assert first_quote["ts_event"] == first_quote["ts_init"] == 1723161254087891268
    assert (first_quote["bid"], first_quote["ask"]) == (61837.63, 61837.64)
    assert (first_quote["bid_size"], first_quote["ask_size"]) == (3.78826, 1.54698)
    first_trade = capture.trades[0]
    assert first_trade["ts_event"] == 1723161255342 * 1_000_000
    assert first_trade["ts_init"] == 1723161254087896568
    assert (first_trade["price"], first_trade["size"]) == (61837.63, 0.02)
    assert first_trade["aggressor"] == -1  # "m": true, buyer was maker: seller crossed


@pytest.mark.shared_data
def test_binance_trade_price_range_over_both_files(data_dir: Path) -> None:
    prices = np.concatenate(
        [
            read_binance_capture(data_dir / BINANCE / name).trades["price"]
            for name in ("btcusdt_20240808.gz", "btcusdt_20240809.gz")
        ]
    )
    assert (prices.min(), prices.max()) == (61556.04, 61860.80)


# --- Lean / AlgoSeek equity quotes (SOURCES.md section 3) ------------------------------------

EQUITY_TABLE = [
    # ticker, date, quote rows, NBBO updates (pairs), RTH crossed, RTH locked, trade rows
    ("ibm", "20131007", 109067, 54533, 42, 320, 24293),
    ("ibm", "20131008", 125750, 62875, 40, 502, 33381),
    ("ibm", "20131009", 135492, 67746, 57, 304, 27042),
    ("ibm", "20131010", 105428, 52714, 22, 113, 22415),
    ("ibm", "20131011", 99852, 49926, 39, 283, 19264),
    ("bac", "20131007", 476855, 238427, 0, 4244, 88172),
    ("bac", "20131008", 576096, 288048, 0, 9587, 125872),
]


def equity_tick_file(data_dir: Path, ticker: str, date: str, kind: str) -> Path:
    return data_dir / "lean/Data/equity/usa/tick" / ticker / f"{date}_{kind}.zip"


def regular_hours(quotes: QuoteArray, date: str) -> QuoteArray:
    day = dt.datetime.strptime(date, "%Y%m%d").replace(tzinfo=NEW_YORK)
    open_ns = utc_ns(day.replace(hour=9, minute=30))
    close_ns = utc_ns(day.replace(hour=16))
    ts = quotes["ts_event"]
    return quotes[(ts >= open_ns) & (ts < close_ns)]


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("ticker", "date", "rows", "pairs", "crossed", "locked", "trades"),
    EQUITY_TABLE,
    ids=[f"{t}-{d}" for t, d, *_ in EQUITY_TABLE],
)
def test_equity_nbbo_updates_and_regular_hours_crossed_and_locked_counts(
    data_dir: Path,
    *,
    ticker: str,
    date: str,
    rows: int,
    pairs: int,
    crossed: int,
    locked: int,
    trades: int,
) -> None:
    quotes = read_equity_quote_ticks(equity_tick_file(data_dir, ticker, date, "quote"))
    two_sided = ~np.isnan(quotes["bid"]) & ~np.isnan(quotes["ask"])
    assert int(two_sided.sum()) == pairs
    # every source row is used exactly once: two per pair, one per lone row
    assert 2 * pairs + int((~two_sided).sum()) == rows

    validator = QuoteValidator(ValidatorConfig(allow_locked=False), n_instruments=1)
    validator.validate(regular_hours(quotes, date))
    counts = validator.counts()
    assert (counts["crossed"], counts["locked"]) == (crossed, locked)
    assert counts["out_of_order"] == 0 and counts["nan_price"] == 0

    trade_ticks = read_equity_trade_ticks(equity_tick_file(data_dir, ticker, date, "trade"))
    assert len(trade_ticks) == trades


@pytest.mark.shared_data
def test_ibm_first_regular_hours_update_is_one_pair(data_dir: Path) -> None:
    quotes = read_equity_quote_ticks(equity_tick_file(data_dir, "ibm", "20131007", "quote"))
    first = regular_hours(quotes, "20131007")[0]
    # SOURCES.md: 34200072,1816900,200,0,0,Q,1,0 / 34200072,0,0,1819000,100,P,1,0
    expected_ts = utc_ns(dt.datetime(2013, 10, 7, 9, 30, 0, 72_000, tzinfo=NEW_YORK))
    assert first["ts_event"] == expected_ts == first["ts_init"]
    assert expected_ts == utc_ns(dt.datetime(2013, 10, 7, 13, 30, 0, 72_000, tzinfo=dt.UTC))
    assert (first["bid"], first["bid_size"], first["ask"], first["ask_size"]) == (
        181.69,
        200.0,
        181.90,
        100.0,
    )
    assert first["flags"] == 0


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("ticker", "date", "suspicious_ask"),
    [
        ("ibm", "20131007", 186.00),
        ("ibm", "20131008", 185.00),
        ("ibm", "20131009", None),
        ("ibm", "20131010", 194.00),
        ("ibm", "20131011", None),
        ("bac", "20131007", None),
        ("bac", "20131008", None),
    ],
)
def test_suspicious_rows_are_flagged(
    data_dir: Path, ticker: str, date: str, suspicious_ask: float | None
) -> None:
    quotes = read_equity_quote_ticks(equity_tick_file(data_dir, ticker, date, "quote"))
    flagged = np.flatnonzero(quotes["flags"] & FLAG_SUSPICIOUS)
    if suspicious_ask is None:
        assert flagged.size == 0
        return
    # the final ask row at 20:00:00 New York time
    assert flagged.tolist() == [len(quotes) - 1]
    last = quotes[-1]
    day = dt.datetime.strptime(date, "%Y%m%d").replace(tzinfo=NEW_YORK)
    eight_pm = utc_ns(day.replace(hour=20))
    assert eight_pm <= last["ts_event"] < eight_pm + 1_000_000_000
    assert last["ask"] == suspicious_ask


@pytest.mark.shared_data
def test_validator_on_the_real_ibm_day_rejects_the_lone_row_and_crossed_quotes(
    data_dir: Path,
) -> None:
    quotes = read_equity_quote_ticks(equity_tick_file(data_dir, "ibm", "20131007", "quote"))
    # the file opens with a lone ask row: 14400054,0,0,1836300,100,Q,1,0
    assert np.isnan(quotes["bid"][0]) and quotes["ask"][0] == 183.63
    validator = QuoteValidator(ValidatorConfig(), n_instruments=1)
    reasons = validator.validate_reasons(quotes)
    assert reasons[0] == RejectReason.NAN_PRICE
    crossed = quotes["bid"] > quotes["ask"]
    assert int(crossed.sum()) == 43  # 42 in regular hours (SOURCES.md) and one outside
    assert np.all(reasons[crossed] == RejectReason.CROSSED)
    assert np.all(reasons[1:][~crossed[1:]] == RejectReason.OK)  # locked allowed by default
    counts = validator.counts()
    assert counts["nan_price"] == 1 and counts["crossed"] == 43
    assert counts["accepted"] == len(quotes) - 44


@pytest.mark.shared_data
@pytest.mark.parametrize("source", ["ibm-20131007", "btcusdt-20240809"])
def test_out_of_order_is_caught_in_a_real_stream_with_two_rows_swapped(
    data_dir: Path, source: str
) -> None:
    if source.startswith("ibm"):
        quotes = regular_hours(
            read_equity_quote_ticks(equity_tick_file(data_dir, "ibm", "20131007", "quote")),
            "20131007",
        )
        quotes = quotes[quotes["bid"] < quotes["ask"]]  # sound quotes only
    else:
        quotes = read_binance_capture(data_dir / BINANCE / "btcusdt_20240809.gz").quotes
    clean = QuoteValidator(ValidatorConfig(), n_instruments=1)
    assert clean.validate(quotes).all()

    ts = quotes["ts_event"]
    i = int(np.flatnonzero(np.diff(ts) > 0)[len(ts) // 2 // 100])  # somewhere in the stream
    swapped = quotes.copy()
    swapped[[i, i + 1]] = swapped[[i + 1, i]]
    validator = QuoteValidator(ValidatorConfig(), n_instruments=1)
    reasons = validator.validate_reasons(swapped)
    assert np.flatnonzero(reasons).tolist() == [i + 1]
    assert reasons[i + 1] == RejectReason.OUT_OF_ORDER
    assert validator.counts()["out_of_order"] == 1


# --- Lean / AlgoSeek equity trades -----------------------------------------------------------


@pytest.mark.shared_data
def test_equity_trades_keep_exact_duplicate_prints(data_dir: Path) -> None:
    path = equity_tick_file(data_dir, "ibm", "20131007", "trade")
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(archive.namelist()[0]).decode().split("\n")
    duplicate_lines = len(lines) - len(set(lines))
    assert 990 <= duplicate_lines <= 2149  # SOURCES.md: IBM 990-2149 per day

    trades = read_equity_trade_ticks(path)
    assert len(trades) == len(lines) == 24293
    # SOURCES.md sample: 14430270,1815200,283,P,20002020,0 is the first row
    assert trades["ts_event"][0] == utc_ns(
        dt.datetime(2013, 10, 7, 4, 0, 30, 270_000, tzinfo=NEW_YORK)
    )
    assert (trades["price"][0], trades["size"][0], trades["aggressor"][0]) == (181.52, 283.0, 0)
    key_columns = trades[["ts_event", "price", "size"]]
    assert len(trades) - len(np.unique(key_columns)) >= duplicate_lines


# --- Lean / Oanda FX quotes (SOURCES.md section 4) -------------------------------------------

FX_TABLE = [
    ("20140504", 1164, "21:00:00.462", "23:59:48.314"),
    ("20140505", 25177, "00:00:23.668", "23:59:59.513"),
    ("20140506", 44864, "00:00:00.158", "23:59:56.706"),
    ("20140507", 41367, "00:00:07.135", "23:59:42.008"),
    ("20140508", 87833, "00:00:08.715", "23:59:49.008"),
    ("20140509", 47634, "00:00:01.216", "20:59:58.835"),
]


@pytest.mark.shared_data
@pytest.mark.parametrize(("date", "rows", "first", "last"), FX_TABLE)
def test_fx_quotes_rows_and_time_span(
    data_dir: Path, date: str, rows: int, first: str, last: str
) -> None:
    path = data_dir / "lean/Data/forex/oanda/tick/eurusd" / f"{date}_quote.zip"
    quotes = read_fx_quote_ticks(path, instrument=1)
    assert len(quotes) == rows
    day = dt.datetime.strptime(date, "%Y%m%d").replace(tzinfo=dt.UTC)

    def at(clock: str) -> int:
        hours, minutes, seconds = clock.split(":")
        since_midnight = dt.timedelta(
            hours=int(hours), minutes=int(minutes), seconds=float(seconds)
        )
        return utc_ns(day + since_midnight)

    assert (quotes["ts_event"][0], quotes["ts_event"][-1]) == (at(first), at(last))
    assert np.all(quotes["bid_size"] == 0.0) and np.all(quotes["ask_size"] == 0.0)
    validator = QuoteValidator(ValidatorConfig(allow_locked=False), n_instruments=2)
    assert validator.validate(quotes).all(), validator.counts()


@pytest.mark.shared_data
def test_fx_ecb_day_quotes(data_dir: Path) -> None:
    quotes = read_fx_quote_ticks(data_dir / "lean/Data/forex/oanda/tick/eurusd/20140508_quote.zip")
    assert len(quotes) == 87833
    assert int((quotes["bid"] > quotes["ask"]).sum()) == 0
    assert round(float((quotes["ask"] - quotes["bid"]).max()) * 1e4, 1) == 13.9
    # every price is the correctly rounded value of its decimal text, as Python's float() reads it
    with zipfile.ZipFile(data_dir / "lean/Data/forex/oanda/tick/eurusd/20140508_quote.zip") as z:
        rows = [line.split(",") for line in z.read(z.namelist()[0]).decode().splitlines()]
    assert quotes["bid"].tolist() == [float(r[1]) for r in rows]
    assert quotes["ask"].tolist() == [float(r[2]) for r in rows]
    # SOURCES.md sample row of the file: 8715,1.39101,1.39114
    assert (quotes["bid"][0], quotes["ask"][0]) == (1.39101, 1.39114)
    assert quotes["ts_event"][0] == utc_ns(dt.datetime(2014, 5, 8, 0, 0, 8, 715_000, tzinfo=dt.UTC))


# --- hand-written files: pairing rules, time zones, errors (no shared data needed) -----------


def write_zip(path: Path, member: str, text: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, text)
    return path


def test_quote_pairing_lone_rows_both_sided_rows_and_flags(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "34200000,0,0,1000100,5,Q,1,0",  # lone ask
            "34200001,1000000,3,0,0,N,1,0",  # bid + ask, same ms: one update
            "34200001,0,0,1000200,4,P,1,1",  # suspicious ask row
            "34200002,1000000,3,0,0,N,1,0",  # lone bid: its ask comes a ms later
            "34200003,0,0,1000300,4,P,1,0",  # lone ask
            "34200004,0,0,1000300,4,P,1,0",  # ask then bid at the same ms: not a pair
            "34200004,1000000,3,0,0,N,1,0",
            "34200005,999900,7,1000400,8,Z,1,0",  # both sides in one row
        ]
    )
    quotes = read_equity_quote_ticks(write_zip(tmp_path / "20131007_quote.zip", "q.csv", text))
    got = [
        (float(q["bid"]), float(q["ask"]), float(q["bid_size"]), float(q["ask_size"]))
        for q in quotes
    ]
    nan = float("nan")
    expected = [
        (nan, 100.01, nan, 5.0),
        (100.0, 100.02, 3.0, 4.0),
        (100.0, nan, 3.0, nan),
        (nan, 100.03, nan, 4.0),
        (nan, 100.03, nan, 4.0),
        (100.0, nan, 3.0, nan),
        (99.99, 100.04, 7.0, 8.0),
    ]
    assert np.array_equal(np.array(got), np.array(expected), equal_nan=True)
    assert quotes["flags"].tolist() == [0, FLAG_SUSPICIOUS, 0, 0, 0, 0, 0]
    open_ns = utc_ns(dt.datetime(2013, 10, 7, 9, 30, tzinfo=NEW_YORK))
    assert (quotes["ts_event"] - open_ns).tolist() == [
        ms * 1_000_000 for ms in (0, 1, 2, 3, 4, 4, 5)
    ]
    reasons = QuoteValidator(ValidatorConfig(), 1).validate_reasons(quotes)
    assert reasons.tolist() == [
        RejectReason.NAN_PRICE,
        RejectReason.OK,
        RejectReason.NAN_PRICE,
        RejectReason.NAN_PRICE,
        RejectReason.NAN_PRICE,
        RejectReason.NAN_PRICE,
        RejectReason.OK,
    ]


@pytest.mark.parametrize(
    ("date", "time_ms", "expected_utc"),
    [
        # 2013-11-03: clocks go back at 02:00 EDT; Time is wall-clock time, as in Lean
        ("20131103", 3_600_000, dt.datetime(2013, 11, 3, 5, 0, tzinfo=dt.UTC)),  # 01:00 EDT
        ("20131103", 14_400_000, dt.datetime(2013, 11, 3, 9, 0, tzinfo=dt.UTC)),  # 04:00 EST
        # 2014-03-09: clocks go forward at 02:00 EST
        ("20140309", 3_600_000, dt.datetime(2014, 3, 9, 6, 0, tzinfo=dt.UTC)),  # 01:00 EST
        ("20140309", 34_200_000, dt.datetime(2014, 3, 9, 13, 30, tzinfo=dt.UTC)),  # 09:30 EDT
        ("20131007", 0, dt.datetime(2013, 10, 7, 4, 0, tzinfo=dt.UTC)),
    ],
)
def test_equity_time_is_new_york_wall_clock_across_daylight_saving_changes(
    tmp_path: Path, date: str, time_ms: int, expected_utc: dt.datetime
) -> None:
    path = write_zip(tmp_path / f"{date}_trade.zip", "t.csv", f"{time_ms},1000000,10,N,1,0\n")
    trades = read_equity_trade_ticks(path)
    assert trades["ts_event"].tolist() == [utc_ns(expected_utc)]
    assert trades["price"].tolist() == [100.0]


def test_fx_reader_handles_crlf_and_a_final_newline(tmp_path: Path) -> None:
    text = "23668,1.38710,1.38726\r\n23700,1.38711,1.3873\r\n"
    quotes = read_fx_quote_ticks(write_zip(tmp_path / "20140505_quote.zip", "fx.csv", text))
    assert quotes["bid"].tolist() == [1.38710, 1.38711]
    assert quotes["ask"].tolist() == [1.38726, 1.3873]
    midnight = utc_ns(dt.datetime(2014, 5, 5, tzinfo=dt.UTC))
    assert (quotes["ts_event"] - midnight).tolist() == [23_668_000_000, 23_700_000_000]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,1000000,1,0,0,N,1,0\n2,10x0000,1,0,0,N,1,0\n", r"line 2: .*field 2 \(BidPrice\)"),
        ("1,1000000,1,0,0,N,1,0\n2,1000000,1,0,0,N,1\n", r"line 2: .*field 7"),
        ("1,1000000,1,0,0,N,1,0,9\n", r"line 1: .*field 8 \(Suspicious\)"),
        ("1,1000000,1,0,0,N,1,0\n\n3,1000000,1,0,0,N,1,0", r"line 2: .*field 1 \(Time\)"),
        ("1,0,0,0,0,N,1,0\n", r"line 1: neither a bid nor an ask"),
        ("1,1000000,1,0,0,N,1,0\n99999999,1000000,1,0,0,N,1,0\n", r"line 2: Time 99999999"),
    ],
)
def test_malformed_equity_quote_rows_name_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_zip(tmp_path / "20131007_quote.zip", "20131007_ibm_Quote_Tick.csv", text)
    with pytest.raises(DataError, match=r"20131007_quote\.zip.*" + message):
        read_equity_quote_ticks(path)


def test_lean_zip_and_date_errors(tmp_path: Path) -> None:
    two = tmp_path / "20131007_trade.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", "1,1,1,N,1,0")
        archive.writestr("b.csv", "1,1,1,N,1,0")
    with pytest.raises(DataError, match="exactly one file"):
        read_equity_trade_ticks(two)
    one = write_zip(tmp_path / "20131008_trade.zip", "a.csv", "1,1,1,N,1g,0")
    with pytest.raises(DataError, match=r"line 1: .*field 5 \(SaleCondition\)"):
        read_equity_trade_ticks(one)
    with pytest.raises(DataError, match="file name says 2013-10-08"):
        read_equity_trade_ticks(one, dt.date(2013, 10, 9))
    unnamed = write_zip(tmp_path / "ticks.zip", "a.csv", "1,1.1,1.2")
    with pytest.raises(DataError, match="no YYYYMMDD_ date"):
        read_fx_quote_ticks(unnamed)
    assert read_fx_quote_ticks(unnamed, dt.date(2014, 5, 5))["bid"].tolist() == [1.1]
    not_a_zip = tmp_path / "20131009_trade.zip"
    not_a_zip.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read zip"):
        read_equity_trade_ticks(not_a_zip)


def test_hex_sale_conditions_and_suspicious_trades(tmp_path: Path) -> None:
    text = "1000,1815200,283,P,20002020,0\n1001,1815300,100,D,1,1\n1002,1815400,5,N,aF,0"
    path = write_zip(tmp_path / "20131007_trade.zip", "t.csv", text)
    assert read_equity_trade_ticks(path)["price"].tolist() == [181.52, 181.53, 181.54]
    kept = read_equity_trade_ticks(path, drop_suspicious=True)
    assert kept["price"].tolist() == [181.52, 181.54]
    assert kept["size"].tolist() == [283.0, 5.0]


BOOK = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"100.10000000",'
    b'"B":"1.50000000","a":"100.20000000","A":"2.00000000"}}'
)
TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":1,'
    b'"p":"100.15000000","q":"0.02000000","T":1723161255342,"m":false,"M":true}}'
)


def write_capture(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as stream:
        stream.write(b"\n".join(lines) + b"\n")
    return path


def test_binance_reader_on_a_hand_written_capture(tmp_path: Path) -> None:
    path = write_capture(
        tmp_path / "cap.gz",
        [
            b"1723161254000000000 " + BOOK,
            b'1723161254000000001 {"lastUpdateId":5,"bids":[],"asks":[]}',
            b'1723161254000000002 {"stream":"btcusdt@depth@100ms","data":{"b":[],"a":[]}}',
            b"1723161254000000003 " + TRADE,
        ],
    )
    capture = read_binance_capture(path, instrument=7)
    assert (capture.counts.depth, capture.counts.snapshot, capture.counts.lines) == (1, 1, 4)
    q = capture.quotes
    assert q.tolist() == [(1723161254000000000, 1723161254000000000, 7, 0, 100.1, 100.2, 1.5, 2.0)]
    t = capture.trades
    assert t.tolist() == [(1723161255342000000, 1723161254000000003, 7, 1, 100.15, 0.02)]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (b"1723161254000000005" + BOOK, r"expected '<local_ns> <json>'"),
        (b"17231612x4000000005 " + BOOK, "cannot parse line"),
        (b"1723161254000000005 " + BOOK[:-2], "cannot parse line"),
        (b"1723161254000000005 " + BOOK.replace(b'"A"', b'"Z"'), "missing field 'A'"),
        (b"1723161254000000005 " + TRADE.replace(b'"m":false', b'"m":0'), "'m' is not a boolean"),
        (b"1723161254000000005 " + BOOK.replace(b"bookTicker", b"kline_1m"), "unexpected stream"),
        (b"1723161254000000005 " + BOOK.replace(b"BTCUSDT", b"ETHUSDT"), "one instrument"),
        (b"1723161254000000005 [1, 2]", "not an object"),
    ],
)
def test_malformed_capture_lines_name_file_and_line(
    tmp_path: Path, bad_line: bytes, message: str
) -> None:
    good = b"1723161254000000000 " + BOOK
    path = write_capture(tmp_path / "btc.gz", [good, good, bad_line, good])
    with pytest.raises(DataError, match=r"btc\.gz:3: .*" + message):
        read_binance_capture(path)


def test_truncated_gzip_is_a_data_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as stream:
        stream.write((b"1723161254000000000 " + BOOK + b"\n") * 1000)
    path = tmp_path / "cut.gz"
    path.write_bytes(buffer.getvalue()[:-40])
    with pytest.raises(DataError, match=r"cut\.gz: cannot read gzip"):
        read_binance_capture(path)
