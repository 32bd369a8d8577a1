"""``tradingd data import / info / validate`` on every dataset of shared/data, and CSV and
Parquet imports with a column mapping.

Expected figures come from shared/data's SOURCES.md (row counts, dates, the known bad prints
and real moves, the GOOG/GOOGL share classes, the CME bar end times) or from the source files
themselves, never from the importers under test."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest

from adapters.cli import main
from adapters.importers import (
    ImportResult,
    corporate_actions,
    parse_import_file,
    run_imports,
    security_master,
    shared_data_imports,
)
from adapters.lean import read_daily_bars, read_factor_file
from adapters.tickstore import TickStore
from engine.corporate_actions import session_days
from engine.errors import ConfigError, DataError
from tests.shared_data import shared_data_dir

pytestmark = pytest.mark.shared_data

NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC


def ns(when: dt.datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[TickStore, list[ImportResult]]:
    store = TickStore(tmp_path_factory.mktemp("data") / "store")
    results = run_imports(store, shared_data_imports(_data()), Path.cwd())
    return store, results


def _data() -> Path:
    return shared_data_dir()


def result(results: list[ImportResult], fmt: str) -> ImportResult:
    return next(r for r in results if r.format == fmt)


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def rows_of(store: TickStore, kind: str, instrument: str) -> int:
    return sum(
        i["rows"] for i in store.info() if (i["kind"], i["instrument"]) == (kind, instrument)
    )


def test_every_dataset_imports_with_the_row_counts_of_sources_md(
    imported: tuple[TickStore, list[ImportResult]],
) -> None:
    store, results = imported
    assert [r.format for r in results] == [
        "lean-quotes",
        "lean-trades",
        "lean-minute-bars",
        "lean-fx-quotes",
        "lean-fx-minute-bars",
        "lean-daily",
        "yahoo-daily",
        "binance-capture",
        "nautilus-bars",
    ]
    # trades: every row kept, repeats included (SOURCES.md section 3)
    assert rows_of(store, "trades", "IBM.US") == 24293 + 33381 + 27042 + 22415 + 19264
    assert rows_of(store, "trades", "BAC.US") == 88172 + 125872
    # quotes: one row per NBBO pair, plus the lone ask rows of 10-07, minus rejections
    ibm_updates = 54533 + 62875 + 67746 + 52714 + 49926 + 1
    ibm = next(u for u in result(results, "lean-quotes").units if u.instrument == "IBM.US")
    assert ibm.rows_in == 54534  # the first IBM file: 54,533 pairs and a lone ask
    quotes = result(results, "lean-quotes").counts()
    assert quotes["nan_price"] == 2  # the lone ask rows of IBM and BAC on 10-07
    assert quotes["suspicious"] == 3  # the three suspicious 20:00 asks of IBM
    assert quotes["crossed"] >= 42 + 40 + 57 + 22 + 39  # at least the regular-hours ones
    ibm_rejected = sum(
        u.rows_in - u.rows_written
        for u in result(results, "lean-quotes").units
        if u.instrument == "IBM.US"
    )
    assert rows_of(store, "quotes", "IBM.US") == ibm_updates - ibm_rejected
    # FX: every row (no crossed or locked quote, SOURCES.md section 4)
    assert rows_of(store, "quotes", "EURUSD.OANDA") == 1164 + 25177 + 44864 + 41367 + 87833 + 47634
    # Binance: bookTicker and trade lines (section 5)
    assert rows_of(store, "quotes", "BTCUSDT.BINANCE") == 28040 + 45134
    assert rows_of(store, "trades", "BTCUSDT.BINANCE") == 9757 + 10147
    # vendor minute bars (sections 3, 4) and CME minute bars (section 6)
    assert rows_of(store, "bars.1m", "IBM.US") == 453 + 424 + 423 + 434 + 421
    assert rows_of(store, "bars.1m.bid", "BAC.US") == 641 + 636
    assert rows_of(store, "bars.1m.ask", "EURUSD.OANDA") == 157 + 1350 + 1389 + 1406 + 1419 + 1246
    assert rows_of(store, "bars.1m", "6EH4.XCME") == 29996
    # Yahoo daily (section 2)
    for inst, n in (("NVDA.US", 4012), ("ORCL.US", 5036), ("YHOO.US", 4713)):
        assert rows_of(store, "bars.1d", inst) == n
    assert all(r.rows_per_s > 0 for r in results)


def test_lean_daily_bars_go_to_the_security_that_traded_them(
    imported: tuple[TickStore, list[ImportResult]],
) -> None:
    store, _ = imported
    # goog.zip is GOOGL until 2014-04-02 and the class C share from 04-03 (SOURCES.md)
    googl = store.read_all("bars.1d", ["GOOGL.US"])
    goog = store.read_all("bars.1d", ["GOOG.US"])
    assert len(googl) == 4183 - 1761 + 1761 - 2  # goog.zip's old rows, googl.zip, 2 bad prints
    assert len(goog) == 1761
    goog_days = session_days(goog["ts_event"], NEW_YORK)
    assert str(np.datetime64(int(goog_days[0]), "D")) == "2014-04-03"
    # BAC keeps its NB rows of 1998 (bac.zip holds them under the same security)
    bac = store.read_all("bars.1d", ["BAC.US"])
    assert bac["ts_event"][0] == ns(dt.datetime(1998, 1, 2, 16, tzinfo=NEW_YORK))
    ref = store.reference("corporate_actions.BAC.US")
    assert [r["ticker"] for r in ref["map_rows"]] == ["NB", "NB", "BAC"]

    # GOOGL's stitched history, adjusted with its factor file, has no share-class jump
    table, history = corporate_actions(store, "GOOGL.US")
    assert history is not None and history.ticker_on(dt.date(2010, 1, 4)) == "GOOG"
    master = security_master(store)
    assert master.universe(dt.date(2010, 1, 4))["GOOGL"] == "GOOG"
    assert "GOOG" not in master.universe(dt.date(2010, 1, 4))
    days = session_days(googl["ts_event"], NEW_YORK)
    adjusted = table.adjust(googl, days, adjustment="split")["close"]
    raw_jump = googl["close"][1:] / googl["close"][:-1] - 1
    assert raw_jump.min() < -0.45  # 2014-04-03 raw
    assert np.abs(adjusted[1:] / adjusted[:-1] - 1).max() < 0.25


def test_validation_counts_are_in_the_manifest_and_bad_prints_are_left_out(
    imported: tuple[TickStore, list[ImportResult]],
) -> None:
    store, _ = imported
    manifest = store.manifest("lean-equity-daily")
    aapl = next(r for r in manifest.imports if r.instrument == "AAPL.US" and r.kind == "bars.1d")
    assert aapl.validation == {"bad_print": 3, "ok": 5846}
    assert aapl.rows_in == 5849 and aapl.rows_written == 5846
    names = {s.path for s in aapl.sources}
    assert "lean/Data/equity/usa/daily/aapl.zip" in names
    assert "lean/Data/equity/usa/factor_files/aapl.csv" in names
    src = next(s for s in aapl.sources if s.path.endswith("daily/aapl.zip"))
    raw = (_data() / src.path).read_bytes()
    assert src.sha256 == hashlib.sha256(raw).hexdigest()
    aapl_days = session_days(store.read_all("bars.1d", ["AAPL.US"])["ts_event"], NEW_YORK)
    assert np.datetime64("2009-09-21").astype(np.int64) not in aapl_days
    # the capture's clock caveat travels with the data
    assert any("1.27 s" in n for n in store.manifest("binance-spot").notes)


def test_bar_times_are_close_times(imported: tuple[TickStore, list[ImportResult]]) -> None:
    store, _ = imported
    cme = store.read_all("bars.1m", ["6EH4.XCME"])
    # SOURCES.md: 2024-01-01 23:01:00 is the first bar's end; the file's last is 01-31 23:59
    assert cme["ts_event"][0] == ns(dt.datetime(2024, 1, 1, 23, 1, tzinfo=UTC))
    assert cme["ts_event"][-1] == ns(dt.datetime(2024, 1, 31, 23, 59, tzinfo=UTC))
    assert (cme["interval_ns"] == 60_000_000_000).all()
    assert (cme["open"][0], cme["close"][0], cme["volume"][0]) == (1.1076, 1.1078, 205.0)
    # Lean minute bars are stamped at their start: ours close a minute later
    ibm = store.read_all("bars.1m", ["IBM.US"])
    assert ibm["ts_event"][0] == ns(dt.datetime(2013, 10, 7, 4, 1, tzinfo=NEW_YORK))
    nvda = store.read_all("bars.1d", ["NVDA.US"])
    assert nvda["ts_event"][0] == ns(dt.datetime(1999, 1, 22, 16, tzinfo=NEW_YORK))
    assert nvda["close"][0] == 1.640625
    # Adj Close / Close is 0.926 at the start and 0.969 at the end (SOURCES.md)
    factors = store.reference("corporate_actions.NVDA.US")["factor_rows"]
    assert factors[0]["price_factor"] == pytest.approx(0.926 / 0.969, abs=0.002)


def test_data_info_lists_what_is_stored_with_hashes(
    imported: tuple[TickStore, list[ImportResult]],
) -> None:
    store, _ = imported
    code, out, err = cli("data", "info", "--store", str(store.root), "--json", "--verify")
    assert code == 0, err
    info = orjson.loads(out)
    assert set(info["datasets"]) == {
        "binance-spot",
        "lean-equity-daily",
        "lean-equity-minute",
        "lean-equity-ticks",
        "lean-fx-minute",
        "lean-fx-ticks",
        "nautilus-bars",
        "yahoo-daily",
    }
    for name, entry in info["datasets"].items():
        assert entry["problems"] == []
        assert entry["content_sha256"] == store.manifest(name).content_sha256
    ibm = next(s for s in info["series"] if (s["kind"], s["instrument"]) == ("quotes", "IBM.US"))
    assert ibm["first_partition"] == "2013-10-07"
    assert ibm["bytes_per_row"] == pytest.approx(56, abs=1)
    code, text, _ = cli("data", "info", "--store", str(store.root))
    assert "lean-equity-daily  content sha256 " in text
    assert "bars.1d      GOOGL.US" in text


def test_importing_a_file_twice_is_refused(
    imported: tuple[TickStore, list[ImportResult]],
) -> None:
    store, _ = imported
    code, _, err = cli(
        "data",
        "import",
        "--store",
        str(store.root),
        "--format",
        "lean-fx-quotes",
        "--path",
        str(_data() / "lean/Data/forex/oanda/tick/eurusd/20140505_quote.zip"),
    )
    assert code == 65
    assert "already imported" in err and "20140505_quote.zip" in err


def test_data_validate_reports_the_known_bad_prints_by_reason() -> None:
    code, out, err = cli(
        "data",
        "validate",
        "--format",
        "lean-daily",
        "--path",
        str(_data() / "lean/Data/equity/usa"),
    )
    assert code == 0, err
    assert "ok 34,577; bad_print 7" in out
    rejected = [line.strip() for line in out.splitlines() if line.strip().startswith("rejected")]
    listed = {(line.split()[2].split(".")[0], line.split(" O ")[0][-10:]) for line in rejected}
    assert listed == {
        ("AAPL", "2009-09-21"),
        ("AAPL", "2010-08-31"),
        ("AAPL", "2011-01-03"),
        ("GOOGL", "2007-12-18"),  # traded as GOOG: the original share
        ("GOOGL", "2008-09-30"),
        ("IWM", "2008-09-19"),
        ("IBM", "2002-12-23"),  # not in SOURCES.md: an open of 159.58 between closes near 80
    }
    assert (
        "GOOGL.US (traded as GOOG, file goog.zip) 2008-09-30 O 395.98 H 489.36 L 0.01 C 294.57"
        in out
    )
    # the real moves are not there
    for day in ("2000-09-29", "2009-04-09"):
        assert day not in out


def test_data_validate_of_the_store_shows_the_import_reports(
    imported: tuple[TickStore, list[ImportResult]],
) -> None:
    store, _ = imported
    code, out, err = cli("data", "validate", "--store", str(store.root), "--json")
    assert code == 0, err
    report = orjson.loads(out)["store"]
    iwm = next(r for r in report if r["instrument"] == "IWM.US")
    assert iwm["at_import"] == {"bad_print": 1, "ok": 5243}
    assert iwm["stored_now"] == {"ok": 5243}
    assert "2008-09-19" in iwm["rejected_at_import"][0]
    trades = next(r for r in report if (r["kind"], r["instrument"]) == ("trades", "IBM.US"))
    assert trades["stored_now"] == trades["at_import"]  # repeats kept, nothing rejected
    assert trades["at_import"]["repeat"] > 0


# --- CSV and Parquet with a column mapping ---------------------------------------------------


def test_a_csv_with_a_column_mapping_imports_from_an_import_file(tmp_path: Path) -> None:
    (tmp_path / "ticks.csv").write_text(
        "time,px,qty,sym\n"
        "2013-10-07 09:30:00.072,1819000,200,IBM\n"
        "2013-10-07 09:30:01.500,1819100,100,IBM\n"
        "2013-10-07 09:30:01.500,140100,500,BAC\n"
    )
    (tmp_path / "import.toml").write_text(
        """
[[import]]
format = "csv"
path = "ticks.csv"
kind = "trades"
dataset = "mine"
timezone = "America/New_York"
time_format = "%Y-%m-%d %H:%M:%S.%f"
price_scale = 10000
columns = { ts_event = "time", price = "px", size = "qty", instrument = "sym" }
"""
    )
    store = tmp_path / "store"
    code, out, err = cli("data", "import", str(tmp_path / "import.toml"), "--store", str(store))
    assert code == 0, err
    assert "csv" in out and "3 rows -> 3 stored" in out
    s = TickStore(store)
    ibm = s.read_all("trades", ["IBM"])
    assert ibm["ts_event"][0] == ns(dt.datetime(2013, 10, 7, 13, 30, tzinfo=UTC)) + 72_000_000
    assert ibm["price"].tolist() == [181.9, 181.91]
    assert s.read_all("trades", ["BAC"])["size"].tolist() == [500.0]


def test_a_parquet_export_imports_back_with_a_mapping(
    imported: tuple[TickStore, list[ImportResult]], tmp_path: Path
) -> None:
    store, _ = imported
    out = tmp_path / "fx.parquet"
    start = ns(dt.datetime(2014, 5, 8, 12, tzinfo=UTC))
    end = ns(dt.datetime(2014, 5, 8, 13, tzinfo=UTC))
    n = store.export("quotes", ["EURUSD.OANDA"], out, start, end)
    assert n > 1000
    columns = ", ".join(f'{c} = "{c}"' for c in ("ts_event", "ts_init", "bid", "ask", "instrument"))
    config = parse_import_file(
        f"""
[[import]]
format = "parquet"
path = "{out.name}"
kind = "quotes"
dataset = "roundtrip"
time_format = "epoch_ns"
columns = {{ {columns} }}
"""
    )
    other = TickStore(tmp_path / "other")
    (res,) = run_imports(other, config, tmp_path)
    assert res.rows_written == n
    back = other.read_all("quotes", ["EURUSD.OANDA"])
    original = store.read_all("quotes", ["EURUSD.OANDA"], start, end)
    assert np.array_equal(back, original)


def test_a_mistyped_key_in_an_import_file_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"`allow_lockd` - at `\$\.import\[0\]\.validation`"):
        parse_import_file(
            '[[import]]\nformat = "lean-quotes"\npath = "x"\nvalidation = { allow_lockd = true }\n'
        )
    with pytest.raises(ConfigError, match="needs kind"):
        parse_import_file('[[import]]\nformat = "csv"\npath = "x.csv"\ninstrument = "A.B"\n')


@pytest.mark.parametrize(
    ("policy", "stored", "counts"),
    [
        ("{}", [1, 3], {"crossed": 1, "locked_allowed": 1, "ok": 1}),
        ("{ allow_locked = false }", [1], {"crossed": 1, "locked": 1, "ok": 1}),
        (
            "{ allow_crossed = true, stale_after_s = 30 }",
            [1, 2, 3],
            {"crossed_allowed": 1, "locked_allowed": 1, "ok": 1},
        ),
        ("{ drop_rejected = false }", [1, 2, 3], {"crossed": 1, "locked_allowed": 1, "ok": 1}),
    ],
)
def test_crossed_and_locked_quotes_follow_the_policy_of_the_import_entry(
    tmp_path: Path, policy: str, stored: list[int], counts: dict[str, int]
) -> None:
    (tmp_path / "q.csv").write_text(
        "t,b,a\n"
        "1700000001,10.00,10.01\n"  # a sound quote
        "1700000002,10.02,10.01\n"  # crossed
        "1700000003,10.01,10.01\n"  # locked
    )
    config = parse_import_file(
        f"""
[[import]]
format = "csv"
path = "q.csv"
kind = "quotes"
instrument = "X.SIM"
time_format = "epoch_s"
columns = {{ ts_event = "t", bid = "b", ask = "a" }}
validation = {policy}
"""
    )
    store = TickStore(tmp_path / "store")
    (res,) = run_imports(store, config, tmp_path)
    assert res.counts() == counts
    seconds = store.read_all("quotes", ["X.SIM"])["ts_event"] // 1_000_000_000 - 1_700_000_000
    assert seconds.tolist() == stored


def test_a_bad_line_in_a_daily_file_or_factor_file_is_named_with_its_file_and_line(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "abc.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr(
            "abc.csv",
            "19980102 00:00,973100,975300,965300,973600,2150000\n19980105 00:00,97x,1,1,1,1",
        )
    with pytest.raises(DataError, match=r"abc\.zip \(abc\.csv\) line 2: .*97x"):
        read_daily_bars(bad)
    factors = tmp_path / "abc.csv"
    factors.write_text("19980102,0.65,1,1\n19980101,0.66,1,2\n")
    with pytest.raises(DataError, match=r"abc\.csv line 2: date 1998-01-01 is not after"):
        read_factor_file(factors)


# --- every stored dataset replays through the actors ------------------------------------


def _replay_config(tmp: Path, store: TickStore, kind: str, ids: list[str], currency: str) -> Path:
    instruments = "".join(
        f'[[instruments]]\nid = "{i}"\nasset_class = "other"\nquote_currency = "{currency}"\n'
        "price_increment = 0.00001\nsize_increment = 0.00001\n\n"
        for i in ids
    )
    text = f"""mode = "backtest"
[account]
currency = "{currency}"
starting_balance = 100000.0

{instruments}
[replay]
store = "{store.root}"
kinds = ["{kind}"]

[actors.feed]
kind = "replay_feed"
[actors.validator]
kind = "validator"
[actors.exchange]
kind = "sim_exchange"
[actors.portfolio]
kind = "portfolio"

[[edges]]
from = "feed.ticks"
to = "validator"
[[edges]]
from = "validator.ticks"
to = "exchange"
[[edges]]
from = "validator.ticks"
to = "portfolio"
"""
    path = tmp / f"replay-{kind}-{currency}.toml"
    path.write_text(text)
    return path


def test_every_stored_dataset_replays_through_the_actors(
    imported: tuple[TickStore, list[ImportResult]], tmp_path: Path
) -> None:
    store, _ = imported
    groups: dict[tuple[str, str], list[str]] = {}
    for kind in store.kinds():
        for inst in store.instruments(kind):
            currency = "USDT" if inst.endswith(".BINANCE") else "USD"
            groups.setdefault((kind, currency), []).append(inst)
    assert {k for k, _ in groups} >= {"quotes", "trades", "bars.1d"}
    for (kind, currency), ids in sorted(groups.items()):
        code, out, err = cli(
            "backtest",
            "--config",
            str(_replay_config(tmp_path, store, kind, ids, currency)),
            "--json",
        )
        assert code == 0, (kind, err)
        summary = orjson.loads(out)
        stored = sum(rows_of(store, kind, i) for i in ids)
        # the store holds what passed validation on import: all of it replays
        assert summary["ticks"] == stored, (kind, ids)
        assert summary["ticks_rejected"] == 0, (kind, summary["validation"])
