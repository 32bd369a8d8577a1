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
8. ``SPIKE``: when ``max_move_fraction`` is set, the mid ``(bid + ask) / 2`` is further from
   the instrument's reference than that, ``|mid / reference - 1| > max_move_fraction``, and
   the move is not yet confirmed (below).

The tick's own content is judged before its place in the stream, so a tick's reason does not
depend on what came before it unless the tick itself is sound. Order comes before the move,
so a tick from the past never counts towards confirming a move.

**Spikes.** The reference is the mid of the instrument's last *accepted* quote; an
instrument's first accepted quote has none and passes this check. Each sound, in-order quote
beyond the reference adds one to the instrument's run of moves; a quote within the band
(at the limit itself included) sets the run back to zero. The quote that brings the run to
``spike_confirm_ticks`` is taken as a real move: it is accepted, becomes the reference and
the run starts again from zero. The ones before it are rejected as ``SPIKE``. So with the
default of 3, two quotes beyond the band are rejected and the third in a row is accepted,
and with 1 no quote is ever rejected as a spike. Each of those quotes is compared with the
reference, not with one another: the run counts quotes beyond the band on either side.
Quotes rejected for any other reason (1 to 7) are left out entirely: they neither extend
nor break the run.

**Stale data** is a flag, not a rejection. With ``stale_after_s`` set, an accepted quote
whose ``ts_event`` is more than that many seconds (rounded to the nanosecond) after the
previous accepted quote of its instrument is forwarded as usual and counted as ``stale``.
Time is the data's own (``ts_event``), never the wall clock, so a replay flags the same
quotes as live trading did. An instrument's first accepted quote is not stale. The gap is
seen when the late quote arrives: noticing a silent feed while it is silent needs a timer.

Only an accepted tick moves its instrument's last accepted ``ts_event`` and its reference
mid; a rejected tick changes no state, apart from a ``SPIKE`` lengthening the run of moves.

:meth:`QuoteValidator.check` (one tick) and :meth:`QuoteValidator.validate` (a
``QUOTE_DTYPE`` batch) share the same compiled decision functions, so for the same ticks they
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

__all__ = ["FLAGS", "QuoteValidator", "RejectReason", "ValidatorConfig", "warm_up"]

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
    SPIKE = 8


FLAGS = frozenset({"stale"})
"""Names in :meth:`QuoteValidator.counts` that count accepted ticks flagged for a person to
look at, not rejections."""

_N_REASONS = len(RejectReason)
_INT64_MIN = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max

# Plain ints for the compiled code (numba freezes module-level ints as constants).
_OK = int(RejectReason.OK)
_NON_POSITIVE_PRICE = int(RejectReason.NON_POSITIVE_PRICE)
_NAN_PRICE = int(RejectReason.NAN_PRICE)
_BAD_SIZE = int(RejectReason.BAD_SIZE)
_CROSSED = int(RejectReason.CROSSED)
_LOCKED = int(RejectReason.LOCKED)
_WIDE_SPREAD = int(RejectReason.WIDE_SPREAD)
_OUT_OF_ORDER = int(RejectReason.OUT_OF_ORDER)
_SPIKE = int(RejectReason.SPIKE)
# the counters array: one slot per reason, then the flags
_STALE = _N_REASONS
_N_COUNTERS = _N_REASONS + 1


class ValidatorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the quote validator lets through.

    ``allow_locked``: accept bid == ask. ``max_spread_fraction``: reject a quote whose spread
    is more than this fraction of the mid price, (ask - bid) / ((bid + ask) / 2); ``None``
    means no spread limit (0.01 is 1% of mid, 100 bp). Crossed, non-finite, non-positive and
    out-of-order quotes and bad sizes are always rejected.

    ``max_move_fraction``: reject as a spike a quote whose mid moved more than this fraction
    from the mid of the instrument's last accepted quote (0.002 is 20 bp); ``None``: no spike
    check. ``spike_confirm_ticks``: the how-many-th quote in a row beyond that band is taken
    as a real move and accepted (see the module docstring). ``stale_after_s``: count as
    ``stale`` an accepted quote that comes more than this many seconds of data time after
    the previous accepted quote of its instrument; ``None``: no such count.
    """

    allow_locked: bool = True
    max_spread_fraction: float | None = None
    max_move_fraction: float | None = None
    spike_confirm_ticks: int = 3
    stale_after_s: float | None = None

    def __post_init__(self) -> None:
        limit = self.max_spread_fraction
        if limit is not None and not (math.isfinite(limit) and limit >= 0.0):
            raise ValueError(f"max_spread_fraction must be a finite number >= 0, got {limit!r}")
        move = self.max_move_fraction
        if move is not None and not (math.isfinite(move) and move > 0.0):
            raise ValueError(f"max_move_fraction must be a finite number > 0, got {move!r}")
        if self.spike_confirm_ticks < 1:
            raise ValueError(
                f"spike_confirm_ticks must be at least 1, got {self.spike_confirm_ticks!r}"
            )
        stale = self.stale_after_s
        if stale is not None and not (math.isfinite(stale) and stale > 0.0):
            raise ValueError(f"stale_after_s must be a finite number > 0, got {stale!r}")


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
    """The reason code for one quote (``_OK`` to accept) from the rules that need no more
    state than ``last_ts`` (1 to 7 of the module docstring), in their priority order."""
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
def _judge(
    ts_event: int,
    bid: float,
    ask: float,
    bid_size: float,
    ask_size: float,
    last_ts: int,
    ref_mid: float,
    move_run: int,
    allow_locked: bool,
    check_spread: bool,
    max_spread: float,
    check_move: bool,
    max_move: float,
    confirm_ticks: int,
    check_stale: bool,
    stale_ns: int,
) -> tuple[int, float, int, int]:
    """One quote judged by every rule against its instrument's state: the reason code, then
    the instrument's reference mid and run of moves after it, and 1 if the quote is accepted
    stale (else 0). An accepted quote's ``ts_event`` becomes the last accepted one.

    The one step that ``check`` and ``validate`` both take. It takes and returns plain
    numbers: passed arrays, numba would count references to them on every row, which made
    the batch loop three times slower."""
    reason = _decide(
        ts_event, bid, ask, bid_size, ask_size, last_ts, allow_locked, check_spread, max_spread
    )
    if reason == _OK and check_move:
        mid = (bid + ask) * 0.5
        # a NaN reference (nothing accepted yet) compares False: within the band
        if abs(mid / ref_mid - 1.0) > max_move and move_run + 1 < confirm_ticks:
            return _SPIKE, ref_mid, move_run + 1, 0
        ref_mid = mid
        move_run = 0
    stale = 0
    if reason == _OK and check_stale and last_ts != _INT64_MIN and ts_event - last_ts > stale_ns:
        stale = 1
    return reason, ref_mid, move_run, stale


@_jit
def _check_one(
    ts_event: int,
    instrument: int,
    bid: float,
    ask: float,
    bid_size: float,
    ask_size: float,
    last_ts: npt.NDArray[np.int64],
    ref_mid: npt.NDArray[np.float64],
    move_run: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    allow_locked: bool,
    check_spread: bool,
    max_spread: float,
    check_move: bool,
    max_move: float,
    confirm_ticks: int,
    check_stale: bool,
    stale_ns: int,
) -> int:
    k = instrument
    reason, ref_mid[k], move_run[k], stale = _judge(
        ts_event,
        bid,
        ask,
        bid_size,
        ask_size,
        last_ts[k],
        ref_mid[k],
        move_run[k],
        allow_locked,
        check_spread,
        max_spread,
        check_move,
        max_move,
        confirm_ticks,
        check_stale,
        stale_ns,
    )
    if reason == _OK:
        last_ts[k] = ts_event
    counters[reason] += 1
    counters[_STALE] += stale
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
    ref_mid: npt.NDArray[np.float64],
    move_run: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
    allow_locked: bool,
    check_spread: bool,
    max_spread: float,
    check_move: bool,
    max_move: float,
    confirm_ticks: int,
    check_stale: bool,
    stale_ns: int,
    reasons: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
) -> int:
    """Decide every row in order, updating the state and ``counters`` as ``_check_one``
    does, writing each row's reason and True where accepted. Returns how many rows were
    rejected, or -1 (having changed nothing) if an instrument index is out of range."""
    n_inst = last_ts.shape[0]
    for i in range(ts_event.shape[0]):
        if instrument[i] >= n_inst:
            return -1
    rejected = 0
    if check_move or check_stale:
        # the same steps as ``_check_one``
        for i in range(ts_event.shape[0]):
            k = instrument[i]
            t = ts_event[i]
            reason, ref_mid[k], move_run[k], stale = _judge(
                t,
                bid[i],
                ask[i],
                bid_size[i],
                ask_size[i],
                last_ts[k],
                ref_mid[k],
                move_run[k],
                allow_locked,
                check_spread,
                max_spread,
                check_move,
                max_move,
                confirm_ticks,
                check_stale,
                stale_ns,
            )
            reasons[i] = reason
            if reason == _OK:
                last_ts[k] = t
                mask[i] = True
            else:
                mask[i] = False
                rejected += 1
            counters[reason] += 1
            counters[_STALE] += stale
        return rejected
    # Neither moves nor staleness: ``_judge`` reduced to ``_decide``, kept as its own tight
    # loop because the replay validates tens of millions of quotes a second through it.
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


_State = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]
]
"""Last accepted ``ts_event``, reference mid and run of moves per instrument; counters."""


class QuoteValidator:
    """Accepts or rejects quotes of ``n_instruments`` instruments, and counts why.

    State per instrument is the last accepted ``ts_event`` (``int64`` min until the first),
    the reference mid (NaN until the first accepted quote; kept only when spikes are checked)
    and the run of quotes beyond the reference. Counters are per :class:`RejectReason`,
    ``OK`` being the accepted ticks, and per flag (:data:`FLAGS`). Feeding the same ticks
    through :meth:`check` one at a time or through :meth:`validate` in batches of any size
    leaves the same state and counters and makes the same decisions.
    """

    def __init__(self, config: ValidatorConfig, n_instruments: int) -> None:
        if n_instruments < 1:
            raise ValueError(f"n_instruments must be at least 1, got {n_instruments}")
        self.config = config
        self._n_instruments = n_instruments
        self._last_ts = np.full(n_instruments, _INT64_MIN, dtype=np.int64)
        self._ref_mid = np.full(n_instruments, np.nan, dtype=np.float64)
        self._move_run = np.zeros(n_instruments, dtype=np.int64)
        self._counters = np.zeros(_N_COUNTERS, dtype=np.int64)
        self._allow_locked = config.allow_locked
        self._check_spread = config.max_spread_fraction is not None
        self._max_spread = (
            float(config.max_spread_fraction) if config.max_spread_fraction is not None else 0.0
        )
        self._check_move = config.max_move_fraction is not None
        self._max_move = (
            float(config.max_move_fraction) if config.max_move_fraction is not None else 0.0
        )
        self._confirm_ticks = min(int(config.spike_confirm_ticks), int(_INT64_MAX))
        self._check_stale = config.stale_after_s is not None
        # whole nanoseconds; a limit beyond int64 (about 292 years) flags nothing
        stale_ns = round(config.stale_after_s * 1e9) if config.stale_after_s is not None else 0
        self._stale_ns = min(stale_ns, int(_INT64_MAX))

    @property
    def n_instruments(self) -> int:
        return self._n_instruments

    @property
    def last_accepted_ts(self) -> npt.NDArray[np.int64]:
        """A copy of the last accepted ``ts_event`` per instrument (int64 min: none yet)."""
        return self._last_ts.copy()

    @property
    def reference_mid(self) -> npt.NDArray[np.float64]:
        """A copy of the spike check's reference mid per instrument: the last accepted mid
        (NaN: none yet, or spikes are not checked)."""
        return self._ref_mid.copy()

    @property
    def unconfirmed_moves(self) -> npt.NDArray[np.int64]:
        """A copy of, per instrument, how many quotes in a row were rejected as ``SPIKE``
        since its last accepted quote."""
        return self._move_run.copy()

    def check(
        self,
        ts_event: int,
        instrument: int,
        bid: float,
        ask: float,
        bid_size: float,
        ask_size: float,
    ) -> RejectReason:
        """Decide one quote; an accepted quote moves its instrument's state."""
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
            self._ref_mid,
            self._move_run,
            self._counters,
            self._allow_locked,
            self._check_spread,
            self._max_spread,
            self._check_move,
            self._max_move,
            self._confirm_ticks,
            self._check_stale,
            self._stale_ns,
        )
        return RejectReason(reason)

    def validate(self, batch: QuoteArray) -> npt.NDArray[np.bool_]:
        """Decide every quote of a ``QUOTE_DTYPE`` batch in order; True where accepted."""
        return self._run(batch, self._state())[1]

    def validate_mask(self, batch: QuoteArray) -> tuple[npt.NDArray[np.bool_], int]:
        """:meth:`validate`'s mask and how many rows it rejected (the fast path)."""
        _, mask, rejected = self._run(batch, self._state())
        return mask, rejected

    def validate_reasons(self, batch: QuoteArray) -> npt.NDArray[np.uint8]:
        """Like :meth:`validate`, but the :class:`RejectReason` code of every row (0: accepted)."""
        return self._run(batch, self._state())[0]

    def preview(self, batch: QuoteArray) -> npt.NDArray[np.bool_]:
        """The mask :meth:`validate` would return now, leaving state and counters untouched."""
        return self.preview_mask(batch)[0]

    def preview_mask(self, batch: QuoteArray) -> tuple[npt.NDArray[np.bool_], int]:
        """:meth:`validate_mask` as it would be now, changing nothing."""
        _, mask, rejected = self._run(batch, self._state_copy())
        return mask, rejected

    def preview_reasons(self, batch: QuoteArray) -> npt.NDArray[np.uint8]:
        """The reasons :meth:`validate_reasons` would return now, changing nothing."""
        return self._run(batch, self._state_copy())[0]

    def counts(self) -> dict[str, int]:
        """``accepted``, one count per rejection reason (lower-case names), all reasons, and
        ``stale`` (accepted ticks, see :data:`FLAGS`) when there are any."""
        out = {"accepted": int(self._counters[_OK])}
        for reason in RejectReason:
            if reason is not RejectReason.OK:
                out[reason.name.lower()] = int(self._counters[reason])
        stale = int(self._counters[_STALE])
        if stale:
            out["stale"] = stale
        return out

    def _state(self) -> _State:
        return self._last_ts, self._ref_mid, self._move_run, self._counters

    def _state_copy(self) -> _State:
        """The state as it is, to be changed freely, with the counters at zero."""
        return (
            self._last_ts.copy(),
            self._ref_mid.copy(),
            self._move_run.copy(),
            np.zeros(_N_COUNTERS, np.int64),
        )

    def _run(
        self, batch: QuoteArray, state: _State
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_], int]:
        if batch.dtype is not QUOTE_DTYPE and batch.dtype != QUOTE_DTYPE:
            raise TypeError(f"expected a QUOTE_DTYPE batch, got dtype {batch.dtype}")
        if batch.ndim != 1:
            raise ValueError(f"expected a 1-d batch, got shape {batch.shape}")
        last_ts, ref_mid, move_run, counters = state
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
                ref_mid,
                move_run,
                counters,
                self._allow_locked,
                self._check_spread,
                self._max_spread,
                self._check_move,
                self._max_move,
                self._confirm_ticks,
                self._check_stale,
                self._stale_ns,
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
