"""The ``tradingd`` command.

Exit codes: 0 done; 2 bad command line; 65 bad data (or a journal that cannot be opened or
written); 70 a critical actor failed past its restart budget; 78 bad configuration.
``tradingd ctl`` and ``tradingd journal`` have their own (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from adapters import cli_data, cli_journal, cli_risk, cli_run, cli_sweep
from adapters import ctl as cli_ctl
from adapters.report import metric_rows, progress_for, write_report
from adapters.store_replay import replay_source
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.errors import ConfigError, CriticalActorFailed, DataError
from engine.journal import JournalError
from engine.logs import configure_logging
from engine.validation import FLAGS

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_DATA = 65
EXIT_SOFTWARE = 70
EXIT_CONFIG = 78

_REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_config(name: str) -> str:
    here = Path("config") / name
    return str(here if here.exists() else _REPO_ROOT / "config" / name)


def _install_event_loop() -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _fmt_money(x: float, currency: str) -> str:
    return f"{x:,.2f} {currency}"


def _write_stdout(text: str) -> None:
    """Write all of ``text``: an event loop (uvloop) may leave stdout non-blocking, where a
    large write to a slow pipe would be cut short without an error."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # not a file: captured
        os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.write(text)
    sys.stdout.flush()


def summary_table(r: BacktestResult) -> str:
    c = r.currency
    rows: list[tuple[str, str]] = [
        (
            "ticks",
            f"{r.ticks:,}" + (f" ({r.ticks_rejected:,} rejected)" if r.ticks_rejected else ""),
        ),
        ("delivery", "one tick at a time" if r.per_tick else f"batched ({r.batches:,} batches)"),
        (
            "orders",
            f"{r.orders:,}"
            + (f" ({r.denied:,} denied by risk)" if r.denied else "")
            + (f" ({r.rejected:,} rejected by venue)" if r.rejected else ""),
        ),
        (
            "fills",
            f"{r.fills:,} ({r.orders_filled:,} orders filled in full"
            + (f", {r.expired:,} expired" if r.expired else "")
            + (f", {r.orders_open:,} still working" if r.orders_open else "")
            + ")",
        ),
        ("starting balance", _fmt_money(r.starting_balance, c)),
        ("final balance", _fmt_money(r.final_balance, c)),
        ("final equity", _fmt_money(r.final_equity, c)),
        ("realized P&L", _fmt_money(r.realized_pnl, c)),
        ("unrealized P&L", _fmt_money(r.unrealized_pnl, c)),
        ("commissions", _fmt_money(r.commissions, c)),
        ("max drawdown", f"{_fmt_money(r.max_drawdown, c)} ({r.max_drawdown_pct:.2f}%)"),
        ("open positions", ", ".join(f"{k} {v:g}" for k, v in r.positions.items() if v) or "none"),
        ("wall time", f"{r.wall_time_s:.3f} s"),
        ("ticks per second", f"{r.ticks_per_s:,.0f}"),
        ("events sha256", r.events_sha256),
    ]
    at = [label for label, _ in rows].index("open positions")
    rows[at:at] = metric_rows(r)
    under_ticks = 1
    if r.validation and r.ticks_rejected:
        reasons = {k: v for k, v in r.validation.items() if k != "accepted" and k not in FLAGS}
        rejected = ", ".join(f"{k} {v:,}" for k, v in reasons.items() if v)
        rows.insert(under_ticks, ("rejected ticks", rejected))
        under_ticks += 1
    if r.validation.get("stale"):
        rows.insert(under_ticks, ("stale ticks (kept)", f"{r.validation['stale']:,}"))
    for alert in r.alerts:
        rows.append(("alert", alert))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_backtest(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "json" if args.log_json else "auto")
    overrides = None
    if args.store is not None:  # relative to where the command runs, not to the config
        overrides = {"replay.store": str(Path(args.store).resolve())}
    system, _ = load_backtest(
        args.config,
        per_tick=True if args.per_tick else None,
        batch_size=args.batch_size,
        overrides=overrides,
    )
    _install_event_loop()
    progress = progress_for(system)  # only when stderr is a terminal
    try:
        result = asyncio.run(run_backtest(system, replay_source(system), on_progress=progress))
    finally:
        if progress is not None:
            progress.close()
    if args.report:
        written = write_report(args.report, result, system, args.config)
        print(f"tradingd: report written to {written}", file=sys.stderr)
    if args.json:
        columns = msgspec.structs.replace(result, equity_curve=None, daily_equity=None, trades=None)
        out: dict[str, Any] = msgspec.to_builtins(columns)
        if not args.actors:
            out.pop("actors")
        for name in ("equity_curve", "daily_equity", "trades"):
            value = getattr(result, name)
            if args.full and value is not None:
                out[name] = value.to_builtins()
            else:
                out.pop(name, None)
        _write_stdout(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _write_stdout(summary_table(result) + "\n")
        if args.actors:
            for a in result.actors:
                print(
                    f"  {a['name']:<12} processed {a['processed']:>9,}  inbox high-water "
                    f"{a['inbox_high_water']:>5}  handle {a['handle_ns'] / 1e6:9.1f} ms"
                )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradingd",
        description="A trading daemon built from asyncio actors; the same engine backtests.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bt = sub.add_parser(
        "backtest", help="replay stored ticks through the actors and print a summary"
    )
    bt.add_argument(
        "--config",
        default=_default_config("backtest.toml"),
        help="backtest configuration (default: config/backtest.toml)",
    )
    bt.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    bt.add_argument(
        "--per-tick",
        action="store_true",
        help="deliver ticks one at a time (the slow reference) instead of in batches",
    )
    bt.add_argument("--batch-size", type=int, default=None, help="largest batch of ticks")
    bt.add_argument(
        "--store",
        metavar="DIR",
        default=None,
        help="replay from this tick store (overrides replay.store of the configuration)",
    )
    bt.add_argument("--actors", action="store_true", help="include per-actor counters")
    bt.add_argument(
        "--full",
        action="store_true",
        help="with --json: include the equity curve, daily equity and round trips",
    )
    bt.add_argument(
        "--report",
        metavar="PATH",
        default=None,
        help="write a self-contained HTML report (charts, metrics, trades) to PATH",
    )
    bt.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    bt.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    bt.set_defaults(func=_cmd_backtest)
    cli_sweep.register(sub)
    cli_data.register(sub)
    cli_risk.register(sub)
    cli_run.register(sub)
    cli_ctl.register(sub)
    cli_journal.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"tradingd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DataError as exc:
        print(f"tradingd: data error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except CriticalActorFailed as exc:
        print(f"tradingd: {exc}", file=sys.stderr)
        return EXIT_SOFTWARE
    except JournalError as exc:  # a journal actor's journal cannot be opened or written
        print(f"tradingd: journal error: {exc}", file=sys.stderr)
        return EXIT_DATA
    return code


if __name__ == "__main__":
    sys.exit(main())
