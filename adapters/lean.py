"""Read QuantConnect Lean tick zips (AlgoSeek US equities, Oanda FX) into tick arrays.

Each Lean tick zip holds exactly one CSV without a header. The trading date is not in the CSV:
it comes from the zip's name (``20131007_quote.zip``), and ``Time`` is milliseconds since
midnight of that date in the data's time zone, America/New_York for US equities and UTC for
Oanda FX. Equity prices are integers in deci-cents (1/10,000 of a dollar); FX prices are plain
decimals.

- Equity quotes, ``Time,BidPrice,BidSize,AskPrice,AskSize,Exchange,QuoteCondition,Suspicious``:
  each row carries one side (the other side's price and size are 0). One consolidated NBBO
  update is a bid row followed by an ask row with the same ``Time``; it becomes one
  ``QUOTE_DTYPE`` row. See :func:`read_equity_quote_ticks` for rows that do not pair.
- Equity trades, ``Time,Price,Quantity,Exchange,SaleCondition,Suspicious``: one
  ``TRADE_DTYPE`` row each, aggressor 0 (unknown). Identical rows are separate prints and are
  kept.
- FX quotes, ``Time,Bid,Ask`` with CRLF line endings: one ``QUOTE_DTYPE`` row each. The source
  has no sizes, so ``bid_size`` and ``ask_size`` are 0.0, which here means *unknown*, not empty.

Lean data carries no receive time, so ``ts_init`` equals ``ts_event``. The parsing is one
numba pass over the CSV bytes, which reads a BAC quote day (576,096 rows) in about 75 ms
including the unzip, handles LF and CRLF, and finds the exact line of a malformed field: it
raises :class:`engine.errors.DataError` naming the file and the 1-based line.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.corporate_actions import FactorRow, MapRow
from engine.errors import DataError
from engine.ticks import (
    BAR_DTYPE,
    DAILY_NS,
    QUOTE_DTYPE,
    TRADE_DTYPE,
    BarArray,
    QuoteArray,
    TradeArray,
)

__all__ = [
    "EQUITY_PRICE_SCALE",
    "EQUITY_TIME_ZONE",
    "FLAG_SUSPICIOUS",
    "read_daily_bars",
    "read_equity_quote_ticks",
    "read_equity_trade_ticks",
    "read_factor_file",
    "read_fx_quote_ticks",
    "read_map_file",
    "read_minute_quote_bars",
    "read_minute_trade_bars",
]

EQUITY_PRICE_SCALE = 10_000
"""Lean equity prices are integers in deci-cents: divide by this to get dollars."""

EQUITY_TIME_ZONE = ZoneInfo("America/New_York")
"""The time zone of Lean's US equity ``Time`` column."""

FLAG_SUSPICIOUS = 1
"""``flags`` bit set on a quote when the vendor marked one of its source rows ``Suspicious``."""

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(func))


# Field kinds understood by the CSV kernel.
_INT = 0  # optional '-', decimal digits -> ints[row, col]
_DEC = 1  # optional '-', up to 15 digits with an optional '.' -> floats[row, col]
_HEX = 2  # hexadecimal digits -> ints[row, col]
_TEXT = 3  # any non-empty text without ',' -> ints[row, col] = its first byte

# Exact powers of ten: mantissa / 10**k is then the correctly rounded decimal, as float(text).
_POW10 = np.array([10.0**k for k in range(19)], dtype=np.float64)


@_jit
def _parse_csv(
    buf: npt.NDArray[np.uint8],
    kinds: npt.NDArray[np.int8],
    ints: npt.NDArray[np.int64],
    floats: npt.NDArray[np.float64],
) -> tuple[int, int, int]:
    """Parse headerless CSV bytes. Returns (rows, error_row, error_col); error_row -1 if none.

    Lines end in LF or CRLF; a final newline is optional. ``ints``/``floats`` have one row per
    line (at least) and one column per field.
    """
    n = buf.shape[0]
    ncol = kinds.shape[0]
    pos = 0
    row = 0
    while pos < n:
        for col in range(ncol):
            kind = kinds[col]
            if kind == 3:  # _TEXT
                start = pos
                while pos < n and buf[pos] != 44 and buf[pos] != 10 and buf[pos] != 13:
                    pos += 1
                if pos == start:
                    return row, row, col
                ints[row, col] = np.int64(buf[start])
            elif kind == 2:  # _HEX
                value = np.int64(0)
                digits = 0
                while pos < n:
                    c = np.int64(buf[pos])
                    if 48 <= c <= 57:
                        d = c - 48
                    elif 97 <= c <= 102:
                        d = c - 87
                    elif 65 <= c <= 70:
                        d = c - 55
                    else:
                        break
                    value = value * 16 + d
                    digits += 1
                    pos += 1
                if digits == 0 or digits > 15:
                    return row, row, col
                ints[row, col] = value
            else:  # _INT or _DEC
                negative = False
                if pos < n and buf[pos] == 45:
                    negative = True
                    pos += 1
                mantissa = np.int64(0)
                digits = 0
                decimals = 0
                seen_point = False
                while pos < n:
                    c = np.int64(buf[pos])
                    if 48 <= c <= 57:
                        mantissa = mantissa * 10 + (c - 48)
                        digits += 1
                        if seen_point:
                            decimals += 1
                    elif c == 46 and kind == 1 and not seen_point:
                        seen_point = True
                    else:
                        break
                    pos += 1
                # 15 digits keep a decimal's mantissa exact in float64 (< 2**53)
                if digits == 0 or digits > (18 if kind == 0 else 15):
                    return row, row, col
                if negative:
                    mantissa = -mantissa
                if kind == 0:
                    ints[row, col] = mantissa
                else:
                    floats[row, col] = mantissa / _POW10[decimals]
            # the delimiter after the field
            if col < ncol - 1:
                if pos >= n or buf[pos] != 44:
                    return row, row, col
                pos += 1
            elif pos < n:
                if buf[pos] == 13 and pos + 1 < n and buf[pos + 1] == 10:
                    pos += 2
                elif buf[pos] == 10:
                    pos += 1
                else:
                    return row, row, col
        row += 1
    return row, -1, -1


@_jit
def _pair_quote_rows(
    time_ms: npt.NDArray[np.int64],
    side: npt.NDArray[np.int8],
    bid_src: npt.NDArray[np.int64],
    ask_src: npt.NDArray[np.int64],
) -> int:
    """Group one-sided rows into NBBO updates; fill source row indices (-1: side unknown).

    ``side`` is 1 for a bid row, 2 for an ask row, 3 for a row with both sides. Returns the
    number of updates written.
    """
    n = time_ms.shape[0]
    i = 0
    out = 0
    while i < n:
        s = side[i]
        if s == 3:
            bid_src[out] = i
            ask_src[out] = i
            i += 1
        elif s == 1 and i + 1 < n and side[i + 1] == 2 and time_ms[i + 1] == time_ms[i]:
            bid_src[out] = i
            ask_src[out] = i + 1
            i += 2
        elif s == 1:
            bid_src[out] = i
            ask_src[out] = -1
            i += 1
        else:
            bid_src[out] = -1
            ask_src[out] = i
            i += 1
        out += 1
    return out


_DATE_IN_NAME = re.compile(r"^(\d{8})_")


def _trading_date(path: Path, date: dt.date | None) -> dt.date:
    """The file's date: ``date`` if given (checked against the name), else from the name."""
    match = _DATE_IN_NAME.match(path.name)
    named: dt.date | None = None
    if match:
        try:
            named = dt.datetime.strptime(match.group(1), "%Y%m%d").date()  # noqa: DTZ007 - a date
        except ValueError:
            named = None
    if date is None:
        if named is None:
            raise DataError(f"{path}: no YYYYMMDD_ date in the file name; pass date=")
        return named
    if named is not None and named != date:
        raise DataError(f"{path}: file name says {named}, but date={date} was given")
    return date


def _read_single_csv(path: Path) -> tuple[str, bytes]:
    """The name and bytes of the one CSV inside a Lean zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                names = [m.filename for m in members]
                raise DataError(f"{path}: expected exactly one file in the zip, found {names}")
            return members[0].filename, archive.read(members[0])
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read zip: {exc}") from exc


def _line_text(raw: bytes, row: int) -> str:
    lines = raw.split(b"\n", row + 1)
    text = lines[row] if row < len(lines) else b""
    return text.rstrip(b"\r").decode("utf-8", errors="replace")[:200]


def _parse(
    path: Path, columns: tuple[tuple[str, int], ...]
) -> tuple[str, bytes, npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Parse the zip's CSV into an int and a float matrix (one column per field)."""
    member, raw = _read_single_csv(path)
    buf = np.frombuffer(raw, dtype=np.uint8)
    capacity = int(np.count_nonzero(buf == 10)) + 1
    kinds = np.array([kind for _, kind in columns], dtype=np.int8)
    ints = np.zeros((capacity, len(columns)), dtype=np.int64)
    floats = np.zeros((capacity, len(columns)), dtype=np.float64)
    rows, bad_row, bad_col = _parse_csv(buf, kinds, ints, floats)
    if bad_row >= 0:
        name = columns[bad_col][0]
        raise DataError(
            f"{path} ({member}) line {bad_row + 1}: cannot read field {bad_col + 1} ({name}) "
            f"of {_line_text(raw, bad_row)!r}; expected {len(columns)} fields "
            f"{','.join(n for n, _ in columns)}"
        )
    return member, raw, ints[:rows], floats[:rows]


def _check_times(path: Path, member: str, raw: bytes, time_ms: npt.NDArray[np.int64]) -> None:
    bad = np.flatnonzero((time_ms < 0) | (time_ms > 86_400_000))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{path} ({member}) line {row + 1}: Time {int(time_ms[row])} ms is not within a day: "
            f"{_line_text(raw, row)!r}"
        )


def _utc_ns(date: dt.date, tz: dt.tzinfo, time_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Wall-clock ms since local midnight of ``date`` in ``tz`` -> ns since the epoch, UTC.

    Lean adds the milliseconds to the local midnight and then converts to UTC, so on a day
    when daylight saving starts or ends ``Time`` is wall-clock time, not elapsed time. The UTC
    offset is looked up per minute of the day (zone transitions fall on whole minutes);
    ambiguous wall times take the first occurrence (``fold=0``).
    """
    midnight = dt.datetime(date.year, date.month, date.day)  # naive wall clock  # noqa: DTZ001
    epoch_wall_ms = (midnight - dt.datetime(1970, 1, 1)).days * 86_400_000  # noqa: DTZ001
    start = midnight.replace(tzinfo=tz).utcoffset()
    end = (midnight + dt.timedelta(hours=23, minutes=59)).replace(tzinfo=tz).utcoffset()
    if start is None or end is None:
        raise ValueError(f"time zone {tz} has no UTC offset")
    if start == end:
        offset_ms = np.int64(start // dt.timedelta(milliseconds=1))
        return (time_ms + (epoch_wall_ms - offset_ms)) * 1_000_000
    offsets = np.empty(24 * 60 + 1, dtype=np.int64)
    for minute in range(offsets.size):
        wall = (midnight + dt.timedelta(minutes=minute)).replace(tzinfo=tz)
        off = wall.utcoffset()
        assert off is not None
        offsets[minute] = off // dt.timedelta(milliseconds=1)
    return (time_ms + epoch_wall_ms - offsets[time_ms // 60_000]) * 1_000_000


def _check_instrument(instrument: int) -> None:
    if not 0 <= instrument <= np.iinfo(np.uint32).max:
        raise ValueError(f"instrument must fit in uint32, got {instrument}")


_EQUITY_QUOTE_COLUMNS = (
    ("Time", _INT),
    ("BidPrice", _INT),
    ("BidSize", _INT),
    ("AskPrice", _INT),
    ("AskSize", _INT),
    ("Exchange", _TEXT),
    ("QuoteCondition", _TEXT),
    ("Suspicious", _INT),
)


def read_equity_quote_ticks(
    path: str | Path, date: dt.date | None = None, instrument: int = 0
) -> QuoteArray:
    """Read a Lean/AlgoSeek equity ``*_quote.zip`` into consolidated NBBO quote rows.

    A bid row followed by an ask row with the same ``Time`` is one NBBO update and gives one
    row with both sides. A row that does not pair (the files of IBM and BAC on 2013-10-07 open
    with a lone ask row) gives a row whose other side is NaN (price and size): it is not a
    usable quote, and :class:`engine.validation.QuoteValidator` rejects it, rather than being
    completed with a stale side that could make up a crossed or locked quote. A row with both
    sides set is a complete quote by itself. A row with neither side is a ``DataError``.

    ``flags`` has :data:`FLAG_SUSPICIOUS` set when a source row of the update is marked
    ``Suspicious``. ``date`` defaults to the date in the file name (``YYYYMMDD_quote.zip``).
    Prices are dollars (deci-cents / 10,000), sizes shares.
    """
    path = Path(path)
    _check_instrument(instrument)
    day = _trading_date(path, date)
    member, raw, ints, _ = _parse(path, _EQUITY_QUOTE_COLUMNS)
    time_ms = ints[:, 0]
    _check_times(path, member, raw, time_ms)
    has_bid = (ints[:, 1] != 0) | (ints[:, 2] != 0)
    has_ask = (ints[:, 3] != 0) | (ints[:, 4] != 0)
    empty = np.flatnonzero(~has_bid & ~has_ask)
    if empty.size:
        row = int(empty[0])
        raise DataError(
            f"{path} ({member}) line {row + 1}: neither a bid nor an ask: {_line_text(raw, row)!r}"
        )
    side = has_bid.astype(np.int8) + 2 * has_ask.astype(np.int8)
    n = time_ms.shape[0]
    bid_src = np.empty(n, dtype=np.int64)
    ask_src = np.empty(n, dtype=np.int64)
    count = _pair_quote_rows(np.ascontiguousarray(time_ms), side, bid_src, ask_src)
    bid_src = bid_src[:count]
    ask_src = ask_src[:count]
    has_bid_src = bid_src >= 0
    has_ask_src = ask_src >= 0
    bid_row = np.where(has_bid_src, bid_src, 0)
    ask_row = np.where(has_ask_src, ask_src, 0)

    out = np.zeros(count, dtype=QUOTE_DTYPE)
    ts = _utc_ns(day, EQUITY_TIME_ZONE, time_ms[np.where(has_bid_src, bid_src, ask_src)])
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["instrument"] = instrument
    out["bid"] = np.where(has_bid_src, ints[bid_row, 1] / EQUITY_PRICE_SCALE, np.nan)
    out["bid_size"] = np.where(has_bid_src, ints[bid_row, 2], np.nan)
    out["ask"] = np.where(has_ask_src, ints[ask_row, 3] / EQUITY_PRICE_SCALE, np.nan)
    out["ask_size"] = np.where(has_ask_src, ints[ask_row, 4], np.nan)
    suspicious = ints[:, 7] != 0
    flagged = (has_bid_src & suspicious[bid_row]) | (has_ask_src & suspicious[ask_row])
    out["flags"] = np.where(flagged, FLAG_SUSPICIOUS, 0)
    return out


_EQUITY_TRADE_COLUMNS = (
    ("Time", _INT),
    ("Price", _INT),
    ("Quantity", _INT),
    ("Exchange", _TEXT),
    ("SaleCondition", _HEX),
    ("Suspicious", _INT),
)


def read_equity_trade_ticks(
    path: str | Path,
    date: dt.date | None = None,
    instrument: int = 0,
    *,
    drop_suspicious: bool = False,
) -> TradeArray:
    """Read a Lean/AlgoSeek equity ``*_trade.zip`` into trade rows, in file order.

    Every row is kept, including exact duplicates: they are separate prints with the same
    millisecond, price, size, venue and condition. ``aggressor`` is 0 (the tape does not say).
    ``SaleCondition`` (hexadecimal bit flags) and ``Exchange`` are checked but not carried,
    since ``TRADE_DTYPE`` has no column for them; neither is ``Suspicious``, so pass
    ``drop_suspicious=True`` to leave out the rows the vendor marked suspicious.
    """
    path = Path(path)
    _check_instrument(instrument)
    day = _trading_date(path, date)
    member, raw, ints, _ = _parse(path, _EQUITY_TRADE_COLUMNS)
    _check_times(path, member, raw, ints[:, 0])
    if drop_suspicious:
        ints = ints[ints[:, 5] == 0]
    time_ms = ints[:, 0]
    out = np.zeros(time_ms.shape[0], dtype=TRADE_DTYPE)
    ts = _utc_ns(day, EQUITY_TIME_ZONE, time_ms)
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["instrument"] = instrument
    out["price"] = ints[:, 1] / EQUITY_PRICE_SCALE
    out["size"] = ints[:, 2]
    return out


_FX_QUOTE_COLUMNS = (("Time", _INT), ("Bid", _DEC), ("Ask", _DEC))


def read_fx_quote_ticks(
    path: str | Path, date: dt.date | None = None, instrument: int = 0
) -> QuoteArray:
    """Read a Lean/Oanda FX ``*_quote.zip`` (``Time,Bid,Ask``, ms since midnight UTC).

    Sizes are 0.0, meaning *unknown*: the source has none. ``date`` defaults to the date in
    the file name.
    """
    path = Path(path)
    _check_instrument(instrument)
    day = _trading_date(path, date)
    member, raw, ints, floats = _parse(path, _FX_QUOTE_COLUMNS)
    time_ms = ints[:, 0]
    _check_times(path, member, raw, time_ms)
    out = np.zeros(time_ms.shape[0], dtype=QUOTE_DTYPE)
    ts = _utc_ns(day, dt.UTC, time_ms)
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["instrument"] = instrument
    out["bid"] = floats[:, 1]
    out["ask"] = floats[:, 2]
    return out


# --- bars, factor files and map files ------------------------------------------------------

DAILY_CLOSE = dt.time(16, 0)
"""A Lean US equity daily bar is stamped with its session's close, 16:00 New York."""


def _read_text(path: Path) -> tuple[str, str]:
    """The member name and text of a Lean zip's one CSV, or of a plain CSV file."""
    if path.suffix == ".zip":
        member, raw = _read_single_csv(path)
    else:
        try:
            member, raw = path.name, path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc}") from exc
    try:
        return member, raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not ASCII text: {exc}") from None


def read_daily_bars(
    path: str | Path,
    instrument: int = 0,
    *,
    price_scale: float = EQUITY_PRICE_SCALE,
    tz: dt.tzinfo = EQUITY_TIME_ZONE,
    close: dt.time = DAILY_CLOSE,
) -> BarArray:
    """Read a Lean daily bar zip (``DateTime,Open,High,Low,Close,Volume``, no header, the
    date as ``YYYYMMDD 00:00`` in New York, prices in deci-cents) into ``BAR_DTYPE`` rows.

    ``ts_event`` is the session's close (``close`` on the bar's date in ``tz``, 16:00 New
    York: 20:00 or 21:00 UTC, so the UTC date is the trading date); ``interval_ns`` is
    :data:`engine.ticks.DAILY_NS`. Prices are raw, as traded: apply the factor file with
    :mod:`engine.corporate_actions`.
    """
    path = Path(path)
    _check_instrument(instrument)
    member, text = _read_text(path)
    dates: list[dt.date] = []
    values: list[tuple[float, float, float, float, float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        fields = line.split(",")
        try:
            if len(fields) != 6:
                raise ValueError(f"expected 6 fields, found {len(fields)}")
            stamp = fields[0]
            if len(stamp) < 8 or not stamp[:8].isdigit():
                raise ValueError(f"DateTime {stamp!r} is not YYYYMMDD HH:MM")
            dates.append(dt.date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8])))
            o, h, lo, c, v = (float(x) for x in fields[1:])
        except ValueError as exc:
            raise DataError(f"{path} ({member}) line {lineno}: {exc}: {line[:200]!r}") from None
        values.append((o / price_scale, h / price_scale, lo / price_scale, c / price_scale, v))
    out = np.zeros(len(values), dtype=BAR_DTYPE)
    if not values:
        return out
    ts = np.array([_close_ns(d, close, tz) for d in dates], dtype=np.int64)
    arr = np.array(values, dtype=np.float64)
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["instrument"] = instrument
    out["interval_ns"] = DAILY_NS
    for j, col in enumerate(("open", "high", "low", "close", "volume")):
        out[col] = arr[:, j]
    return out


def _close_ns(day: dt.date, close: dt.time, tz: dt.tzinfo) -> int:
    local = dt.datetime.combine(day, close, tzinfo=tz)
    return int(local.timestamp()) * 1_000_000_000


_MINUTE_NS = 60_000_000_000


def read_minute_trade_bars(
    path: str | Path,
    date: dt.date | None = None,
    instrument: int = 0,
    *,
    tz: dt.tzinfo = EQUITY_TIME_ZONE,
) -> BarArray:
    """Read a Lean equity minute ``*_trade.zip`` (``Time,Open,High,Low,Close,Volume``,
    ``Time`` the bar's *start* in ms since midnight New York, prices in deci-cents).

    ``ts_event`` is the bar's close, start + 1 minute; ``interval_ns`` one minute.
    """
    path = Path(path)
    _check_instrument(instrument)
    day = _trading_date(path, date)
    columns = tuple((name, _INT) for name in ("Time", "Open", "High", "Low", "Close", "Volume"))
    member, raw, ints, _ = _parse(path, columns)
    _check_times(path, member, raw, ints[:, 0])
    out = np.zeros(len(ints), dtype=BAR_DTYPE)
    ts = _utc_ns(day, tz, ints[:, 0]) + _MINUTE_NS
    out["ts_event"] = ts
    out["ts_init"] = ts
    out["instrument"] = instrument
    out["interval_ns"] = _MINUTE_NS
    for j, col in enumerate(("open", "high", "low", "close"), start=1):
        out[col] = ints[:, j] / EQUITY_PRICE_SCALE
    out["volume"] = ints[:, 5]
    return out


def read_minute_quote_bars(
    path: str | Path,
    date: dt.date | None = None,
    instrument: int = 0,
    *,
    fx: bool = False,
) -> tuple[BarArray, BarArray]:
    """Read a Lean minute ``*_quote.zip`` (``Time,BidOpen,BidHigh,BidLow,BidClose,
    LastBidSize,AskOpen,AskHigh,AskLow,AskClose,LastAskSize``) into a bid and an ask bar
    series. Equity files (``fx=False``) are in deci-cents and New York time; Oanda FX files
    (``fx=True``) in plain decimals and UTC. ``Time`` is the bar's start; ``ts_event`` its
    close. Quote bars have no traded volume: ``volume`` is 0.
    """
    path = Path(path)
    _check_instrument(instrument)
    day = _trading_date(path, date)
    names = (
        "Time",
        "BidOpen",
        "BidHigh",
        "BidLow",
        "BidClose",
        "LastBidSize",
        "AskOpen",
        "AskHigh",
        "AskLow",
        "AskClose",
        "LastAskSize",
    )
    price_kind = _DEC if fx else _INT
    columns = tuple((n, _INT if n == "Time" or n.endswith("Size") else price_kind) for n in names)
    member, raw, ints, floats = _parse(path, columns)
    _check_times(path, member, raw, ints[:, 0])
    ts = _utc_ns(day, dt.UTC if fx else EQUITY_TIME_ZONE, ints[:, 0]) + _MINUTE_NS
    sides = []
    for first in (1, 6):
        out = np.zeros(len(ints), dtype=BAR_DTYPE)
        out["ts_event"] = ts
        out["ts_init"] = ts
        out["instrument"] = instrument
        out["interval_ns"] = _MINUTE_NS
        for j, col in enumerate(("open", "high", "low", "close")):
            out[col] = floats[:, first + j] if fx else ints[:, first + j] / EQUITY_PRICE_SCALE
        sides.append(out)
    return sides[0], sides[1]


def _csv_rows(path: Path, n_fields: int) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != n_fields:
            raise DataError(
                f"{path} line {lineno}: expected {n_fields} fields, found {len(fields)}: "
                f"{line[:200]!r}"
            )
        rows.append((lineno, fields))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _yyyymmdd(path: Path, lineno: int, text: str) -> dt.date:
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError("not YYYYMMDD")
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError as exc:
        raise DataError(f"{path} line {lineno}: date {text!r}: {exc}") from None


def read_factor_file(path: str | Path) -> list[FactorRow]:
    """Read a Lean factor file: ``date,price_factor,split_factor,reference_price`` per row
    (see :mod:`engine.corporate_actions` for what they mean and how to apply them)."""
    path = Path(path)
    out: list[FactorRow] = []
    for lineno, fields in _csv_rows(path, 4):
        day = _yyyymmdd(path, lineno, fields[0])
        try:
            pf, sf, ref = (float(x) for x in fields[1:])
        except ValueError as exc:
            raise DataError(f"{path} line {lineno}: {exc}") from None
        if not (pf > 0 and sf > 0):
            raise DataError(f"{path} line {lineno}: factors must be positive: {fields}")
        if out and day <= out[-1].date:
            raise DataError(f"{path} line {lineno}: date {day} is not after {out[-1].date}")
        out.append(FactorRow(date=day, price_factor=pf, split_factor=sf, reference_price=ref))
    return out


def read_map_file(path: str | Path) -> list[MapRow]:
    """Read a Lean map file: ``date,ticker_in_use_until_that_date,exchange_code`` per row."""
    path = Path(path)
    out: list[MapRow] = []
    for lineno, fields in _csv_rows(path, 3):
        day = _yyyymmdd(path, lineno, fields[0])
        if not fields[1]:
            raise DataError(f"{path} line {lineno}: empty ticker")
        if out and day <= out[-1].date:
            raise DataError(f"{path} line {lineno}: date {day} is not after {out[-1].date}")
        out.append(MapRow(date=day, ticker=fields[1].upper(), exchange=fields[2]))
    return out
