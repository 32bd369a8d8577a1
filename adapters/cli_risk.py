"""``tradingd risk stress``: a portfolio under historical scenarios and hypothetical shocks.

    tradingd risk stress --config config/daily_equities.toml --store store
    tradingd risk stress --config config/daily_equities.toml --store store \\
        --portfolio book.toml --scenarios config/stress.toml --json

The portfolio is the book a backtest of ``--config`` ends with (``--as-of`` ends it
earlier), or the one a ``--portfolio`` file gives. Historical scenarios replay the daily
bars of the tick store (prices adjusted for the splits and dividends inside the window);
hypothetical shocks move asset classes, regions, sectors or instruments. For each, the P&L
by region, asset class, sector and security, and the limits of ``--limits`` (default: the
risk gate's) that the book after the move would break.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import sys
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import orjson

from adapters.importers import corporate_actions
from adapters.store_replay import replay_source
from adapters.tickstore import TickStore
from engine.backtest import load_backtest, run_backtest
from engine.config import convert_section, utc_ns
from engine.corporate_actions import day_number, session_days
from engine.errors import ConfigError, DataError
from engine.instruments import InstrumentTable
from engine.limits import Book as LimitBook
from engine.limits import InstrumentMaster, LimitsConfig, load_limits, utilisation
from engine.logs import configure_logging
from engine.stress import (
    DEFAULT_HISTORICAL,
    HistoricalScenario,
    HypotheticalShock,
    StressResult,
    apply_scenario,
    shock_returns,
)
from engine.wiring import System

__all__ = ["StressFile", "historical_returns", "register"]

EX_DATE_ZONE = "America/New_York"


class Position(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    instrument: str
    quantity: float
    price: float | None = None


class PortfolioFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A book to stress: positions (prices from the store's closes at ``as_of`` where not
    given) and the cash beside them."""

    positions: list[Position]
    cash: float = 0.0
    as_of: dt.date | None = None


DEFAULT_SHOCKS = (
    HypotheticalShock(name="Equities -20%", asset_class={"equity": -0.20, "etf": -0.20}),
    HypotheticalShock(name="Technology -30%", sector={"technology": -0.30}),
    HypotheticalShock(name="Volatility x2", volatility=2.0),
)


class StressFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    historical: list[HistoricalScenario] = msgspec.field(
        default_factory=lambda: list(DEFAULT_HISTORICAL)
    )
    hypothetical: list[HypotheticalShock] = msgspec.field(
        default_factory=lambda: list(DEFAULT_SHOCKS)
    )


def _load_toml(path: Path, type_: type[Any]) -> Any:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None
    return convert_section(raw, type_, file=str(path))


def historical_returns(
    store: TickStore, instruments: InstrumentTable, scenario: HistoricalScenario
) -> np.ndarray:
    """Each instrument's return over ``scenario``, from the close of its last session on or
    before ``start`` to that of its last session on or before ``end``, on prices adjusted as
    of ``end`` (splits and dividends inside the window are not moves); NaN without data at
    both ends."""
    out = np.full(len(instruments), np.nan)
    have = set(store.instruments("bars.1d"))
    lo = utc_ns((scenario.start - dt.timedelta(days=10)).isoformat())
    hi = utc_ns((scenario.end + dt.timedelta(days=2)).isoformat())
    zone = ZoneInfo(EX_DATE_ZONE)
    for i, inst in enumerate(instruments):
        if inst.id not in have:
            continue
        bars = store.read_all("bars.1d", [inst.id], lo, hi)
        if not len(bars):
            continue
        days = session_days(bars["ts_event"], zone)
        keep = days <= day_number(scenario.end)
        bars, days = bars[keep], days[keep]
        if not len(bars):
            continue
        table, _ = corporate_actions(store, inst.id)
        close = table.adjust(bars, days, as_of=int(days[-1]))["close"]
        first = np.flatnonzero(days <= day_number(scenario.start))
        if not len(first) or int(days[-1]) < day_number(scenario.start) + 1:
            continue
        out[i] = float(close[-1] / close[first[-1]] - 1.0)
    return out


def _last_closes(store: TickStore, instruments: InstrumentTable, as_of: dt.date) -> np.ndarray:
    out = np.full(len(instruments), np.nan)
    have = set(store.instruments("bars.1d"))
    end = utc_ns((as_of + dt.timedelta(days=1)).isoformat())
    for i, inst in enumerate(instruments):
        if inst.id in have:
            bars = store.read_all("bars.1d", [inst.id], end - 20 * 86_400_000_000_000, end)
            if len(bars):
                out[i] = float(bars["close"][-1])
    return out


class Book(msgspec.Struct, kw_only=True):
    quantity: list[float]
    price: list[float]
    nav: float
    as_of: str
    source: str


def book_from_backtest(system: System) -> Book:
    """The book a backtest of ``system`` ends with: positions, last marks and equity."""
    result = asyncio.run(run_backtest(system, replay_source(system)))
    pf = getattr(system.of_kind("portfolio")[0], "portfolio")  # noqa: B009 - an actor's state
    end = result.metrics.get("end") or ""
    return Book(
        quantity=[float(q) for q in pf.qty],
        price=[float(p) for p in pf.mark_price],
        nav=float(result.final_equity),
        as_of=str(end),
        source=f"the end of the backtest of {system.file}",
    )


def book_from_file(path: Path, instruments: InstrumentTable, store: TickStore | None) -> Book:
    spec: PortfolioFile = _load_toml(path, PortfolioFile)
    qty = np.zeros(len(instruments))
    price = np.full(len(instruments), np.nan)
    closes = None
    for k, pos in enumerate(spec.positions):
        if pos.instrument not in instruments:
            raise ConfigError(
                f"unknown instrument {pos.instrument!r}",
                path=f"$.positions[{k}].instrument",
                file=str(path),
            )
        i = instruments.index(pos.instrument)
        qty[i] += pos.quantity
        if pos.price is not None:
            price[i] = pos.price
        else:
            if store is None or spec.as_of is None:
                raise ConfigError(
                    f"no price for {pos.instrument}: give `price`, or `as_of` and a store",
                    path=f"$.positions[{k}].price",
                    file=str(path),
                )
            if closes is None:
                closes = _last_closes(store, instruments, spec.as_of)
            price[i] = closes[i]
            if not math.isfinite(price[i]):
                raise DataError(f"no close of {pos.instrument} on or before {spec.as_of}")
    mult = np.array([inst.multiplier for inst in instruments])
    held = qty != 0
    nav = spec.cash + float(np.sum(qty[held] * price[held] * mult[held]))
    return Book(
        quantity=qty.tolist(),
        price=price.tolist(),
        nav=nav,
        as_of=str(spec.as_of or ""),
        source=str(path),
    )


def run_stress(
    book: Book, instruments: InstrumentTable, store: TickStore | None, stress: StressFile
) -> list[StressResult]:
    results: list[StressResult] = []
    for scenario in stress.historical:
        if store is None:
            break
        ret = historical_returns(store, instruments, scenario)
        results.append(
            apply_scenario(
                f"{scenario.name} ({scenario.start} to {scenario.end})",
                instruments,
                book.quantity,
                book.price,
                ret,
                book.nav,
            )
        )
    for shock in stress.hypothetical:
        results.append(
            apply_scenario(
                shock.name,
                instruments,
                book.quantity,
                book.price,
                shock_returns(instruments, shock),
                book.nav,
                volatility_multiplier=shock.volatility,
            )
        )
    return results


def limits_broken(
    book: Book, instruments: InstrumentTable, limits: LimitsConfig, result: StressResult
) -> list[dict[str, Any]]:
    """The limits the book after ``result``'s move would break (that it did not before):
    positions at the moved prices, NAV after the P&L. Limits that need the risk model are
    left out (a scenario is a price move, not a new covariance)."""
    master = InstrumentMaster(instruments)
    before = LimitBook(len(instruments), nav=book.nav)
    before.position[:] = book.quantity
    before.mark[:] = book.price
    after = LimitBook(len(instruments), nav=result.nav_after)
    after.position[:] = book.quantity
    after.mark[:] = [
        p * (1.0 + result.returns.get(inst.id, 0.0))
        for p, inst in zip(book.price, instruments, strict=True)
    ]
    was = {(u.level, u.key, u.rule): u.fraction for u in utilisation(before, limits, master)}
    broken = []
    for u in utilisation(after, limits, master):
        if (
            math.isfinite(u.fraction)
            and u.fraction > 1.0
            and not was.get((u.level, u.key, u.rule), 0.0) > 1.0
        ):
            broken.append(
                {
                    "level": u.level,
                    "key": u.key,
                    "rule": u.rule,
                    "used": u.used,
                    "limit": u.limit,
                    "fraction": u.fraction,
                }
            )
    return broken


def _money(x: float) -> str:
    return f"{x:,.0f}"


def format_results(
    book: Book, results: list[StressResult], currency: str, broken: list[list[dict[str, Any]]]
) -> str:
    lines = [f"book: {book.source} (NAV {_money(book.nav)} {currency})"]
    for r, limits in zip(results, broken, strict=True):
        lines.append("")
        lines.append(
            f"{r.scenario}: P&L {_money(r.pnl)} {currency} ({r.pnl_fraction:+.2%} of NAV)"
            + (f", volatility x{r.volatility_multiplier:g}" if r.volatility_multiplier != 1 else "")
        )
        for title, table in (
            ("region", r.by_region),
            ("asset class", r.by_asset_class),
            ("sector", r.by_sector),
            ("security", r.by_instrument),
        ):
            if table:
                cells = ", ".join(f"{k} {_money(v)}" for k, v in sorted(table.items()))
                lines.append(f"  by {title:<12} {cells}")
        if r.uncovered:
            lines.append(f"  no data in the window (left out): {', '.join(r.uncovered)}")
        for b in limits:
            lines.append(
                f"  would break {b['level']} {b['key']} {b['rule']}: "
                f"{b['used']:.4g} against {b['limit']:.4g} ({100 * b['fraction']:.0f}%)"
            )
    return "\n".join(lines)


def _cmd_stress(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, "auto")
    overrides: dict[str, Any] = {}
    if args.store is not None:
        overrides["replay.store"] = str(Path(args.store).resolve())
    if args.as_of is not None:
        day = dt.date.fromisoformat(args.as_of) + dt.timedelta(days=1)
        overrides["replay.end"] = day.isoformat()
    system, config = load_backtest(args.config, overrides=overrides or None)
    store = None
    if config.replay.store is not None:
        root = system.resolve_path(config.replay.store)
        if (root / "tickstore.json").is_file():
            store = TickStore(root, create=False)
    stress = StressFile()
    if args.scenarios is not None:
        path = Path(args.scenarios)
        stress = _load_toml(path, StressFile)
    if args.portfolio is not None:
        book = book_from_file(Path(args.portfolio), system.instruments, store)
    else:
        book = book_from_backtest(system)
    results = run_stress(book, system.instruments, store, stress)
    limits = _limits_for(args, system)
    broken = [limits_broken(book, system.instruments, limits, r) for r in results]
    if args.json:
        out = {
            "book": msgspec.to_builtins(book),
            "results": [
                {**msgspec.to_builtins(r), "limits_broken": b}
                for r, b in zip(results, broken, strict=True)
            ],
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        text = format_results(book, results, config.account.currency, broken)
        sys.stdout.write(text + "\n")
    return 0


def _limits_for(args: argparse.Namespace, system: System) -> LimitsConfig:
    """``--limits``, else the risk gate's limits (inline or its file), else none."""
    if args.limits is not None:
        return load_limits(args.limits)
    for gate in system.of_kind("risk_gate"):
        limits = getattr(gate, "_limits", None)
        if isinstance(limits, LimitsConfig):
            return limits
    return LimitsConfig()


def register(sub: Any) -> None:
    """Add the ``risk`` command to the ``tradingd`` parser's subcommands."""
    risk = sub.add_parser("risk", help="risk tools: stress tests")
    cmds = risk.add_subparsers(dest="risk_command", required=True, metavar="COMMAND")
    st = cmds.add_parser("stress", help="a portfolio under historical and hypothetical scenarios")
    st.add_argument("--config", required=True, help="a backtest configuration (instruments)")
    st.add_argument("--store", default=None, help="the tick store (overrides replay.store)")
    st.add_argument("--portfolio", default=None, help="a portfolio file (default: the backtest's)")
    st.add_argument("--as-of", default=None, help="end the backtest on this date (YYYY-MM-DD)")
    st.add_argument("--scenarios", default=None, help="a scenario file (default: the built-in)")
    st.add_argument("--limits", default=None, help="a limits file (default: the risk gate's)")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    st.set_defaults(func=_cmd_stress)
