"""``tradingd backtest`` as a user runs it: ``python -m adapters.cli backtest`` on the bundled
sample (``config/backtest.toml``, 73,174 Binance BTCUSDT quotes), as a separate process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_TICKS = 73_174  # rows of data/sample/binance-btcusdt/quotes.npy
SHA256 = re.compile(r"[0-9a-f]{64}")

BACKTEST = [sys.executable, "-m", "adapters.cli", "backtest", "--config", "config/backtest.toml"]
COMMANDS = {
    "json": ["--json"],
    "json again": ["--json"],
    "json per tick": ["--json", "--per-tick"],
    "text": [],
}


@pytest.fixture(scope="module")
def cli() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command line of the module, run side by side (each is a separate process)."""
    procs = {
        name: subprocess.Popen(
            [*BACKTEST, *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in COMMANDS.items()
    }
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def summary(cli: dict[str, subprocess.CompletedProcess[str]], name: str) -> dict[str, Any]:
    run = cli[name]
    assert run.returncode == 0, f"{name}: exit {run.returncode}\n{run.stderr}"
    out: dict[str, Any] = orjson.loads(run.stdout)
    return out


def test_json_summary_has_the_figures_a_user_reads(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    s = summary(cli, "json")
    assert s["ticks"] == SAMPLE_TICKS
    assert s["ticks_rejected"] == 0
    assert s["orders"] > 0  # the EMA cross does trade on the sample
    # every order ends somewhere: filled in full, denied, rejected, expired, or still working
    assert s["orders"] == (
        s["orders_filled"]
        + s["denied"]
        + s["rejected"]
        + s["expired"]
        + s["cancelled"]
        + s["orders_open"]
    )
    # the sample's 0.1 BTC orders often exceed the displayed size: partial fills
    assert s["fills"] > s["orders_filled"] > 0
    for key in (
        "final_equity",
        "realized_pnl",
        "commissions",
        "max_drawdown",
        "wall_time_s",
        "ticks_per_s",
    ):
        assert isinstance(s[key], float), key
    assert s["commissions"] > 0.0
    assert s["max_drawdown"] >= 0.0
    assert s["wall_time_s"] > 0.0
    assert s["ticks_per_s"] == pytest.approx(s["ticks"] / s["wall_time_s"])
    assert SHA256.fullmatch(s["events_sha256"])
    assert s["per_tick"] is False
    assert s["currency"] == "USDT"
    assert "actors" not in s  # only with --actors


def test_accounting_identities_hold(cli: dict[str, subprocess.CompletedProcess[str]]) -> None:
    s = summary(cli, "json")
    assert s["final_balance"] == pytest.approx(
        s["starting_balance"] + s["realized_pnl"] - s["commissions"], abs=1e-6
    )
    assert s["final_equity"] == pytest.approx(s["final_balance"] + s["unrealized_pnl"], abs=1e-9)
    # the peak is at least the starting balance, and the drop from it at the end is a drawdown
    assert s["final_equity"] >= s["starting_balance"] - s["max_drawdown"] - 1e-9
    assert (s["max_drawdown"] > 0.0) == (s["max_drawdown_pct"] > 0.0)


def test_two_runs_give_the_same_events_digest(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    first, second = summary(cli, "json"), summary(cli, "json again")
    assert second["events_sha256"] == first["events_sha256"]
    assert second["final_balance"] == first["final_balance"]


def test_per_tick_replay_gives_the_same_digest_as_batched(
    cli: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    batched, per_tick = summary(cli, "json"), summary(cli, "json per tick")
    assert per_tick["per_tick"] is True
    assert per_tick["batches"] == SAMPLE_TICKS
    assert batched["batches"] < SAMPLE_TICKS
    assert per_tick["events_sha256"] == batched["events_sha256"]
    for key in ("orders", "fills", "final_balance", "final_equity", "realized_pnl"):
        assert per_tick[key] == batched[key], key


def test_text_summary_shows_the_table(cli: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = cli["text"]
    assert run.returncode == 0, run.stderr
    rows = {}
    for line in run.stdout.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)  # label, two spaces or more, value
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    s = summary(cli, "json")  # the same run, so the same figures
    money = "{:,.2f} USDT".format
    assert rows["ticks"] == f"{SAMPLE_TICKS:,}"
    assert rows["orders"] == f"{s['orders']:,}"
    assert rows["fills"].startswith(f"{s['fills']:,} ({s['orders_filled']:,} orders filled in full")
    assert rows["final equity"] == money(s["final_equity"])
    assert rows["realized P&L"] == money(s["realized_pnl"])
    assert rows["commissions"] == money(s["commissions"])
    assert rows["max drawdown"] == f"{money(s['max_drawdown'])} ({s['max_drawdown_pct']:.2f}%)"
    assert re.fullmatch(r"\d+\.\d{3} s", rows["wall time"])
    assert re.fullmatch(r"[\d,]+", rows["ticks per second"])
    assert rows["events sha256"] == s["events_sha256"]
