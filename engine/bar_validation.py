"""Validation of bars and trades, and the flags of a quote stream, for import and replay.

Every row gets exactly one :class:`Check` code: ``OK`` or the first check it fails, in the
priority order below. A *rejecting* code means the row is wrong and is left out (the import
drops it, counting it); a *flagging* code (``STALE``, ``REPEAT``, ``DUPLICATE_QUOTE``,
``SUSPICIOUS``) marks a row that is kept. Quotes are judged by
:class:`engine.validation.QuoteValidator`; this module adds their flags.

Bars, per instrument, in time order (:func:`validate_bars`):

1. ``NAN_PRICE``: an OHLC field is not finite. 2. ``NON_POSITIVE_PRICE``. 3. ``BAD_VOLUME``:
   volume NaN, infinite or negative. 4. ``OHLC_INCONSISTENT``: high below open, close or
   low, or low above open or close.
5. ``BAD_PRINT``: the low is below ``(1 - max_wick_fraction) x min(open, close)``, or the
   high above ``(1 + max_wick_fraction) x max(open, close)``: a print far outside the bar's
   own body (the vendor's GOOG 2007-12-18 low of 67.50 with open and close near 675); or
   the open more than that fraction away from both the bar's close and the previous bar's
   (IBM 2002-12-23: an open of 159.58 between closes of 79.82 and 80.46).
6. ``OUT_OF_ORDER`` / ``DUPLICATE_TIME``: ``ts_event`` before / equal to the last accepted
   bar's (one bar per interval and instrument).
7. ``ABSURD_PRICE``: the close is more than ``absurd_ratio`` times away from the reference
   (the median of the last ``spike_window`` accepted closes).
8. ``SPIKE``: the close moved against the reference by more than the larger of
   ``spike_min_move`` and ``spike_sigmas`` x the instrument's typical move (the median
   absolute log return of the last 20 accepted closes), all in log terms, *and* the next
   bar's close came back to within ``spike_revert`` of that move. A real move stays; a bad
   close is undone the next day (GOOG 2008-09-30: 390.08, 294.57, 412.25). Set
   ``spike_revert`` to None to judge on the move alone (what a live feed has to do, since
   it cannot wait for the next bar).
9. ``STALE`` (flag): more than ``stale_after_ns`` since the previous bar.

Prices are compared on a split-adjusted basis when a ``multiplier`` per bar is given
(:meth:`engine.corporate_actions.FactorTable.multiplier`), so that a split is not a move.
Rejected bars never enter the reference, so one bad print does not hide the next.

Trades (:func:`validate_trades`) get the same price checks (``NAN_PRICE``,
``NON_POSITIVE_PRICE``, ``BAD_SIZE`` for a size that is not positive, ``OUT_OF_ORDER``,
``ABSURD_PRICE``, ``SPIKE`` against the median of the last ``spike_window`` prices) and two
flags: ``REPEAT`` for a trade at the same time as the previous one of its instrument (kept:
in the Lean files identical rows are separate prints) and ``STALE``.

Quotes (:func:`quote_flags`) get ``DUPLICATE_QUOTE`` (the same bid, ask and sizes as the
previous quote of the instrument), ``SUSPICIOUS`` (the source marked it) and ``STALE``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec
import numpy as np
import numpy.typing as npt
from numba import njit

from engine.ticks import BAR_DTYPE, QUOTE_DTYPE, TRADE_DTYPE, BarArray, QuoteArray, TradeArray

__all__ = [
    "FLAGS",
    "BarRules",
    "Check",
    "TradeRules",
    "Validation",
    "quote_flags",
    "validate_bars",
    "validate_trades",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(func))


class Check(enum.IntEnum):
    """The outcome of validating one row: OK, a reason to reject it, or a flag."""

    OK = 0
    NAN_PRICE = 1
    NON_POSITIVE_PRICE = 2
    BAD_VOLUME = 3
    BAD_SIZE = 4
    OHLC_INCONSISTENT = 5
    OUT_OF_ORDER = 6
    DUPLICATE_TIME = 7
    ABSURD_PRICE = 8
    BAD_PRINT = 9
    SPIKE = 10
    STALE = 11
    REPEAT = 12
    DUPLICATE_QUOTE = 13
    SUSPICIOUS = 14


FLAGS = frozenset({Check.STALE, Check.REPEAT, Check.DUPLICATE_QUOTE, Check.SUSPICIOUS})
"""Codes that mark a row but keep it."""

_N_CHECKS = len(Check)
_NO_LIMIT = -1


class BarRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What :func:`validate_bars` accepts. Fractions are of the price (0.5 = 50%)."""

    max_wick_fraction: float = 0.5
    absurd_ratio: float = 10.0
    spike_window: int = 5
    spike_min_move: float = 0.25
    spike_sigmas: float = 6.0
    spike_revert: float | None = 0.25
    stale_after_ns: int | None = None

    def __post_init__(self) -> None:
        _check_rules(self.absurd_ratio, self.spike_window, self.spike_min_move, self.spike_revert)
        if not (math.isfinite(self.max_wick_fraction) and self.max_wick_fraction > 0):
            raise ValueError(f"max_wick_fraction must be positive, got {self.max_wick_fraction}")


class TradeRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What :func:`validate_trades` accepts. Fractions are of the price (0.05 = 5%)."""

    absurd_ratio: float = 10.0
    spike_window: int = 21
    spike_min_move: float = 0.05
    spike_sigmas: float = 50.0
    spike_revert: float | None = 0.25
    stale_after_ns: int | None = None

    def __post_init__(self) -> None:
        _check_rules(self.absurd_ratio, self.spike_window, self.spike_min_move, self.spike_revert)


def _check_rules(absurd: float, window: int, min_move: float, revert: float | None) -> None:
    if not (math.isfinite(absurd) and absurd > 1.0):
        raise ValueError(f"absurd_ratio must be a number above 1, got {absurd}")
    if window < 1:
        raise ValueError(f"spike_window must be at least 1, got {window}")
    if not (math.isfinite(min_move) and min_move > 0):
        raise ValueError(f"spike_min_move must be positive, got {min_move}")
    if revert is not None and not (0 <= revert < 1):
        raise ValueError(f"spike_revert must be in [0, 1), got {revert}")


@dataclass(frozen=True, slots=True)
class Validation:
    """The check code of every row (``codes``, a :class:`Check` value each) and what it
    means: ``keep`` is True for rows that are OK or only flagged."""

    codes: npt.NDArray[np.uint8]

    @property
    def keep(self) -> npt.NDArray[np.bool_]:
        flags = np.array([int(c) for c in FLAGS], dtype=np.uint8)
        keep: npt.NDArray[np.bool_] = (self.codes == Check.OK) | np.isin(self.codes, flags)
        return keep

    @property
    def rejected(self) -> int:
        return int(len(self.codes) - np.count_nonzero(self.keep))

    def counts(self) -> dict[str, int]:
        """Rows per code, lower-case names, only the codes that occur (``ok`` included)."""
        n = np.bincount(self.codes, minlength=_N_CHECKS)
        return {Check(i).name.lower(): int(n[i]) for i in range(_N_CHECKS) if n[i]}

    def rows(self, check: Check) -> npt.NDArray[np.intp]:
        """Indices of the rows with ``check``."""
        return np.flatnonzero(self.codes == check)


@_jit
def _median_abs_log_return(hist: npt.NDArray[np.float64], n: int, start: int, cap: int) -> float:
    """Median |log(p[i] / p[i-1])| over the last ``n`` prices of the ring buffer."""
    if n < 3:
        return 0.0
    rets = np.empty(n - 1, dtype=np.float64)
    prev = hist[start % cap]
    for j in range(1, n):
        cur = hist[(start + j) % cap]
        rets[j - 1] = abs(math.log(cur / prev))
        prev = cur
    return float(np.median(rets))


@_jit
def _price_series(
    ts: npt.NDArray[np.int64],
    price: npt.NDArray[np.float64],
    pre: npt.NDArray[np.uint8],
    codes: npt.NDArray[np.uint8],
    window: int,
    absurd_log: float,
    min_move: float,
    sigmas: float,
    revert: float,
    use_revert: bool,
    stale_after: int,
    equal_ts_code: int,
) -> None:
    """The order, absurd, spike and stale checks of one instrument's series.

    ``pre`` holds the codes of the content checks (0 if the row's own fields are sound).
    ``price`` is the compared price (the close, adjusted). ``equal_ts_code`` is the code of
    a row at the same time as the last accepted one (a rejection for bars, a flag for
    trades). Writes ``codes``.
    """
    n = ts.shape[0]
    cap = 32  # ring buffer of accepted prices: the reference and the typical move
    if window > cap - 1:
        cap = window + 1
    scale_n = 21 if cap > 21 else cap
    hist = np.empty(cap, dtype=np.float64)
    count = 0
    head = 0  # next write position
    last_ts = np.iinfo(np.int64).min
    have_last = False
    for i in range(n):
        if pre[i] != 0:
            codes[i] = pre[i]
            continue
        if have_last and ts[i] < last_ts:
            codes[i] = 6  # OUT_OF_ORDER
            continue
        equal = have_last and ts[i] == last_ts
        if equal and equal_ts_code == 7:
            codes[i] = 7  # DUPLICATE_TIME
            continue
        p = price[i]
        if count > 0:
            k = window if count >= window else count
            ref_buf = np.empty(k, dtype=np.float64)
            for j in range(k):
                ref_buf[j] = hist[(head - k + j) % cap]
            ref = float(np.median(ref_buf))
            move = math.log(p / ref)
            if abs(move) > absurd_log:
                codes[i] = 8  # ABSURD_PRICE
                continue
            threshold = min_move
            if abs(move) > min_move:  # only then can the typical move matter
                m = scale_n if count >= scale_n else count
                scale = _median_abs_log_return(hist, m, head - m, cap)
                threshold = max(min_move, sigmas * scale)
            if abs(move) > threshold:
                spike = True
                if use_revert:
                    spike = False
                    # the next row whose own fields are sound
                    for j in range(i + 1, n):
                        if pre[j] == 0:
                            back = math.log(price[j] / ref)
                            spike = abs(back) <= revert * abs(move)
                            break
                if spike:
                    codes[i] = 10  # SPIKE
                    continue
        if equal:
            codes[i] = equal_ts_code
        elif have_last and stale_after >= 0 and ts[i] - last_ts > stale_after:
            codes[i] = 11  # STALE
        else:
            codes[i] = 0
        hist[head % cap] = p
        head += 1
        count += 1
        last_ts = ts[i]
        have_last = True


def _by_instrument(instrument: npt.NDArray[np.uint32]) -> list[npt.NDArray[np.intp]]:
    """Row indices of each instrument, each in row order."""
    if len(instrument) == 0:
        return []
    first = int(instrument[0])
    if bool(np.all(instrument == first)):
        return [np.arange(len(instrument))]
    order = np.argsort(instrument, kind="stable")
    cuts = np.flatnonzero(np.diff(instrument[order])) + 1
    return list(np.split(order, cuts))


def validate_bars(
    bars: BarArray,
    rules: BarRules | None = None,
    *,
    multiplier: npt.NDArray[np.float64] | None = None,
) -> Validation:
    """Check every bar (per instrument, in row order) against ``rules``.

    ``multiplier`` (one per bar) puts prices on a common basis before they are compared
    with each other, e.g. the split factors of the bars' days.
    """
    rules = rules or BarRules()
    if bars.dtype != BAR_DTYPE:
        raise TypeError(f"expected BAR_DTYPE bars, got {bars.dtype}")
    o, h, lo, c, v = (bars[f] for f in ("open", "high", "low", "close", "volume"))
    pre = np.zeros(len(bars), dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        body_lo = np.minimum(o, c)
        body_hi = np.maximum(o, c)
        checks = [
            (
                ~(np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)),
                Check.NAN_PRICE,
            ),
            ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), Check.NON_POSITIVE_PRICE),
            (~np.isfinite(v) | (v < 0), Check.BAD_VOLUME),
            ((h < body_hi) | (h < lo) | (lo > body_lo), Check.OHLC_INCONSISTENT),
            (
                (lo < (1.0 - rules.max_wick_fraction) * body_lo)
                | (h > (1.0 + rules.max_wick_fraction) * body_hi),
                Check.BAD_PRINT,
            ),
        ]
    for bad, code in reversed(checks):  # the first failing check wins
        pre[bad] = code
    price = np.asarray(c, dtype=np.float64)
    opens = np.asarray(o, dtype=np.float64)
    if multiplier is not None:
        mult = np.asarray(multiplier, dtype=np.float64)
        if mult.shape != price.shape:
            raise ValueError(f"{len(mult)} multipliers for {len(bars)} bars")
        price = price * mult
        opens = opens * mult
    pre[(pre == 0) & _open_apart(bars["instrument"], opens, price, rules.max_wick_fraction)] = (
        Check.BAD_PRINT
    )
    codes = _series(bars["ts_event"], bars["instrument"], price, pre, rules, 7)
    return Validation(codes)


def _open_apart(
    instrument: npt.NDArray[np.uint32],
    opens: npt.NDArray[np.float64],
    closes: npt.NDArray[np.float64],
    wick: float,
) -> npt.NDArray[np.bool_]:
    """Bars whose open is more than ``wick`` away from both their own close and the
    previous close of the instrument (the vendor's IBM 2002-12-23 open of 159.58 between
    closes of 79.82 and 80.46): a bad open, which the high repeats, so the body test
    cannot see it. A real gap stays near the close of its own day."""
    out = np.zeros(len(opens), dtype=np.bool_)
    for rows in _by_instrument(instrument):
        o = opens[rows]
        c = closes[rows]
        prev = np.concatenate([c[:1], c[:-1]])
        with np.errstate(invalid="ignore"):
            out[rows] = (o > (1.0 + wick) * np.maximum(c, prev)) | (
                o < (1.0 - wick) * np.minimum(c, prev)
            )
    return out


def _series(
    ts: npt.NDArray[np.int64],
    instrument: npt.NDArray[np.uint32],
    price: npt.NDArray[np.float64],
    pre: npt.NDArray[np.uint8],
    rules: BarRules | TradeRules,
    equal_ts_code: int,
) -> npt.NDArray[np.uint8]:
    codes = np.zeros(len(ts), dtype=np.uint8)
    for rows in _by_instrument(instrument):
        sub = np.zeros(len(rows), dtype=np.uint8)
        _price_series(
            np.ascontiguousarray(ts[rows]),
            np.ascontiguousarray(price[rows]),
            np.ascontiguousarray(pre[rows]),
            sub,
            rules.spike_window,
            math.log(rules.absurd_ratio),
            rules.spike_min_move,
            rules.spike_sigmas,
            rules.spike_revert if rules.spike_revert is not None else 0.0,
            rules.spike_revert is not None,
            rules.stale_after_ns if rules.stale_after_ns is not None else _NO_LIMIT,
            equal_ts_code,
        )
        codes[rows] = sub
    return codes


def validate_trades(trades: TradeArray, rules: TradeRules | None = None) -> Validation:
    """Check every trade (per instrument, in row order) against ``rules``."""
    rules = rules or TradeRules()
    if trades.dtype != TRADE_DTYPE:
        raise TypeError(f"expected TRADE_DTYPE trades, got {trades.dtype}")
    p, q = trades["price"], trades["size"]
    pre = np.zeros(len(trades), dtype=np.uint8)
    with np.errstate(invalid="ignore"):
        checks = [
            (~np.isfinite(p), Check.NAN_PRICE),
            (p <= 0, Check.NON_POSITIVE_PRICE),
            (~np.isfinite(q) | (q <= 0), Check.BAD_SIZE),
        ]
    for bad, code in reversed(checks):
        pre[bad] = code
    codes = _series(
        trades["ts_event"],
        trades["instrument"],
        np.asarray(p, dtype=np.float64),
        pre,
        rules,
        int(Check.REPEAT),
    )
    return Validation(codes)


def quote_flags(quotes: QuoteArray, *, stale_after_ns: int | None = None) -> Validation:
    """Flags of a quote stream (per instrument, in row order): ``SUSPICIOUS`` when the
    source marked the quote (``flags`` bit 0), ``DUPLICATE_QUOTE`` when bid, ask and sizes
    equal the previous quote's (an update that changed only what a quote row does not keep,
    such as the venue), ``STALE`` after more than ``stale_after_ns`` of silence.
    Whether a quote is rejected is :class:`engine.validation.QuoteValidator`'s decision."""
    if quotes.dtype != QUOTE_DTYPE:
        raise TypeError(f"expected QUOTE_DTYPE quotes, got {quotes.dtype}")
    codes = np.zeros(len(quotes), dtype=np.uint8)
    for rows in _by_instrument(quotes["instrument"]):
        q = quotes[rows]
        sub = np.zeros(len(rows), dtype=np.uint8)
        if len(q) > 1:
            fields = ("bid", "ask", "bid_size", "ask_size")
            same = np.ones(len(q) - 1, dtype=np.bool_)
            for f in fields:
                a, b = q[f][1:], q[f][:-1]
                same &= (a == b) | (np.isnan(a) & np.isnan(b))
            sub[1:][same] = Check.DUPLICATE_QUOTE
            if stale_after_ns is not None:
                gap = np.diff(q["ts_event"]) > stale_after_ns
                sub[1:][gap & ~same] = Check.STALE
        sub[(q["flags"] & 1) != 0] = Check.SUSPICIOUS
        codes[rows] = sub
    return Validation(codes)
