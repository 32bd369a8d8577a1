"""Bars from trade ticks: time bars and volume bars, one shot or chunk by chunk.

**Time bars.** A bar covers ``[start, start + interval)`` with ``start`` a multiple of the
interval counted from ``origin_ns`` (0: the Unix epoch, so minute and hour bars start on
whole UTC minutes and hours; pass the local midnight's offset for bars aligned to a local
session). Its ``ts_event`` is its close time, ``start + interval``: a bar is released only
once its interval is over. Open, high, low and close are the first, highest, lowest and last
trade price in file order; volume is the sum of sizes. An interval without trades makes no
bar (as vendors do: Lean writes a minute bar only for minutes with trades).

**Volume bars.** A bar closes as soon as ``volume`` units have traded. A trade that crosses
the threshold is split: the part that fills the bar closes it, the rest opens the next one
(at the same price and time), so every bar has exactly ``volume`` (a block trade can close
several bars at once). ``ts_event`` is the time of the trade that filled the bar and
``interval_ns`` is 0. The partly filled bar at the end is not emitted.

**Chunk by chunk.** :class:`BarAggregator` takes trades in time order, in chunks of any size,
and returns the bars completed so far, sorted by ``(ts_event, instrument)``. A time bar is
complete when a later trade of its instrument arrives or when the latest trade seen (of any
instrument) is at or past its close time, since then, in time order, nothing more can fall
into it. :meth:`BarAggregator.flush` closes the rest at the end of the data. Feeding the
same trades in one chunk or in many gives the same bars (tested); :func:`time_bars` and
:func:`volume_bars` are the one-shot forms.

**Closing on a clock.** :meth:`BarAggregator.close_until` says that time has reached a given
instant without a trade to show it: the time bars that close at or before it are complete.
A live bar builder calls it from a timer set at :meth:`BarAggregator.next_close_ns`, so a
bar is released when its interval ends, not when the next trade happens to come. Trades
stamped before the boundary it passed would belong to bars already released, and are
refused from then on. :meth:`BarAggregator.first_completion` looks ahead: at which trade of
a window some bar would complete, without changing anything.

The kernel is one numba pass over the trades, with per-instrument state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.ticks import BAR_DTYPE, TRADE_DTYPE, BarArray, TradeArray

__all__ = ["BarAggregator", "time_bars", "volume_bars"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(func))


_TIME = 0
_VOLUME = 1


@_jit
def _emit(
    out_ts: npt.NDArray[np.int64],
    out_inst: npt.NDArray[np.int64],
    out_ohlcv: npt.NDArray[np.float64],
    n_out: int,
    ts: int,
    k: int,
    st: npt.NDArray[np.float64],
) -> int:
    out_ts[n_out] = ts
    out_inst[n_out] = k
    out_ohlcv[n_out, 0] = st[k, 0]
    out_ohlcv[n_out, 1] = st[k, 1]
    out_ohlcv[n_out, 2] = st[k, 2]
    out_ohlcv[n_out, 3] = st[k, 3]
    out_ohlcv[n_out, 4] = st[k, 4]
    return n_out + 1


@_jit
def _aggregate(
    ts: npt.NDArray[np.int64],
    inst: npt.NDArray[np.uint32],
    price: npt.NDArray[np.float64],
    size: npt.NDArray[np.float64],
    mode: int,
    interval: int,
    origin: int,
    threshold: float,
    open_bucket: npt.NDArray[np.int64],
    st: npt.NDArray[np.float64],
    out_ts: npt.NDArray[np.int64],
    out_inst: npt.NDArray[np.int64],
    out_ohlcv: npt.NDArray[np.float64],
    close_until: int,
) -> int:
    """Fold trades into the per-instrument state; write completed bars. Returns how many.

    ``open_bucket[k]`` is the bucket index of instrument k's open time bar (-1 if none; for
    volume bars 0/1: none/open). ``st[k]`` is open, high, low, close, volume. After the
    trades, time bars that close at or before ``close_until`` are completed too.
    """
    n_out = 0
    for i in range(ts.shape[0]):
        k = inst[i]
        p = price[i]
        q = size[i]
        if mode == 0:
            bucket = (ts[i] - origin) // interval
            if open_bucket[k] != bucket:
                if open_bucket[k] >= 0:
                    n_out = _emit(
                        out_ts,
                        out_inst,
                        out_ohlcv,
                        n_out,
                        origin + (open_bucket[k] + 1) * interval,
                        k,
                        st,
                    )
                open_bucket[k] = bucket
                st[k, 0] = p
                st[k, 1] = p
                st[k, 2] = p
                st[k, 3] = p
                st[k, 4] = q
            else:
                st[k, 1] = max(st[k, 1], p)
                st[k, 2] = min(st[k, 2], p)
                st[k, 3] = p
                st[k, 4] += q
        else:
            remaining = q
            while True:
                if open_bucket[k] == 0:
                    open_bucket[k] = 1
                    st[k, 0] = p
                    st[k, 1] = p
                    st[k, 2] = p
                    st[k, 3] = p
                    st[k, 4] = 0.0
                else:
                    st[k, 1] = max(st[k, 1], p)
                    st[k, 2] = min(st[k, 2], p)
                    st[k, 3] = p
                room = threshold - st[k, 4]
                if remaining >= room:
                    st[k, 4] = threshold
                    n_out = _emit(out_ts, out_inst, out_ohlcv, n_out, ts[i], k, st)
                    open_bucket[k] = 0
                    remaining -= room
                    # a float remainder of the threshold's rounding is not a new trade
                    if remaining <= threshold * 1e-12:
                        break
                else:
                    st[k, 4] += remaining
                    break
    if mode == 0:
        for k in range(open_bucket.shape[0]):
            if open_bucket[k] >= 0:
                close_ts = origin + (open_bucket[k] + 1) * interval
                if close_ts <= close_until:
                    n_out = _emit(out_ts, out_inst, out_ohlcv, n_out, close_ts, k, st)
                    open_bucket[k] = -1
    return n_out


@_jit
def _first_completion(
    ts: npt.NDArray[np.int64],
    inst: npt.NDArray[np.uint32],
    size: npt.NDArray[np.float64],
    mode: int,
    interval: int,
    origin: int,
    threshold: float,
    open_bucket: npt.NDArray[np.int64],
    st: npt.NDArray[np.float64],
    n_instruments: int,
) -> int:
    """The index of the first trade at which :func:`_aggregate` would complete a bar (the
    number of trades if none), reading the state and changing none of it.

    Time bars: a bar completes once a trade is at or past the earliest close of the open
    bars (those opened by earlier trades of the window included). Volume bars: the same
    float operations as the kernel, on a copy of the volumes so far.
    """
    n = len(ts)
    if mode == 0:
        earliest = 9_223_372_036_854_775_807  # no open bar: never
        for k in range(open_bucket.shape[0]):
            if open_bucket[k] >= 0:
                earliest = min(earliest, origin + (open_bucket[k] + 1) * interval)
        for i in range(n):
            if ts[i] >= earliest:
                return i
            earliest = min(earliest, origin + ((ts[i] - origin) // interval + 1) * interval)
        return n
    filled = np.zeros(n_instruments, dtype=np.float64)
    for k in range(open_bucket.shape[0]):
        if open_bucket[k] != 0:
            filled[k] = st[k, 4]
    for i in range(n):
        k = inst[i]
        if size[i] >= threshold - filled[k]:
            return i
        filled[k] += size[i]
    return n


_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


class BarAggregator:
    """Builds time bars (``interval_ns``) or volume bars (``volume``) from trades, chunk by
    chunk, for any number of instruments (the trades' ``instrument`` column).

    Give exactly one of ``interval_ns`` and ``volume``. Trades must come in time order
    (``ts_event`` non-decreasing over all chunks); a chunk that goes back in time raises
    ``ValueError``.
    """

    def __init__(
        self,
        *,
        interval_ns: int | None = None,
        volume: float | None = None,
        origin_ns: int = 0,
    ) -> None:
        if (interval_ns is None) == (volume is None):
            raise ValueError("give exactly one of interval_ns (time bars) and volume")
        if interval_ns is not None and interval_ns <= 0:
            raise ValueError(f"interval_ns must be positive, got {interval_ns}")
        if volume is not None and not (np.isfinite(volume) and volume > 0):
            raise ValueError(f"volume must be a positive number, got {volume}")
        self.mode = _TIME if interval_ns is not None else _VOLUME
        self.interval_ns = int(interval_ns or 0)
        self.volume = float(volume or 0.0)
        self.origin_ns = int(origin_ns)
        self._open = np.full(0, -1 if self.mode == _TIME else 0, dtype=np.int64)
        self._state = np.zeros((0, 5), dtype=np.float64)
        self._last_ts = _INT64_MIN

    def _grow(self, n_instruments: int) -> None:
        have = len(self._open)
        if n_instruments <= have:
            return
        fill = -1 if self.mode == _TIME else 0
        self._open = np.concatenate(
            [self._open, np.full(n_instruments - have, fill, dtype=np.int64)]
        )
        self._state = np.concatenate([self._state, np.zeros((n_instruments - have, 5))])

    def update(self, trades: TradeArray) -> BarArray:
        """Fold in the next trades; the bars completed by them, by close time."""
        if trades.dtype != TRADE_DTYPE:
            raise TypeError(f"expected TRADE_DTYPE trades, got {trades.dtype}")
        if len(trades) == 0:
            return np.zeros(0, dtype=BAR_DTYPE)
        ts = np.ascontiguousarray(trades["ts_event"])
        if int(ts[0]) < self._last_ts or (len(ts) > 1 and bool(np.any(np.diff(ts) < 0))):
            raise ValueError("trades are not in time order")
        inst = np.ascontiguousarray(trades["instrument"])
        self._grow(int(inst.max()) + 1)
        last = int(ts[-1])
        self._last_ts = last
        return self._run(ts, inst, trades["price"], trades["size"], last, len(trades))

    @property
    def latest_ns(self) -> int:
        """Trades stamped before this are refused (``update`` raises ``ValueError``): the
        latest trade taken, or the last bar boundary :meth:`close_until` passed."""
        return self._last_ts

    def open_bars(self) -> int:
        """How many bars are being built (one at most per instrument)."""
        if self.mode == _TIME:
            return int(np.count_nonzero(self._open >= 0))
        return int(np.count_nonzero(self._open != 0))

    def next_close_ns(self) -> int | None:
        """When the earliest open time bar closes; None if none is open (or volume bars)."""
        if self.mode != _TIME:
            return None
        open_buckets = self._open[self._open >= 0]
        if len(open_buckets) == 0:
            return None
        return self.origin_ns + (int(open_buckets.min()) + 1) * self.interval_ns

    def close_until(self, ts_ns: int) -> BarArray:
        """Time has reached ``ts_ns``: complete the time bars that close at or before it,
        by close time. Trades before the last bar boundary at or before ``ts_ns`` are
        refused from now on (their bars are done). Volume bars do not close on time: none.
        """
        if self.mode != _TIME:
            return np.zeros(0, dtype=BAR_DTYPE)
        boundary = self.origin_ns + (ts_ns - self.origin_ns) // self.interval_ns * self.interval_ns
        self._last_ts = max(self._last_ts, boundary)
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        return self._run(empty_i, np.zeros(0, np.uint32), empty_f, empty_f, int(ts_ns), 0)

    def first_completion(self, trades: TradeArray) -> int:
        """The index of the first of ``trades`` at which :meth:`update` would complete a
        bar, ``len(trades)`` if none; nothing changes (a replay's look-ahead). Equivalently:
        ``update(trades[:i])`` would return no bar, ``update(trades[:i + 1])`` at least one.
        """
        if trades.dtype != TRADE_DTYPE:
            raise TypeError(f"expected TRADE_DTYPE trades, got {trades.dtype}")
        if len(trades) == 0:
            return 0
        inst = np.ascontiguousarray(trades["instrument"])
        return int(
            _first_completion(
                np.ascontiguousarray(trades["ts_event"]),
                inst,
                np.ascontiguousarray(trades["size"], dtype=np.float64),
                self.mode,
                max(self.interval_ns, 1),
                self.origin_ns,
                self.volume,
                self._open,
                self._state,
                max(len(self._open), int(inst.max()) + 1),
            )
        )

    def flush(self) -> BarArray:
        """Close the open time bars (the data has ended). Volume bars that are not full are
        dropped."""
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        if self.mode != _TIME:
            self._open[:] = 0
            return np.zeros(0, dtype=BAR_DTYPE)
        return self._run(empty_i, np.zeros(0, np.uint32), empty_f, empty_f, _INT64_MAX, 0)

    def _run(
        self,
        ts: npt.NDArray[np.int64],
        inst: npt.NDArray[np.uint32],
        price: npt.NDArray[np.float64],
        size: npt.NDArray[np.float64],
        close_until: int,
        n: int,
    ) -> BarArray:
        if self.mode == _TIME:
            capacity = n + len(self._open)
        else:
            capacity = n + len(self._open) + int(np.sum(size) / self.volume) + 1
        out_ts = np.empty(capacity, dtype=np.int64)
        out_inst = np.empty(capacity, dtype=np.int64)
        out_ohlcv = np.empty((capacity, 5), dtype=np.float64)
        count = _aggregate(
            ts,
            inst,
            np.ascontiguousarray(price, dtype=np.float64),
            np.ascontiguousarray(size, dtype=np.float64),
            self.mode,
            max(self.interval_ns, 1),
            self.origin_ns,
            self.volume,
            self._open,
            self._state,
            out_ts,
            out_inst,
            out_ohlcv,
            close_until,
        )
        bars = np.zeros(count, dtype=BAR_DTYPE)
        bars["ts_event"] = out_ts[:count]
        bars["ts_init"] = out_ts[:count]
        bars["instrument"] = out_inst[:count]
        bars["interval_ns"] = self.interval_ns if self.mode == _TIME else 0
        for j, col in enumerate(("open", "high", "low", "close", "volume")):
            bars[col] = out_ohlcv[:count, j]
        order = np.lexsort((bars["instrument"], bars["ts_event"]))
        return bars[order]


def time_bars(trades: TradeArray, interval_ns: int, *, origin_ns: int = 0) -> BarArray:
    """Time bars of ``interval_ns`` from ``trades`` (time-ordered), closed at the end."""
    agg = BarAggregator(interval_ns=interval_ns, origin_ns=origin_ns)
    return np.concatenate([agg.update(trades), agg.flush()])


def volume_bars(trades: TradeArray, volume: float) -> BarArray:
    """Bars of exactly ``volume`` units each from ``trades`` (time-ordered)."""
    return BarAggregator(volume=volume).update(trades)
