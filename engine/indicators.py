"""Indicators and the signal logic built on them, as pure code.

Each has two implementations that must agree exactly: a plain Python one for ticks that
come one at a time, and a numba kernel for a whole batch. Both do the same float64
operations in the same order, so their results are bit-for-bit equal; tests prove it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["EmaCross", "ema_cross_kernel"]

# state vector layout of the EMA-cross kernel
_FAST, _SLOW, _SIGN, _COUNT, _CROSSES = 0, 1, 2, 3, 4

_UINT32: dict[int, np.uint32] = {}
"""Instrument indexes as the kernel takes them, made once each: building a numpy scalar
costs more than the rest of a short call's arguments together."""


def _as_uint32(index: int) -> np.uint32:
    value = _UINT32.get(index)
    if value is None:
        value = _UINT32[index] = np.uint32(index)
    return value


class EmaCross:
    """Fast and slow exponential moving averages of the mid price and their crossings.

    Works on ``mid2``, the sum of bid and ask in whole price increments, which is exact
    (no rounding noise from dividing by two or from the price's decimal form). On the
    first tick both averages start at ``mid2``; then ``ema += alpha * (mid2 - ema)`` with
    ``alpha = 2 / (period + 1)``. ``sign`` is +1 while fast > slow, -1 while fast < slow,
    unchanged when equal. A *cross* is a change of sign from a non-zero sign once more
    than ``warmup`` ticks have been seen (counting the current one).
    """

    __slots__ = ("alpha_fast", "alpha_slow", "state", "warmup")

    def __init__(self, fast: int, slow: int, warmup: int) -> None:
        if not 0 < fast < slow:
            raise ValueError(f"need 0 < fast < slow, got fast={fast} slow={slow}")
        self.alpha_fast = 2.0 / (fast + 1)
        self.alpha_slow = 2.0 / (slow + 1)
        self.warmup = warmup
        self.state = np.zeros(5, dtype=np.float64)

    @property
    def fast(self) -> float:
        return float(self.state[_FAST])

    @property
    def slow(self) -> float:
        return float(self.state[_SLOW])

    @property
    def sign(self) -> int:
        return int(self.state[_SIGN])

    @property
    def count(self) -> int:
        return int(self.state[_COUNT])

    @property
    def crosses(self) -> int:
        """Crosses seen so far."""
        return int(self.state[_CROSSES])

    def update(self, mid2: float) -> int:
        """One tick. Returns the new sign (+1/-1) on a cross, else 0."""
        st = self.state
        count = st[_COUNT] + 1.0
        if count == 1.0:
            fast = mid2
            slow = mid2
        else:
            fast = st[_FAST]
            slow = st[_SLOW]
            fast += self.alpha_fast * (mid2 - fast)
            slow += self.alpha_slow * (mid2 - slow)
        prev = st[_SIGN]
        sign = prev
        if fast > slow:
            sign = 1.0
        elif fast < slow:
            sign = -1.0
        st[_FAST] = fast
        st[_SLOW] = slow
        st[_SIGN] = sign
        st[_COUNT] = count
        if count > self.warmup and prev != 0.0 and sign != prev:  # noqa: PLR1714 - same ops as the kernel
            st[_CROSSES] += 1.0
            return int(sign)
        return 0

    def run(
        self,
        instrument_col: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        instrument: int,
        increment: float,
        start: int = 0,
        *,
        commit: bool = True,
        stop_at_cross: bool = True,
    ) -> int:
        """Batch form of :meth:`update` over rows ``start..`` of one instrument.

        Stops at the first cross and returns its row index (state updated through that
        row), or ``len(bid)`` if none. ``commit=False`` leaves the state untouched.
        ``stop_at_cross=False`` runs to the end, counting crosses (for a strategy whose
        orders are switched off).
        """
        state = self.state if commit else self.state.copy()
        return int(
            ema_cross_kernel(
                instrument_col,
                bid,
                ask,
                _as_uint32(instrument),
                increment,
                self.alpha_fast,
                self.alpha_slow,
                float(self.warmup),
                state,
                start,
                stop_at_cross,
            )
        )


@njit(cache=True, nogil=True)
def ema_cross_kernel(
    instrument_col: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    instrument: np.uint32,
    increment: float,
    alpha_fast: float,
    alpha_slow: float,
    warmup: float,
    state: np.ndarray,
    start: int,
    stop_at_cross: bool,
) -> int:  # pragma: no cover - compiled
    fast = state[0]
    slow = state[1]
    sign = state[2]
    count = state[3]
    n: int = bid.shape[0]
    for i in range(start, n):
        if instrument_col[i] != instrument:
            continue
        mid2 = np.rint(bid[i] / increment) + np.rint(ask[i] / increment)
        count += 1.0
        if count == 1.0:
            fast = mid2
            slow = mid2
        else:
            fast += alpha_fast * (mid2 - fast)
            slow += alpha_slow * (mid2 - slow)
        prev = sign
        if fast > slow:
            sign = 1.0
        elif fast < slow:
            sign = -1.0
        if count > warmup and prev != 0.0 and sign != prev:  # noqa: PLR1714 - numba
            state[4] += 1.0
            if stop_at_cross:
                state[0] = fast
                state[1] = slow
                state[2] = sign
                state[3] = count
                return i
    state[0] = fast
    state[1] = slow
    state[2] = sign
    state[3] = count
    return n
