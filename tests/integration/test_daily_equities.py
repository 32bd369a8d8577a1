"""The multi-asset daily backtest on the Lean files (config/daily_equities.toml): bars and
corporate actions from the tick store, through every actor, into an HTML report that opens
offline; and splits that leave no jump in positions, equity or round trips."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.cli import main
from adapters.importers import corporate_actions
from adapters.lean import EQUITY_TIME_ZONE
from adapters.store_replay import replay_source
from adapters.tickstore import TickStore
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.corporate_actions import session_days
from tests.shared_data import shared_data_dir

pytestmark = pytest.mark.shared_data

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "daily_equities.toml"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("daily") / "store"
    usa = shared_data_dir() / "lean/Data/equity/usa"
    code = main(
        ["data", "import", "--store", str(root), "--format", "lean-daily", "--path", str(usa)]
    )
    assert code == 0
    return root


def _run(store: Path, **replay: Any) -> tuple[BacktestResult, Any]:
    overrides = {"replay.store": str(store), **{f"replay.{k}": v for k, v in replay.items()}}
    system, _ = load_backtest(CONFIG, overrides=overrides)
    result = asyncio.run(run_backtest(system, replay_source(system)))
    return result, system


@pytest.fixture(scope="module")
def run(store: Path) -> tuple[BacktestResult, Any]:
    return _run(store)


def _ns(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC).timestamp()) * 10**9


def test_the_daily_backtest_trades_every_instrument_on_bars(
    store: Path, run: tuple[BacktestResult, Any]
) -> None:
    r, system = run
    ids = [inst.id for inst in system.instruments]
    assert r.ticks == len(TickStore(store, create=False).read_all("bars.1d", ids))
    assert r.ticks_rejected == 0  # the bad prints never reached the store
    traded = {t["instrument_id"] for t in r.trades.to_builtins()} if r.trades else set()
    assert traded == {"AAPL.US", "IBM.US", "BAC.US", "GOOGL.US", "SPY.US", "IWM.US"}
    assert r.orders_filled > 100
    assert r.metrics["costs"]["slippage"] != 0  # fills at the next open, not the close seen


def test_batched_and_bar_by_bar_replays_are_identical(
    store: Path, run: tuple[BacktestResult, Any]
) -> None:
    batched, _ = run
    per_bar, _ = _run(store, per_tick=True)
    assert per_bar.events_sha256 == batched.events_sha256
    assert per_bar.final_equity == batched.final_equity


def test_a_split_multiplies_the_position_and_leaves_equity_without_a_jump(
    run: tuple[BacktestResult, Any],
) -> None:
    r, system = run
    portfolio = system.actors["portfolio"].portfolio
    history = system.actors["portfolio"].history
    aapl = system.instruments.index("AAPL.US")
    splits = [(ts, ratio) for ts, i, ratio in portfolio.splits if i == aapl]
    assert [round(1 / ratio, 6) for _, ratio in splits] == [2.0, 2.0, 7.0, 4.0]
    log = history.fill_log()
    mine = log["instrument"] == aapl
    ts, qty, pos = log["ts"][mine], log["qty"][mine], log["position"][mine]
    held = 0
    for split_ts, ratio in splits:
        before = np.flatnonzero(ts < split_ts)
        after = np.flatnonzero(ts > split_ts)
        if not len(before) or not len(after) or pos[before[-1]] == 0:
            continue
        held += 1
        # the position the first fill after the split started from is the old one / ratio
        assert pos[after[0]] - qty[after[0]] == pytest.approx(pos[before[-1]] / ratio)
    assert held >= 2  # the strategy held AAPL across at least two of its splits
    days = r.daily_equity.to_builtins() if r.daily_equity else {}
    equity = dict(zip(days["date"], days["equity"], strict=True))
    for day in ("2000-06-21", "2005-02-28", "2014-06-09", "2020-08-31"):
        prev = max(d for d in equity if d < day)
        assert abs(equity[day] / equity[prev] - 1) < 0.03, day
    # round trips across a split are on one basis: a 7-for-1 never shows as a 7x loss
    assert all(t["pnl"] > -0.5 * t["quantity"] * t["entry_price"] for t in r.trades.to_builtins())


def test_dividends_are_paid_on_their_ex_dates(run: tuple[BacktestResult, Any]) -> None:
    _, system = run
    portfolio = system.actors["portfolio"].portfolio
    assert portfolio.dividends > 1_000.0  # SPY, IBM, BAC and AAPL pay; the book is long


def test_the_html_report_names_its_data_and_opens_offline(store: Path, tmp_path: Path) -> None:
    report = tmp_path / "daily.html"
    args = ["backtest", "--config", str(CONFIG), "--store", str(store), "--report", str(report)]
    assert main([*args, "--json"]) == 0
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    for chart in ("series equity", "series drawdown", "series exposure"):
        assert f'class="{chart}"' in text, chart
    assert text.count('class="cell"') > 250  # the monthly returns heat map, 1998 to 2021
    assert re.findall(r'data-asset-class="([a-z]+)"', text) == ["equity", "etf"]
    assert set(re.findall(r'<rect[^>]*class="bar"[^>]*data-kind="([a-z]+)"', text)) == {
        "commission",
        "spread",
        "slippage",
        "impact",
    }
    content = TickStore(store, create=False).manifest("lean-equity-daily").content_sha256
    datasets = re.search(r'<table[^>]*id="datasets".*?</table>', text, re.S)
    assert datasets is not None and content in datasets.group(0)
    months = set(re.findall(r'data-month="(\d{4}-\d{2})"', text))
    assert "1998-01" in months and "2021-03" in months
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed: the report was not rendered")
    shot = tmp_path / "daily.png"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1050,2600",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 150_000  # charts, not a blank page


def test_a_strategy_sees_no_factor_before_its_date(store: Path) -> None:
    # stopped on the evening before AAPL's 7-for-1 split of 2014-06-09
    _, system = _run(store, end="2014-06-07T00:00:00Z")
    fast, slow = system.actors["trend"].averages("AAPL.US")
    st = TickStore(store, create=False)
    bars = st.read_all("bars.1d", ["AAPL.US"], end_ns=_ns(dt.date(2014, 6, 7)))
    days = session_days(bars["ts_event"], EQUITY_TIME_ZONE)
    table, _ = corporate_actions(st, "AAPL.US")
    as_of = table.adjust(bars, days, as_of=int(days[-1]))["close"]  # what was known then
    assert fast == pytest.approx(float(np.mean(as_of[-50:])), rel=1e-9)
    assert slow == pytest.approx(float(np.mean(as_of[-200:])), rel=1e-9)
    today = table.adjust(bars, days)["close"]  # with the factor file as written in 2021
    assert slow > 6 * float(np.mean(today[-200:]))  # the split, not known yet, is not in it
    assert 500 < fast < 700  # AAPL traded near 600 a share before the split
