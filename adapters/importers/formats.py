"""Readers of every import format: source files in, validated units of rows out.

A :class:`Unit` is what one write into the store takes: the rows of one kind of one
instrument, the source files they came from, and what validation made of them. The vendor
readers are those of :mod:`adapters.lean` and :mod:`adapters.binance_capture`; CSV and
Parquet go through pyarrow with the entry's column mapping (:mod:`adapters.importers.tabular`).
"""

from __future__ import annotations

import datetime as dt
import glob
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from adapters.binance_capture import read_binance_capture
from adapters.importers.checks import Checked, check_bars, check_quotes, check_trades
from adapters.importers.spec import ImportSpec
from adapters.lean import (
    EQUITY_TIME_ZONE,
    read_daily_bars,
    read_equity_quote_ticks,
    read_equity_trade_ticks,
    read_factor_file,
    read_fx_quote_ticks,
    read_map_file,
    read_minute_quote_bars,
    read_minute_trade_bars,
)
from engine.corporate_actions import (
    FactorTable,
    SecurityMaster,
    SymbolHistory,
    from_day_number,
    session_days,
)
from engine.errors import DataError

__all__ = ["Reference", "Unit", "read_units", "resolve_paths"]


@dataclass(slots=True)
class Unit:
    """Rows of one kind of one instrument, ready to be written, and where they came from."""

    kind: str
    instrument: str
    rows: npt.NDArray[Any]
    sources: list[Path]
    checked: Checked
    params: dict[str, Any] = field(default_factory=dict)
    extra_rejected: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> npt.NDArray[Any]:
        return self.rows[self.checked.keep]

    @property
    def counts(self) -> dict[str, int]:
        out = dict(self.checked.counts)
        for k, v in self.extra_rejected.items():
            out[k] = out.get(k, 0) + v
        return out


@dataclass(slots=True)
class Reference:
    """A reference object (factor and map rows of a security) to store with the data."""

    name: str
    obj: Any
    sources: list[Path]


_DEFAULT_GLOB = {
    "lean-quotes": "*_quote.zip",
    "lean-trades": "*_trade.zip",
    "lean-fx-quotes": "*_quote.zip",
    "lean-minute-bars": "*.zip",
    "lean-fx-minute-bars": "*_quote.zip",
    "yahoo-daily": "*.txt",
    "binance-capture": "*.gz",
    "nautilus-bars": "*.csv*",
    "csv": "*.csv",
    "parquet": "*.parquet",
}


def resolve_paths(spec: ImportSpec, base: Path) -> list[Path]:
    """The files an entry names (a file, a folder, or a glob), relative to ``base``."""
    pattern = Path(spec.path) if Path(spec.path).is_absolute() else base / spec.path
    if spec.format == "lean-daily":
        folder = pattern if pattern.is_dir() else None
        if folder is None:
            zips = sorted(Path(p) for p in glob.glob(str(pattern)))
            if not zips:
                raise DataError(f"{spec.path}: no such folder or files (from {base.name}/)")
            return zips
        zips = sorted((folder / "daily").glob("*.zip"))
        if not zips:
            raise DataError(f"{spec.path}: no daily/*.zip in the folder")
        return zips
    if pattern.is_dir():
        found = sorted(pattern.glob(_DEFAULT_GLOB[spec.format]))
    elif pattern.is_file():
        found = [pattern]
    else:
        found = sorted(Path(p) for p in glob.glob(str(pattern)) if Path(p).is_file())
    if not found:
        raise DataError(f"{spec.path}: matches no file")
    return found


def read_units(spec: ImportSpec, paths: list[Path]) -> Iterator[Unit | Reference]:
    """Read and validate every file of one entry, in order."""
    fmt = spec.format
    if fmt in ("lean-quotes", "lean-trades", "lean-fx-quotes"):
        yield from _lean_ticks(spec, paths)
    elif fmt in ("lean-minute-bars", "lean-fx-minute-bars"):
        yield from _lean_minute_bars(spec, paths)
    elif fmt == "lean-daily":
        yield from _lean_daily(spec, paths)
    elif fmt == "binance-capture":
        yield from _binance(spec, paths)
    else:
        yield from _tabular(spec, paths)


def _ticker_from(path: Path) -> str:
    """The ticker of a Lean file: its folder (``tick/ibm/20131007_quote.zip`` -> IBM)."""
    return path.parent.name.upper()


def _lean_venue(spec: ImportSpec, path: Path) -> str:
    if spec.venue:
        return spec.venue
    if spec.format.startswith("lean-fx"):
        # Data/forex/<venue>/<resolution>/<pair>/file.zip
        return path.parent.parent.parent.name.upper()
    return "US"


def _lean_ticks(spec: ImportSpec, paths: list[Path]) -> Iterator[Unit]:
    policy = spec.validation
    for path in paths:
        instrument = spec.instrument or f"{_ticker_from(path)}.{_lean_venue(spec, path)}"
        if spec.format == "lean-quotes":
            rows = read_equity_quote_ticks(path)
            yield Unit("quotes", instrument, rows, [path], check_quotes(rows, policy, instrument))
        elif spec.format == "lean-fx-quotes":
            rows = read_fx_quote_ticks(path)
            yield Unit("quotes", instrument, rows, [path], check_quotes(rows, policy, instrument))
        else:
            rows = read_equity_trade_ticks(path, drop_suspicious=spec.drop_suspicious)
            extra: dict[str, int] = {}
            if spec.drop_suspicious:
                n_all = len(read_equity_trade_ticks(path))
                if n_all != len(rows):
                    extra["suspicious"] = n_all - len(rows)
            unit = Unit(
                "trades",
                instrument,
                rows,
                [path],
                check_trades(rows, policy, instrument),
                params={"drop_suspicious": spec.drop_suspicious},
                extra_rejected=extra,
            )
            yield unit


def _lean_minute_bars(spec: ImportSpec, paths: list[Path]) -> Iterator[Unit]:
    policy = spec.validation
    fx = spec.format == "lean-fx-minute-bars"
    for path in paths:
        instrument = spec.instrument or f"{_ticker_from(path)}.{_lean_venue(spec, path)}"
        if path.name.endswith("_trade.zip") and not fx:
            bars = read_minute_trade_bars(path)
            yield Unit("bars.1m", instrument, bars, [path], check_bars(bars, policy, instrument))
        elif path.name.endswith("_quote.zip"):
            bid, ask = read_minute_quote_bars(path, fx=fx)
            for side, bars in (("bid", bid), ("ask", ask)):
                yield Unit(
                    f"bars.1m.{side}",
                    instrument,
                    bars,
                    [path],
                    check_bars(bars, policy, f"{instrument} {side}"),
                )
        else:
            raise DataError(f"{path}: expected a *_trade.zip or *_quote.zip minute file")


def _lean_daily(spec: ImportSpec, paths: list[Path]) -> Iterator[Unit | Reference]:
    """Daily bars assigned to securities through the map files, validated on split-adjusted
    prices, with each security's factor and map rows stored as reference data."""
    policy = spec.validation
    venue = spec.venue or "US"
    usa = paths[0].parent.parent
    map_dir, factor_dir = usa / "map_files", usa / "factor_files"
    histories: list[SymbolHistory] = []
    map_paths: dict[str, Path] = {}
    for mp in sorted(map_dir.glob("*.csv")):
        sec = mp.stem.upper()
        rows = read_map_file(mp)
        try:
            histories.append(SymbolHistory(sec, tuple(rows)))
        except ValueError as exc:
            raise DataError(f"{mp}: {exc}") from None
        map_paths[sec] = mp
    master = SecurityMaster(histories)
    per_security: dict[str, list[tuple[npt.NDArray[Any], npt.NDArray[np.int64], str]]] = {}
    sources: dict[str, set[Path]] = {}
    unmapped: dict[str, int] = {}
    for path in paths:
        ticker = path.stem.upper()
        bars = read_daily_bars(path)
        days = session_days(bars["ts_event"], EQUITY_TIME_ZONE)
        uniq, inverse = np.unique(days, return_inverse=True)
        owner_of_day = [
            master.security_of(ticker, from_day_number(int(d))) if map_paths else ticker
            for d in uniq
        ]
        owners = np.array(owner_of_day, dtype=object)[inverse]
        for sec in sorted({o for o in owners if o is not None}):
            mask = owners == sec
            per_security.setdefault(sec, []).append((bars[mask], days[mask], ticker))
            sources.setdefault(sec, set()).add(path)
        lost = int(sum(1 for o in owners if o is None))
        if lost:
            unmapped[ticker] = lost
    orphans = {t: n for t, n in unmapped.items() if t not in per_security}
    if orphans:
        raise DataError(
            "rows of these daily files belong to no security of the map files: "
            + ", ".join(f"{t.lower()}.zip {n} rows" for t, n in sorted(orphans.items()))
        )
    for sec in sorted(per_security):
        parts = per_security[sec]
        bars = np.concatenate([p[0] for p in parts])
        days = np.concatenate([p[1] for p in parts])
        traded_as = np.concatenate([np.full(len(p[0]), p[2], dtype=object) for p in parts])
        order = np.argsort(bars["ts_event"], kind="stable")
        bars, days, traded_as = bars[order], days[order], traded_as[order]
        instrument = f"{sec}.{venue}"
        factor_path = factor_dir / f"{sec.lower()}.csv"
        table = (
            FactorTable.from_rows(read_factor_file(factor_path), source=str(factor_path))
            if factor_path.is_file()
            else FactorTable.identity()
        )
        labels = [
            instrument if t == sec else f"{instrument} (traded as {t}, file {t.lower()}.zip)"
            for t in traded_as
        ]
        checked = check_bars(
            bars, policy, labels, multiplier=table.multiplier(days, "split"), daily=True
        )
        src = sorted(sources[sec])
        extra_sources = [p for p in (factor_path, map_paths.get(sec)) if p and p.is_file()]
        unit = Unit(
            "bars.1d",
            instrument,
            bars,
            src + extra_sources,
            checked,
            params={"prices": "raw", "factor_file": factor_path.is_file()},
        )
        if sec in unmapped:  # rows of its own file from before or after its life
            unit.extra_rejected["unmapped"] = unmapped[sec]
        yield unit
        history = master.history(sec) if map_paths else None
        yield Reference(
            name=f"corporate_actions.{instrument}",
            obj={
                "security": sec,
                "instrument": instrument,
                "factor_rows": [
                    {
                        "date": r.date.isoformat(),
                        "price_factor": r.price_factor,
                        "split_factor": r.split_factor,
                        "reference_price": r.reference_price,
                    }
                    for r in table.rows()
                ],
                "map_rows": [
                    {"date": r.date.isoformat(), "ticker": r.ticker, "exchange": r.exchange}
                    for r in (history.rows if history else ())
                ],
            },
            sources=extra_sources,
        )


def _binance(spec: ImportSpec, paths: list[Path]) -> Iterator[Unit]:
    policy = spec.validation
    for path in paths:
        capture = read_binance_capture(path)
        symbols = sorted(capture.counts.symbols)
        instrument = spec.instrument or f"{symbols[0] if symbols else 'UNKNOWN'}." + (
            spec.venue or "BINANCE"
        )
        params = {
            "ts_event": "quotes: local receive time; trades: exchange trade time T",
            "depth_messages_skipped": capture.counts.depth,
            "snapshots_skipped": capture.counts.snapshot,
        }
        q, t = capture.quotes, capture.trades
        yield Unit("quotes", instrument, q, [path], check_quotes(q, policy, instrument), params)
        yield Unit("trades", instrument, t, [path], check_trades(t, policy, instrument), params)


_PRESETS: dict[str, dict[str, Any]] = {
    "yahoo-daily": {
        "kind": "bars.1d",
        "columns": {
            "ts_event": "Date",
            "open": "Open",
            "high": "High",
            "low": "Low",
            "close": "Close",
            "volume": "Volume",
        },
        "timezone": "America/New_York",
        "interval": "1d",
    },
    "nautilus-bars": {
        "kind": "bars.1m",
        "columns": {
            "ts_event": "timestamp_utc",
            "open": "open",
            "high": "high",
            "low": "low",
            "close": "close",
            "volume": "volume",
        },
        "timezone": "UTC",
        "interval": "1m",
    },
}


def _tabular(spec: ImportSpec, paths: list[Path]) -> Iterator[Unit | Reference]:
    # pyarrow is loaded only when a CSV or Parquet file is imported
    from adapters.importers.tabular import read_table, yahoo_factor_rows  # noqa: PLC0415

    preset = _PRESETS.get(spec.format, {})
    kind = spec.kind or preset["kind"]
    columns = {**preset.get("columns", {}), **spec.columns}
    timezone = spec.timezone if spec.timezone != "UTC" or not preset else preset["timezone"]
    interval = spec.interval or preset.get("interval")
    bar_time = spec.bar_time
    try:
        tz = ZoneInfo(timezone)
    except (KeyError, ValueError) as exc:
        raise DataError(f"unknown time zone {timezone!r}: {exc}") from None
    policy = spec.validation
    for path in paths:
        default_inst = _default_instrument(spec, path)
        tables = read_table(
            path,
            kind=kind,
            columns=columns,
            fmt="parquet" if spec.format == "parquet" else "csv",
            tz=tz,
            time_format=spec.time_format,
            price_scale=spec.price_scale,
            interval=interval,
            bar_time=bar_time,
            session_close=dt.time.fromisoformat(spec.session_close),
            instrument=default_inst,
        )
        for instrument, rows in tables.items():
            params = {"columns": columns, "timezone": timezone, "price_scale": spec.price_scale}
            if kind == "quotes":
                checked = check_quotes(rows, policy, instrument)
            elif kind == "trades":
                checked = check_trades(rows, policy, instrument)
            else:
                daily = bool(len(rows)) and bool(np.all(rows["interval_ns"] >= 86_400 * 10**9))
                checked = check_bars(rows, policy, instrument, daily=daily)
                params["bar_time"] = bar_time
            yield Unit(kind, instrument, rows, [path], checked, params)
            if spec.format == "yahoo-daily":
                factor_rows = yahoo_factor_rows(path, rows, tz)
                yield Reference(
                    name=f"corporate_actions.{instrument}",
                    obj={
                        "security": instrument.split(".")[0],
                        "instrument": instrument,
                        "factor_rows": factor_rows,
                        "map_rows": [],
                        "note": "Yahoo prices are split-adjusted by the vendor as of the "
                        "export; price_factor is Adj Close / Close (dividends), normalised "
                        "to 1 on the last row",
                    },
                    sources=[path],
                )


def _default_instrument(spec: ImportSpec, path: Path) -> str | None:
    if spec.instrument:
        return spec.instrument
    if "instrument" in spec.columns:
        return None
    if spec.format == "yahoo-daily":  # nvda-1999-2014.txt -> NVDA.US
        return f"{path.name.split('-')[0].split('.')[0].upper()}.{spec.venue or 'US'}"
    if spec.format == "nautilus-bars":  # 6EH4.XCME_1min_bars_....csv.gz -> 6EH4.XCME
        return path.name.split("_")[0]
    return None
