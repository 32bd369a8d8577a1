"""Columnar tick batches: the form in which market data travels through a replay.

A batch is a numpy structured array. Rows are in event order; ``instrument`` is the
index of the instrument in the run's :class:`engine.instruments.InstrumentTable`, so
one batch may interleave several instruments. Prices are floats already rounded to the
instrument's price increment; sizes are in the instrument's quantity unit (shares,
contracts, coins, units of base currency).

Timestamps are integer nanoseconds since the Unix epoch, UTC:
``ts_event`` is when the tick happened at the source, ``ts_init`` when tradingd (or
the capturing host, for recorded data) received it.

The project's tick file is a plain ``.npy`` file of one of these dtypes, so it can be
memory-mapped and read in slices without loading the whole file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "ACTION_DTYPE",
    "BAR_DTYPE",
    "DAILY_NS",
    "QUOTE_DTYPE",
    "TRADE_DTYPE",
    "BarArray",
    "QuoteArray",
    "TradeArray",
    "empty_bars",
    "empty_quotes",
    "last_rows",
    "open_bars",
    "open_quotes",
    "open_trades",
    "save_bars",
    "save_ticks",
]

QUOTE_DTYPE = np.dtype(
    [
        ("ts_event", np.int64),
        ("ts_init", np.int64),
        ("instrument", np.uint32),
        ("flags", np.uint32),  # reserved for source flags (suspicious, condition); 0 if none
        ("bid", np.float64),
        ("ask", np.float64),
        ("bid_size", np.float64),
        ("ask_size", np.float64),
    ]
)
"""Top of book: best bid and ask with their displayed sizes (56 bytes a row)."""

TRADE_DTYPE = np.dtype(
    [
        ("ts_event", np.int64),
        ("ts_init", np.int64),
        ("instrument", np.uint32),
        ("aggressor", np.int8),  # +1 buyer initiated, -1 seller initiated, 0 unknown
        ("price", np.float64),
        ("size", np.float64),
    ]
)
"""A print on the tape. ``aggressor`` is the side that crossed the spread."""

BAR_DTYPE = np.dtype(
    [
        ("ts_event", np.int64),  # the bar's *close* time: when its last tick could be known
        ("ts_init", np.int64),
        ("instrument", np.uint32),
        ("interval_ns", np.int64),  # bar length in ns; 0 for volume bars; DAILY_NS for daily
        ("open", np.float64),
        ("high", np.float64),
        ("low", np.float64),
        ("close", np.float64),
        ("volume", np.float64),
    ]
)
"""An OHLCV bar (68 bytes a row). ``ts_event`` is the bar's close time, so a replay releases
a bar only once all of it could have been seen; the bar covers ``[ts_event - interval_ns,
ts_event)`` for time bars. ``volume`` is in the instrument's quantity unit."""

ACTION_DTYPE = np.dtype(
    [
        ("ts_event", np.int64),  # when the action is in force: before its ex-date's data
        ("ts_init", np.int64),
        ("instrument", np.uint32),
        ("split_ratio", np.float64),  # multiplies earlier prices: 0.25 for a 4:1 split
        ("dividend_ratio", np.float64),  # multiplies earlier prices for a dividend
        ("dividend", np.float64),  # cash per unit held before the action
    ]
)
"""Corporate actions as a replay stream (see ``engine.messages.CorporateActionEvent``)."""

DAILY_NS = 86_400_000_000_000
"""``interval_ns`` of a daily bar (a session, whatever its length)."""

QuoteArray = npt.NDArray[np.void]
TradeArray = npt.NDArray[np.void]
BarArray = npt.NDArray[np.void]


def last_rows(
    instrument_col: npt.NDArray[np.uint32], start: int = 0, end: int | None = None
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.intp]]:
    """The instruments among rows ``start:end`` of a batch and, for each, the index of its
    last row there: what a consumer that keeps only the latest price of each takes."""
    stop = len(instrument_col) if end is None else end
    seen, first = np.unique(instrument_col[start:stop][::-1], return_index=True)
    return seen, stop - 1 - first


def empty_quotes(n: int = 0) -> QuoteArray:
    """A zero-filled quote array of ``n`` rows."""
    return np.zeros(n, dtype=QUOTE_DTYPE)


def empty_bars(n: int = 0) -> BarArray:
    """A zero-filled bar array of ``n`` rows."""
    return np.zeros(n, dtype=BAR_DTYPE)


def save_bars(path: str | Path, bars: BarArray) -> None:
    """Write bars to a ``.npy`` file of ``BAR_DTYPE``."""
    if bars.dtype != BAR_DTYPE:
        raise ValueError(f"not a bar array: dtype {bars.dtype}")
    np.save(Path(path), bars, allow_pickle=False)


def open_bars(path: str | Path) -> BarArray:
    """Memory-map a bar file written by :func:`save_bars`."""
    arr = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    if arr.dtype != BAR_DTYPE:
        raise ValueError(f"{path}: expected bars, found dtype {arr.dtype}")
    return arr  # type: ignore[no-any-return]


def save_ticks(path: str | Path, ticks: npt.NDArray[np.void]) -> None:
    """Write ticks to the project's tick file format (a ``.npy`` file)."""
    if ticks.dtype not in (QUOTE_DTYPE, TRADE_DTYPE):
        raise ValueError(f"not a tick array: dtype {ticks.dtype}")
    np.save(Path(path), ticks, allow_pickle=False)


def open_quotes(path: str | Path) -> QuoteArray:
    """Memory-map a quote tick file; slices are read from disk only when touched."""
    arr = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    if arr.dtype != QUOTE_DTYPE:
        raise ValueError(f"{path}: expected quote ticks, found dtype {arr.dtype}")
    return arr  # type: ignore[no-any-return]


def open_trades(path: str | Path) -> TradeArray:
    """Memory-map a trade tick file; slices are read from disk only when touched."""
    arr = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    if arr.dtype != TRADE_DTYPE:
        raise ValueError(f"{path}: expected trade ticks, found dtype {arr.dtype}")
    return arr  # type: ignore[no-any-return]
