"""Streaming validation of trades and bars: the validator actor's checks on every live or
replayed print and bar, one at a time or a whole batch, with the same decisions.

Trades, in priority order (the first that fails names the reason):

1. ``nan_price``: the price is not finite. 2. ``non_positive_price``.
3. ``bad_size``: the size is not finite or not positive.
4. ``out_of_order``: ``ts_event`` earlier than the instrument's last accepted print. Prints
   at the same time are in order: identical rows are separate prints in the vendors' files.

Bars:

1. ``nan_price``: an OHLC field is not finite. 2. ``non_positive_price``.
3. ``bad_volume``: volume not finite or negative.
4. ``ohlc_inconsistent``: the high below the open, close or low, or the low above the open
   or close.
5. ``out_of_order`` / ``duplicate_time``: ``ts_event`` before / equal to the instrument's
   last accepted bar of the same interval (one bar per interval and instrument).

A rejected row leaves the state as it was. The judgements that need the rows that follow
(a spike undone by the next bar, the vendors' bad prints) are made on import, by
:mod:`engine.bar_validation`, where the whole series is known; a stored series has passed
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from engine.ticks import BAR_DTYPE, TRADE_DTYPE, BarArray, TradeArray

__all__ = ["BAR_REASONS", "TRADE_REASONS", "BarStreamValidator", "TradeStreamValidator", "warm_up"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(func))


TRADE_REASONS = ("ok", "nan_price", "non_positive_price", "bad_size", "out_of_order")
BAR_REASONS = (
    "ok",
    "nan_price",
    "non_positive_price",
    "bad_volume",
    "ohlc_inconsistent",
    "out_of_order",
    "duplicate_time",
)
_INT64_MIN = np.iinfo(np.int64).min


@_jit
def _trade_reason(ts: int, price: float, size: float, last_ts: int) -> int:
    if not math.isfinite(price):
        return 1
    if price <= 0.0:
        return 2
    if not math.isfinite(size) or size <= 0.0:
        return 3
    if ts < last_ts:
        return 4
    return 0


@_jit
def _trade_kernel(
    ts: npt.NDArray[np.int64],
    instrument: npt.NDArray[np.uint32],
    price: npt.NDArray[np.float64],
    size: npt.NDArray[np.float64],
    last_ts: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],
    commit: bool,
) -> int:
    """Decide every row in order (updating ``last_ts`` and ``counters`` only with
    ``commit``); returns how many were rejected, or -1 for an unknown instrument index."""
    n_inst = last_ts.shape[0]
    for i in range(ts.shape[0]):
        if instrument[i] >= n_inst:
            return -1
    local = last_ts.copy()
    rejected = 0
    for i in range(ts.shape[0]):
        k = instrument[i]
        reason = _trade_reason(ts[i], price[i], size[i], local[k])
        if reason == 0:
            local[k] = ts[i]
            mask[i] = True
        else:
            mask[i] = False
            rejected += 1
        if commit:
            counters[reason] += 1
    if commit:
        last_ts[:] = local
    return rejected


@_jit
def _bar_reason(ts: int, o: float, h: float, lo: float, c: float, v: float, last_ts: int) -> int:
    if not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo) and math.isfinite(c)):
        return 1
    if o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0:
        return 2
    if not math.isfinite(v) or v < 0.0:
        return 3
    if h < o or h < c or h < lo or lo > o or lo > c:
        return 4
    if ts < last_ts:
        return 5
    if ts == last_ts:
        return 6
    return 0


@_jit
def _bar_kernel(
    ts: npt.NDArray[np.int64],
    instrument: npt.NDArray[np.uint32],
    o: npt.NDArray[np.float64],
    h: npt.NDArray[np.float64],
    lo: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    last_ts: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],
    commit: bool,
) -> int:
    n_inst = last_ts.shape[0]
    for i in range(ts.shape[0]):
        if instrument[i] >= n_inst:
            return -1
    local = last_ts.copy()
    rejected = 0
    for i in range(ts.shape[0]):
        k = instrument[i]
        reason = _bar_reason(ts[i], o[i], h[i], lo[i], c[i], v[i], local[k])
        if reason == 0:
            local[k] = ts[i]
            mask[i] = True
        else:
            mask[i] = False
            rejected += 1
        if commit:
            counters[reason] += 1
    if commit:
        last_ts[:] = local
    return rejected


class _StreamValidator:
    reasons: tuple[str, ...] = ()
    dtype: np.dtype[Any]

    def __init__(self, n_instruments: int) -> None:
        self.last_ts = np.full(n_instruments, _INT64_MIN, dtype=np.int64)
        self.counters = np.zeros(len(self.reasons), dtype=np.int64)

    def _run(self, batch: np.ndarray, commit: bool) -> tuple[npt.NDArray[np.bool_], int]:
        raise NotImplementedError

    def validate_mask(self, batch: np.ndarray) -> tuple[npt.NDArray[np.bool_], int]:
        """Decide every row, in order, and count; True where accepted, and how many were
        rejected."""
        return self._run(batch, True)

    def preview_mask(self, batch: np.ndarray) -> tuple[npt.NDArray[np.bool_], int]:
        """:meth:`validate_mask`'s decisions, changing nothing."""
        return self._run(batch, False)

    def check_one(self, batch: np.ndarray) -> str:
        """Decide a one-row batch; the reason's name (``ok`` if accepted)."""
        before = self.counters.copy()
        self._run(batch, True)
        return self.reasons[int(np.flatnonzero(self.counters - before)[0])]

    def counts(self) -> dict[str, int]:
        """``accepted`` and the rejected rows by reason, only those that occurred."""
        return {
            ("accepted" if name == "ok" else name): int(n)
            for name, n in zip(self.reasons, self.counters.tolist(), strict=True)
            if n
        }

    def _check_dtype(self, batch: np.ndarray) -> None:
        if batch.dtype != self.dtype:
            raise TypeError(f"expected {self.dtype}, got {batch.dtype}")

    def _check_result(self, rejected: int) -> None:
        if rejected < 0:
            raise ValueError(
                f"instrument index out of range (max {len(self.last_ts) - 1}) in a batch"
            )


class TradeStreamValidator(_StreamValidator):
    """Accepts or rejects prints of ``n_instruments`` instruments, and counts why."""

    reasons = TRADE_REASONS
    dtype = TRADE_DTYPE

    def _run(self, batch: TradeArray, commit: bool) -> tuple[npt.NDArray[np.bool_], int]:
        self._check_dtype(batch)
        mask = np.empty(len(batch), dtype=np.bool_)
        rejected = _trade_kernel(
            batch["ts_event"],
            batch["instrument"],
            batch["price"],
            batch["size"],
            self.last_ts,
            self.counters,
            mask,
            commit,
        )
        self._check_result(rejected)
        return mask, rejected


class BarStreamValidator(_StreamValidator):
    """Accepts or rejects bars of ``n_instruments`` instruments, and counts why."""

    reasons = BAR_REASONS
    dtype = BAR_DTYPE

    def _run(self, batch: BarArray, commit: bool) -> tuple[npt.NDArray[np.bool_], int]:
        self._check_dtype(batch)
        mask = np.empty(len(batch), dtype=np.bool_)
        rejected = _bar_kernel(
            batch["ts_event"],
            batch["instrument"],
            batch["open"],
            batch["high"],
            batch["low"],
            batch["close"],
            batch["volume"],
            self.last_ts,
            self.counters,
            mask,
            commit,
        )
        self._check_result(rejected)
        return mask, rejected


def warm_up() -> None:
    """Load the compiled kernels now rather than on the first print or bar."""
    for rows in (1, 2):
        TradeStreamValidator(1).preview_mask(np.zeros(rows, dtype=TRADE_DTYPE))
        BarStreamValidator(1).preview_mask(np.zeros(rows, dtype=BAR_DTYPE))
