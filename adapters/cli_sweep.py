"""``tradingd sweep``: a parameter sweep or a walk-forward run from a sweep file.

    tradingd sweep --config config/sweep.toml                       # local process pool
    tradingd sweep --config config/sweep.toml --workers 1           # serial, in this process
    tradingd sweep --config config/sweep.toml --scheduler tcp://10.0.0.5:8786   # Dask
    tradingd sweep --config config/sweep.toml --train 2m --test 1m  # walk-forward
    tradingd sweep ... --out results.csv --parquet results.parquet --json

The table is printed best first; the CSV and Parquet files hold the same rows (one per
point, or one per walk-forward window), with every reproducible field of each backtest.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from adapters.sweep_runner import (
    Progress,
    SweepReport,
    WalkForwardReport,
    open_runner,
    run_sweep,
    run_walk_forward,
)
from engine.errors import ConfigError
from engine.logs import configure_logging
from engine.sweep import (
    PointOutcome,
    SweepSpec,
    WalkForward,
    format_duration,
    iso_utc,
    load_sweep,
    parse_duration,
)

__all__ = ["register", "sweep_rows", "walk_forward_rows", "write_csv", "write_parquet"]

EXIT_SOFTWARE = 70
EXIT_CONFIG = 78
_REPO_ROOT = Path(__file__).resolve().parents[1]

Row = dict[str, Any]


# --- rows -----------------------------------------------------------------------------------


def _result_columns(outcomes: Sequence[PointOutcome | None]) -> list[str]:
    columns: dict[str, None] = {}
    for o in outcomes:
        if o is not None and o.result is not None:
            columns.update(dict.fromkeys(o.result))
    return list(columns)


def sweep_rows(report: SweepReport) -> list[Row]:
    """One row per point, best first: rank, point, the parameters, the objective, every
    reproducible field of the backtest result, and the error of a failed point."""
    keys = report.spec.keys
    fields = _result_columns(report.outcomes)
    rows = []
    for rank, o in enumerate(report.outcomes, 1):
        row: Row = {"rank": rank, "point": o.index}
        row.update({k: o.params.get(k) for k in keys})
        row["objective"] = o.objective
        result = o.result or {}
        row.update({f: result.get(f) for f in fields})
        row["error"] = o.error
        rows.append(row)
    return rows


def walk_forward_rows(report: WalkForwardReport) -> list[Row]:
    """One row per window, in time order: the windows, the parameters chosen on train,
    the train and test scores, and the test backtest's result fields (``test.``)."""
    keys = report.spec.keys
    fields = _result_columns([w.test for w in report.windows])
    rows = []
    for w in report.windows:
        win = w.window
        row: Row = {
            "window": win.index,
            "train_start": iso_utc(win.train_start),
            "train_end": iso_utc(win.train_end),
            "test_start": iso_utc(win.test_start),
            "test_end": iso_utc(win.test_end),
            "point": w.chosen.index if w.chosen else None,
        }
        row.update({k: w.chosen.params.get(k) if w.chosen else None for k in keys})
        row["train_score"] = w.chosen.objective if w.chosen else None
        row["test_score"] = w.test.objective if w.test else None
        result = (w.test.result if w.test else None) or {}
        row["test_pnl"] = (
            result["final_equity"] - result["starting_balance"]
            if "final_equity" in result and "starting_balance" in result
            else None
        )
        row.update({f"test.{f}": result.get(f) for f in fields})
        row["error"] = w.error
        rows.append(row)
    return rows


# --- files ----------------------------------------------------------------------------------


def write_csv(path: str | Path, rows: Sequence[Row]) -> None:
    """Rows as CSV: a header, then one line per row; an empty cell is a missing value.
    Floats are written exactly (shortest round-trip form)."""
    columns = list(rows[0]) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else _cell(row[c]) for c in columns])


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value) if not isinstance(value, float) else repr(value)
    return msgspec.json.encode(value).decode()


def write_parquet(path: str | Path, rows: Sequence[Row], metadata: dict[str, str]) -> None:
    """Rows as a Parquet table (pyarrow), with ``metadata`` (the sweep's settings) in
    the file's key-value metadata."""
    # imported on use, untyped: pyarrow ships no type information
    pa: Any = importlib.import_module("pyarrow")
    pq: Any = importlib.import_module("pyarrow.parquet")

    columns = list(rows[0]) if rows else []
    data = {
        c: pa.array([_plain(row[c]) for row in rows], type=pa.string() if c == "error" else None)
        for c in columns
    }
    table = pa.table(data).replace_schema_metadata(metadata)
    pq.write_table(table, path)


def _plain(value: Any) -> Any:
    """A value pyarrow stores as-is (a table-valued parameter becomes its JSON text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return msgspec.json.encode(value).decode()


def _metadata(spec: SweepSpec, kind: str) -> dict[str, str]:
    meta = {
        "tradingd.kind": kind,
        "tradingd.base": Path(spec.base).name,
        "tradingd.mode": spec.mode,
        "tradingd.objective": spec.objective,
        "tradingd.direction": spec.direction,
        "tradingd.parameters": ",".join(spec.keys),
    }
    if spec.source:
        meta["tradingd.source"] = spec.source
    if spec.seed is not None:
        meta["tradingd.seed"] = str(spec.seed)
    if spec.walk_forward is not None:
        wf = spec.walk_forward
        meta["tradingd.walk_forward"] = (
            f"train={format_duration(wf.train_ns)} test={format_duration(wf.test_ns)}"
            f" step={format_duration(wf.step_ns)} anchored={str(wf.anchored).lower()}"
        )
    return meta


# --- the terminal ---------------------------------------------------------------------------


def _short(key: str) -> str:
    return key.removeprefix("actors.")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(out)


_SUMMARY = ("final_equity", "realized_pnl", "commissions", "max_drawdown", "orders", "fills")


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{_short(k)}={_fmt(v)}" for k, v in params.items())


def sweep_table(report: SweepReport, top: int | None) -> str:
    spec = report.spec
    summary = [f for f in _SUMMARY if f != spec.objective]
    header = ["rank", "point", *(_short(k) for k in spec.keys), spec.objective, *summary]
    ok = [o for o in report.outcomes if o.ok]
    shown = ok if top is None else ok[:top]
    lines = []
    for rank, o in enumerate(shown, 1):
        result = o.result or {}
        lines.append(
            [
                str(rank),
                str(o.index),
                *(_fmt(o.params.get(k)) for k in spec.keys),
                _fmt(o.objective),
                *(_fmt(result.get(f)) for f in summary),
            ]
        )
    parts = [_table(header, lines)] if ok else ["no point ran to the end"]
    if len(shown) < len(ok):
        parts.append(f"... {len(ok) - len(shown)} more (--top to show them, --out for all)")
    failed = [o for o in report.outcomes if not o.ok]
    if failed:
        parts.append(f"\n{len(failed)} point(s) failed:")
        parts.extend(f"  point {o.index} ({_params_text(o.params)}): {o.error}" for o in failed)
    best = ok[0] if ok else None
    parts.append(
        f"\n{len(report.outcomes)} backtests in {report.wall_time_s:.2f} s on {report.executor}"
        + (
            f"; best: point {best.index} with {spec.objective} {_fmt(best.objective)}"
            f" ({spec.direction}imised)"
            if best
            else ""
        )
    )
    return "\n".join(parts)


def _when(ns: int) -> str:
    return iso_utc(ns)[:19].replace("T", " ")


def walk_forward_table(report: WalkForwardReport) -> str:
    spec = report.spec
    wf = spec.walk_forward
    assert wf is not None
    header = [
        "window",
        "train from",
        "test from",
        "test to",
        *(_short(k) for k in spec.keys),
        "train score",
        "test score",
        "test P&L",
        "fills",
    ]
    lines = []
    for w in report.windows:
        win = w.window
        test = w.test.result if w.test and w.test.result else {}
        pnl = test["final_equity"] - test["starting_balance"] if test else None
        lines.append(
            [
                str(win.index),
                _when(win.train_start),
                _when(win.test_start),
                _when(win.test_end),
                *(_fmt(w.chosen.params.get(k) if w.chosen else None) for k in spec.keys),
                _fmt(w.chosen.objective if w.chosen else None),
                _fmt(w.test.objective if w.test else None),
                _fmt(pnl),
                _fmt(test.get("fills")),
            ]
        )
    s = report.stitched
    parts = [
        f"walk-forward over {_when(report.first_ns)} to {_when(report.last_ns)}: train"
        f" {format_duration(wf.train_ns)}{' anchored' if wf.anchored else ''}, test"
        f" {format_duration(wf.test_ns)}, step {format_duration(wf.step_ns)};"
        f" objective {spec.objective} ({spec.direction}imised)",
        _table(header, lines),
    ]
    parts.extend(f"window {w.window.index}: {w.error}" for w in report.windows if w.error)
    mean = _fmt(s.mean_test_score)
    parts.append(
        f"\nout of sample ({s.windows_scored} of {s.windows} test windows):"
        f" P&L {s.pnl:,.2f} ({s.return_pct:.3f}%), final equity {s.final_equity:,.2f},"
        f" commissions {s.commissions:,.2f}, {s.orders:,} orders, {s.fills:,} fills,"
        f" mean test {spec.objective} {mean}"
    )
    parts.append(f"events sha256 {s.events_sha256}")
    runs = sum(len(w.train) for w in report.windows) + sum(1 for w in report.windows if w.test)
    parts.append(f"{runs} backtests in {report.wall_time_s:.2f} s on {report.executor}")
    return "\n".join(parts)


# --- the command ----------------------------------------------------------------------------


def _default_sweep() -> str:
    here = Path("config") / "sweep.toml"
    return str(here if here.exists() else _REPO_ROOT / "config" / "sweep.toml")


def _progress(label: str) -> Progress | None:
    """A one-line count on a terminal's stderr; nothing when stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\r{label}: {done}/{total} backtests" + ("\n" if done == total else ""))
        sys.stderr.flush()

    return show


def _with_walk_forward(spec: SweepSpec, args: argparse.Namespace) -> SweepSpec:
    if args.train is None and args.test is None and args.step is None:
        return spec
    current = spec.walk_forward
    given: dict[str, int] = {}
    for name in ("train", "test", "step"):
        text = getattr(args, name)
        if text is not None:
            try:
                given[name] = parse_duration(text)
            except ValueError as exc:
                raise ConfigError(str(exc), path=f"--{name}") from None
    train = given.get("train", current.train_ns if current else None)
    test = given.get("test", current.test_ns if current else None)
    if train is None or test is None:
        raise ConfigError("walk-forward needs both --train and --test", path="--train")
    step = given.get("step", current.step_ns if current and "test" not in given else test)
    anchored = current.anchored if current else False
    walk = WalkForward(train_ns=train, test_ns=test, step_ns=step, anchored=anchored)
    return msgspec.structs.replace(spec, walk_forward=walk)


def _cmd_sweep(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "json")
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be 1 or more", path="--workers")
    spec = _with_walk_forward(load_sweep(args.config), args)
    report: SweepReport | WalkForwardReport
    with open_runner(scheduler=args.scheduler, workers=args.workers) as runner:
        if spec.walk_forward is not None:
            report = run_walk_forward(
                spec, runner, log_level=args.log_level, progress=_progress("walk-forward")
            )
            rows = walk_forward_rows(report)
            kind = "walk_forward"
        else:
            report = run_sweep(spec, runner, log_level=args.log_level, progress=_progress("sweep"))
            rows = sweep_rows(report)
            kind = "sweep"
    if args.out:
        write_csv(args.out, rows)
    if args.parquet:
        write_parquet(args.parquet, rows, _metadata(spec, kind))
    if args.json:
        doc: dict[str, Any] = {
            "kind": kind,
            "base": Path(spec.base).name,
            "mode": spec.mode,
            "objective": spec.objective,
            "direction": spec.direction,
            "source": spec.source,
            "executor": report.executor,
            "workers": report.workers,
            "wall_time_s": report.wall_time_s,
            "rows": rows,
        }
        if isinstance(report, WalkForwardReport):
            doc["stitched"] = msgspec.to_builtins(report.stitched)
            doc["train"] = [
                {"window": w.window.index, "ranking": msgspec.to_builtins(w.train)}
                for w in report.windows
            ]
        else:
            doc["points"] = len(report.outcomes)
            doc["failed"] = report.failed
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif isinstance(report, WalkForwardReport):
        print(walk_forward_table(report))
    else:
        print(sweep_table(report, args.top))
    outcomes = (
        report.outcomes
        if isinstance(report, SweepReport)
        else [o for w in report.windows for o in w.train]
    )
    if outcomes and not any(o.ok for o in outcomes):
        config_only = all(o.error_code in ("CONFIG", "WIRING") for o in outcomes)
        return EXIT_CONFIG if config_only else EXIT_SOFTWARE
    return 0


def register(subparsers: Any) -> None:
    """Add the ``sweep`` command to the ``tradingd`` parser's subcommands."""
    sw = subparsers.add_parser(
        "sweep",
        help="run a grid or random search (or walk-forward) of backtests in parallel",
        description=(
            "Run one backtest per parameter point of a sweep file, in parallel, and rank"
            " them best first. With a [walk_forward] section (or --train/--test) the"
            " parameters are chosen on rolling train windows and scored on the test windows."
        ),
    )
    sw.add_argument(
        "--config",
        default=_default_sweep(),
        help="sweep file (default: config/sweep.toml)",
    )
    sw.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="run on this Dask distributed cluster instead of a local process pool",
    )
    sw.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: one per CPU; 1 runs serially in this process;"
        " not used with --scheduler)",
    )
    sw.add_argument("--out", default=None, metavar="FILE.csv", help="write every row as CSV")
    sw.add_argument(
        "--parquet", default=None, metavar="FILE.parquet", help="write every row as Parquet"
    )
    sw.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    sw.add_argument("--top", type=int, default=20, help="rows of the table to print (default: 20)")
    sw.add_argument("--train", default=None, help='walk-forward train window, e.g. "2m", "250d"')
    sw.add_argument("--test", default=None, help='walk-forward test window, e.g. "1m", "60d"')
    sw.add_argument("--step", default=None, help="walk-forward step (default: the test window)")
    sw.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sw.set_defaults(func=_cmd_sweep)
