"""A backtest replays from the tick store exactly as from the tick files it was made of."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from adapters.tickstore import TickStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "binance-btcusdt" / "quotes.npy"


def _backtest(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", "backtest", "--config", str(config), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _store_config(tmp_path: Path, extra: str = "") -> Path:
    text = (ROOT / "config" / "backtest.toml").read_text()
    files = (
        'quotes = [{ path = "../data/sample/binance-btcusdt/quotes.npy", '
        'instrument = "BTCUSDT.BINANCE" }]'
    )
    assert files in text
    path = tmp_path / "from-store.toml"
    path.write_text(text.replace(files, f'store = "store"{extra}'))
    return path


def test_the_same_run_from_the_store_as_from_the_files(tmp_path: Path) -> None:
    store = TickStore(tmp_path / "store")
    rows = np.load(SAMPLE)
    assert store.write("quotes", "BTCUSDT.BINANCE", rows, dataset="binance-sample") == len(rows)
    from_files = _backtest(ROOT / "config" / "backtest.toml")
    from_store = _backtest(_store_config(tmp_path))
    assert from_files.returncode == 0, from_files.stderr
    assert from_store.returncode == 0, from_store.stderr
    a, b = json.loads(from_files.stdout), json.loads(from_store.stdout)
    assert b["ticks"] == a["ticks"] == len(rows)
    assert b["events_sha256"] == a["events_sha256"]
    assert (b["orders"], b["fills"], b["final_equity"]) == (
        a["orders"],
        a["fills"],
        a["final_equity"],
    )


def test_a_bounded_replay_from_the_store_takes_only_the_window(tmp_path: Path) -> None:
    store = TickStore(tmp_path / "store")
    rows = np.load(SAMPLE)
    store.write("quotes", "BTCUSDT.BINANCE", rows, dataset="binance-sample")
    # the five minutes after midnight UTC of 2024-08-09 (the capture spans it)
    config = _store_config(
        tmp_path, '\nstart = "2024-08-09T00:00:00Z"\nend = "2024-08-09T00:05:00Z"'
    )
    proc = _backtest(config)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    start, end = 1_723_161_600_000_000_000, 1_723_161_900_000_000_000
    expected = int(np.count_nonzero((rows["ts_event"] >= start) & (rows["ts_event"] < end)))
    assert 0 < out["ticks"] == expected < len(rows)


def test_a_missing_store_or_instrument_is_a_config_error(tmp_path: Path) -> None:
    proc = _backtest(_store_config(tmp_path))  # no store written
    assert proc.returncode == 78
    assert "no tick store at" in proc.stderr
    assert "$.replay.store" in proc.stderr
    store = TickStore(tmp_path / "store")
    store.write("quotes", "ETHUSDT.BINANCE", np.load(SAMPLE)[:10], dataset="other")
    proc = _backtest(_store_config(tmp_path))
    assert proc.returncode == 78
    assert "has no quotes of BTCUSDT.BINANCE" in proc.stderr
