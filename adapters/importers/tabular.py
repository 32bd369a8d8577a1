"""CSV and Parquet files with a column mapping, read through pyarrow into tick and bar arrays.

``columns`` maps the dtype's fields to the file's column names. Required: ``ts_event`` and
the prices (``bid``/``ask`` for quotes, ``price`` for trades, ``open``/``high``/``low``/
``close`` for bars); optional: sizes and ``volume`` (0 when absent), ``ts_init`` (defaults
to ``ts_event``), ``aggressor`` for trades, and ``instrument``, a column of instrument ids
that splits one file into several instruments.

Timestamps: epoch numbers (``time_format = "epoch_s" | "epoch_ms" | "epoch_us" |
"epoch_ns"``), text in a ``strptime`` format (pyarrow's, or Python's, slower, when the format
has ``%f``), or, without a format, whatever pyarrow reads
as a date or timestamp (ISO 8601). Naive times are in ``timezone`` and converted to UTC
(wall-clock times, the first one where daylight saving makes a time ambiguous). Bars:
``bar_time = "start"`` moves the stamp to the bar's close (start + interval); daily bars
stamped with a date only close at ``session_close`` local time on that date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pcsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from adapters.importers.spec import parse_interval
from engine.corporate_actions import FAR_FUTURE
from engine.errors import DataError
from engine.ticks import BAR_DTYPE, DAILY_NS, QUOTE_DTYPE, TRADE_DTYPE

__all__ = ["localize_ns", "read_table", "yahoo_factor_rows"]

_EPOCH_UNITS = {"epoch_s": 10**9, "epoch_ms": 10**6, "epoch_us": 10**3, "epoch_ns": 1}
_NS_PER_HOUR = 3_600 * 10**9

_REQUIRED = {
    "quotes": ("ts_event", "bid", "ask"),
    "trades": ("ts_event", "price"),
    "bars": ("ts_event", "open", "high", "low", "close"),
}
_OPTIONAL = {
    "quotes": ("ts_init", "bid_size", "ask_size"),
    "trades": ("ts_init", "size", "aggressor"),
    "bars": ("ts_init", "volume"),
}
_PRICES = {"bid", "ask", "price", "open", "high", "low", "close"}


def localize_ns(local_ns: npt.NDArray[np.int64], tz: dt.tzinfo) -> npt.NDArray[np.int64]:
    """Naive wall-clock times (ns as if UTC) in ``tz`` -> ns since the epoch, UTC.

    The offset is looked up once per distinct wall-clock hour (zone changes fall on whole
    hours in the zones this is used for); ambiguous times take the first occurrence.
    """
    if tz is dt.UTC or getattr(tz, "key", None) in ("UTC", "Etc/UTC"):
        return local_ns
    hours = local_ns // _NS_PER_HOUR
    uniq, inverse = np.unique(hours, return_inverse=True)
    offsets = np.empty(len(uniq), dtype=np.int64)
    for i, h in enumerate(uniq.tolist()):
        wall = dt.datetime(1970, 1, 1) + dt.timedelta(hours=h)  # noqa: DTZ001 - naive wall time
        off = wall.replace(tzinfo=tz).utcoffset()
        offsets[i] = 0 if off is None else off // dt.timedelta(microseconds=1) * 1_000
    return local_ns - offsets[inverse]


def _read(path: Path, fmt: str, text_columns: list[str]) -> Any:
    try:
        if fmt == "parquet":
            return pq.read_table(str(path))
        convert = pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns})
        return pcsv.read_csv(str(path), convert_options=convert)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: cannot read {fmt}: {exc}") from None


def _times(
    path: Path,
    column: Any,
    name: str,
    time_format: str | None,
) -> tuple[npt.NDArray[np.int64], bool, bool]:
    """Ns of a time column; whether they are naive (wall-clock, to be localised) and
    whether they are dates only (all midnights)."""
    typ = column.type
    if time_format in _EPOCH_UNITS:
        if not pa.types.is_integer(typ) and not pa.types.is_floating(typ):
            raise DataError(f"{path}: column {name!r} is {typ}, expected {time_format} numbers")
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        if pa.types.is_integer(typ):
            ns = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
            return ns * _EPOCH_UNITS[time_format], False, False
        return np.round(values * _EPOCH_UNITS[time_format]).astype(np.int64), False, False
    if time_format is not None and "%f" in time_format:
        return _python_strptime(path, column, name, time_format)
    try:
        if time_format is not None:
            stamps = pc.strptime(column, format=time_format, unit="ns")
        elif pa.types.is_date(typ):
            stamps = pc.cast(pc.cast(column, pa.date32()), pa.timestamp("ns"))
        elif pa.types.is_timestamp(typ):
            stamps = column
        else:
            stamps = pc.cast(column, pa.timestamp("ns"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(f"{path}: column {name!r}: cannot read times: {exc}") from None
    if stamps.null_count:
        raise DataError(f"{path}: column {name!r} has {stamps.null_count} empty times")
    aware = getattr(stamps.type, "tz", None) is not None
    ns = (
        np.asarray(
            pc.cast(stamps, pa.timestamp("ns", tz=stamps.type.tz)).to_numpy(zero_copy_only=False)
        )
        .astype("datetime64[ns]")
        .astype(np.int64)
    )
    dates_only = pa.types.is_date(typ) or bool(np.all(ns % (86_400 * 10**9) == 0))
    return ns, not aware, dates_only


def _python_strptime(
    path: Path, column: Any, name: str, time_format: str
) -> tuple[npt.NDArray[np.int64], bool, bool]:
    """Python's ``strptime``, for formats pyarrow's cannot read (fractions of a second)."""
    epoch = dt.datetime(1970, 1, 1)  # noqa: DTZ001 - naive, like the times parsed
    out = np.empty(len(column), dtype=np.int64)
    aware = False
    for i, text in enumerate(column.to_pylist()):
        try:
            when = dt.datetime.strptime(text, time_format)  # noqa: DTZ007 - %z is allowed
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: column {name!r} row {i + 1}: {exc}") from None
        if when.tzinfo is not None:
            aware = True
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
        delta = when - epoch
        out[i] = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
    return out, not aware, False


def read_table(
    path: Path,
    *,
    kind: str,
    columns: Mapping[str, str],
    fmt: str,
    tz: dt.tzinfo,
    time_format: str | None,
    price_scale: float,
    interval: str | None,
    bar_time: str,
    session_close: dt.time,
    instrument: str | None,
) -> dict[str, npt.NDArray[Any]]:
    """Read one file into ``{instrument id: rows}`` (rows in file order)."""
    family = "bars" if kind.startswith("bars.") else kind
    if family not in _REQUIRED:
        raise DataError(f"unknown kind {kind!r}")
    missing = [f for f in _REQUIRED[family] if f not in columns]
    if missing:
        raise DataError(f"{path}: the column mapping lacks {missing} for {kind}")
    unknown = set(columns) - set(_REQUIRED[family]) - set(_OPTIONAL[family]) - {"instrument"}
    if unknown:
        raise DataError(f"{path}: the column mapping has fields {sorted(unknown)} not in {kind}")
    text_columns = [columns["ts_event"]] if time_format and time_format not in _EPOCH_UNITS else []
    table = _read(path, fmt, text_columns)
    absent = [c for c in columns.values() if c not in table.column_names]
    if absent:
        raise DataError(f"{path}: no column {absent} (the file has {table.column_names})")
    n = table.num_rows
    dtype = {"quotes": QUOTE_DTYPE, "trades": TRADE_DTYPE, "bars": BAR_DTYPE}[family]
    out = np.zeros(n, dtype=dtype)
    ts, naive, dates_only = _times(
        path, table[columns["ts_event"]], columns["ts_event"], time_format
    )
    session = False
    if family == "bars":
        if interval is None:
            raise DataError(f'{path}: bars need an interval (interval = "1m")')
        step = parse_interval(interval)
        out["interval_ns"] = step
        session = dates_only and naive and step >= DAILY_NS
        if session:  # a trading date: the bar closes at the session's close, local time
            ts = ts + (session_close.hour * 3600 + session_close.minute * 60) * 10**9
        elif bar_time == "start":
            ts = ts + step
    if naive:
        ts = localize_ns(ts, tz)
    out["ts_event"] = ts
    if "ts_init" in columns:
        init, init_naive, _ = _times(path, table[columns["ts_init"]], "ts_init", time_format)
        out["ts_init"] = localize_ns(init, tz) if init_naive else init
    else:
        out["ts_init"] = ts
    for fieldname in (*_REQUIRED[family][1:], *_OPTIONAL[family][1:]):
        if fieldname not in columns:
            continue
        col = table[columns[fieldname]]
        if col.null_count:
            raise DataError(
                f"{path}: column {columns[fieldname]!r} has {col.null_count} empty cells"
            )
        try:
            values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        except (ValueError, TypeError, pa.ArrowInvalid) as exc:
            raise DataError(f"{path}: column {columns[fieldname]!r}: {exc}") from None
        out[fieldname] = values / price_scale if fieldname in _PRICES else values
    if "instrument" in columns:
        ids = np.asarray(table[columns["instrument"]].to_numpy(zero_copy_only=False), dtype=object)
        return {str(i): out[ids == i] for i in sorted(set(ids.tolist()))}
    if instrument is None:
        raise DataError(f"{path}: give instrument = ... or an instrument column")
    return {instrument: out}


def yahoo_factor_rows(path: Path, bars: npt.NDArray[Any], tz: dt.tzinfo) -> list[dict[str, Any]]:
    """Lean-style factor rows from a Yahoo file's ``Adj Close / Close`` (dividends only:
    Yahoo prices are already split-adjusted). A new row starts where the ratio moves by
    more than 0.05% from one day to the next (an ex-dividend date); each row's factor is the
    median ratio of its days, divided by the last row's, so the latest prices have factor 1.
    """
    table = _read(path, "csv", [])
    if "Adj Close" not in table.column_names or "Close" not in table.column_names:
        return []
    adj = np.asarray(table["Adj Close"].to_numpy(zero_copy_only=False), dtype=np.float64)
    close = np.asarray(table["Close"].to_numpy(zero_copy_only=False), dtype=np.float64)
    if len(adj) != len(bars) or len(adj) == 0:
        return []
    ratio = adj / close
    order = np.argsort(bars["ts_event"], kind="stable")
    ratio = ratio[order]
    days = [
        dt.datetime.fromtimestamp(int(t) // 10**9, tz=dt.UTC).astimezone(tz).date()
        for t in bars["ts_event"][order]
    ]
    cuts = np.flatnonzero(np.abs(np.diff(ratio) / ratio[:-1]) > 5e-4) + 1
    segments = np.split(np.arange(len(ratio)), cuts)
    last = float(np.median(ratio[segments[-1]]))
    rows = [
        {
            "date": days[int(seg[-1])].isoformat(),
            "price_factor": round(float(np.median(ratio[seg])) / last, 7),
            "split_factor": 1.0,
            "reference_price": float(close[order][int(seg[-1])]),
        }
        for seg in segments
    ]
    rows.append(
        {
            "date": FAR_FUTURE.isoformat(),
            "price_factor": 1.0,
            "split_factor": 1.0,
            "reference_price": 0.0,
        }
    )
    return rows
