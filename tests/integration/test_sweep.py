"""Sweeps and walk-forward on the bundled sample, run serially, on a local process pool and
on a real Dask ``LocalCluster`` (two worker processes, one thread each): the parallel runs
must return exactly the serial results, row for row and hash for hash.

The cluster and the serial reference runs are made once per module (a cluster costs a few
seconds to start).
"""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from distributed import LocalCluster

from adapters.cli import main
from adapters.cli_sweep import sweep_rows, walk_forward_rows
from adapters.sweep_runner import (
    DaskRunner,
    ProcessPoolRunner,
    SerialRunner,
    SweepReport,
    WalkForwardReport,
    run_sweep,
    run_walk_forward,
)
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.sweep import SweepSpec, load_sweep

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKTEST = REPO_ROOT / "config" / "backtest.toml"
QUOTES = REPO_ROOT / "data" / "sample" / "binance-btcusdt" / "quotes.npy"
MINUTE = 60_000_000_000

# six points; the two with fast >= slow are invalid and must come back as errors
GRID = f"""\
base = {str(BACKTEST)!r}
objective = "final_equity"
[parameters]
actors.ema.fast = [100, 200, 1000]
actors.ema.slow = [500, 1000]
"""
WALK = f"""\
base = {str(BACKTEST)!r}
objective = "realized_pnl"
[parameters]
actors.ema.fast = [50, 200]
actors.ema.slow = [500, 1000]
[walk_forward]
train = "2m"
test = "1m"
step = "2m"
"""


def write(tmp: Path, name: str, text: str) -> SweepSpec:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return load_sweep(path)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def grid(tmp: Path) -> SweepSpec:
    return write(tmp, "grid.toml", GRID)


@pytest.fixture(scope="module")
def walk(tmp: Path) -> SweepSpec:
    return write(tmp, "walk.toml", WALK)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A real Dask cluster on loopback: two worker processes, one thread each."""
    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def serial_grid(grid: SweepSpec) -> SweepReport:
    return run_sweep(grid, SerialRunner())


@pytest.fixture(scope="module")
def serial_walk(walk: SweepSpec) -> WalkForwardReport:
    return run_walk_forward(walk, SerialRunner())


def encoded(rows: list[dict[str, Any]]) -> bytes:
    """Rows compared exactly, NaN included (NaN != NaN, its encoding equals itself)."""
    return msgspec.json.encode(rows)


def backtest(overrides: dict[str, Any]) -> BacktestResult:
    system, _ = load_backtest(BACKTEST, overrides=overrides)
    return asyncio.run(run_backtest(system))


def sample_ticks(start: int, end: int) -> int:
    ts = np.load(QUOTES, mmap_mode="r")["ts_event"]
    return int(((ts >= start) & (ts < end)).sum())


# --- a grid ---------------------------------------------------------------------------------


def test_the_serial_sweep_ranks_every_valid_point_and_reports_the_invalid_ones(
    serial_grid: SweepReport,
) -> None:
    outcomes = serial_grid.outcomes
    assert len(outcomes) == 6
    ok = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    assert [(o.params["actors.ema.fast"], o.params["actors.ema.slow"]) for o in failed] == [
        (1000, 500),
        (1000, 1000),
    ]
    for o in failed:
        assert o.error is not None
        assert "need 0 < fast < slow" in o.error
        assert "$.actors.ema" in o.error
        assert o.error_code == "CONFIG"
    assert len(ok) == 4
    scores = [o.objective for o in ok if o.objective is not None]
    assert len(scores) == 4
    assert scores == sorted(scores, reverse=True)  # best first
    assert len({o.result["events_sha256"] for o in ok if o.result}) == 4  # four distinct runs
    for o in ok:
        assert o.result is not None
        assert o.result["ticks"] == 73_174
        assert o.result["orders"] > 0
        assert o.objective == o.result["final_equity"]
        assert "wall_time_s" not in o.result  # real time differs run to run: not in a row


def test_a_point_of_the_sweep_is_the_backtest_of_its_parameters(serial_grid: SweepReport) -> None:
    best = serial_grid.outcomes[0]
    assert best.result is not None
    alone = backtest(best.params)
    assert alone.final_equity == best.objective
    assert alone.events_sha256 == best.result["events_sha256"]
    assert alone.fills == best.result["fills"]


def test_a_process_pool_returns_exactly_the_serial_results(
    grid: SweepSpec, serial_grid: SweepReport
) -> None:
    runner = ProcessPoolRunner(2)
    try:
        pooled = run_sweep(grid, runner)
    finally:
        runner.close()
    assert pooled.workers == 2
    assert encoded(sweep_rows(pooled)) == encoded(sweep_rows(serial_grid))


def test_a_dask_cluster_returns_exactly_the_serial_results(
    grid: SweepSpec, serial_grid: SweepReport, cluster: str
) -> None:
    runner = DaskRunner(cluster)
    try:
        distributed = run_sweep(grid, runner)
    finally:
        runner.close()
    assert distributed.workers == 2
    rows, expected = sweep_rows(distributed), sweep_rows(serial_grid)
    assert [r["events_sha256"] for r in rows] == [r["events_sha256"] for r in expected]
    assert encoded(rows) == encoded(expected)


# --- walk-forward ---------------------------------------------------------------------------


def test_walk_forward_on_the_sample(serial_walk: WalkForwardReport) -> None:
    report = serial_walk
    first = report.first_ns
    assert first == int(np.load(QUOTES, mmap_mode="r")["ts_event"][0])
    # 650 s of data; train 2 min, test 1 min, step 2 min: tests at 2-3, 4-5, 6-7, 8-9 min
    assert [(w.window.test_start - first) // MINUTE for w in report.windows] == [2, 4, 6, 8]
    pnl = 0.0
    for w in report.windows:
        assert w.error is None
        assert len(w.train) == 4
        # the point chosen is the best on its train window
        assert w.chosen is not None and w.test is not None
        assert w.chosen is w.train[0]
        assert w.chosen.objective == max(o.objective or -np.inf for o in w.train)
        assert w.test.params == w.chosen.params
        # each backtest saw exactly the sample's ticks inside its window
        win = w.window
        assert w.chosen.result is not None and w.test.result is not None
        assert w.chosen.result["ticks"] == sample_ticks(win.train_start, win.train_end)
        assert w.test.result["ticks"] == sample_ticks(win.test_start, win.test_end)
        # the test score is the chosen parameters' backtest over the test window alone
        alone = backtest(
            {**w.chosen.params, "replay.start": win.test_start, "replay.end": win.test_end}
        )
        assert alone.realized_pnl == w.test.objective
        assert alone.events_sha256 == w.test.result["events_sha256"]
        pnl += alone.final_equity - alone.starting_balance
    s = report.stitched
    assert (s.windows, s.windows_scored) == (4, 4)
    assert s.pnl == pytest.approx(pnl, abs=1e-9)
    assert s.final_equity == pytest.approx(100_000.0 + pnl, abs=1e-9)


def test_walk_forward_on_dask_is_the_serial_walk_forward(
    walk: SweepSpec, serial_walk: WalkForwardReport, cluster: str
) -> None:
    runner = DaskRunner(cluster)
    try:
        distributed = run_walk_forward(walk, runner)
    finally:
        runner.close()
    assert encoded(walk_forward_rows(distributed)) == encoded(walk_forward_rows(serial_walk))
    assert distributed.stitched == serial_walk.stitched


# --- replay bounds --------------------------------------------------------------------------


def test_replay_bounds_replay_only_the_ticks_inside() -> None:
    ts = np.load(QUOTES, mmap_mode="r")["ts_event"]
    start, end = int(ts[1000]), int(ts[20_000])
    by_ns = backtest({"replay.start": start, "replay.end": end})
    assert by_ns.ticks == 19_000  # [start, end): the tick at `end` is not replayed
    assert by_ns.ticks == sample_ticks(start, end)
    whole_minute = backtest(
        {"replay.start": "2024-08-09T00:00:00Z", "replay.end": "2024-08-09T00:01:00.000Z"}
    )
    assert whole_minute.ticks == sample_ticks(1_723_161_600 * 10**9, 1_723_161_660 * 10**9) > 0


# --- the command ----------------------------------------------------------------------------


def _column_type(values: list[Any]) -> type:
    """What a reader infers for a column: text if any cell is, else float if any, ..."""
    kinds = {type(v) for v in values if v is not None}
    for kind in (str, float, int, bool):
        if kind in kinds:
            return kind
    return str


def _typed(text: str, kind: type) -> Any:
    if text == "":
        return None
    if kind is bool:
        return text == "true"
    return kind(text)


def test_the_cli_writes_csv_and_parquet_that_read_back_equal(tmp: Path) -> None:
    out, parquet = tmp / "rows.csv", tmp / "rows.parquet"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapters.cli",
            "sweep",
            "--config",
            str(tmp / "grid.toml"),
            "--workers",
            "2",
            "--out",
            str(out),
            "--parquet",
            str(parquet),
            "--json",
        ],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert (doc["points"], doc["failed"], doc["workers"]) == (6, 2, 2)
    rows: list[dict[str, Any]] = doc["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["objective"] == max(r["objective"] for r in rows if r["error"] is None)
    with open(out, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == list(rows[0])
    kinds = {k: _column_type([r[k] for r in rows]) for k in rows[0]}
    from_csv = [{k: _typed(v, kinds[k]) for k, v in line.items()} for line in read]
    assert from_csv == rows
    table = pq.read_table(parquet)
    assert table.column_names == list(rows[0])
    assert table.to_pylist() == rows
    assert table.schema.metadata[b"tradingd.objective"] == b"final_equity"


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the command in the test's process without configuring logging for the whole
    process: the loggers would keep writing to this test's captured stderr after it closes."""
    monkeypatch.setattr("adapters.cli_sweep.configure_logging", lambda *a, **k: None)
    monkeypatch.setattr("adapters.sweep_runner.configure_logging", lambda *a, **k: None)


@pytest.mark.usefixtures("in_process")
def test_the_cli_prints_the_table_best_first_and_the_failures(
    tmp: Path, serial_grid: SweepReport, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "--config", str(tmp / "grid.toml"), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["rank", "point", "ema.fast", "ema.slow", "final_equity"]
    best = serial_grid.outcomes[0]
    assert lines[2].split()[:4] == [
        "1",
        str(best.index),
        str(best.params["actors.ema.fast"]),
        f"{best.params['actors.ema.slow']:,}",
    ]
    assert "2 point(s) failed:" in text
    assert "point 4 (ema.fast=1,000, ema.slow=500): need 0 < fast < slow" in text


@pytest.mark.usefixtures("in_process")
def test_the_cli_fails_when_no_point_can_run(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp / "invalid.toml"
    bad.write_text(GRID.replace("[100, 200, 1000]", "[1000, 2000]"), encoding="utf-8")
    assert main(["sweep", "--config", str(bad), "--workers", "1"]) == 78
    assert "4 point(s) failed" in capsys.readouterr().out
    typo = tmp / "typo.toml"
    typo.write_text(GRID.replace('"final_equity"', '"sharp"'), encoding="utf-8")
    assert main(["sweep", "--config", str(typo), "--workers", "1"]) == 78
    assert "objective 'sharp' is not a numeric field" in capsys.readouterr().out


def test_a_sweep_can_rank_by_a_performance_metric(tmp: Path) -> None:
    spec = write(tmp, "sharpe.toml", GRID.replace('"final_equity"', '"sharpe"'))
    report = run_sweep(spec, SerialRunner())
    ok = [o for o in report.outcomes if o.ok]
    assert len(ok) == 4
    for o in ok:
        assert o.result is not None
        assert o.objective == o.result["metrics.sharpe"]
    scores = [o.objective for o in ok if o.objective is not None]
    assert scores == sorted(scores, reverse=True)
