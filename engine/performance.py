"""Performance statistics of a run: returns, risk, trades, exposure, costs, attribution.

Pure numpy over what :class:`engine.portfolio.AccountHistory` recorded. Money is in the
account currency; returns, drawdowns, rates and exposures relative to equity are
fractions (0.01 is 1 %); times are integer nanoseconds since the epoch (UTC), durations
seconds of data time.

**Which returns.** Return statistics are computed on one regular series of equity values:

- *daily*: the equity at the start, at the close of every UTC day that had data (a day
  with no tick and no fill is not a trading day) and at the end; the first and last days
  may be partial. Used when it gives at least ``min_daily_returns`` (20) returns;
  ``periods_per_year = trading_days_per_year`` (252 by default).
- *intraday* otherwise: the equity at the start, at every grid point of the sampling
  interval (``sample_interval_s``, multiples of it since the epoch) and at the end. Grid
  points in a gap with no events carry the last sample forward (the account cannot change
  without an event). Annualised by data time: ``periods_per_year = trading_days_per_year
  * 86,400 / sample_interval_s``, i.e. a trading day counts 24 hours of data, which is
  right for markets that trade around the clock (FX, crypto) and overstates the periods
  of a 6.5-hour equity session (use daily figures there).

**Conventions** (those of empyrical, which the tests check these against to 1e-9):
simple returns ``r_t = E_t / E_{t-1} - 1``, no risk-free rate;

- ``annual_return`` = CAGR: ``prod(1 + r) ** (1 / years) - 1``, ``years = n / periods_per_year``;
- ``annual_volatility`` = ``std(r, ddof=1) * sqrt(periods_per_year)``;
- ``sharpe`` = ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` (0 spread: 0 std);
- ``sortino`` = ``mean(r) * periods_per_year / downside``, ``downside = sqrt(mean(min(r, 0)
  ** 2)) * sqrt(periods_per_year)``: the mean over *all* periods (no ddof);
- ``max_drawdown``: the largest fall from a running peak of ``prod(1 + r)`` (the start
  counts as a peak), reported as a positive fraction (empyrical's is negative);
- ``calmar`` = ``annual_return / max_drawdown``; NaN when there is no drawdown.

Fewer than two returns give NaN where a spread is needed. Annualising a short run
extrapolates wildly (an 11-minute run compounds its return over a year): read
``annual_return`` with ``duration_s``.

**Trades** are round trips per instrument in the netting account: from flat to flat, or
to a flip through zero (which closes one trip and opens the next at the fill price).
Entry and exit prices are quantity-weighted averages; a trip's P&L is the realised P&L of
its closing fills, before commission; ``net_pnl`` is after the commission of its fills (a
flipping fill's commission is split by quantity). Hit rate, profit factor and average
win and loss are over closed trips, on ``net_pnl``.

**Exposure** per sample is ``|quantity| * mark * multiplier`` summed over instruments
(gross) or signed (net). Time in market is the fraction of data time with any position
open, exact because positions change only at fills and every fill is a sample. Averages
over time weight each sample by the time until the next one.

**Costs by kind**: commission (charged, in the balance) and every other kind the fills
report (spread, slippage, ...: measured, already in the fill prices).

**Attribution**: P&L by instrument is its realised plus unrealised P&L; by asset class and
region the sum over their instruments (region only when some instrument has one). By
strategy: the fills of a strategy make its own sub-book, whose P&L is its cash flows plus
its net quantity at the final mark, so strategies add up to the instrument; an instrument
one strategy alone traded gives that strategy its exact figures.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import msgspec
import numpy as np
from numba import njit

from engine.portfolio import SAMPLE_FILL, SAMPLE_GRID, SAMPLE_KINDS, AccountHistory, scratch

__all__ = [
    "DailyEquity",
    "EquityCurve",
    "Performance",
    "RoundTrip",
    "TradeLog",
    "analyse",
    "annual_return",
    "annual_volatility",
    "calmar_ratio",
    "downside_risk",
    "drawdown_episode",
    "max_drawdown",
    "round_trips",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "warm_up",
]

MIN_DAILY_RETURNS = 20
MAX_INTRADAY_POINTS = 2_000_000
"""Beyond this many grid points the intraday series is thinned by a whole factor."""

_NS = 1_000_000_000


# --- return statistics ---------------------------------------------------------------------


def simple_returns(equity: np.ndarray) -> np.ndarray:
    """``E[t] / E[t-1] - 1`` for consecutive values."""
    e = np.asarray(equity, dtype=np.float64)
    if len(e) < 2:
        return np.empty(0, dtype=np.float64)
    out: np.ndarray = e[1:] / e[:-1] - 1.0
    return out


def annual_return(returns: np.ndarray, periods_per_year: float) -> float:
    """Compound annual growth rate."""
    n = len(returns)
    if n < 1:
        return math.nan
    years = n / periods_per_year
    ending = float(np.prod(1.0 + returns))
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.float64(ending) ** (1.0 / years) - 1.0)


def annual_volatility(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 2:
        return math.nan
    return float(np.std(returns, ddof=1) * periods_per_year ** (1.0 / 2.0))


def _std(returns: np.ndarray) -> float:
    if returns.max() == returns.min():  # a constant series: exactly no spread
        return 0.0
    return float(np.std(returns, ddof=1))


def sharpe_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 2:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(np.mean(returns)) / _std(returns) * np.sqrt(periods_per_year))


def downside_risk(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 1:
        return math.nan
    down = np.clip(returns, -np.inf, 0.0)
    return float(np.sqrt(np.mean(np.square(down))) * np.sqrt(periods_per_year))


def sortino_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 2:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(
            np.float64(np.mean(returns) * periods_per_year)
            / downside_risk(returns, periods_per_year)
        )


def max_drawdown(returns: np.ndarray) -> float:
    """The largest fall from a running peak, as a positive fraction (0 if none)."""
    if len(returns) < 1:
        return math.nan
    wealth = np.empty(len(returns) + 1, dtype=np.float64)
    wealth[0] = 100.0
    np.multiply(np.cumprod(1.0 + returns), 100.0, out=wealth[1:])
    peak = np.fmax.accumulate(wealth)
    return float(-np.min((wealth - peak) / peak)) + 0.0  # + 0.0: no -0.0 for no drawdown


def calmar_ratio(returns: np.ndarray, periods_per_year: float) -> float:
    mdd = max_drawdown(returns)
    if not mdd > 0:
        return math.nan
    ratio = annual_return(returns, periods_per_year) / mdd
    return math.nan if math.isinf(ratio) else ratio


class DrawdownEpisode(msgspec.Struct, frozen=True, kw_only=True):
    """The largest drawdown of a series: indexes of its peak, trough and recovery (the first
    value back at the peak, None if it never was), and the longest time under water."""

    depth: float
    peak: int
    trough: int
    recovery: int | None
    duration_ns: int
    """Peak to recovery, or to the end of the series if not recovered."""
    longest_underwater_ns: int


def drawdown_episode(ts: np.ndarray, equity: np.ndarray) -> DrawdownEpisode:
    """The largest drawdown of ``equity`` sampled at ``ts`` (at least one value)."""
    e = np.asarray(equity, dtype=np.float64)
    t = np.asarray(ts, dtype=np.int64)
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - e / peak, 0.0)
    trough = int(np.argmax(dd))
    depth = float(dd[trough])
    if depth <= 0:
        return DrawdownEpisode(
            depth=0.0, peak=0, trough=0, recovery=None, duration_ns=0, longest_underwater_ns=0
        )
    peak_i = int(np.flatnonzero(e[: trough + 1] == peak[trough])[-1])
    after = np.flatnonzero(e[trough:] >= peak[trough])
    recovery = int(trough + after[0]) if len(after) else None
    end = recovery if recovery is not None else len(e) - 1
    # longest stretch under water: from the last value at a peak to the next one
    at_peak = np.flatnonzero(dd <= 0)
    bounds = np.append(at_peak, len(e) - 1)
    longest = int(np.max(t[bounds[1:]] - t[bounds[:-1]])) if len(bounds) > 1 else 0
    return DrawdownEpisode(
        depth=depth,
        peak=peak_i,
        trough=trough,
        recovery=recovery,
        duration_ns=int(t[end] - t[peak_i]),
        longest_underwater_ns=longest,
    )


# --- what the run recorded ---------------------------------------------------------------------
#
# Columns (numpy arrays), one entry per sample or trade: a long run keeps no Python object
# per sample. ``to_builtins`` gives the plain JSON form.


class EquityCurve(msgspec.Struct, kw_only=True, eq=False):
    """Every sample of the account, in the order taken: at the start, on the sampling
    grid, after each fill and at the end (``kind``: index into ``KINDS``). Money in the
    account currency; ``drawdown`` is the fall from the running peak of ``equity`` as a
    positive fraction; exposures are ``|qty| * mark * multiplier`` (gross) and signed
    (net); ``positions`` are signed quantities, one column per instrument id;
    ``gross_exposure_by_asset_class`` one column per asset class."""

    KINDS: ClassVar[tuple[str, ...]] = SAMPLE_KINDS
    instrument_ids: list[str]
    asset_classes: list[str]
    ts: np.ndarray
    kind: np.ndarray
    equity: np.ndarray
    balance: np.ndarray
    drawdown: np.ndarray
    gross_exposure: np.ndarray
    net_exposure: np.ndarray
    positions: np.ndarray
    gross_exposure_by_asset_class: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def kind_names(self) -> list[str]:
        return [SAMPLE_KINDS[k] for k in self.kind.tolist()]

    def to_builtins(self) -> dict[str, Any]:
        return {
            "ts": self.ts.tolist(),
            "kind": self.kind_names(),
            "equity": self.equity.tolist(),
            "balance": self.balance.tolist(),
            "drawdown": self.drawdown.tolist(),
            "gross_exposure": self.gross_exposure.tolist(),
            "net_exposure": self.net_exposure.tolist(),
            "positions": {
                x: self.positions[:, i].tolist() for i, x in enumerate(self.instrument_ids)
            },
            "gross_exposure_by_asset_class": {
                c: self.gross_exposure_by_asset_class[:, i].tolist()
                for i, c in enumerate(self.asset_classes)
            },
        }


class DailyEquity(msgspec.Struct, kw_only=True, eq=False):
    """The equity daily figures use: at the start, at each UTC day's close (``date`` is the
    day closed) and at the end."""

    ts: np.ndarray
    date: list[str]
    equity: np.ndarray

    def to_builtins(self) -> dict[str, Any]:
        return {"ts": self.ts.tolist(), "date": self.date, "equity": self.equity.tolist()}


class RoundTrip(msgspec.Struct, kw_only=True):
    """One trade from flat to flat in one instrument. Prices are quantity-weighted averages;
    ``quantity`` is what was bought (long) or sold (short) to open; ``pnl`` is realised,
    before commission; ``exit_*`` are None while the trip is open."""

    instrument_id: str
    strategy_id: str
    side: str  # "LONG" or "SHORT"
    entry_ts: int
    entry_price: float
    quantity: float
    exit_ts: int | None
    exit_price: float | None
    pnl: float
    commission: float
    net_pnl: float
    fills: int


class TradeLog(msgspec.Struct, kw_only=True, eq=False):
    """Round trips as columns: closed ones in order of exit, then open ones in order of
    entry. ``instrument`` and ``strategy`` index ``instrument_ids`` and ``strategy_ids``;
    ``side`` is +1 long, -1 short; ``exit_ts`` and ``exit_price`` mean nothing where
    ``is_open`` (exit price is NaN when nothing was closed yet). See :class:`RoundTrip`."""

    instrument_ids: list[str]
    strategy_ids: list[str]
    instrument: np.ndarray
    strategy: np.ndarray
    side: np.ndarray
    entry_ts: np.ndarray
    entry_price: np.ndarray
    quantity: np.ndarray
    exit_ts: np.ndarray
    exit_price: np.ndarray
    is_open: np.ndarray
    pnl: np.ndarray
    commission: np.ndarray
    net_pnl: np.ndarray
    fills: np.ndarray

    def __len__(self) -> int:
        return len(self.pnl)

    def rows(self, limit: int | None = None) -> list[RoundTrip]:
        """The first ``limit`` trips (all by default) as :class:`RoundTrip` rows."""
        end = len(self) if limit is None else min(limit, len(self))
        out = []
        for k in range(end):
            still_open = bool(self.is_open[k])
            out.append(
                RoundTrip(
                    instrument_id=self.instrument_ids[int(self.instrument[k])],
                    strategy_id=self.strategy_ids[int(self.strategy[k])],
                    side="LONG" if self.side[k] > 0 else "SHORT",
                    entry_ts=int(self.entry_ts[k]),
                    entry_price=float(self.entry_price[k]),
                    quantity=float(self.quantity[k]),
                    exit_ts=None if still_open else int(self.exit_ts[k]),
                    exit_price=None
                    if math.isnan(self.exit_price[k])
                    else float(self.exit_price[k]),
                    pnl=float(self.pnl[k]),
                    commission=float(self.commission[k]),
                    net_pnl=float(self.net_pnl[k]),
                    fills=int(self.fills[k]),
                )
            )
        return out

    def to_builtins(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = msgspec.to_builtins(self.rows())
        return rows


class Performance(msgspec.Struct, kw_only=True, eq=False):
    """The analysis of one run: ``metrics`` (plain JSON values, see the module docstring),
    the equity curve, the daily equity and the round trips."""

    metrics: dict[str, Any]
    curve: EquityCurve
    daily: DailyEquity
    trades: TradeLog


# --- the pieces ----------------------------------------------------------------------------


def _iso(ts: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(ts), "ns"), unit="s")) + "Z"


def _date(ts: int) -> str:
    return str(np.datetime64(int(ts), "ns").astype("datetime64[D]"))


def _finite(x: float) -> float | None:
    """JSON has no NaN or infinity: None for those."""
    return x if math.isfinite(x) else None


@njit(cache=True, nogil=True)
def _round_trips_kernel(
    ts: np.ndarray,
    instrument: np.ndarray,
    strategy: np.ndarray,
    qty: np.ndarray,
    price: np.ndarray,
    commission: np.ndarray,
    realized: np.ndarray,
    position: np.ndarray,
    place: np.ndarray,
    slot: np.ndarray,
    last: np.ndarray,
    ints: np.ndarray,
    floats: np.ndarray,
    split_ts: np.ndarray,
    split_instrument: np.ndarray,
    split_ratio: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Round trips of a fill log, in two calls.

    With ``ints`` of no rows, the first call finds the trips: it writes in ``place``
    (as long as the log) where each trip lands in the final order, closed trips by the
    fill that closed them and then open ones by the fill that opened them, and returns
    how many trips are closed, and in ``slot[0]`` how many there are. The second call,
    with zeroed ``ints`` [instrument, strategy, side, entry ts, exit ts, fills] and
    ``floats`` [qty in, notional in, qty out, notional out, pnl, commission] of one
    column per trip, writes each trip at its place. ``slot`` and ``last`` (one entry per
    instrument) are scratch. So the columns have their final size and order: no
    scratch as long as the fill log, no sort.

    A split (``split_*``, in time order) puts the quantities of the instrument's open trip
    on the new basis before the fills that follow it; notionals, money, do not change."""
    k = qty.shape[0]
    write = ints.shape[1] > 0
    slot[:] = -1
    last[:] = 0.0
    n = 0
    closed = 0
    s = 0
    for j in range(k):
        while s < split_ts.shape[0] and split_ts[s] <= ts[j]:
            si = split_instrument[s]
            last[si] /= split_ratio[s]
            if write and slot[si] >= 0:
                floats[0, slot[si]] /= split_ratio[s]
                floats[2, slot[si]] /= split_ratio[s]
            s += 1
        i = instrument[j]
        q = qty[j]
        after = position[j]
        before = last[i]
        last[i] = after
        size = abs(q)
        t = slot[i]
        if before == 0.0 or (before > 0.0) == (q > 0.0) or t < 0:
            if t < 0:
                if not write:
                    place[n] = -1
                    slot[i] = n
                    n += 1
                    continue
                t = place[n]
                n += 1
                slot[i] = t
                ints[0, t] = i
                ints[1, t] = strategy[j]
                ints[2, t] = 1 if q > 0.0 else -1
                ints[3, t] = ts[j]
            if write:
                floats[0, t] += size
                floats[1, t] += size * price[j]
                floats[5, t] += commission[j]
                ints[5, t] += 1
            continue
        closes = after == 0.0 or (after > 0.0) != (before > 0.0)
        if not write:
            if closes:
                place[t] = closed
                closed += 1
                slot[i] = -1
                if after != 0.0:
                    place[n] = -1
                    slot[i] = n
                    n += 1
            continue
        p = price[j]
        c = commission[j]
        closing = min(size, abs(before))
        share = closing / size if size > 0.0 else 1.0
        floats[2, t] += closing
        floats[3, t] += closing * p
        floats[4, t] += realized[j]
        floats[5, t] += c * share
        ints[5, t] += 1
        if closes:
            ints[4, t] = ts[j]
            slot[i] = -1
            if after != 0.0:  # a flip: the rest opens the next trip at this fill's price
                t = place[n]
                n += 1
                slot[i] = t
                ints[0, t] = i
                ints[1, t] = strategy[j]
                ints[2, t] = 1 if after > 0.0 else -1
                ints[3, t] = ts[j]
                ints[5, t] = 1
                floats[0, t] = abs(after)
                floats[1, t] = abs(after) * p
                floats[5, t] = c * (1.0 - share)
    if not write:
        row = closed
        for t in range(n):
            if place[t] < 0:
                place[t] = row
                row += 1
        slot[0] = n
    return closed


def _indexes(values: np.ndarray) -> np.ndarray:
    """``values`` as int32. All zeros (one instrument, one strategy) are a scratch map's
    zeros, which take no memory until written."""
    return values.astype(np.int32) if values.any() else scratch(len(values), np.int32)


def round_trips(
    fills: dict[str, np.ndarray],
    instrument_ids: list[str],
    strategies: list[str],
    splits: list[tuple[int, int, float]] | None = None,
) -> TradeLog:
    """Round trips from a fill log (:meth:`AccountHistory.fill_log`): closed ones in order
    of exit, then open ones in order of entry. ``splits`` (time, instrument index, price
    ratio) put a trip across a split on the basis after it, so its entry and exit prices
    compare."""
    split_rows = sorted(splits or [])
    split_columns = (
        np.array([r[0] for r in split_rows], dtype=np.int64),
        np.array([r[1] for r in split_rows], dtype=np.int64),
        np.array([r[2] for r in split_rows], dtype=np.float64),
    )
    columns = (
        fills["ts"],
        fills["instrument"],
        fills["strategy"],
        fills["qty"],
        fills["price"],
        fills["commission"],
        fills["realized"],
        fills["position"],
    )
    m = max(len(instrument_ids), 1)
    place = scratch(len(fills["qty"]), np.int64)
    slot = np.empty(m, dtype=np.int64)
    last = np.empty(m, dtype=np.float64)
    no_rows = np.zeros((6, 0), dtype=np.int64)
    closed = int(
        _round_trips_kernel(*columns, place, slot, last, no_rows, np.zeros((6, 0)), *split_columns)
    )
    n = int(slot[0])
    ints = scratch((6, n), np.int64)
    floats = scratch((6, n))
    _round_trips_kernel(*columns, place, slot, last, ints, floats, *split_columns)
    del place
    with np.errstate(divide="ignore", invalid="ignore"):
        entry_price = floats[1] / floats[0]
        exit_price = floats[3] / floats[2]
    exit_price[~(floats[2] > 0)] = np.nan
    is_open = scratch(n, np.bool_)  # False but for the last few: those pages only are written
    is_open[closed:] = True
    return TradeLog(
        instrument_ids=list(instrument_ids),
        strategy_ids=list(strategies),
        instrument=_indexes(ints[0]),
        strategy=_indexes(ints[1]),
        side=ints[2].astype(np.int8),
        entry_ts=ints[3].copy(),
        entry_price=entry_price,
        quantity=floats[0].copy(),
        exit_ts=ints[4].copy(),
        exit_price=exit_price,
        is_open=is_open,
        pnl=floats[4].copy(),
        commission=floats[5].copy(),
        net_pnl=floats[4] - floats[5],
        fills=ints[5].copy(),
    )


def warm_up() -> None:
    """Load the compiled round-trip kernel now rather than at the end of the first run."""
    round_trips(
        {
            "ts": np.zeros(0, dtype=np.int64),
            "instrument": np.zeros(0, dtype=np.int32),
            "strategy": np.zeros(0, dtype=np.int32),
            **{c: np.zeros(0) for c in ("qty", "price", "commission", "realized", "position")},
        },
        ["X.SIM"],
        [],
    )


def _periodic(
    history: AccountHistory,
    start: tuple[int, float],
    end: tuple[int, float],
    trading_days_per_year: float,
    min_daily_returns: int,
) -> tuple[str, float, float, np.ndarray, np.ndarray]:
    """(periodicity, periods a year, interval in s, ts, equity) of the series return
    statistics are computed on (see the module docstring)."""
    (start_ts, start_eq), (end_ts, end_eq) = start, end
    day_ts = np.concatenate(([start_ts], history.day_ts, [end_ts]))
    day_eq = np.concatenate(([start_eq], history.day_equity, [end_eq]))
    if len(day_ts) - 1 >= min_daily_returns:
        return "daily", trading_days_per_year, 86_400.0, day_ts, day_eq
    step = history.interval_ns
    first = (start_ts // step + 1) * step
    count = max(0, (end_ts - first) // step + 1)
    if count > MAX_INTRADAY_POINTS:
        step *= -(-count // MAX_INTRADAY_POINTS)
        first = (start_ts // step + 1) * step
        count = max(0, (end_ts - first) // step + 1)
    grid = first + step * np.arange(count, dtype=np.int64)
    s = history.samples
    sampled = s["kind"] == SAMPLE_GRID
    g_ts, g_eq = s["ts"][sampled], s["equity"][sampled]
    at = np.searchsorted(g_ts, grid, side="right") - 1
    values = np.where(at >= 0, g_eq[np.maximum(at, 0)], start_eq)
    if count and grid[-1] == end_ts:
        values[-1] = end_eq  # the run ends on a grid point: its end is the last value
        out_ts, out_eq = np.concatenate(([start_ts], grid)), np.concatenate(([start_eq], values))
    else:
        out_ts = np.concatenate(([start_ts], grid, [end_ts]))
        out_eq = np.concatenate(([start_eq], values, [end_eq]))
    interval_s = step / _NS
    return "intraday", trading_days_per_year * 86_400.0 / interval_s, interval_s, out_ts, out_eq


def _time_weighted(ts: np.ndarray, values: np.ndarray, dt: np.ndarray | None = None) -> float:
    """Mean of a step function: each value holds until the next sample. ``dt``: the
    sample durations ``np.diff(ts)`` as floats, when the caller has them already."""
    if len(ts) < 2:
        return float(values[0]) if len(values) else math.nan
    if dt is None:
        dt = np.diff(ts).astype(np.float64)
    total = dt.sum()
    if total <= 0:
        return float(values[-1])
    return float(np.dot(values[:-1], dt) / total)


def _monthly_returns(day_ts: np.ndarray, day_eq: np.ndarray) -> dict[str, float]:
    """Return per calendar month (UTC) from the daily series: each month's last value over
    the previous month's (the start for the first month). A close stamped at a midnight
    belongs to the day before it."""
    stamp = day_ts.copy()
    stamp[1:-1] -= 1  # closes are stamped at the midnight that ends their day
    months = stamp.astype("datetime64[ns]").astype("datetime64[M]")
    out: dict[str, float] = {}
    base = float(day_eq[0])
    keys = months[1:]
    values = day_eq[1:]
    for j in range(len(keys)):
        if j + 1 < len(keys) and keys[j + 1] == keys[j]:
            continue
        out[str(keys[j])] = float(values[j]) / base - 1.0
        base = float(values[j])
    return out


def _bucket() -> dict[str, float]:
    return {"pnl": 0.0, "commission": 0.0, "net_pnl": 0.0, "traded_notional": 0.0, "fills": 0}


_BLOCK = 2_048
"""Fills per block where a computation over the fill log goes a block at a time."""


def _attribution(history: AccountHistory, fills: dict[str, np.ndarray]) -> dict[str, Any]:
    pf = history.portfolio
    instruments = list(pf.instruments)
    m = len(instruments)
    k = len(history.strategies)
    mult = pf.mult
    inst = fills["instrument"]
    strat = fills["strategy"]
    qty = fills["qty"]
    price = fills["price"]
    paid = fills["commission"]
    # per (strategy, instrument): cash flows (-qty * price * multiplier), net quantity,
    # commission, notional (|qty * price| * multiplier) and fills, each added in fill
    # order from 0 (np.add.at is a loop over the fills). A block of fills at a time:
    # temporaries as long as the fill log would outlive their use in the heap.
    cells = k * m
    cash: np.ndarray = np.zeros(cells)
    net_qty: np.ndarray = np.zeros(cells)
    commission: np.ndarray = np.zeros(cells)
    traded: np.ndarray = np.zeros(cells)
    count: np.ndarray = np.zeros(cells, dtype=np.int64)
    for lo in range(0, len(qty), _BLOCK):
        hi = lo + _BLOCK
        cell = strat[lo:hi].astype(np.intp)
        cell *= m
        cell += inst[lo:hi]
        mult_of = mult[0] if m == 1 else mult[inst[lo:hi]]
        flow = qty[lo:hi] * price[lo:hi]
        notional = np.abs(flow)
        notional *= mult_of
        flow *= mult_of
        np.negative(flow, out=flow)  # negation commutes exactly with a product
        np.add.at(cash, cell, flow)
        np.add.at(net_qty, cell, qty[lo:hi])
        np.add.at(commission, cell, paid[lo:hi])
        np.add.at(traded, cell, notional)
        np.add.at(count, cell, 1)
    cash = cash.reshape(k, m)
    net_qty = net_qty.reshape(k, m)
    commission = commission.reshape(k, m)
    traded = traded.reshape(k, m)
    count = count.reshape(k, m)
    marks = np.where(np.isnan(pf.mark_price), 0.0, pf.mark_price)
    pnl = cash + net_qty * marks * mult
    exact = pf.realized + pf.unrealized
    for i in range(m):
        traders = np.flatnonzero(count[:, i])
        if len(traders) == 1:
            pnl[traders[0], i] = exact[i]

    def buckets(labels: list[str], rows: np.ndarray) -> dict[str, dict[str, float]]:
        """Sum the per-instrument figures ``rows`` (pnl, commission, notional, fills) by
        label, in first-seen order."""
        out: dict[str, dict[str, float]] = {}
        for label, (p, c, n, f) in zip(labels, rows.T.tolist(), strict=True):
            b = out.setdefault(label, _bucket())
            b["pnl"] += p
            b["commission"] += c
            b["traded_notional"] += n
            b["fills"] += int(f)
        for b in out.values():
            b["net_pnl"] = b["pnl"] - b["commission"]
        return out

    per_instrument = np.vstack(
        (exact, pf.commission_paid, traded.sum(axis=0), count.sum(axis=0).astype(np.float64))
    )
    result: dict[str, Any] = {
        "strategy": {},
        "instrument": buckets([x.id for x in instruments], per_instrument),
        "asset_class": buckets([x.asset_class for x in instruments], per_instrument),
    }
    for s, name in enumerate(history.strategies):
        b = _bucket()
        b["pnl"] = float(pnl[s].sum())
        b["commission"] = float(commission[s].sum())
        b["net_pnl"] = b["pnl"] - b["commission"]
        b["traded_notional"] = float(traded[s].sum())
        b["fills"] = int(count[s].sum())
        result["strategy"][name] = b
    if any(x.region is not None for x in instruments):
        regions = [x.region or "unknown" for x in instruments]
        result["region"] = buckets(regions, per_instrument)
    return result


# --- everything ----------------------------------------------------------------------------


def analyse(
    history: AccountHistory,
    *,
    trading_days_per_year: float = 252.0,
    min_daily_returns: int = MIN_DAILY_RETURNS,
) -> Performance:
    """Metrics, curve, daily equity and round trips of a (finished) history."""
    if history.n == 0:
        raise ValueError("the history has no samples: it was never started")
    pf = history.portfolio
    instruments = list(pf.instruments)
    ids = [x.id for x in instruments]
    # Memory: what comes from the fill log first, then the curve; temporaries as long as
    # the curve are dropped as soon as they are used (a run can have millions of fills).
    fills = history.fill_log(costs=False, account=False)
    trades = round_trips(fills, ids, history.strategies, getattr(pf, "splits", None))
    done = trades.net_pnl[~trades.is_open]
    wins, losses = done[done > 0], done[done < 0]
    gains, pains = float(wins.sum()), float(-losses.sum())
    costs = {"commission": float(fills["commission"].sum())}
    costs.update(zip(history.cost_kinds, history.cost_sums(), strict=True))
    attribution = _attribution(history, fills)
    del fills

    c = history.curve()
    ts, equity, qty = c["ts"], c["equity"], c["positions"]
    marks = c.pop("marks")
    total = len(ts)
    classes: dict[str, list[int]] = {}
    for i, x in enumerate(instruments):
        classes.setdefault(x.asset_class, []).append(i)
    one_class = list(classes.values()) == [list(range(len(instruments)))]
    # Curve-long columns a block of rows at a time (each row on its own, so the same
    # figures as over the whole curve), in an order that keeps few of them at once.
    # Exposures, from the marks:
    gross = np.empty(total)
    net = np.empty(total)
    # one asset class of every instrument: its gross exposure is the gross exposure
    gross_by_class = gross[:, np.newaxis] if one_class else np.empty((total, len(classes)))
    for a in range(0, total, _BLOCK):
        value = np.where(np.isnan(marks[a : a + _BLOCK]), 0.0, marks[a : a + _BLOCK])
        np.multiply(qty[a : a + _BLOCK], value, out=value)
        value *= pf.mult
        gross[a : a + _BLOCK] = np.abs(value).sum(axis=1)
        net[a : a + _BLOCK] = value.sum(axis=1)
        if not one_class:
            for j, cols in enumerate(classes.values()):
                gross_by_class[a : a + _BLOCK, j] = np.abs(value[:, cols]).sum(axis=1)
    del marks
    # means over time, on the durations between samples:
    dt = scratch(max(total - 1, 0))
    work = np.empty(total)  # in the market, then leverage, then the drawdown
    for a in range(0, total, _BLOCK):
        b = min(a + _BLOCK, total)
        dt[a : b - 1] = np.diff(ts[a:b])
        if b < total:
            dt[b - 1] = ts[b] - ts[b - 1]
        work[a:b] = np.abs(qty[a:b]).sum(axis=1) > 0
    time_in_market = _time_weighted(ts, work, dt)
    mean_equity = _time_weighted(ts, equity, dt)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(gross, equity, out=work)
    work[~(equity > 0)] = 0.0
    average_leverage = _time_weighted(ts, work, dt)
    average_gross = _time_weighted(ts, gross, dt)
    average_net = _time_weighted(ts, net, dt)
    by_class = {
        name: _finite(_time_weighted(ts, gross_by_class[:, j], dt))
        for j, name in enumerate(classes)
    }
    del dt
    # drawdown from the running peak, which goes on from block to block:
    drawdown = work
    high = None
    for a in range(0, total, _BLOCK):
        peak = np.maximum.accumulate(equity[a : a + _BLOCK])
        if high is not None:
            np.maximum(peak, high, out=peak)
        high = peak[-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.divide(equity[a : a + _BLOCK], peak, out=drawdown[a : a + _BLOCK])
            np.subtract(1.0, part, out=part)
            part[~(peak > 0)] = 0.0

    start_ts, end_ts = int(ts[0]), int(ts[-1])
    start_eq, end_eq = float(equity[0]), float(equity[-1])
    periodicity, ppy, interval_s, p_ts, p_eq = _periodic(
        history, (start_ts, start_eq), (end_ts, end_eq), trading_days_per_year, min_daily_returns
    )
    returns = simple_returns(p_eq)
    episode = drawdown_episode(p_ts, p_eq)
    duration_s = (end_ts - start_ts) / _NS
    years = duration_s / (trading_days_per_year * 86_400.0)

    day_ts = np.concatenate(([start_ts], history.day_ts, [end_ts]))
    day_eq = np.concatenate(([start_eq], history.day_equity, [end_eq]))
    day_dates = [_date(start_ts)] + [_date(t - 1) for t in day_ts[1:-1].tolist()] + [_date(end_ts)]

    def when(i: int | None) -> str | None:
        return None if i is None else _iso(int(p_ts[i]))

    traded_notional = float(pf.traded_notional)
    turnover = traded_notional / mean_equity if mean_equity > 0 else math.nan
    total_return = end_eq / start_eq - 1.0 if start_eq > 0 else math.nan
    metrics: dict[str, Any] = {
        "periodicity": periodicity,
        "sample_interval_s": history.interval_ns / _NS,
        "interval_s": interval_s,
        "periods_per_year": ppy,
        "trading_days_per_year": trading_days_per_year,
        "returns": len(returns),
        "start": _iso(start_ts),
        "end": _iso(end_ts),
        "duration_s": duration_s,
        "starting_equity": start_eq,
        "final_equity": end_eq,
        "total_return": _finite(total_return),
        "annual_return": _finite(annual_return(returns, ppy)),
        "annual_volatility": _finite(annual_volatility(returns, ppy)),
        "sharpe": _finite(sharpe_ratio(returns, ppy)),
        "sortino": _finite(sortino_ratio(returns, ppy)),
        "calmar": _finite(calmar_ratio(returns, ppy)),
        "max_drawdown": _finite(max_drawdown(returns)),
        "max_drawdown_peak": when(episode.peak) if episode.depth > 0 else None,
        "max_drawdown_trough": when(episode.trough) if episode.depth > 0 else None,
        "max_drawdown_recovery": when(episode.recovery),
        "max_drawdown_duration_s": episode.duration_ns / _NS,
        "longest_drawdown_s": episode.longest_underwater_ns / _NS,
        "traded_notional": traded_notional,
        "turnover": _finite(turnover),
        "turnover_annual": _finite(turnover / years) if years > 0 else None,
        "round_trips": len(done),
        "open_trips": len(trades) - len(done),
        "hit_rate": _finite(len(wins) / len(done)) if len(done) else None,
        "profit_factor": _finite(gains / pains) if pains > 0 else None,
        "average_win": float(wins.mean()) if len(wins) else None,
        "average_loss": float(losses.mean()) if len(losses) else None,
        "time_in_market": _finite(time_in_market),
        "average_gross_exposure": _finite(average_gross),
        "average_net_exposure": _finite(average_net),
        "average_leverage": _finite(average_leverage),
        "exposure_by_asset_class": by_class,
        "costs": costs,
        "costs_total": sum(costs.values()),
        "attribution": attribution,
        "monthly_returns": _monthly_returns(day_ts, day_eq),
        "samples": len(ts),
        "fill_samples": int(np.count_nonzero(c["kind"] == SAMPLE_FILL)),
        "day_closes": history.n_days,
    }
    curve = EquityCurve(
        instrument_ids=ids,
        asset_classes=list(classes),
        ts=ts,
        kind=c["kind"],
        equity=equity,
        balance=c["balance"],
        drawdown=drawdown,
        gross_exposure=gross,
        net_exposure=net,
        positions=qty,
        gross_exposure_by_asset_class=gross_by_class,
    )
    daily = DailyEquity(ts=day_ts, date=day_dates, equity=day_eq)
    return Performance(metrics=metrics, curve=curve, daily=daily, trades=trades)
