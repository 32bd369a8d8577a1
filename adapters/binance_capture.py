"""Read a raw Binance spot WebSocket capture (hftbacktest's collector format) into tick arrays.

The capture is gzip text, one message per line::

    <local_receive_ns> <json>

``<json>`` is the Binance combined-stream envelope ``{"stream": ..., "data": {...}}``, or (once,
near the start of a capture) a REST depth snapshot ``{"lastUpdateId": ..., "bids": ..., "asks":
...}``. This reader keeps the level-1 streams and counts, but otherwise ignores, the rest:

- ``<symbol>@bookTicker`` becomes a ``QUOTE_DTYPE`` row: ``bid=b``, ``ask=a``, ``bid_size=B``,
  ``ask_size=A``. A bookTicker carries no exchange time, so ``ts_event`` and ``ts_init`` are both
  the local receive time.
- ``<symbol>@trade`` becomes a ``TRADE_DTYPE`` row: ``ts_event`` is the trade time ``T`` (ms)
  in ns, ``ts_init`` the local receive time, ``price=p``, ``size=q`` (base currency, BTC for
  BTCUSDT), ``aggressor`` -1 when ``m`` is true (the buyer was the maker, so the seller crossed
  the spread), else +1.
- ``<symbol>@depth...`` diffs and the REST snapshot are counted, not decoded into ticks.

Rows keep file order, which is local receive order. Beware that the capturing host's clock may
be skewed against the exchange's: in hftbacktest's BTCUSDT sample of 2024-08-08/09 the local
receive time is about 1.27 s *earlier* than the trade time ``T``, so a trade's ``ts_event`` is
later than its ``ts_init``. ``ts_init - ts_event`` is therefore not a latency, and quotes (local
time) and trades (exchange time) must not be merged on ``ts_event`` without correcting the skew.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from engine.errors import DataError
from engine.ticks import QUOTE_DTYPE, TRADE_DTYPE, QuoteArray, TradeArray

__all__ = ["BinanceCapture", "CaptureCounts", "read_binance_capture"]


@dataclass(slots=True)
class CaptureCounts:
    """How many lines of each kind a capture held."""

    lines: int = 0
    book_ticker: int = 0
    trade: int = 0
    depth: int = 0
    snapshot: int = 0
    symbols: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BinanceCapture:
    """The ticks read from one capture file, in file (local receive) order."""

    path: Path
    quotes: QuoteArray
    trades: TradeArray
    counts: CaptureCounts


def _decimal(data: dict[str, Any], key: str) -> float:
    """A Binance decimal string (``"61837.63000000"``) as a float; KeyError/ValueError if bad."""
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} is {type(value).__name__}, expected a decimal string")
    return float(value)


def _integer(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if type(value) is not int:
        raise ValueError(f"field {key!r} is {type(value).__name__}, expected an integer")
    return value


def read_binance_capture(path: str | Path, *, instrument: int = 0) -> BinanceCapture:
    """Read one capture file into quote and trade arrays, ``instrument`` in every row.

    Raises :class:`engine.errors.DataError`, naming the file and the 1-based line number, when
    a line is not ``<int> <json>``, the JSON is not a known message, a field is missing or of
    the wrong type, or the capture mixes symbols (every row gets the same ``instrument``).
    """
    path = Path(path)
    if not 0 <= instrument <= np.iinfo(np.uint32).max:
        raise ValueError(f"instrument must fit in uint32, got {instrument}")
    counts = CaptureCounts()
    quote_rows: list[tuple[int, int, int, int, float, float, float, float]] = []
    trade_rows: list[tuple[int, int, int, int, float, float]] = []
    lineno = 0
    try:
        with gzip.open(path, "rb") as stream:
            for lineno, raw in enumerate(stream, start=1):
                line = raw.rstrip(b"\r\n")
                if not line:
                    raise DataError(f"{path}:{lineno}: empty line")
                head, sep, body = line.partition(b" ")
                if not sep:
                    raise DataError(f"{path}:{lineno}: expected '<local_ns> <json>'")
                try:
                    local_ns = int(head)
                    msg = orjson.loads(body)
                    if local_ns <= 0:
                        raise ValueError(f"local timestamp {local_ns} is not positive")
                except (ValueError, orjson.JSONDecodeError) as exc:
                    raise DataError(f"{path}:{lineno}: cannot parse line: {exc}") from None
                if not isinstance(msg, dict):
                    raise DataError(f"{path}:{lineno}: JSON is not an object")
                try:
                    stream_name = msg.get("stream")
                    if stream_name is None:
                        if "lastUpdateId" in msg and "bids" in msg and "asks" in msg:
                            counts.snapshot += 1
                            continue
                        raise ValueError("neither a stream envelope nor a depth snapshot")
                    if not isinstance(stream_name, str) or "@" not in stream_name:
                        raise ValueError(f"bad stream name {stream_name!r}")
                    data = msg["data"]
                    if not isinstance(data, dict):
                        raise ValueError("'data' is not an object")
                    kind = stream_name.split("@", 2)[1]
                    if kind == "bookTicker":
                        row_q = (
                            local_ns,
                            local_ns,
                            instrument,
                            0,
                            _decimal(data, "b"),
                            _decimal(data, "a"),
                            _decimal(data, "B"),
                            _decimal(data, "A"),
                        )
                        quote_rows.append(row_q)
                        counts.book_ticker += 1
                    elif kind == "trade":
                        maker = data["m"]
                        if not isinstance(maker, bool):
                            raise ValueError("field 'm' is not a boolean")
                        row_t = (
                            _integer(data, "T") * 1_000_000,
                            local_ns,
                            instrument,
                            -1 if maker else 1,
                            _decimal(data, "p"),
                            _decimal(data, "q"),
                        )
                        trade_rows.append(row_t)
                        counts.trade += 1
                    elif kind == "depth":
                        counts.depth += 1
                        continue
                    else:
                        raise ValueError(f"unexpected stream {stream_name!r}")
                    symbol = data["s"]
                    if symbol not in counts.symbols:
                        if counts.symbols:
                            raise ValueError(
                                f"symbol {symbol!r} after {sorted(counts.symbols)}: one capture, "
                                "one instrument"
                            )
                        counts.symbols.add(symbol)
                except (KeyError, ValueError, TypeError) as exc:
                    detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                    raise DataError(f"{path}:{lineno}: {detail}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read gzip capture after line {lineno}: {exc}") from exc
    counts.lines = lineno
    quotes = np.array(quote_rows, dtype=QUOTE_DTYPE) if quote_rows else np.zeros(0, QUOTE_DTYPE)
    trades = np.array(trade_rows, dtype=TRADE_DTYPE) if trade_rows else np.zeros(0, TRADE_DTYPE)
    return BinanceCapture(path=path, quotes=quotes, trades=trades, counts=counts)
