"""Importing market data into the tick store: every format of ``shared/data`` and any CSV or
Parquet file with a column mapping.

An import reads each source file, validates its rows (:mod:`adapters.importers.checks`),
leaves out the rejected ones (counted by reason), and writes the rest into the store with
the source's sha256, so a second import of the same file is refused. :func:`run_imports`
runs the ``[[import]]`` entries of an import file (:mod:`adapters.importers.spec`);
``dry_run`` reads and validates without writing, which is what ``tradingd data validate``
does with source files. :data:`SHARED_DATA_IMPORTS` is the import file for everything in
``shared/data`` (its ``SOURCES.md`` sections 1-6).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.importers.formats import Reference, read_units, resolve_paths
from adapters.importers.spec import (
    FORMATS,
    ImportFile,
    ImportSpec,
    ValidationPolicy,
    load_import_file,
    parse_import_file,
)
from adapters.tickstore import SourceFile, TickStore
from engine.corporate_actions import (
    FactorRow,
    FactorTable,
    MapRow,
    SecurityMaster,
    SymbolHistory,
)

__all__ = [
    "FORMATS",
    "SHARED_DATA_IMPORTS",
    "ImportFile",
    "ImportResult",
    "ImportSpec",
    "UnitReport",
    "ValidationPolicy",
    "corporate_actions",
    "load_import_file",
    "parse_import_file",
    "run_import",
    "run_imports",
    "security_master",
    "shared_data_imports",
]

SHARED_DATA_IMPORTS = """\
# Every dataset of shared/data (see its SOURCES.md, sections 1-6). Paths are relative to
# data_root, which `tradingd data import --shared-data DIR` sets to DIR.

[[import]]    # 3. IBM and BAC NBBO quotes, Oct 2013 (locked NBBO kept, crossed rejected)
format = "lean-quotes"
path = "lean/Data/equity/usa/tick/*/*_quote.zip"

[[import]]    # 3. IBM and BAC trades (identical rows are separate prints: kept)
format = "lean-trades"
path = "lean/Data/equity/usa/tick/*/*_trade.zip"

[[import]]    # 3. the vendor's minute trade and quote bars of the same days
format = "lean-minute-bars"
path = "lean/Data/equity/usa/minute/*/*.zip"

[[import]]    # 4. EUR/USD Oanda quotes, 2014-05-04 to 05-09 (CRLF, no sizes)
format = "lean-fx-quotes"
path = "lean/Data/forex/oanda/tick/eurusd"

[[import]]    # 4. the vendor's EUR/USD minute quote bars
format = "lean-fx-minute-bars"
path = "lean/Data/forex/oanda/minute/eurusd"

[[import]]    # 1. daily bars 1998-2021, raw, with factor and map files
format = "lean-daily"
path = "lean/Data/equity/usa"

[[import]]    # 2. Yahoo daily CSV, split-adjusted, with Adj Close
format = "yahoo-daily"
path = "backtrader/datas/*.txt"

[[import]]    # 5. Binance BTCUSDT bookTicker and trades, about 11 minutes
format = "binance-capture"
path = "hftbacktest/examples/spot"

[[import]]    # 6. CME 6EH4 minute bars, Jan 2024 (timestamps are bar end times)
format = "nautilus-bars"
path = "nautilus_trader/tests/test_data/xcme/6EH4.XCME_1min_bars_20240101_20240131.csv.gz"
bar_time = "end"
"""


def shared_data_imports(data_root: str | Path) -> ImportFile:
    """:data:`SHARED_DATA_IMPORTS` with its ``data_root`` set."""
    parsed = parse_import_file(SHARED_DATA_IMPORTS, file="SHARED_DATA_IMPORTS")
    return ImportFile(data_root=str(data_root), imports=parsed.imports)


@dataclass(slots=True)
class UnitReport:
    """One write (or, in a dry run, one would-be write): its counts by reason."""

    kind: str
    instrument: str
    sources: list[str]
    rows_in: int
    rows_written: int
    counts: dict[str, int]
    rejected_examples: list[str]


@dataclass(slots=True)
class ImportResult:
    """What one ``[[import]]`` entry did."""

    index: int
    format: str
    dataset: str
    files: int
    rows_in: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    units: list[UnitReport] = field(default_factory=list)
    references: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def counts(self) -> dict[str, int]:
        """Rows by reason over all of the entry's units."""
        out: dict[str, int] = {}
        for unit in self.units:
            for k, v in unit.counts.items():
                out[k] = out.get(k, 0) + v
        return dict(sorted(out.items()))

    def to_builtins(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "dataset": self.dataset,
            "files": self.files,
            "rows_in": self.rows_in,
            "rows_written": self.rows_written,
            "seconds": round(self.seconds, 4),
            "rows_per_s": round(self.rows_per_s),
            "counts": self.counts(),
            "units": [
                {
                    "kind": u.kind,
                    "instrument": u.instrument,
                    "rows_in": u.rows_in,
                    "rows_written": u.rows_written,
                    "counts": u.counts,
                    "rejected_examples": u.rejected_examples,
                }
                for u in self.units
            ],
            "references": self.references,
        }


class _Sources:
    """Source files hashed once per run, named relative to the data root."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()
        self._cache: dict[Path, SourceFile] = {}

    def label(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.base).as_posix()
        except ValueError:
            return path.name

    def of(self, paths: Iterable[Path]) -> list[SourceFile]:
        out = []
        for p in paths:
            key = p.resolve()
            if key not in self._cache:
                self._cache[key] = SourceFile.of(p, label=self.label(p))
            out.append(self._cache[key])
        return out


def run_import(
    store: TickStore | None,
    spec: ImportSpec,
    base: Path,
    *,
    index: int = 0,
    dry_run: bool = False,
    sources: _Sources | None = None,
) -> ImportResult:
    """Run one entry; ``store`` may be None with ``dry_run``. Paths are relative to ``base``."""
    if store is None and not dry_run:
        raise ValueError("an import needs a store unless it is a dry run")
    sources = sources or _Sources(base)
    paths = resolve_paths(spec, base)
    result = ImportResult(index, spec.format, spec.dataset_name, len(paths))
    started = time.perf_counter()
    for item in read_units(spec, paths):
        if isinstance(item, Reference):
            if store is not None and not dry_run:
                store.put_reference(
                    spec.dataset_name, item.name, item.obj, sources=sources.of(item.sources)
                )
            result.references.append(item.name)
            continue
        kept = item.kept
        written = len(kept)
        if store is not None and not dry_run:
            written = store.write(
                item.kind,
                item.instrument,
                kept,
                dataset=spec.dataset_name,
                sources=sources.of(item.sources),
                importer=spec.format,
                params=item.params,
                validation=item.counts,
                rejected_examples=item.checked.rejected_examples,
                rows_in=len(item.rows),
            )
        result.units.append(
            UnitReport(
                kind=item.kind,
                instrument=item.instrument,
                sources=[sources.label(p) for p in item.sources],
                rows_in=len(item.rows),
                rows_written=written,
                counts=item.counts,
                rejected_examples=item.checked.rejected_examples,
            )
        )
        result.rows_in += len(item.rows)
        result.rows_written += written
    result.seconds = time.perf_counter() - started
    if store is not None and not dry_run and spec.format == "binance-capture":
        store.note(
            spec.dataset_name,
            "binance-capture: quotes are stamped with the capturing host's receive time, "
            "trades with the exchange's trade time T; the host clock was about 1.27 s behind "
            "the exchange's, so do not merge them on ts_event without correcting the skew",
        )
    return result


def run_imports(
    store: TickStore | None,
    config: ImportFile,
    base: Path,
    *,
    dry_run: bool = False,
) -> list[ImportResult]:
    """Run every entry of an import file; relative paths start at ``config.data_root``
    (itself relative to ``base``, the import file's folder) or at ``base``."""
    root = base
    if config.data_root:
        root = Path(config.data_root)
        if not root.is_absolute():
            root = base / root
    sources = _Sources(root)
    return [
        run_import(store, spec, root, index=i, dry_run=dry_run, sources=sources)
        for i, spec in enumerate(config.imports)
    ]


def corporate_actions(
    store: TickStore, instrument: str
) -> tuple[FactorTable, SymbolHistory | None]:
    """The factor table and ticker history an import stored for ``instrument`` (reference
    ``corporate_actions.<instrument>``); a table of 1s and None when there are none."""
    name = f"corporate_actions.{instrument}"
    if not any(name in store.references(d) for d in store.datasets()):
        return FactorTable.identity(), None
    obj = store.reference(name)
    table = FactorTable.from_rows(
        (
            FactorRow(
                date=dt.date.fromisoformat(r["date"]),
                price_factor=float(r["price_factor"]),
                split_factor=float(r["split_factor"]),
                reference_price=float(r.get("reference_price", 0.0)),
            )
            for r in obj["factor_rows"]
        ),
        source=name,
    )
    rows = tuple(
        MapRow(date=dt.date.fromisoformat(r["date"]), ticker=r["ticker"], exchange=r["exchange"])
        for r in obj.get("map_rows", [])
    )
    return table, SymbolHistory(str(obj["security"]), rows) if rows else None


def security_master(store: TickStore) -> SecurityMaster:
    """Every stored ticker history (from the map files of the imports), by security id."""
    histories = []
    for dataset in store.datasets():
        for name in store.references(dataset):
            if name.startswith("corporate_actions."):
                _, history = corporate_actions(store, name.removeprefix("corporate_actions."))
                if history is not None:
                    histories.append(history)
    return SecurityMaster(histories)
