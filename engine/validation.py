"""Quote validation: the pure core of the validator actor, one tick at a time or a whole batch.

A quote is accepted or rejected with exactly one :class:`RejectReason`. The checks run in this
priority order, and the first that fails names the reason:

1. ``NAN_PRICE``: bid or ask is not a finite number (NaN, +inf or -inf).
2. ``NON_POSITIVE_PRICE``: bid or ask is zero or negative.
3. ``BAD_SIZE``: bid or ask size is NaN, infinite or negative (zero is allowed: it is how
   sources without sizes, such as Oanda FX, say "unknown").
4. ``CROSSED``: bid > ask. Always rejected.
5. ``LOCKED``: bid == ask, rejected only when ``allow_locked`` is false.
6. ``WIDE_SPREAD``: (ask - bid) / mid > ``max_spread_fraction``, when that is set.
7. ``OUT_OF_ORDER``: ``ts_event`` is earlier than the last *accepted* ``ts_event`` of the same
   instrument. Equal timestamps are in order.

The tick's own content is judged before its place in the stream, so a tick's reason does not
depend on what came before it unless the tick itself is sound. Only an accepted tick moves its
instrument's last accepted ``ts_event``; a rejected tick leaves the state as it was.

:meth:`QuoteValidator.check` (one tick) and :meth:`QuoteValidator.validate` (a
``QUOTE_DTYPE`` batch) share the same compiled decision function, so for the same ticks they
give the same decisions and the same counters however the stream is cut into batches.
:meth:`QuoteValidator.preview` gives ``validate``'s decisions without touching the state or
the counters, for looking ahead in a batch.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import msgspec
import numpy as np
import numpy.typing as npt
from numba import njit

from engine.ticks import QUOTE_DTYPE, QuoteArray

__all__ = ["QuoteValidator", "RejectReason", "ValidatorConfig", "warm_up"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(func))


class RejectReason(enum.IntEnum):
    """Why a quote was rejected; ``OK`` if it was not. Values index the counters array."""

    OK = 0
    NON_POSITIVE_PRICE = 1
    NAN_PRICE = 2
    BAD_SIZE = 3
    CROSSED = 4
    LOCKED = 5
    WIDE_SPREAD = 6
    OUT_OF_ORDER = 7


_N_REASONS = len(RejectReason)
_INT64_MIN = np.iinfo(np.int64).min

# Plain ints for the compiled code (numba freezes module-level ints as constants).
_OK = int(RejectReason.OK)
_NON_POSITIVE_PRICE = int(RejectReason.NON_POSITIVE_PRICE)
_NAN_PRICE = int(RejectReason.NAN_PRICE)
_BAD_SIZE = int(RejectReason.BAD_SIZE)
_CROSSED = int(RejectReason.CROSSED)
_LOCKED = int(RejectReason.LOCKED)
_WIDE_SPREAD = int(RejectReason.WIDE_SPREAD)
_OUT_OF_ORDER = int(RejectReason.OUT_OF_ORDER)


class ValidatorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the quote validator lets through.

    ``allow_locked``: accept bid == ask. ``max_spread_fraction``: reject a quote whose spread
    is more than this fraction of the mid price, (ask - bid) / ((bid + ask) / 2); ``None``
    means no spread limit (0.01 is 1% of mid, 100 bp). Crossed, non-finite, non-positive and
    out-of-order quotes and bad sizes are always rejected.
    """

    allow_locked: bool = True
    max_spread_fraction: float | None = None

    def __post_init__(self) -> None:
        limit = self.max_spread_fraction
        if limit is not None and not (math.isfinite(limit) and limit >= 0.0):
            raise ValueError(f"max_spread_fraction must be a finite number >= 0, got {limit!r}")


@_jit
def _decide(
    ts_event: int,
    bid: float,
    ask: float,
    bid_size: float,
    ask_size: float,
    last_ts: int,
    allow_locked: bool,
    check_spread: bool,
    max_spread: float,
) -> int:
    """The reason code for one quote (``_OK`` to accept), in the documented priority order."""
    if not (math.isfinite(bid) and math.isfinite(ask)):
        return _NAN_PRICE
    if bid <= 0.0 or ask <= 0.0:
        return _NON_POSITIVE_PRICE
    if not (math.isfinite(bid_size) and math.isfinite(ask_size)):
        return _BAD_SIZE
    if bid_size < 0.0 or ask_size < 0.0:
        return _BAD_SIZE
    if bid > ask:
        return _CROSSED
    if bid == ask and not allow_locked:
        return _LOCKED
    if check_spread and (ask - bid) / ((bid + ask) * 0.5) > max_spread:
        return _WIDE_SPREAD
    if ts_event < last_ts:
        return _OUT_OF_ORDER
    return _OK


@_jit
def _check_one(
    ts_event: int,
    instrument: int,
    bid: float,
    ask: float,
    bid_size: float,
    ask_size: float,
    last_ts: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    allow_locked: bool,
    check_spread: bool,
    max_spread: float,
) -> int:
    reason = _decide(
        ts_event,
        bid,
        ask,
        bid_size,
        ask_size,
        last_ts[instrument],
        allow_locked,
        check_spread,
        max_spread,
    )
    if reason == _OK:
        last_ts[instrument] = ts_event
    counters[reason] += 1
    return reason


@_jit
def _validate_kernel(
    ts_event: npt.NDArray[np.int64],
    instrument: npt.NDArray[np.uint32],
    bid: npt.NDArray[np.float64],
    ask: npt.NDArray[np.float64],
    bid_size: npt.NDArray[np.float64],
    ask_size: npt.NDArray[np.float64],
    last_ts: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    allow_locked: bool,
    check_spread: bool,
    max_spread: float,
    reasons: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
) -> int:
    """Decide every row in order, updating ``last_ts`` and ``counters`` as ``_check_one``
    does, writing each row's reason and True where accepted. Returns how many rows were
    rejected, or -1 (having changed nothing) if an instrument index is out of range."""
    n_inst = last_ts.shape[0]
    for i in range(ts_event.shape[0]):
        if instrument[i] >= n_inst:
            return -1
    rejected = 0
    for i in range(ts_event.shape[0]):
        k = instrument[i]
        t = ts_event[i]
        reason = _decide(
            t,
            bid[i],
            ask[i],
            bid_size[i],
            ask_size[i],
            last_ts[k],
            allow_locked,
            check_spread,
            max_spread,
        )
        reasons[i] = reason
        if reason == _OK:
            last_ts[k] = t
            mask[i] = True
        else:
            mask[i] = False
            rejected += 1
        counters[reason] += 1
    return rejected


class QuoteValidator:
    """Accepts or rejects quotes of ``n_instruments`` instruments, and counts why.

    State is the last accepted ``ts_event`` per instrument (``int64`` min until the first).
    Counters are per :class:`RejectReason`, ``OK`` being the accepted ticks. Feeding the same
    ticks through :meth:`check` one at a time or through :meth:`validate` in batches of any
    size leaves the same state and counters and makes the same decisions.
    """

    def __init__(self, config: ValidatorConfig, n_instruments: int) -> None:
        if n_instruments < 1:
            raise ValueError(f"n_instruments must be at least 1, got {n_instruments}")
        self.config = config
        self._n_instruments = n_instruments
        self._last_ts = np.full(n_instruments, _INT64_MIN, dtype=np.int64)
        self._counters = np.zeros(_N_REASONS, dtype=np.int64)
        self._allow_locked = config.allow_locked
        self._check_spread = config.max_spread_fraction is not None
        self._max_spread = (
            float(config.max_spread_fraction) if config.max_spread_fraction is not None else 0.0
        )

    @property
    def n_instruments(self) -> int:
        return self._n_instruments

    @property
    def last_accepted_ts(self) -> npt.NDArray[np.int64]:
        """A copy of the last accepted ``ts_event`` per instrument (int64 min: none yet)."""
        return self._last_ts.copy()

    def check(
        self,
        ts_event: int,
        instrument: int,
        bid: float,
        ask: float,
        bid_size: float,
        ask_size: float,
    ) -> RejectReason:
        """Decide one quote; an accepted quote moves its instrument's last ``ts_event``."""
        if not 0 <= instrument < self._n_instruments:
            raise IndexError(f"instrument {instrument} is not in 0..{self._n_instruments - 1}")
        reason = _check_one(
            int(ts_event),
            int(instrument),
            float(bid),
            float(ask),
            float(bid_size),
            float(ask_size),
            self._last_ts,
            self._counters,
            self._allow_locked,
            self._check_spread,
            self._max_spread,
        )
        return RejectReason(reason)

    def validate(self, batch: QuoteArray) -> npt.NDArray[np.bool_]:
        """Decide every quote of a ``QUOTE_DTYPE`` batch in order; True where accepted."""
        return self._run(batch, self._last_ts, self._counters)[1]

    def validate_mask(self, batch: QuoteArray) -> tuple[npt.NDArray[np.bool_], int]:
        """:meth:`validate`'s mask and how many rows it rejected (the fast path)."""
        _, mask, rejected = self._run(batch, self._last_ts, self._counters)
        return mask, rejected

    def validate_reasons(self, batch: QuoteArray) -> npt.NDArray[np.uint8]:
        """Like :meth:`validate`, but the :class:`RejectReason` code of every row (0: accepted)."""
        return self._run(batch, self._last_ts, self._counters)[0]

    def preview(self, batch: QuoteArray) -> npt.NDArray[np.bool_]:
        """The mask :meth:`validate` would return now, leaving state and counters untouched."""
        return self.preview_mask(batch)[0]

    def preview_mask(self, batch: QuoteArray) -> tuple[npt.NDArray[np.bool_], int]:
        """:meth:`validate_mask` as it would be now, changing nothing."""
        _, mask, rejected = self._run(batch, self._last_ts.copy(), np.zeros(_N_REASONS, np.int64))
        return mask, rejected

    def preview_reasons(self, batch: QuoteArray) -> npt.NDArray[np.uint8]:
        """The reasons :meth:`validate_reasons` would return now, changing nothing."""
        return self._run(batch, self._last_ts.copy(), np.zeros(_N_REASONS, np.int64))[0]

    def counts(self) -> dict[str, int]:
        """``accepted`` and one count per rejection reason (lower-case names), all reasons."""
        out = {"accepted": int(self._counters[_OK])}
        for reason in RejectReason:
            if reason is not RejectReason.OK:
                out[reason.name.lower()] = int(self._counters[reason])
        return out

    def _run(
        self,
        batch: QuoteArray,
        last_ts: npt.NDArray[np.int64],
        counters: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_], int]:
        if batch.dtype is not QUOTE_DTYPE and batch.dtype != QUOTE_DTYPE:
            raise TypeError(f"expected a QUOTE_DTYPE batch, got dtype {batch.dtype}")
        if batch.ndim != 1:
            raise ValueError(f"expected a 1-d batch, got shape {batch.shape}")
        n = batch.shape[0]
        reasons = np.empty(n, dtype=np.uint8)
        mask = np.empty(n, dtype=np.bool_)
        rejected = int(
            _validate_kernel(
                batch["ts_event"],
                batch["instrument"],
                batch["bid"],
                batch["ask"],
                batch["bid_size"],
                batch["ask_size"],
                last_ts,
                counters,
                self._allow_locked,
                self._check_spread,
                self._max_spread,
                reasons,
                mask,
            )
        )
        if rejected < 0:
            top = int(batch["instrument"].max())
            raise IndexError(f"instrument {top} is not in 0..{self._n_instruments - 1}")
        return reasons, mask, rejected


def warm_up() -> None:
    """Load the compiled kernels now rather than on the first tick. Column views of a batch
    are strided, except in a one-row batch; numba compiles each layout apart."""
    validator = QuoteValidator(ValidatorConfig(), 1)
    for rows in (1, 2):
        validator.preview_mask(np.zeros(rows, dtype=QUOTE_DTYPE))
    validator.check(0, 0, 1.0, 1.0, 0.0, 0.0)
