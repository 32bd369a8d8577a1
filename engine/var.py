"""The risk model, as pure code: an EWMA covariance of sampled returns, parametric and
historical-simulation value at risk, correlation, and a correlation regime-shift detector.

Returns
-------
Prices are sampled on a grid of data time: multiples of ``sample_interval_ns`` since the
epoch, UTC (daily by default, so UTC midnights). When data time first reaches a grid point,
the interval before it is *finished*, and the last price of each instrument in it is that
instrument's sample. The return of instrument *i* for the interval is ``log(p_now /
p_prev)``, where ``p_prev`` is the instrument's previous sample (however many intervals
back); an instrument with no price in the interval, or with no previous sample yet, has a
return of 0 in that row, and its move shows in the row of the next interval in which it
has a price. An interval with no data at all (a weekend) adds no row, and neither does one
in which no instrument has two samples (the first one). Data arriving for an interval that
is already finished (stamped before the open interval) is not used; it is counted in
``late_prices``.

Each row ``r`` updates the RiskMetrics covariance, zero mean::

    S <- decay * S + (1 - decay) * r r'

Started from zero, after ``k`` rows the weights of the rows sum to ``1 - decay**k``, not 1
(0.71 after 20 daily rows with decay 0.94). The covariance the model uses is therefore ``S
/ (1 - decay**k)``: the same exponential weights, renormalised to sum to one, so that a
young model does not understate variance. After 75 rows the two differ by less than 1%.
(:attr:`CovarianceRiskModel.weight` is ``1 - decay**k``, computed by the same recursion
as ``S`` applied to 1.)

The last ``history`` rows are also kept in a ring, with the simple returns ``exp(r) - 1``
alongside, for historical simulation.

Corporate actions: :meth:`CovarianceRiskModel.on_corporate_action` multiplies every price
the model holds for the instrument from before the action (its previous sample, and its
price so far in the open interval) by the action's price ratio, so the next return is
measured on the new basis and a split or a dividend does not look like a move.

Value at risk
-------------
Exposures are signed, per instrument, in the account currency: ``quantity * price *
multiplier``. VaR is a 1-sampling-interval (by default 1-day) loss, in the account
currency, at ``confidence``, and never negative:

- **parametric**: ``z * sqrt(e' C e)``, ``C`` the covariance above, ``z`` the normal
  quantile of ``confidence`` (2.326 for 99%). Delta-normal: the exposures are treated as
  linear in the log returns.
- **historical**: minus the ``1 - confidence`` quantile of the P&L series ``sum_i e_i *
  (exp(r_ti) - 1)`` over the rows kept, 0 if that quantile is a gain. The quantile
  interpolates linearly between order statistics (Hyndman and Fan's type 7, numpy's default
  ``"linear"``): with ``m`` P&L values sorted ascending ``x[0] <= ... <= x[m-1]`` and ``h =
  (m - 1) * (1 - confidence)``, it is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] -
  x[floor(h)])``. With 250 rows at 99%, ``h = 2.49``: between the third and the fourth
  worst day.
- **max**: the larger of the two.

Both are homogeneous of degree 1 in the exposures (scaling the book by ``f > 0`` scales
VaR by ``f``), which is what :meth:`CovarianceRiskModel.deleverage_factor` relies on.
Component VaR is the Euler allocation of the parametric VaR, ``z * e_i * (C e)_i / sqrt(e'
C e)``: the components add up to the parametric VaR, so they can be summed by region or
asset class.

Kernels
-------
The work is done by numba kernels (the covariance update, the quadratic form, the
historical P&L and its quantile, the correlation matrix), called the same way whether
prices come one at a time or as a batch, so both give bit-for-bit the same model. The
loops run in a fixed order with no reassociation, so a plain Python loop doing the same
operations gives the same bits (the tests keep one).

Regime shifts
-------------
:class:`RegimeDetector` watches the correlation matrix for a jump in average pairwise
correlation (or, optionally, in the distance between a short and a long average of the
matrix). See its docstring for the statistic and the defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = [
    "DAY_NS",
    "CovarianceRiskModel",
    "MonitorFigures",
    "RegimeDetector",
    "RegimeStatistic",
    "RiskModel",
    "VarMethod",
    "monitor_recompute",
    "synthetic_model",
]

DAY_NS = 86_400_000_000_000
"""One day in nanoseconds: the default sampling interval (UTC days)."""

VarMethod = Literal["parametric", "historical", "max"]
RegimeStatistic = Literal["mean_correlation", "frobenius"]

FloatArray = npt.NDArray[np.float64]

_METHODS = ("parametric", "historical", "max")
_STATISTICS = ("mean_correlation", "frobenius")

# integer state of the sampler and the ring, shared by the Python and numba paths
_OPEN, _HAS_DATA, _STARTED, _HEAD, _ROWS, _OBSERVATIONS, _LAST_UPDATE, _LATE = range(8)


@runtime_checkable
class RiskModel(Protocol):
    """What the pre-trade checks and the risk monitor need from a risk model."""

    def is_stale(self, now_ns: int) -> bool:
        """True when the model is not usable: too few observations, or its last update is
        older than its maximum age at ``now_ns``."""
        ...

    def var(self, exposure: np.ndarray) -> float:
        """1-day VaR in the account currency, >= 0, of signed exposures per instrument
        (``quantity * price * multiplier``)."""
        ...

    def correlation(self) -> np.ndarray:
        """The n x n correlation matrix: 1 on the diagonal, 0 where undefined."""
        ...


# --- kernels -------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _close_interval(
    end_ns: int,
    decay: float,
    current: np.ndarray,
    previous: np.ndarray,
    sigma: np.ndarray,
    weight: np.ndarray,
    returns: np.ndarray,
    simple: np.ndarray,
    row: np.ndarray,
    state: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Turn the open interval's last prices into a return row and add it (see the module
    docstring). ``current`` is left all NaN."""
    n = current.shape[0]
    has_return = False
    for i in range(n):
        x = 0.0
        c = current[i]
        if not np.isnan(c):
            p = previous[i]
            if not np.isnan(p):
                x = np.log(c / p)
                has_return = True
            previous[i] = c
            current[i] = np.nan
        row[i] = x
    if not has_return:
        return
    keep = 1.0 - decay
    for i in range(n):
        ri = row[i]
        for j in range(n):
            # ri * row[j] == row[j] * ri exactly, so sigma stays exactly symmetric
            sigma[i, j] = decay * sigma[i, j] + keep * (ri * row[j])
    weight[0] = decay * weight[0] + keep
    head = state[_HEAD]
    for i in range(n):
        returns[head, i] = row[i]
        simple[head, i] = np.expm1(row[i])
    capacity = returns.shape[0]
    state[_HEAD] = (head + 1) % capacity
    if state[_ROWS] < capacity:
        state[_ROWS] += 1
    state[_OBSERVATIONS] += 1
    state[_LAST_UPDATE] = end_ns


@njit(cache=True, nogil=True)
def _feed_kernel(
    instrument_col: np.ndarray,
    price: np.ndarray,
    ts_ns: np.ndarray,
    interval_ns: int,
    decay: float,
    current: np.ndarray,
    previous: np.ndarray,
    sigma: np.ndarray,
    weight: np.ndarray,
    returns: np.ndarray,
    simple: np.ndarray,
    row: np.ndarray,
    state: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """:meth:`CovarianceRiskModel.on_price` for every row of a batch, in order."""
    for k in range(price.shape[0]):
        b = ts_ns[k] // interval_ns
        if state[_STARTED] == 0:
            state[_OPEN] = b
            state[_STARTED] = 1
        elif b > state[_OPEN]:
            if state[_HAS_DATA] != 0:
                end = (state[_OPEN] + 1) * interval_ns
                _close_interval(
                    end, decay, current, previous, sigma, weight, returns, simple, row, state
                )
            state[_OPEN] = b
            state[_HAS_DATA] = 0
        elif b < state[_OPEN]:
            state[_LATE] += 1
            continue
        current[instrument_col[k]] = price[k]
        state[_HAS_DATA] = 1


@njit(cache=True, nogil=True)
def _quadratic_kernel(
    sigma: np.ndarray, exposure: np.ndarray, sigma_e: np.ndarray
) -> float:  # pragma: no cover - compiled
    """``e' S e``; ``sigma_e`` receives ``S e``."""
    n = exposure.shape[0]
    quad = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += sigma[i, j] * exposure[j]
        sigma_e[i] = acc
        quad += exposure[i] * acc
    return quad


@njit(cache=True, nogil=True)
def _historical_kernel(
    simple: np.ndarray, rows: int, exposure: np.ndarray, tail: float, pnl: np.ndarray
) -> float:  # pragma: no cover - compiled
    """Historical VaR: minus the ``tail`` quantile (type 7) of the P&L of ``exposure`` over
    the first ``rows`` rows of ``simple``, at least 0. ``pnl`` receives the P&L, sorted."""
    n = exposure.shape[0]
    for t in range(rows):
        acc = 0.0
        for i in range(n):
            acc += exposure[i] * simple[t, i]
        pnl[t] = acc
    if rows == 0:
        return 0.0
    pnl[:rows].sort()
    h = (rows - 1) * tail
    lo = int(np.floor(h))
    hi = lo + 1 if lo + 1 < rows else lo
    q = pnl[lo] + (h - lo) * (pnl[hi] - pnl[lo])
    return -q if q < 0.0 else 0.0


@njit(cache=True, nogil=True)
def _correlation_kernel(sigma: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    n = sigma.shape[0]
    sd = np.empty(n)
    for i in range(n):
        v = sigma[i, i]
        sd[i] = np.sqrt(v) if v > 0.0 else 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                out[i, j] = 1.0
                continue
            d = sd[i] * sd[j]  # sd[i] * sd[j] == sd[j] * sd[i]: out stays symmetric
            if d > 0.0:
                c = sigma[i, j] / d
                if c > 1.0:
                    c = 1.0
                elif c < -1.0:
                    c = -1.0
                out[i, j] = c
            else:
                out[i, j] = 0.0


@njit(cache=True, nogil=True)
def _mean_pairwise_kernel(corr: np.ndarray, include: np.ndarray) -> float:  # pragma: no cover
    """Mean of ``corr[i, j]`` over the pairs ``i < j`` of included instruments (NaN if
    fewer than two are included)."""
    n = corr.shape[0]
    total = 0.0
    pairs = 0
    for i in range(n):
        if not include[i]:
            continue
        for j in range(i + 1, n):
            if include[j]:
                total += corr[i, j]
                pairs += 1
    return total / pairs if pairs > 0 else np.nan


@njit(cache=True, nogil=True)
def _frobenius_kernel(
    corr: np.ndarray,
    include: np.ndarray,
    short_alpha: float,
    long_alpha: float,
    short_sum: np.ndarray,
    long_sum: np.ndarray,
    weights: np.ndarray,
) -> float:  # pragma: no cover - compiled
    """Update the short and long EWMA sums of the correlation matrix (``weights`` holds
    their total weights) and return the root mean square, over the pairs ``i < j`` of
    included instruments, of the difference of the two averages."""
    n = corr.shape[0]
    ws = (1.0 - short_alpha) * weights[0] + short_alpha
    wl = (1.0 - long_alpha) * weights[1] + long_alpha
    weights[0] = ws
    weights[1] = wl
    total = 0.0
    pairs = 0
    for i in range(n):
        for j in range(n):
            c = corr[i, j]
            s = (1.0 - short_alpha) * short_sum[i, j] + short_alpha * c
            g = (1.0 - long_alpha) * long_sum[i, j] + long_alpha * c
            short_sum[i, j] = s
            long_sum[i, j] = g
            if j > i and include[i] and include[j]:
                d = s / ws - g / wl
                total += d * d
                pairs += 1
    return np.sqrt(total / pairs) if pairs > 0 else np.nan


# --- the model -----------------------------------------------------------------------------


def _require(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class CovarianceRiskModel:
    """EWMA covariance of sampled log returns, with parametric and historical VaR.

    Implements :class:`RiskModel`. See the module docstring for how returns are sampled,
    how the covariance is estimated and how VaR is defined.

    - ``decay``: the RiskMetrics lambda, in (0, 1); 0.94 for daily returns.
    - ``confidence``: of VaR, in (0.5, 1).
    - ``method``: what :meth:`var` reports: ``"parametric"``, ``"historical"`` or
      ``"max"`` (the larger).
    - ``history``: return rows kept for historical simulation (250: about a year of days).
    - ``min_observations``: return rows needed before the model is usable.
    - ``sample_interval_ns``: the grid of return sampling (UTC-aligned); a day by default.
      VaR is over one such interval.
    - ``max_age_ns``: the model is stale when its last return row is older than this
      (None: never stale for age).
    """

    def __init__(
        self,
        n_instruments: int,
        *,
        decay: float = 0.94,
        confidence: float = 0.99,
        method: VarMethod = "max",
        history: int = 250,
        min_observations: int = 20,
        sample_interval_ns: int = DAY_NS,
        max_age_ns: int | None = None,
    ) -> None:
        _require(
            _is_int(n_instruments) and n_instruments >= 1,
            "n_instruments",
            "a positive integer",
            n_instruments,
        )
        _require(isinstance(decay, float | int) and 0.0 < decay < 1.0, "decay", "in (0, 1)", decay)
        _require(
            isinstance(confidence, float | int) and 0.5 < confidence < 1.0,
            "confidence",
            "in (0.5, 1)",
            confidence,
        )
        _require(method in _METHODS, "method", f"one of {_METHODS}", method)
        _require(_is_int(history) and history >= 1, "history", "a positive integer", history)
        _require(
            _is_int(min_observations) and min_observations >= 1,
            "min_observations",
            "a positive integer",
            min_observations,
        )
        _require(
            _is_int(sample_interval_ns) and sample_interval_ns > 0,
            "sample_interval_ns",
            "a positive integer (nanoseconds)",
            sample_interval_ns,
        )
        _require(
            max_age_ns is None or (_is_int(max_age_ns) and max_age_ns > 0),
            "max_age_ns",
            "None or a positive integer (nanoseconds)",
            max_age_ns,
        )
        n = int(n_instruments)
        self.n_instruments = n
        self.decay = float(decay)
        self.confidence = float(confidence)
        self.method: VarMethod = method
        self.history = int(history)
        self.min_observations = int(min_observations)
        self.sample_interval_ns = int(sample_interval_ns)
        self.max_age_ns = None if max_age_ns is None else int(max_age_ns)
        self.z = NormalDist().inv_cdf(self.confidence)
        """The normal quantile of ``confidence`` (2.3263478740408408 at 0.99)."""
        self.tail = 1.0 - self.confidence
        self._current = np.full(n, np.nan)  # last price of each instrument in the open interval
        self._previous = np.full(n, np.nan)  # each instrument's last sample
        self._sigma = np.zeros((n, n))
        self._weight = np.zeros(1)
        self._returns = np.zeros((history, n))
        self._simple = np.zeros((history, n))
        self._row = np.zeros(n)  # scratch for the row being built
        self._state = np.zeros(8, dtype=np.int64)
        self._sigma_e = np.zeros(n)  # scratch for S e
        self._pnl = np.zeros(history)  # scratch for the historical P&L

    # --- feeding ---------------------------------------------------------------------------

    def on_price(self, instrument: int, price: float, ts_ns: int) -> None:
        """A price of ``instrument`` (its index) at data time ``ts_ns``. Prices must come in
        time order; one stamped before the open interval is counted in ``late_prices``
        and not used."""
        self._check_instrument(instrument)
        if not (price > 0.0 and math.isfinite(price)):
            raise ValueError(f"price of instrument {instrument} must be positive, got {price!r}")
        st = self._state
        b = ts_ns // self.sample_interval_ns
        if st[_STARTED] == 0:
            st[_OPEN] = b
            st[_STARTED] = 1
        elif b > st[_OPEN]:
            self._roll(b)
        elif b < st[_OPEN]:
            st[_LATE] += 1
            return
        self._current[instrument] = price
        st[_HAS_DATA] = 1

    def on_prices(self, instrument_col: np.ndarray, price: np.ndarray, ts_ns: np.ndarray) -> None:
        """Prices as columns (instrument index, price, data time in ns), in time order: the
        same result as :meth:`on_price` row by row."""
        inst = np.asarray(instrument_col)
        px = np.asarray(price, dtype=np.float64)
        ts = np.asarray(ts_ns, dtype=np.int64)
        if not (inst.shape == px.shape == ts.shape and inst.ndim == 1):
            raise ValueError(
                f"columns must be 1-d and of one length, got {inst.shape}, {px.shape}, {ts.shape}"
            )
        if len(px) == 0:
            return
        if not np.issubdtype(inst.dtype, np.integer):
            raise ValueError(f"instrument_col must hold integers, got {inst.dtype}")
        if int(inst.min()) < 0 or int(inst.max()) >= self.n_instruments:
            raise ValueError(
                f"instrument_col must hold indices in [0, {self.n_instruments}), "
                f"got {int(inst.min())}..{int(inst.max())}"
            )
        bad = ~((px > 0.0) & np.isfinite(px))
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(
                f"price of instrument {int(inst[k])} must be positive, got {float(px[k])!r} "
                f"(row {k})"
            )
        _feed_kernel(
            inst.astype(np.int64),
            px,
            ts,
            self.sample_interval_ns,
            self.decay,
            self._current,
            self._previous,
            self._sigma,
            self._weight,
            self._returns,
            self._simple,
            self._row,
            self._state,
        )

    def advance_to(self, ts_ns: int) -> None:
        """Data time has reached ``ts_ns`` (a clock's timer): finish the open interval now
        if ``ts_ns`` is past it, rather than when the next price arrives."""
        st = self._state
        b = ts_ns // self.sample_interval_ns
        if st[_STARTED] != 0 and b > st[_OPEN]:
            self._roll(b)

    def on_corporate_action(self, instrument: int, price_ratio: float) -> None:
        """``instrument`` goes ex a split or dividend whose ``price_ratio`` multiplies earlier
        prices (0.25 for a 4:1 split; ``split_ratio * dividend_ratio`` of a
        :class:`engine.messages.CorporateActionEvent`). Call it before the first price on
        the new basis: the prices held from before are put on the new basis, so the next
        return does not show the action as a move."""
        self._check_instrument(instrument)
        if not (price_ratio > 0.0 and math.isfinite(price_ratio)):
            raise ValueError(f"price_ratio must be positive, got {price_ratio!r}")
        self._previous[instrument] *= price_ratio  # NaN stays NaN
        self._current[instrument] *= price_ratio

    def _roll(self, new_interval: int) -> None:
        st = self._state
        if st[_HAS_DATA] != 0:
            end = (int(st[_OPEN]) + 1) * self.sample_interval_ns
            _close_interval(
                end,
                self.decay,
                self._current,
                self._previous,
                self._sigma,
                self._weight,
                self._returns,
                self._simple,
                self._row,
                st,
            )
        st[_OPEN] = new_interval
        st[_HAS_DATA] = 0

    def _check_instrument(self, instrument: int) -> None:
        if not 0 <= instrument < self.n_instruments:
            raise ValueError(
                f"instrument must be an index in [0, {self.n_instruments}), got {instrument!r}"
            )

    # --- state -----------------------------------------------------------------------------

    @property
    def observations(self) -> int:
        """Return rows added so far."""
        return int(self._state[_OBSERVATIONS])

    @property
    def last_update_ns(self) -> int:
        """The end of the interval of the last return row (a grid point), 0 before any."""
        return int(self._state[_LAST_UPDATE])

    @property
    def late_prices(self) -> int:
        """Prices not used because they were stamped before the open interval."""
        return int(self._state[_LATE])

    @property
    def weight(self) -> float:
        """``1 - decay**observations``: the total weight of the rows in the raw EWMA sum."""
        return float(self._weight[0])

    def is_stale(self, now_ns: int) -> bool:
        """True with fewer than ``min_observations`` rows, or when the last row is more than
        ``max_age_ns`` older than ``now_ns``."""
        if self.observations < self.min_observations:
            return True
        return self.max_age_ns is not None and now_ns - self.last_update_ns > self.max_age_ns

    def covariance(self) -> FloatArray:
        """The covariance of one interval's log returns (a copy): the EWMA sum divided by
        :attr:`weight`; zeros before the first row."""
        w = self.weight
        if w == 0.0:
            return np.zeros_like(self._sigma)
        return self._sigma / w

    def variances(self) -> FloatArray:
        """The diagonal of :meth:`covariance`: each instrument's variance of one interval's
        log return (0 for one that has not moved yet)."""
        w = self.weight
        d = np.diagonal(self._sigma).copy()
        return d / w if w != 0.0 else d

    def returns(self) -> FloatArray:
        """The log-return rows kept for historical simulation, oldest first (a copy)."""
        rows = int(self._state[_ROWS])
        head = int(self._state[_HEAD])
        if rows < self.history:
            return self._returns[:rows].copy()
        return np.concatenate([self._returns[head:], self._returns[:head]])

    def correlation(self) -> FloatArray:
        """The correlation matrix of the covariance: 1 on the diagonal, 0 off it for an
        instrument with no variance yet; entries clipped to [-1, 1]."""
        out = np.empty_like(self._sigma)
        _correlation_kernel(self._sigma, out)  # the normalising weight cancels
        return out

    # --- value at risk ---------------------------------------------------------------------

    def _exposure(self, exposure: np.ndarray) -> FloatArray:
        e = np.ascontiguousarray(exposure, dtype=np.float64)
        if e.shape != (self.n_instruments,):
            raise ValueError(
                f"exposure must have shape ({self.n_instruments},), got {np.shape(exposure)}"
            )
        return e

    def _quadratic(self, e: FloatArray) -> float:
        """``e' C e`` (>= 0); leaves ``C e`` times the weight in ``self._sigma_e``."""
        quad = float(_quadratic_kernel(self._sigma, e, self._sigma_e))
        w = self.weight
        if w == 0.0 or not quad > 0.0:  # a rounding residue of a perfect hedge may be < 0
            return 0.0
        return quad / w

    def parametric_var(self, exposure: np.ndarray) -> float:
        """``z * sqrt(e' C e)``, >= 0."""
        e = self._exposure(exposure)
        if not np.isfinite(e).all():
            return math.inf
        return self.z * math.sqrt(self._quadratic(e))

    def historical_var(self, exposure: np.ndarray) -> float:
        """Minus the ``1 - confidence`` quantile (type 7, linear) of the P&L of ``exposure``
        over the rows kept, >= 0; 0 before any row."""
        e = self._exposure(exposure)
        if not np.isfinite(e).all():
            return math.inf
        rows = int(self._state[_ROWS])
        return float(_historical_kernel(self._simple, rows, e, self.tail, self._pnl))

    def var(self, exposure: np.ndarray) -> float:
        """VaR by the configured ``method``, in the account currency, >= 0. An exposure that
        is not finite (NaN from an instrument with no price) gives ``inf``: risk that cannot
        be measured fails a limit rather than passing it."""
        if self.method == "parametric":
            return self.parametric_var(exposure)
        if self.method == "historical":
            return self.historical_var(exposure)
        return max(self.parametric_var(exposure), self.historical_var(exposure))

    def incremental_var(
        self, exposure_before: np.ndarray, exposure_after: np.ndarray
    ) -> tuple[float, float]:
        """``(var(before), var(after))``: what an order would do to VaR. The increment is
        their difference (negative for an order that reduces risk)."""
        return self.var(exposure_before), self.var(exposure_after)

    def component_var(self, exposure: np.ndarray) -> FloatArray:
        """Parametric VaR by instrument, by Euler allocation: ``z * e_i * (C e)_i / sqrt(e' C
        e)``. The components sum to :meth:`parametric_var` (up to rounding); a hedge has a
        negative component. All zeros when the VaR is zero."""
        e = self._exposure(exposure)
        if not np.isfinite(e).all():
            raise ValueError("exposure must be finite to allocate VaR")
        quad = self._quadratic(e)
        if quad == 0.0:
            return np.zeros(self.n_instruments)
        c_e = self._sigma_e / self.weight
        return self.z * e * c_e / math.sqrt(quad)

    def deleverage_factor(self, exposure: np.ndarray, var_limit: float) -> float:
        """The factor in (0, 1] by which scaling every exposure brings VaR (by ``method``)
        within ``var_limit``: ``var_limit / var``, or 1 when already within. VaR is
        homogeneous of degree 1, so ``var(f * exposure) == var_limit`` up to rounding."""
        if not (var_limit > 0.0 and math.isfinite(var_limit)):
            raise ValueError(f"var_limit must be a positive number, got {var_limit!r}")
        e = self._exposure(exposure)
        if not np.isfinite(e).all():
            raise ValueError("exposure must be finite to size a deleverage")
        v = self.var(e)
        return 1.0 if v <= var_limit else var_limit / v


# --- regime shifts -------------------------------------------------------------------------


def _alpha(half_life: float) -> float:
    """The EWMA weight of a new observation for a half-life in observations."""
    return 1.0 - math.pow(0.5, 1.0 / half_life)


class RegimeDetector:
    """Flags a shift of the correlation regime, with hysteresis.

    Fed the correlation matrix each time the risk model adds a return row (:meth:`update`
    with the model; fed the model every second, it updates only when there is a new row).
    The instruments considered are those with a defined correlation (a variance, when fed
    the model) and, if ``exposure`` is given, a nonzero exposure.

    The statistic (``value``), by ``statistic``:

    - ``"mean_correlation"`` (default): ``x_t``, the mean pairwise correlation of the
      instruments considered, averaged by two EWMAs of ``x_t`` with half-lives
      ``short_half_life`` and ``long_half_life`` observations; ``value`` is short minus
      long: how far correlations have risen above their usual level. Only a rise counts:
      correlations converge in a sell-off, which is when diversification fails.
    - ``"frobenius"``: the same two EWMAs of the whole matrix; ``value`` is the root mean
      square difference of their off-diagonal entries (the Frobenius distance divided by
      the square root of the number of ordered pairs). It sees any restructuring, rises
      and falls alike.

    Both EWMAs are renormalised to weights summing to one. ``shifted`` becomes True when
    ``value`` rises above ``enter_threshold`` (once ``warmup`` observations have been
    seen) and False again when it falls below ``exit_threshold``.

    Defaults: short half-life 5 observations (a week of days), long 250 (a year), enter
    above +0.15, leave below +0.05, on the correlation of a daily RiskMetrics model (decay
    0.94). On daily closes of SPY, IWM, IBM, BAC and AAPL, 1998-2021, they flag 2008 from
    2008-09-22 and 2020 from 2020-03-04, and nothing in 2006 or 2017, where the statistic
    stays below 0.12 (``tests/unit/test_var.py``; DESIGN.md lists every episode). The
    Frobenius statistic is not the default because it also flags the fall of correlations
    to record lows in 2017.
    """

    def __init__(
        self,
        *,
        statistic: RegimeStatistic = "mean_correlation",
        short_half_life: float = 5.0,
        long_half_life: float = 250.0,
        enter_threshold: float = 0.15,
        exit_threshold: float = 0.05,
        warmup: int = 60,
    ) -> None:
        _require(statistic in _STATISTICS, "statistic", f"one of {_STATISTICS}", statistic)
        _require(
            short_half_life > 0 and math.isfinite(short_half_life),
            "short_half_life",
            "a positive number of observations",
            short_half_life,
        )
        _require(
            long_half_life > short_half_life and math.isfinite(long_half_life),
            "long_half_life",
            f"finite and longer than short_half_life ({short_half_life!r})",
            long_half_life,
        )
        _require(
            math.isfinite(enter_threshold) and enter_threshold > 0,
            "enter_threshold",
            "a positive number",
            enter_threshold,
        )
        _require(
            math.isfinite(exit_threshold) and 0 <= exit_threshold < enter_threshold,
            "exit_threshold",
            f"in [0, enter_threshold={enter_threshold!r})",
            exit_threshold,
        )
        _require(_is_int(warmup) and warmup >= 0, "warmup", "an integer >= 0", warmup)
        self.statistic: RegimeStatistic = statistic
        self.short_half_life = float(short_half_life)
        self.long_half_life = float(long_half_life)
        self.enter_threshold = float(enter_threshold)
        self.exit_threshold = float(exit_threshold)
        self.warmup = int(warmup)
        self._short_alpha = _alpha(self.short_half_life)
        self._long_alpha = _alpha(self.long_half_life)
        self.observations = 0
        self.shifted = False
        self.value = math.nan
        """The statistic after the last update (NaN before the first)."""
        self.short = math.nan
        """Short average of the mean pairwise correlation (``"mean_correlation"``)."""
        self.long = math.nan
        """Long average of the mean pairwise correlation (``"mean_correlation"``)."""
        self.considered = 0
        """Instruments in the last update."""
        self.shifted_at_ns: int | None = None
        """Data time (the model's last update) when the current shift began, if fed a model."""
        self._sums = np.zeros(2)  # short and long EWMA sums of x_t
        self._weights = np.zeros(2)  # their total weights
        self._matrices: tuple[FloatArray, FloatArray] | None = None
        self._model_observations = -1

    def update(
        self,
        source: CovarianceRiskModel | np.ndarray,
        exposure: np.ndarray | None = None,
        *,
        correlation: np.ndarray | None = None,
    ) -> bool:
        """One observation: the model's correlation (skipped if the model has no new return
        row since the last update) or a correlation matrix. With a model, ``correlation``
        may pass its :meth:`~CovarianceRiskModel.correlation` if already computed. Returns
        ``shifted``."""
        if isinstance(source, CovarianceRiskModel):
            if source.observations == self._model_observations:
                return self.shifted
            self._model_observations = source.observations
            corr = source.correlation() if correlation is None else correlation
            include = source.variances() > 0.0
            ts: int | None = source.last_update_ns
        else:
            corr = np.ascontiguousarray(source, dtype=np.float64)
            if corr.ndim != 2 or corr.shape[0] != corr.shape[1]:
                raise ValueError(f"a correlation matrix must be square, got {corr.shape}")
            include = np.ones(corr.shape[0], dtype=np.bool_)
            ts = None
        if exposure is not None:
            e = np.asarray(exposure)
            if e.shape != (corr.shape[0],):
                raise ValueError(f"exposure must have shape ({corr.shape[0]},), got {e.shape}")
            include &= e != 0.0
        count = int(include.sum())
        if count < 2:
            return self.shifted  # no pair: nothing observed
        self.considered = count
        if self.statistic == "mean_correlation":
            x = float(_mean_pairwise_kernel(corr, include))
            a_s, a_l = self._short_alpha, self._long_alpha
            s = self._sums
            w = self._weights
            s[0] = (1.0 - a_s) * s[0] + a_s * x
            s[1] = (1.0 - a_l) * s[1] + a_l * x
            w[0] = (1.0 - a_s) * w[0] + a_s
            w[1] = (1.0 - a_l) * w[1] + a_l
            self.short = float(s[0] / w[0])
            self.long = float(s[1] / w[1])
            value = self.short - self.long
        else:
            if self._matrices is None or self._matrices[0].shape != corr.shape:
                self._matrices = (np.zeros_like(corr), np.zeros_like(corr))
                self._weights[:] = 0.0
            value = float(
                _frobenius_kernel(
                    corr,
                    include,
                    self._short_alpha,
                    self._long_alpha,
                    self._matrices[0],
                    self._matrices[1],
                    self._weights,
                )
            )
        self.observations += 1
        self.value = value
        if self.observations >= self.warmup:
            if not self.shifted and value > self.enter_threshold:
                self.shifted = True
                self.shifted_at_ns = ts
            elif self.shifted and value < self.exit_threshold:
                self.shifted = False
                self.shifted_at_ns = None
        return self.shifted

    @property
    def reason(self) -> str:
        """What the detector sees, in a sentence with the figures."""
        if self.observations == 0:
            return "correlation regime: no observation yet"
        if self.statistic == "mean_correlation":
            figures = (
                f"average pairwise correlation of {self.considered} instruments is "
                f"{self.short:.2f} over the short run (half-life {self.short_half_life:g} "
                f"observations) against {self.long:.2f} over the long run (half-life "
                f"{self.long_half_life:g}), a change of {self.value:+.2f}"
            )
        else:
            figures = (
                f"the correlation matrices of {self.considered} instruments over the short "
                f"run (half-life {self.short_half_life:g} observations) and the long run "
                f"(half-life {self.long_half_life:g}) differ by {self.value:.2f} per pair "
                "(root mean square)"
            )
        if self.observations < self.warmup:
            return (
                f"correlation regime: warming up ({self.observations} of {self.warmup} "
                f"observations); {figures}"
            )
        if self.shifted:
            return (
                f"correlation regime shift: {figures}, above the entry threshold "
                f"{self.enter_threshold:g}; it clears below {self.exit_threshold:g}"
            )
        return (
            f"no correlation regime shift: {figures}; a shift starts above {self.enter_threshold:g}"
        )


# --- the monitor's recomputation -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorFigures:
    """What the risk monitor recomputes from the model and the book (money in the account
    currency, VaR over one sampling interval)."""

    parametric_var: float
    historical_var: float
    var: float  # by the model's method
    component_var: FloatArray  # parametric, by instrument; sums to parametric_var
    correlation: FloatArray
    regime_shifted: bool
    regime_value: float
    deleverage_factor: float  # to bring var within var_limit; 1 when within


def monitor_recompute(
    model: CovarianceRiskModel,
    exposure: np.ndarray,
    detector: RegimeDetector,
    var_limit: float,
) -> MonitorFigures:
    """One full recomputation of the risk monitor's figures."""
    parametric = model.parametric_var(exposure)
    historical = model.historical_var(exposure)
    if model.method == "parametric":
        v = parametric
    elif model.method == "historical":
        v = historical
    else:
        v = max(parametric, historical)
    corr = model.correlation()
    shifted = detector.update(model, exposure, correlation=corr)
    return MonitorFigures(
        parametric_var=parametric,
        historical_var=historical,
        var=v,
        component_var=model.component_var(exposure),
        correlation=corr,
        regime_shifted=shifted,
        regime_value=detector.value,
        deleverage_factor=1.0 if v <= var_limit else var_limit / v,
    )


def synthetic_model(
    n_instruments: int = 1_000, history: int = 250, *, seed: int = 20_260_101
) -> tuple[CovarianceRiskModel, FloatArray]:
    """A model with ``history`` daily return rows of ``n_instruments`` instruments (a
    one-factor market, seeded), and a book of one long or short position of 10,000 to
    1,000,000 in each instrument. For benchmarks and tests."""
    gen = np.random.default_rng(seed)
    n = n_instruments
    model = CovarianceRiskModel(n, history=history)
    beta = gen.uniform(0.5, 1.5, n)
    price = gen.uniform(10.0, 500.0, n)
    inst = np.arange(n, dtype=np.int64)
    for day in range(history + 1):
        market = gen.normal(0.0, 0.01)
        price = price * np.exp(beta * market + gen.normal(0.0, 0.015, n))
        model.on_prices(inst, price, np.full(n, day * DAY_NS + DAY_NS // 2, dtype=np.int64))
    model.advance_to((history + 1) * DAY_NS)
    exposure = gen.uniform(1e4, 1e6, n) * gen.choice(np.array([-1.0, 1.0]), n)
    return model, exposure
