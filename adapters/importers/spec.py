"""What to import: the ``[[import]]`` entries of an import file, decoded and checked once.

An import file is TOML::

    data_root = "../shared/data"        # optional: base of relative paths (default: here)

    [[import]]
    format = "lean-quotes"              # see FORMATS
    path = "lean/Data/equity/usa/tick/ibm/*_quote.zip"   # a file, a folder or a glob
    instrument = "IBM.US"               # optional for the vendor formats (derived)
    dataset = "lean-equity-ticks"       # optional (a default per format)
    validation = { allow_locked = true, allow_crossed = false }

    [[import]]                          # any CSV or Parquet file, with a column mapping
    format = "csv"
    path = "my_bars.csv"
    kind = "bars.1m"
    instrument = "ES.XCME"
    timezone = "America/Chicago"        # of naive timestamps
    time_format = "%Y-%m-%d %H:%M"      # strptime, or epoch_s / epoch_ms / epoch_us / epoch_ns
    bar_time = "start"                  # the timestamp is the bar's start (or "end")
    interval = "1m"
    price_scale = 1.0                   # prices are divided by this
    columns = { ts_event = "time", open = "o", high = "h", low = "l", close = "c", volume = "v" }

An unknown key or a wrong type fails before anything is read, with its path
(``$.import[2].validation.allow_locked``).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from engine.errors import ConfigError

__all__ = [
    "FORMATS",
    "ImportFile",
    "ImportSpec",
    "ValidationPolicy",
    "load_import_file",
    "parse_import_file",
    "parse_interval",
]

Format = Literal[
    "lean-quotes",
    "lean-trades",
    "lean-fx-quotes",
    "lean-daily",
    "lean-minute-bars",
    "lean-fx-minute-bars",
    "yahoo-daily",
    "binance-capture",
    "nautilus-bars",
    "csv",
    "parquet",
]

FORMATS: dict[str, str] = {
    "lean-quotes": "Lean/AlgoSeek US equity quote tick zips (NBBO, one side per row)",
    "lean-trades": "Lean/AlgoSeek US equity trade tick zips",
    "lean-fx-quotes": "Lean/Oanda FX quote tick zips (Time,Bid,Ask; CRLF)",
    "lean-daily": "Lean daily equity bars with their factor and map files (a usa/ folder)",
    "lean-minute-bars": "Lean equity minute trade and quote bar zips",
    "lean-fx-minute-bars": "Lean/Oanda FX minute quote bar zips",
    "yahoo-daily": "Yahoo Finance daily CSV (Date,Open,High,Low,Close,Adj Close,Volume)",
    "binance-capture": "Binance spot WebSocket capture (hftbacktest collector, gzip)",
    "nautilus-bars": "bar CSV (gzip or not) with timestamp_utc,open,high,low,close,volume",
    "csv": "any CSV file, with a column mapping",
    "parquet": "any Parquet file, with a column mapping",
}
"""Import formats and what they read."""

DEFAULT_DATASET: dict[str, str] = {
    "lean-quotes": "lean-equity-ticks",
    "lean-trades": "lean-equity-ticks",
    "lean-fx-quotes": "lean-fx-ticks",
    "lean-daily": "lean-equity-daily",
    "lean-minute-bars": "lean-equity-minute",
    "lean-fx-minute-bars": "lean-fx-minute",
    "yahoo-daily": "yahoo-daily",
    "binance-capture": "binance-spot",
    "nautilus-bars": "nautilus-bars",
    "csv": "imported",
    "parquet": "imported",
}


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ValidationPolicy(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How an import validates and normalises rows (see :mod:`engine.bar_validation` and
    :mod:`engine.validation`). ``drop_rejected``: leave rejected rows out of the store
    (they are counted by reason either way). Quotes: ``allow_locked`` keeps bid == ask
    (counted as ``locked``), ``allow_crossed`` keeps bid > ask (counted as ``crossed``),
    ``max_spread_fraction`` rejects wider spreads. ``stale_after_s`` flags a row after a
    longer silence. Bars and trades: the spike and bad-print settings; ``None`` takes the
    default for the kind."""

    drop_rejected: bool = True
    allow_locked: bool = True
    allow_crossed: bool = False
    max_spread_fraction: float | None = None
    stale_after_s: float | None = None
    max_wick_fraction: float | None = None
    absurd_ratio: float | None = None
    spike_window: int | None = None
    spike_min_move: float | None = None
    spike_sigmas: float | None = None
    spike_confirm: bool = True


class ImportSpec(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[[import]]`` entry."""

    format: Format
    path: str
    instrument: str | None = None
    dataset: str | None = None
    venue: str | None = None
    kind: str | None = None
    columns: dict[str, str] = {}
    price_scale: float = 1.0
    timezone: str = "UTC"
    time_format: str | None = None
    bar_time: Literal["start", "end"] = "end"
    interval: str | None = None
    session_close: str = "16:00"
    drop_suspicious: bool = False
    validation: ValidationPolicy = ValidationPolicy()

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must not be empty")
        if not (self.price_scale > 0):
            raise ValueError(f"price_scale must be positive, got {self.price_scale}")
        if self.format in ("csv", "parquet"):
            if self.kind is None:
                raise ValueError(f"a {self.format} import needs kind (quotes, trades, bars.1m)")
            if self.instrument is None and "instrument" not in self.columns:
                raise ValueError("a csv/parquet import needs instrument or columns.instrument")
        if self.interval is not None:
            parse_interval(self.interval)

    @property
    def dataset_name(self) -> str:
        return self.dataset or DEFAULT_DATASET[self.format]


class ImportFile(_Strict, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole import file: where relative paths start, and the entries."""

    data_root: str | None = None
    imports: list[ImportSpec] = msgspec.field(name="import", default_factory=list)


_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "min": 60 * 10**9}
_UNITS |= {"h": 3_600 * 10**9, "d": 86_400 * 10**9}
_INTERVAL = re.compile(r"^(\d+)(ns|us|ms|s|min|m|h|d)$")


def parse_interval(text: str) -> int:
    """``"1m"``, ``"5min"``, ``"1h"``, ``"1d"``, ``"250ms"`` in ns (``m`` is minutes)."""
    match = _INTERVAL.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"interval {text!r}: a positive number and ns, us, ms, s, m, h or d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_import_file(text: str, *, file: str = "<import>") -> ImportFile:
    """Decode and check an import file's TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    try:
        return msgspec.convert(raw, ImportFile)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = message.rsplit(" - at ", 1)[1].strip("`") if " - at " in message else "$"
        raise ConfigError(message, path=path, file=file) from None


def load_import_file(path: str | Path) -> ImportFile:
    """Read and check an import file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(p)) from None
    return parse_import_file(text, file=str(p))
