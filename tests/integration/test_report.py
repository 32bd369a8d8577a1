"""Results of ``tradingd backtest`` as a user reads them, on the bundled sample
(``config/backtest.toml``, 73,174 Binance BTCUSDT quotes over 10.8 minutes): the metrics in
``--json``, the metric rows of the summary, the equity curve (identical batched and one
tick at a time), the HTML report of ``--report`` (parsed: its charts carry the run's
samples, its tables the JSON's figures, and it references nothing outside itself), and
the progress hook of the replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import empyrical
import numpy as np
import orjson
import pytest

from adapters.report import ProgressBar
from engine.backtest import load_backtest, run_backtest

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TICKS = 73_174
SAMPLE_QUOTES = REPO_ROOT / "data" / "sample" / "binance-btcusdt" / "quotes.npy"
BACKTEST = [sys.executable, "-m", "adapters.cli", "backtest", "--config", "config/backtest.toml"]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report") / "sample report.html"


@pytest.fixture(scope="module")
def cli(report_path: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """The command lines of this module, run side by side (each is a separate process)."""
    commands = {
        "json": [*BACKTEST, "--json", "--full", "--report", str(report_path)],
        "per tick": [*BACKTEST, "--json", "--full", "--per-tick"],
        "text": BACKTEST,
    }
    procs = {
        name: subprocess.Popen(
            args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, args in commands.items()
    }
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{err}"
    return done


def result(cli: dict[str, subprocess.CompletedProcess[str]], name: str) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(cli[name].stdout)
    return out


# --- the figures -------------------------------------------------------------------------------


def test_json_has_the_metrics_and_they_agree_with_the_run(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    r = result(cli, "json")
    m, curve, trades = r["metrics"], r["equity_curve"], r["trades"]
    assert m["start"] == "2024-08-08T23:54:14Z" and m["end"] == "2024-08-09T00:05:04Z"
    assert m["periodicity"] == "intraday" and m["sample_interval_s"] == 60.0
    assert m["returns"] == 12  # start, 11 whole minutes, end
    assert m["samples"] == len(curve["ts"]) == len(curve["equity"])
    assert m["fill_samples"] == r["fills"] == curve["kind"].count("fill")
    assert curve["kind"][0] == "start" and curve["kind"][-1] == "end"
    assert curve["equity"][0] == r["starting_balance"] and curve["equity"][-1] == r["final_equity"]
    assert m["total_return"] == pytest.approx(r["final_equity"] / r["starting_balance"] - 1.0)
    # the EMA cross buys and sells 0.1 BTC in turn: one round trip per pair of orders
    assert m["round_trips"] == len(trades) == r["orders"] // 2
    assert m["open_trips"] == 0 and r["positions"] == {"BTCUSDT.BINANCE": 0.0}
    net = sum(t["net_pnl"] for t in trades)
    assert net == pytest.approx(r["final_equity"] - r["starting_balance"], abs=1e-6)
    wins = [t["net_pnl"] for t in trades if t["net_pnl"] > 0]
    assert m["hit_rate"] == pytest.approx(len(wins) / len(trades))
    assert m["costs"]["commission"] == pytest.approx(r["commissions"], abs=1e-6)
    assert m["costs_total"] == pytest.approx(sum(m["costs"].values()))
    assert m["traded_notional"] == pytest.approx(
        sum(t["quantity"] for t in trades) * 2 * 61_700, rel=0.01
    )
    assert 0.0 < m["time_in_market"] < 1.0
    assert m["exposure_by_asset_class"].keys() == {"crypto"}
    att = m["attribution"]
    assert att["strategy"]["ema"]["net_pnl"] == pytest.approx(net, abs=1e-6)
    assert att["instrument"]["BTCUSDT.BINANCE"] == att["asset_class"]["crypto"]
    assert "region" not in att  # the sample's instrument has none
    assert m["monthly_returns"] == {"2024-08": pytest.approx(m["total_return"])}


def test_sharpe_and_drawdown_match_empyrical_on_the_runs_own_returns(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    """The intraday series rebuilt from the JSON curve: the start, each minute, the end."""
    r = result(cli, "json")
    m, curve = r["metrics"], r["equity_curve"]
    grid = [
        (t, e)
        for t, k, e in zip(curve["ts"], curve["kind"], curve["equity"], strict=True)
        if k == "sample"
    ]
    minutes = [t // 60_000_000_000 for t, _ in grid]
    assert minutes == list(range(minutes[0], minutes[0] + len(minutes)))  # no gap in this data
    equity = np.array([curve["equity"][0], *(e for _, e in grid), curve["equity"][-1]])
    returns = equity[1:] / equity[:-1] - 1.0
    ann = m["periods_per_year"]
    assert ann == 365 * 24 * 60  # config/backtest.toml: crypto trades every day
    assert m["sharpe"] == pytest.approx(
        empyrical.sharpe_ratio(returns, annualization=ann), rel=1e-9
    )
    assert m["sortino"] == pytest.approx(
        empyrical.sortino_ratio(returns, annualization=ann), rel=1e-9
    )
    assert m["max_drawdown"] == pytest.approx(-empyrical.max_drawdown(returns), rel=1e-9)
    assert m["annual_volatility"] == pytest.approx(
        empyrical.annual_volatility(returns, annualization=ann), rel=1e-9
    )
    # sampled each minute, the drawdown can only be smaller than the tick-exact one
    assert 0.0 < m["max_drawdown"] <= r["max_drawdown_pct"] / 100.0 + 1e-12


def test_equity_curve_trades_and_metrics_are_identical_per_tick_and_batched(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    batched, per_tick = result(cli, "json"), result(cli, "per tick")
    assert per_tick["per_tick"] and per_tick["batches"] == SAMPLE_TICKS
    assert batched["batches"] < SAMPLE_TICKS
    assert per_tick["events_sha256"] == batched["events_sha256"]
    assert per_tick["equity_curve"] == batched["equity_curve"]  # every sample, to the bit
    assert per_tick["daily_equity"] == batched["daily_equity"]
    assert per_tick["trades"] == batched["trades"]
    assert per_tick["metrics"] == batched["metrics"]


def test_text_summary_shows_the_key_metrics(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    rows = {}
    for line in cli["text"].stdout.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    m = result(cli, "json")["metrics"]
    assert rows["total return"] == f"{100 * m['total_return']:.2f}%"
    assert rows["Sharpe"] == f"{m['sharpe']:,.2f}"
    assert rows["Sortino"] == f"{m['sortino']:,.2f}"
    assert rows["volatility"] == f"{100 * m['annual_volatility']:.2f}% a year"
    assert rows["round trips"].startswith(f"{m['round_trips']:,} closed; hit rate ")
    assert rows["metrics from"] == "12 intraday returns of 60 s, 525,600 a year"
    assert rows["costs"].startswith(f"commission {m['costs']['commission']:,.2f}")
    assert rows["open positions"] == "none"
    assert "\r" not in cli["text"].stderr  # no progress bar when stderr is not a terminal


def test_json_stays_lean_without_full() -> None:
    run = subprocess.run(
        [*BACKTEST, "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = orjson.loads(run.stdout)
    assert "metrics" in out
    assert not {"equity_curve", "daily_equity", "trades"} & out.keys()


# --- the HTML report ---------------------------------------------------------------------------


class Page(HTMLParser):
    """Every element's tag and attributes, and the text inside each id'd element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.data_json = ""
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        self._in_data = tag == "script" and a.get("id") == "tradingd-data"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data_json += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def with_class(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and cls in a.get("class", "").split()]


@pytest.fixture(scope="module")
def page(cli: dict[str, subprocess.CompletedProcess[str]], report_path: Path) -> Page:
    assert f"report written to {report_path}" in cli["json"].stderr
    p = Page()
    p.feed(report_path.read_text(encoding="utf-8"))
    return p


def points(d: str) -> np.ndarray:
    """The (x, y) vertices of an SVG path made of M/L commands."""
    pairs = re.findall(r"[ML]\s*(-?[\d.]+),(-?[\d.]+)", d)
    return np.array(pairs, dtype=np.float64)


def test_equity_chart_draws_every_sample_at_its_value(
    page: Page, cli: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    r = result(cli, "json")
    curve = r["equity_curve"]
    (svg,) = page.find("svg", id="equity-chart")
    (path,) = page.with_class("path", "equity")
    xy = points(path["d"])
    assert int(path["data-points"]) == int(path["data-samples"]) == len(curve["ts"]) == len(xy)
    assert float(path["data-first"]) == r["starting_balance"]
    assert float(path["data-last"]) == r["final_equity"]
    # the drawing maps back onto the values: pixels to equity with the chart's own scale
    left, top = float(svg["data-left"]), float(svg["data-top"])
    width, height = float(svg["data-width"]), float(svg["data-height"])
    y0, y1 = float(svg["data-y0"]), float(svg["data-y1"])
    drawn = y0 + (1.0 - (xy[:, 1] - top) / height) * (y1 - y0)
    pixel = (y1 - y0) / height
    assert np.max(np.abs(drawn - np.array(curve["equity"]))) <= 0.06 * pixel  # 0.1 px rounding
    t = np.array(curve["ts"], dtype=np.float64)
    x_expected = left + (t - t[0]) / (t[-1] - t[0]) * width
    assert np.max(np.abs(xy[:, 0] - x_expected)) <= 0.051
    (dd,) = page.with_class("path", "drawdown")
    assert float(dd["data-min"]) == pytest.approx(-100.0 * max(curve["drawdown"]))
    assert int(dd["data-samples"]) == len(curve["ts"])


def test_report_tables_and_charts_carry_the_json_figures(
    page: Page, cli: dict[str, subprocess.CompletedProcess[str]], report_path: Path
) -> None:
    r = result(cli, "json")
    m = r["metrics"]
    shown = {
        a["data-key"]: orjson.loads(a["data-value"]) for a in page.with_class("span", "metric")
    }
    assert {
        "total_return",
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "hit_rate",
    } <= shown.keys()
    for key, value in shown.items():
        assert value == m[key], key
    (cell,) = page.find("td", data_month="2024-08")
    assert float(cell["data-value"]) == m["monthly_returns"]["2024-08"]
    bars = {a["data-kind"]: float(a["data-value"]) for a in page.with_class("rect", "bar")}
    assert bars == m["costs"]  # one bar per kind of cost, commission first
    assert next(iter(bars)) == "commission"
    areas = page.with_class("path", "exposure")
    assert [a["data-asset-class"] for a in areas] == ["crypto"]
    table = re.search(
        r'<table id="trades".*?</table>', report_path.read_text(encoding="utf-8"), re.S
    )
    assert table is not None
    assert table.group(0).count("<tr>") - 1 == len(r["trades"]) == 35  # all 35, under the 200 cap
    embedded = orjson.loads(page.data_json)
    assert embedded["result"]["metrics"] == m
    assert embedded["result"]["events_sha256"] == r["events_sha256"]
    identity = embedded["identity"]
    assert identity["config_file"] == "config/backtest.toml"
    (data_file,) = identity["data_files"]
    assert data_file["rows"] == SAMPLE_TICKS
    assert data_file["sha256"] == hashlib.sha256(SAMPLE_QUOTES.read_bytes()).hexdigest()


def test_report_references_nothing_outside_itself(report_path: Path, page: Page) -> None:
    text = report_path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    for tag, attrs in page.elements:
        for name in ("src", "href", "xlink:href"):
            assert name not in attrs, f"<{tag} {name}=...>"
    scripts = [a for t, a in page.elements if t == "script"]
    assert scripts == [{"type": "application/json", "id": "tradingd-data"}]  # data, no code
    assert not page.find("link") and not page.find("iframe") and not page.find("img")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
def test_report_renders_headless(report_path: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1050,3000",
            f"--screenshot={shot}",
            report_path.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1050
    # a blank page of this size is about 15 KB; the charts and tables make it hundreds
    assert len(png) > 100_000


# --- progress ------------------------------------------------------------------------------------


def test_replay_reports_progress_in_ticks_released() -> None:
    seen: list[int] = []
    system, _ = load_backtest(REPO_ROOT / "config" / "backtest.toml")
    r = asyncio.run(run_backtest(system, on_progress=seen.append))
    assert seen[0] >= 1 and seen[-1] <= r.ticks == SAMPLE_TICKS
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert len(seen) >= SAMPLE_TICKS // 16_384  # about every 16,384 ticks


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    assert ProgressBar.for_stream(io.StringIO(), 100) is None
    now = [0.0]
    term = Terminal()
    bar = ProgressBar(term, 1_000, width=10, clock=lambda: now[0])
    now[0] = 5.0  # start-up (actors, kernels) does not count in the rate
    bar(100)
    assert term.getvalue() == "\r 10.0% [#.........] 100 / 1,000 ticks\x1b[K"
    now[0] = 5.01
    bar(200)  # within a tenth of a second: not redrawn
    assert bar.drawn == 1
    now[0] = 7.0
    bar(500)
    assert "\r 50.0% [#####.....] 500 / 1,000 ticks  200 ticks/s  2 s left" in term.getvalue()
    now[0] = 9.5
    bar(1_000)
    assert "100.0% [##########] 1,000 / 1,000 ticks  200 ticks/s  0 s left" in term.getvalue()
    bar.close()
    assert term.getvalue().endswith("\r\x1b[K")
    assert math.isclose(bar.interval, 0.1)
