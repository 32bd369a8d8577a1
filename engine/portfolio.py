"""Portfolio accounting for a netting margin account, as pure code.

- One position per instrument, signed quantity (+ long, - short) in instrument units,
  with its average entry price.
- A fill in the direction of the position (or from flat) moves the average price; a fill
  against it realises P&L on the closed part, ``closed * (price - avg) * multiplier``
  with the position's sign, and any excess opens a new position at the fill price.
- Positions are kept on the instrument's lot (``size_increment``), so partial fills that
  add up to a whole position close it exactly, with no floating-point residue left open.
- The account balance (cash of a margin account) moves by realised P&L minus commission
  at each fill. Equity is the balance plus unrealised P&L, marked at the mid price.
- Every mark updates the equity's high-water mark and the maximum drawdown, so the
  drawdown is exact at tick resolution. A batch of marks goes through a numba kernel that
  does the same arithmetic in the same order as one mark at a time.

All money is in the account currency (instruments must be quoted in it).

:class:`AccountHistory` records the account over data time for reports: equity samples
on a grid of data time and at every fill, the close of every UTC day that had data, and
the log of fills (see its docstring for when a sample is taken and why batching cannot
change it).
"""

from __future__ import annotations

import bisect
import math
import mmap
from typing import Any

import numpy as np
from numba import njit

from engine.instruments import InstrumentTable
from engine.ticks import QUOTE_DTYPE

__all__ = [
    "DAY_NS",
    "SAMPLE_KINDS",
    "AccountHistory",
    "Portfolio",
    "PositionView",
    "scratch",
    "warm_up",
]


def scratch(shape: int | tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    """A zeroed array in memory of its own (an anonymous memory map), for a temporary as
    long as a run's fill log or curve: the memory goes back to the system when the array
    goes, where a freed block of the heap would stay with the process (and in its peak
    memory) until something else of that size takes its place."""
    dims = (shape,) if isinstance(shape, int) else shape
    dt = np.dtype(dtype)
    count = math.prod(dims)
    if count == 0:
        return np.zeros(dims, dtype=dt)
    return np.frombuffer(mmap.mmap(-1, count * dt.itemsize), dtype=dt).reshape(dims)


class PositionView:
    """A read-only snapshot of one position."""

    __slots__ = (
        "avg_price",
        "commissions",
        "instrument_id",
        "quantity",
        "realized_pnl",
        "unrealized_pnl",
    )

    def __init__(
        self,
        instrument_id: str,
        quantity: float,
        avg_price: float,
        realized_pnl: float,
        unrealized_pnl: float,
        commissions: float,
    ) -> None:
        self.instrument_id = instrument_id
        self.quantity = quantity
        self.avg_price = avg_price
        self.realized_pnl = realized_pnl
        self.unrealized_pnl = unrealized_pnl
        self.commissions = commissions

    def as_dict(self) -> dict[str, float | str]:
        return {
            "instrument_id": self.instrument_id,
            "quantity": self.quantity,
            "avg_price": self.avg_price,
            "realized_pnl": self.realized_pnl,
            "unrealized_pnl": self.unrealized_pnl,
            "commissions": self.commissions,
        }


class Portfolio:
    """Positions, cash, P&L and drawdown of one account."""

    def __init__(self, instruments: InstrumentTable, starting_balance: float) -> None:
        self.instruments = instruments
        n = len(instruments)
        self.starting_balance = starting_balance
        self.balance = starting_balance
        self.qty = np.zeros(n, dtype=np.float64)
        self.avg = np.zeros(n, dtype=np.float64)
        self.mult = np.array([i.multiplier for i in instruments], dtype=np.float64)
        self._mult = self.mult.tolist()
        self._lot = [i.size_increment for i in instruments]
        self._lot_digits = [_decimals(i.size_increment) for i in instruments]
        self.unrealized = np.zeros(n, dtype=np.float64)
        self.mark_price = np.full(n, np.nan, dtype=np.float64)
        self.realized = np.zeros(n, dtype=np.float64)
        self.commission_paid = np.zeros(n, dtype=np.float64)
        self.fills = 0
        self.traded_notional = 0.0
        # [peak equity, max drawdown (money), max drawdown (fraction of peak), last equity]
        self.curve = np.array([starting_balance, 0.0, 0.0, starting_balance], dtype=np.float64)
        self.dividends = 0.0  # cash received (paid, if short) on ex-dates
        self.splits: list[tuple[int, int, float]] = []

    # --- fills ---------------------------------------------------------------------------

    def apply_fill(
        self, instrument_id: str, signed_qty: float, price: float, commission: float
    ) -> float:
        """Book a fill of ``signed_qty`` (+ buy, - sell) at ``price``; return realised P&L."""
        return self.book(self.instruments.index(instrument_id), signed_qty, price, commission)[0]

    def book(
        self, i: int, signed_qty: float, price: float, commission: float
    ) -> tuple[float, float, float]:
        """:meth:`apply_fill` for the instrument at index ``i``; returns the realised P&L,
        the position after the fill and the equity after it."""
        # Python floats throughout (the same IEEE operations as on numpy scalars, without
        # boxing one per element read): a fill is booked once per execution of every order
        mult = self._mult[i]
        qty = self.qty
        avgs = self.avg
        pos = qty.item(i)
        avg = avgs.item(i)
        realized = 0.0
        if pos == 0.0:
            pos = signed_qty
            avg = price
        elif (pos > 0.0) == (signed_qty > 0.0):
            new = pos + signed_qty
            avg = (pos * avg + signed_qty * price) / new
            pos = new
        else:
            closing = min(abs(signed_qty), abs(pos))
            direction = 1.0 if pos > 0.0 else -1.0
            realized = closing * (price - avg) * direction * mult
            remainder = abs(signed_qty) - closing
            pos += direction * -closing
            if pos == 0.0:
                avg = 0.0
            if remainder > 0.0:
                pos = remainder if signed_qty > 0.0 else -remainder
                avg = price
        # back onto the lot: 0.1 - 0.07 - 0.02 - 0.01 is -1.7e-18 in binary floating point
        lot = self._lot[i]
        if lot == 1.0:  # whole units: already whole (and round() with digits is slow)
            pos = round(pos / lot) * lot + 0.0  # + 0.0: no -0.0
        else:
            pos = round(round(pos / lot) * lot, self._lot_digits[i]) + 0.0
        if pos == 0.0:
            avg = 0.0
        qty[i] = pos
        avgs[i] = avg
        self.realized[i] = self.realized.item(i) + realized
        self.commission_paid[i] = self.commission_paid.item(i) + commission
        self.balance += realized - commission
        self.fills += 1
        self.traded_notional += abs(signed_qty * price) * mult
        mark = self.mark_price.item(i)
        # re-marked so that equity reflects the fill at once (as _mark_one would)
        self.unrealized[i] = 0.0 if math.isnan(mark) else pos * (mark - avg) * mult
        return realized, pos, self._equity_point()

    def apply_corporate_action(
        self, instrument_index: int, split_ratio: float, dividend: float, ts: int = 0
    ) -> float:
        """An instrument goes ex a split and/or dividend: the position is put on the new
        basis (``qty / split_ratio`` units at ``avg * split_ratio``; its value and P&L do
        not change) and ``dividend`` per unit held before it is paid in cash (charged, for
        a short). Returns the cash paid. Splits are kept (``splits``: time, instrument,
        ratio) so that round trips across one can be put on one basis."""
        i = instrument_index
        if split_ratio != 1.0:
            self.splits.append((ts, i, split_ratio))
        pos = float(self.qty[i])
        cash = pos * dividend * float(self.mult[i])
        if split_ratio != 1.0 and pos != 0.0:
            lot = self._lot[i]
            new = round(round(pos / split_ratio / lot) * lot, self._lot_digits[i]) + 0.0
            self.qty[i] = new
            self.avg[i] = float(self.avg[i]) * pos / new if new else 0.0
        if split_ratio != 1.0 and not math.isnan(float(self.mark_price[i])):
            self.mark_price[i] = float(self.mark_price[i]) * split_ratio
        if cash:
            self.balance += cash
            self.dividends += cash
        mark = float(self.mark_price[i])
        if not math.isnan(mark):
            self._mark_one(i, mark)
        return cash

    # --- marks ---------------------------------------------------------------------------

    def _equity_point(self) -> float:
        """Equity now; moves the high-water mark and the drawdowns. Returns the equity."""
        equity = self._equity()
        curve = self.curve
        peak, max_dd, max_frac, _ = curve.tolist()
        # the same comparisons as the batch kernel; only what changed is written back
        if equity > peak:
            peak = equity
            curve[0] = peak
        dd = peak - equity
        if dd > max_dd:
            max_dd = dd
            curve[1] = max_dd
        if peak > 0.0 and dd / peak > max_frac:
            max_frac = dd / peak
            curve[2] = max_frac
        curve[3] = equity
        return equity

    def _equity(self) -> float:
        total = 0.0
        for u in self.unrealized.tolist():
            total += u
        return self.balance + total

    def _mark_one(self, i: int, mid: float) -> None:
        self.mark_price[i] = mid
        self.unrealized[i] = self.qty.item(i) * (mid - self.avg.item(i)) * self._mult[i]
        self._equity_point()

    def mark(self, instrument_index: int, bid: float, ask: float) -> None:
        """Mark one instrument at the mid of ``bid`` and ``ask``."""
        self._mark_one(instrument_index, (bid + ask) * 0.5)

    def mark_batch(self, instrument_col: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
        """Mark every tick of a batch, in order; same result as :meth:`mark` per tick."""
        if len(bid) == 1:  # see warm_up: the kernel is loaded for strided columns only
            self.mark(int(instrument_col[0]), float(bid[0]), float(ask[0]))
            return
        _mark_run(
            instrument_col,
            bid,
            ask,
            0,
            len(bid),
            self.qty,
            self.avg,
            self.mult,
            self.unrealized,
            self.mark_price,
            self.balance,
            self.curve,
        )

    # --- views ---------------------------------------------------------------------------

    @property
    def equity(self) -> float:
        return self._equity()

    @property
    def realized_pnl(self) -> float:
        return float(np.sum(self.realized))

    @property
    def unrealized_pnl(self) -> float:
        return float(np.sum(self.unrealized))

    @property
    def commissions(self) -> float:
        return float(np.sum(self.commission_paid))

    @property
    def max_drawdown(self) -> float:
        return float(self.curve[1])

    @property
    def max_drawdown_fraction(self) -> float:
        return float(self.curve[2])

    def position(self, instrument_id: str) -> PositionView:
        i = self.instruments.index(instrument_id)
        return PositionView(
            instrument_id,
            float(self.qty[i]),
            float(self.avg[i]),
            float(self.realized[i]),
            float(self.unrealized[i]),
            float(self.commission_paid[i]),
        )

    def positions(self) -> list[PositionView]:
        return [self.position(inst.id) for inst in self.instruments]


def _decimals(increment: float) -> int:
    """Decimal places that write ``increment`` exactly (2 for 0.25, 5 for 0.00001)."""
    for d in range(16):
        if abs(round(increment, d) - increment) <= 1e-12 * increment:
            return d
    return 15


def warm_up() -> None:
    """Load the compiled kernels now rather than on the first tick. Column views of a batch
    are strided, except in a one-row batch, which numba would compile (and load) apart:
    a one-row batch is marked in Python instead (the same arithmetic), and only the
    strided layout is loaded. Each loaded kernel holds memory for the rest of the run, so
    the sampling kernel is loaded when first needed (see ``_SAMPLED_KERNEL_FROM``)."""
    batch = np.zeros(2, dtype=QUOTE_DTYPE)
    _mark_run(
        batch["instrument"],
        batch["bid"],
        batch["ask"],
        0,
        2,
        np.zeros(1),
        np.zeros(1),
        np.ones(1),
        np.zeros(1),
        np.zeros(1),
        0.0,
        np.zeros(4),
    )


# --- the account over time -----------------------------------------------------------------

DAY_NS = 86_400 * 1_000_000_000
"""One day in nanoseconds; day boundaries are UTC midnights (multiples of this since the epoch)."""

SAMPLE_START, SAMPLE_GRID, SAMPLE_FILL, SAMPLE_END = 0, 1, 2, 3
SAMPLE_KINDS = ("start", "sample", "fill", "end")
"""Names of the sample kinds, indexed by the ``kind`` column of :meth:`AccountHistory.curve`."""

_NEVER = 2**63 - 1

_SAMPLED_KERNEL_FROM = 3
"""A batch crossing fewer grid points (or midnights) than about this is marked by the
marking kernel up to each and sampled in Python (a replay that trades cuts batches that
cross one at most). More: for one instrument, up to ``_CROSSINGS_IN_PYTHON``, sampled from
its ticks a batch at a time (``_mark_crossing``); otherwise by the batch kernel, loaded
on its first use (each loaded kernel holds memory for the rest of the run)."""

_CROSSINGS_IN_PYTHON = 128
"""Grid points (or midnights) a batch of one instrument may cross to be sampled without
the batch kernel: a few microseconds each, against one load of the kernel (about 5 ms
and 0.7 MB); a replay with orders switched off crosses about 27 a batch."""


def _first_at(ts: np.ndarray, value: int, lo: int, hi: int) -> int:
    """The first index in ``lo:hi`` of the ascending ``ts`` whose value is at or after
    ``value`` (``hi`` if none): a guess by interpolation (ticks are about evenly spread),
    checked, else bisection of the side it fell short of. A few element reads."""
    if lo >= hi:
        return hi
    first = ts.item(lo)
    if first >= value:
        return lo
    last = ts.item(hi - 1)
    if last < value:
        return hi
    guess = lo + int((value - first) / (last - first) * (hi - 1 - lo))
    guess = min(max(guess, lo + 1), hi - 1)
    if ts.item(guess) >= value:
        if ts.item(guess - 1) < value:
            return guess
        return bisect.bisect_left(ts, value, lo + 1, guess)
    return bisect.bisect_left(ts, value, guess + 1, hi)


def _grown(a: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros((capacity, *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    return out


class AccountHistory:
    """The account over data time, recorded as it happens, for metrics and reports.

    Wraps a :class:`Portfolio`: marks and fills go through :meth:`mark_batch`, :meth:`mark`
    and :meth:`fill`, which book them in the portfolio and record

    - **samples** of the account (time, balance, equity and the mark price of every
      instrument): one at :meth:`start`, one at every grid point of data time (multiples
      of ``sample_interval_ns`` since the epoch, UTC) and one at :meth:`finish`;
    - **the fill log**: time, instrument, strategy, signed quantity, price, commission,
      realised P&L, and after the fill the position, balance, equity and marks; plus the
      fill's other costs by kind (``cost_kinds``). Each fill is also a sample of the
      curve (:meth:`curve` merges the two in the order they happened);
    - **day closes**: the equity at each UTC midnight that ends a day on which something
      happened (a day with no tick and no fill, a weekend for equities, is not a trading
      day and is not recorded).

    A grid sample at time ``G`` is the account after every event stamped before ``G``, and
    before any stamped at or after it: what a timer at ``G`` would see on a replay clock.
    It is taken when the first event at or after ``G`` arrives (or at :meth:`finish`):
    inside the batch kernel, between the tick before ``G`` and the tick at or after it,
    with the same arithmetic as :meth:`Portfolio.mark_batch`; for a single tick or a fill,
    in Python, before it is booked. So neither batch boundaries nor one-tick-at-a-time
    delivery can move a sample or change its values, and replay needs no batch cut for it.
    The account cannot change without an event, so the grid points of a gap with no events
    (a night, a weekend) all equal the sample at the first of them: only that one is
    stored, and readers carry it forward.

    Positions are not stored per sample: they change only at fills, and the fill log
    holds the position after each fill. Storage is preallocated numpy columns that double
    when full, with no Python object kept per sample or per fill. Samples and fills share
    one set of rows, in the order they happened, for what both record (time, balance,
    equity, marks): the curve is those rows as they are, and the fill log's own columns
    hold the rest. Large columns are allocated without being zeroed, so only the rows
    written take memory, and a fill is written through memoryviews (a fraction of the
    cost of a numpy element write). Times are integer nanoseconds, money the account
    currency.
    """

    def __init__(
        self,
        portfolio: Portfolio,
        sample_interval_ns: int,
        *,
        cost_kinds: tuple[str, ...] = (),
        capacity: int = 1_024,
        fill_capacity: int = 65_536,
    ) -> None:
        if sample_interval_ns <= 0:
            raise ValueError(f"sample interval must be positive, got {sample_interval_ns} ns")
        self.portfolio = portfolio
        self.interval_ns = sample_interval_ns
        self.cost_kinds = cost_kinds
        self.started = False
        self.finished = False
        self.start_ts = 0
        self.end_ts = 0
        self.strategies: list[str] = []
        self._strategy_index: dict[str, int] = {}
        self._next_sample = _NEVER
        self._next_day = _NEVER
        self._next = _NEVER
        # the batch kernel's [rows, days, next grid point, next midnight, interval, fills,
        # samples]
        self._state = np.zeros(7, dtype=np.int64)
        cap = max(capacity, 2)
        # rows, samples and fills in the order they happened: time, kind, balance, equity
        # and the marks (a row of them per row)
        self.n_rows = 0
        self._row_capacity = 0
        self._grow_rows(cap + fill_capacity)
        # samples (start, grid, end): their rows, and the fills booked before each
        self.n = 0
        self._sample_rows = np.zeros(cap, dtype=np.int64)
        self._fills_before = np.zeros(cap, dtype=np.int64)
        # day closes
        self.n_days = 0
        self._day_ts = np.zeros(64, dtype=np.int64)
        self._day_equity = np.zeros(64, dtype=np.float64)
        # the fill log's own columns (time, account and marks are in the fill's row),
        # written through memoryviews: a Python value stored through a memoryview costs
        # far less than a numpy element write. A cost kind's column is made, zeroed, at
        # its first cost that is not 0.0: kinds a run never incurs take no memory.
        self.n_fills = 0
        self._fill_capacity = 0
        self._cost_columns: list[np.ndarray | None] = [None] * len(cost_kinds)
        # instrument and strategy indexes: made, zeroed, at the first that is not 0 (a run
        # of one instrument and one strategy has none)
        self._index_columns: list[np.ndarray | None] = [None, None]
        self._index_writers: list[Any] = [None, None]
        # memoryviews store floats too, which typeshed does not say: typed Any
        self._cost_writers: list[Any] = [None] * len(cost_kinds)
        self._grow_fills(fill_capacity)

    # --- recording -----------------------------------------------------------------------

    def start(self, ts: int) -> None:
        """Record the account as it starts, at data time ``ts``. Only the first call counts
        (an actor's ``on_start`` runs again after a restart; the history goes on)."""
        if self.started:
            return
        self.started = True
        self.start_ts = ts
        self._record(ts, SAMPLE_START)
        self._next_sample = (ts // self.interval_ns + 1) * self.interval_ns
        self._next_day = (ts // DAY_NS + 1) * DAY_NS
        self._next = min(self._next_sample, self._next_day)

    def finish(self, ts: int) -> None:
        """Record the account at the end, at data time ``ts`` (once)."""
        if self.finished or not self.started:
            return
        self.finished = True
        if ts >= self._next_sample:  # the last grid point had no event after it
            self._record(self._next_sample, SAMPLE_GRID)
        self._next = self._next_sample = self._next_day = _NEVER
        self.end_ts = ts
        self._record(ts, SAMPLE_END)

    def mark_batch(self, data: np.ndarray, last_ts: int | None = None) -> None:
        """Mark a batch of quote ticks (``QUOTE_DTYPE``, in time order) in the portfolio,
        sampling at the grid points it crosses. ``last_ts``: the time of its last tick
        (``QuoteBatch.ts_event``), to skip reading the column when no grid point is near."""
        n = len(data)
        if n == 0:
            return
        if n == 1:  # see warm_up
            row = data[0]
            self.mark(
                int(row["instrument"]), float(row["bid"]), float(row["ask"]), int(row["ts_event"])
            )
            return
        if last_ts is None:
            last_ts = int(data["ts_event"][n - 1])
        pf = self.portfolio
        if last_ts < self._next:
            pf.mark_batch(data["instrument"], data["bid"], data["ask"])
            return
        ts, inst, bid, ask = data["ts_event"], data["instrument"], data["bid"], data["ask"]
        if (last_ts - self._next) // min(self.interval_ns, DAY_NS) < _SAMPLED_KERNEL_FROM:
            # a grid point or two: mark up to each, then record it as a tick at it would
            # (the batch kernel, loaded only for batches that cross many, does the same)
            t = 0
            while True:
                until = n
                if last_ts >= self._next:
                    until = t + int(np.searchsorted(ts[t:], self._next, side="left"))
                if until > t:
                    _mark_run(
                        inst,
                        bid,
                        ask,
                        t,
                        until,
                        pf.qty,
                        pf.avg,
                        pf.mult,
                        pf.unrealized,
                        pf.mark_price,
                        pf.balance,
                        pf.curve,
                    )
                if until == n:
                    return
                self._cross(int(ts[until]))
                t = until
        if len(pf.mult) == 1 and self._mark_crossing(ts, inst, bid, ask, last_ts):
            return
        st = self._state
        done = 0
        while done < n:
            st[0], st[1], st[2], st[3] = self.n_rows, self.n_days, self._next_sample, self._next_day
            st[4], st[5], st[6] = self.interval_ns, self.n_fills, self.n
            done = _mark_sampled_kernel(
                ts,
                inst,
                bid,
                ask,
                pf.qty,
                pf.avg,
                pf.mult,
                pf.unrealized,
                pf.mark_price,
                pf.balance,
                pf.curve,
                st,
                self._ts,
                self._kind,
                self._balance,
                self._equity,
                self._mark,
                self._sample_rows,
                self._fills_before,
                self._day_ts,
                self._day_equity,
                done,
            )
            self.n_rows, self.n_days, self.n = int(st[0]), int(st[1]), int(st[6])
            self._next_sample, self._next_day = int(st[2]), int(st[3])
            if done < n:  # a column is full: make room and go on from that tick
                self._grow_rows(2 * self._row_capacity)
                self._grow_samples()
                self._grow_days()
        self._next = min(self._next_sample, self._next_day)

    def _mark_crossing(
        self, ts: np.ndarray, inst: np.ndarray, bid: np.ndarray, ask: np.ndarray, last_ts: int
    ) -> bool:
        """:meth:`mark_batch` of one instrument's ticks over several grid points or
        midnights, without the batch kernel: the account just before a tick is its
        predecessor's mark (the one instrument's mid), with the marking kernel's
        arithmetic, so the samples and day closes are computed a batch at a time, and the
        batch is then marked at once. False (nothing done) for a batch that crosses more
        than ``_CROSSINGS_IN_PYTHON`` (the batch kernel is then worth loading)."""
        interval = self.interval_ns
        if (last_ts - self._next) // min(interval, DAY_NS) >= _CROSSINGS_IN_PYTHON:
            return False
        pf = self.portfolio
        n = len(ts)
        end = int(ts[n - 1])
        balance = pf.balance
        qty, avg, mult = pf.qty.item(0), pf.avg.item(0), pf._mult[0]

        def crossed(point: int, step: int) -> tuple[np.ndarray, np.ndarray]:
            """The ticks at or past a point of ``point + k * step`` (as _cross finds them:
            the first at or past the next point, which then follows that tick) and the
            point each is for. The column is searched where it is, not copied."""
            rows, points = [], []
            lo = 0
            while point <= end:
                lo = _first_at(ts, point, lo, n)
                rows.append(lo)
                points.append(point)
                point = (int(ts[lo]) // step + 1) * step
                lo += 1
            return np.array(rows, dtype=np.intp), np.array(points, dtype=np.int64)

        def before(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Equity and mark just before each of those ticks."""
            prev = np.maximum(rows - 1, 0)
            mid = (bid[prev] + ask[prev]) * 0.5
            equity = balance + (0.0 + qty * (mid - avg) * mult)
            if len(rows) and rows[0] == 0:  # the batch's first tick: the account as it is
                equity[0] = pf.curve[3]
                mid[0] = pf.mark_price[0]
            return equity, mid

        g_rows, g_ts = crossed(self._next_sample, interval)
        d_rows, d_ts = crossed(self._next_day, DAY_NS)
        k, kd = len(g_rows), len(d_rows)
        while self.n + k > len(self._sample_rows):
            self._grow_samples()
        while self.n_rows + k > self._row_capacity:
            self._grow_rows(2 * self._row_capacity)
        while self.n_days + kd > len(self._day_ts):
            self._grow_days()
        if k:
            equity, mid = before(g_rows)
            r, s = self.n_rows, self.n
            self._ts[r : r + k] = g_ts
            self._kind[r : r + k] = SAMPLE_GRID
            self._balance[r : r + k] = balance
            self._equity[r : r + k] = equity
            self._mark[r : r + k, 0] = mid
            self._sample_rows[s : s + k] = np.arange(r, r + k)
            self._fills_before[s : s + k] = self.n_fills
            self.n_rows, self.n = r + k, s + k
            self._next_sample = (int(ts[g_rows[-1]]) // interval + 1) * interval
        if kd:
            d = self.n_days
            self._day_ts[d : d + kd] = d_ts
            self._day_equity[d : d + kd] = before(d_rows)[0]
            self.n_days = d + kd
            self._next_day = (int(ts[d_rows[-1]]) // DAY_NS + 1) * DAY_NS
        self._next = min(self._next_sample, self._next_day)
        _mark_run(
            inst,
            bid,
            ask,
            0,
            n,
            pf.qty,
            pf.avg,
            pf.mult,
            pf.unrealized,
            pf.mark_price,
            balance,
            pf.curve,
        )
        return True

    def mark(self, instrument_index: int, bid: float, ask: float, ts: int) -> None:
        """Mark one quote tick stamped ``ts``."""
        if ts >= self._next:
            self._cross(ts)
        self.portfolio.mark(instrument_index, bid, ask)

    def fill(
        self,
        ts: int,
        strategy_id: str,
        instrument_id: str,
        signed_qty: float,
        price: float,
        commission: float,
        costs: tuple[float, ...] = (),
    ) -> float:
        """Book a fill at data time ``ts`` (see :meth:`Portfolio.apply_fill`) and log it.
        ``costs`` are the fill's costs in ``cost_kinds`` order. Returns the realised P&L."""
        if ts >= self._next:
            self._cross(ts)
        if costs and len(costs) != len(self.cost_kinds):
            raise ValueError(
                f"a fill reports {len(costs)} costs for {len(self.cost_kinds)} cost kinds"
            )
        pf = self.portfolio
        i = pf.instruments.index(instrument_id)
        realized, position, equity = pf.book(i, signed_qty, price, commission)
        s = self._strategy_index.get(strategy_id)
        if s is None:
            s = self._strategy_index[strategy_id] = len(self.strategies)
            self.strategies.append(strategy_id)
        r = self.n_rows
        if r == self._row_capacity:
            self._grow_rows(2 * r)
        row = self._row_writers
        row[0][r] = ts
        row[1][r] = SAMPLE_FILL
        row[2][r] = pf.balance
        row[3][r] = equity
        marks = pf.mark_price
        n = len(marks)
        row[4][r * n : r * n + n] = marks
        self.n_rows = r + 1
        m = self.n_fills
        if m == self._fill_capacity:
            self._grow_fills(2 * m)
        w = self._w
        w[0][m] = signed_qty
        w[1][m] = price
        w[2][m] = commission
        w[3][m] = realized
        w[4][m] = position
        if i:  # instrument and strategy 0 are what those columns hold until one is not
            (self._index_writers[0] or self._add_index_column(0))[m] = i
        if s:
            (self._index_writers[1] or self._add_index_column(1))[m] = s
        for j, cost in enumerate(costs):  # none given: none reported
            if cost != 0.0 or math.copysign(1.0, cost) < 0.0:  # 0.0 is what a column holds
                writer = self._cost_writers[j]
                if writer is None:
                    writer = self._add_cost_column(j)
                writer[m] = cost
        self.n_fills = m + 1
        return realized

    def _cross(self, ts: int) -> None:
        """An event stamped ``ts`` is about to change the account, and ``ts`` is at or past
        the next grid point or midnight: record them as the account stands. (The batch
        kernel does the same between two ticks.)"""
        if ts >= self._next_sample:
            self._record(self._next_sample, SAMPLE_GRID)
            self._next_sample = (ts // self.interval_ns + 1) * self.interval_ns
        if ts >= self._next_day:
            d = self.n_days
            if d == len(self._day_ts):
                self._grow_days()
            self._day_ts[d] = self._next_day
            self._day_equity[d] = self.portfolio.curve[3]
            self.n_days = d + 1
            self._next_day = (ts // DAY_NS + 1) * DAY_NS
        self._next = min(self._next_sample, self._next_day)

    def _record(self, ts: int, kind: int) -> None:
        n, r = self.n, self.n_rows
        if n == len(self._sample_rows):
            self._grow_samples()
        if r == self._row_capacity:
            self._grow_rows(2 * r)
        pf = self.portfolio
        self._ts[r] = ts
        self._kind[r] = kind
        self._balance[r] = pf.balance
        self._equity[r] = pf.curve[3]
        self._mark[r] = pf.mark_price
        self._sample_rows[n] = r
        self._fills_before[n] = self.n_fills
        self.n = n + 1
        self.n_rows = r + 1

    def _grow_samples(self) -> None:
        cap = 2 * len(self._sample_rows)
        self._sample_rows = _grown(self._sample_rows, cap)
        self._fills_before = _grown(self._fills_before, cap)

    def _grow_rows(self, capacity: int) -> None:
        """Rows for ``capacity`` samples and fills, holding those recorded so far.
        Allocated, not zeroed: only the rows written take memory."""
        r, m = self.n_rows, len(self.portfolio.instruments)
        columns = []
        for dtype, width, old in zip(
            (np.int64, np.uint8, np.float64, np.float64, np.float64),
            (1, 1, 1, 1, m),
            getattr(self, "_row_columns", [None] * 5),
            strict=True,
        ):
            new = np.empty(capacity * width, dtype=dtype)
            if old is not None:
                new[: r * width] = old[: r * width]
            columns.append(new)
        self._row_columns = columns
        self._ts, self._kind, self._balance, self._equity, mark = columns
        self._mark = mark.reshape(capacity, m)
        self._row_writers: list[Any] = [c.data for c in columns]  # memoryviews
        self._row_capacity = capacity

    def _grow_days(self) -> None:
        cap = 2 * len(self._day_ts)
        self._day_ts = _grown(self._day_ts, cap)
        self._day_equity = _grown(self._day_equity, cap)

    def _grow_fills(self, capacity: int) -> None:
        """Columns for ``capacity`` fills, holding those logged so far. Allocated, not
        zeroed: only the rows written take memory."""
        m = self.n_fills
        columns = []
        for old in getattr(self, "_fill_columns", [None] * 5):
            new = np.empty(capacity, dtype=np.float64)
            if old is not None:
                new[:m] = old[:m]
            columns.append(new)
        self._fill_columns = columns
        (
            self._f_qty,
            self._f_price,
            self._f_commission,
            self._f_realized,
            self._f_position,
        ) = columns
        self._w: list[Any] = [c.data for c in columns]  # memoryviews
        self._fill_capacity = capacity
        for j, old_costs in enumerate(self._cost_columns):
            if old_costs is not None:
                self._add_cost_column(j)[:m] = old_costs[:m]
        for j, old_index in enumerate(self._index_columns):
            if old_index is not None:
                self._add_index_column(j)[:m] = old_index[:m]

    def _add_index_column(self, j: int) -> Any:
        """A zeroed instrument (``j`` 0) or strategy (1) column; its writer."""
        column = np.zeros(self._fill_capacity, dtype=np.int32)
        writer: Any = column.data  # a memoryview
        self._index_columns[j] = column
        self._index_writers[j] = writer
        return writer

    def _add_cost_column(self, j: int) -> Any:
        """A zeroed column for cost kind ``j`` (the capacity of the log); its writer."""
        column = np.zeros(self._fill_capacity, dtype=np.float64)
        writer: Any = column.data  # a memoryview
        self._cost_columns[j] = column
        self._cost_writers[j] = writer
        return writer

    def cost_sums(self) -> list[float]:
        """The total of each cost kind over the fills logged, in ``cost_kinds`` order."""
        m = self.n_fills
        return [0.0 if c is None else float(c[:m].sum()) for c in self._cost_columns]

    # --- what was recorded ---------------------------------------------------------------

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """The samples without the fills: ``ts``, ``kind`` (start, grid or end),
        ``balance``, ``equity``, ``fills_before`` (fills booked before it) and ``marks``."""
        rows = self._sample_rows[: self.n]
        return {
            "ts": self._ts[rows],
            "kind": self._kind[rows],
            "balance": self._balance[rows],
            "equity": self._equity[rows],
            "fills_before": self._fills_before[: self.n],
            "marks": self._mark[rows],
        }

    def _fill_rows(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The rows of fills ``lo`` to ``hi``: fill j comes after j fills and the samples
        taken with at most j fills booked."""
        at = np.arange(lo, self.n_fills if hi is None else min(hi, self.n_fills))
        at += np.searchsorted(self._fills_before[: self.n], at, side="right")
        return at

    @property
    def day_ts(self) -> np.ndarray:
        """UTC midnights that closed a day with data (the close is just before this time)."""
        return self._day_ts[: self.n_days]

    @property
    def day_equity(self) -> np.ndarray:
        return self._day_equity[: self.n_days]

    def fill_log(self, *, costs: bool = True, account: bool = True) -> dict[str, np.ndarray]:
        """The fills, in the order booked: ``ts``, ``instrument`` (index), ``strategy``
        (index into :attr:`strategies`), ``qty`` (signed), ``price``, ``commission``,
        ``realized``; after the fill ``position`` (of that instrument), ``balance``,
        ``equity`` and ``marks`` (every instrument), unless ``account`` is False; and
        ``costs`` (one column per kind), unless ``costs`` is False (:meth:`cost_sums` has
        their totals). Times, the account and costs are copies (their rows are shared
        with the samples), the other columns views of the log."""
        m = self.n_fills
        kinds = len(self.cost_kinds)
        instrument, strategy = (
            scratch(m, np.int32) if c is None else c[:m] for c in self._index_columns
        )
        rows = self._fill_rows()
        log = {
            "ts": self._ts[rows],
            "instrument": instrument,
            "strategy": strategy,
            "qty": self._f_qty[:m],
            "price": self._f_price[:m],
            "commission": self._f_commission[:m],
            "realized": self._f_realized[:m],
            "position": self._f_position[:m],
        }
        if account:
            log["balance"] = self._balance[rows]
            log["equity"] = self._equity[rows]
            log["marks"] = self._mark[rows]
        if costs:
            log["costs"] = (
                np.column_stack([np.zeros(m) if c is None else c[:m] for c in self._cost_columns])
                if kinds
                else np.zeros((m, 0))
            )
        return log

    def curve(self) -> dict[str, np.ndarray]:
        """Samples and fills merged in the order they happened (a grid sample recorded
        just before a fill comes first): ``ts``, ``kind`` (index into
        :data:`SAMPLE_KINDS`), ``balance``, ``equity``, ``positions`` and ``marks`` (one
        column per instrument)."""
        r, k = self.n_rows, self.n_fills
        m = len(self.portfolio.instruments)
        out: dict[str, np.ndarray] = {
            "ts": self._ts[:r],
            "kind": self._kind[:r],
            "balance": self._balance[:r],
            "equity": self._equity[:r],
            "marks": self._mark[:r],
        }
        for column in out.values():  # the history's own rows: not to be written to
            column.flags.writeable = False
        positions = np.zeros((r, m), dtype=np.float64)
        after = self._f_position[:k]
        if m == 1:
            # every fill is of the one instrument: a sample holds the position after the
            # last fill before it (flat before the first)
            if k:
                fills_before = self._fills_before[: self.n]
                positions[self._sample_rows[: self.n], 0] = np.where(
                    fills_before > 0, after[fills_before - 1], 0.0
                )
            positions[out["kind"] == SAMPLE_FILL, 0] = after
        else:
            instrument = self._index_columns[0]
            fill_rows = self._fill_rows()
            for i in range(m):
                mine = (
                    np.flatnonzero(instrument[:k] == i)
                    if instrument is not None
                    else np.arange(k if i == 0 else 0)
                )
                if len(mine) == 0:
                    continue
                rows = fill_rows[mine]
                # a fill's position holds until the instrument's next fill; flat before
                positions[rows[0] :, i] = np.repeat(after[mine], np.diff(rows, append=r))
        out["positions"] = positions
        return out


_BLOCK = 8_192
"""Fills per block where the fill log is read a block at a time."""


@njit(cache=True, nogil=True)
def _mark_run(
    instrument_col: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    lo: int,
    hi: int,
    qty: np.ndarray,
    avg: np.ndarray,
    mult: np.ndarray,
    unrealized: np.ndarray,
    mark_price: np.ndarray,
    balance: float,
    curve: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Mark ticks ``lo`` to ``hi`` of a batch in order, tracking equity's high-water mark
    and the maximum drawdown: the same arithmetic as :meth:`Portfolio.mark` per tick."""
    peak = curve[0]
    max_dd = curve[1]
    max_frac = curve[2]
    equity = curve[3]
    m = unrealized.shape[0]
    for t in range(lo, hi):
        i = instrument_col[t]
        mid = (bid[t] + ask[t]) * 0.5
        mark_price[i] = mid
        unrealized[i] = qty[i] * (mid - avg[i]) * mult[i]
        total = 0.0
        for j in range(m):
            total += unrealized[j]
        equity = balance + total
        if equity > peak:  # noqa: PLR1730
            peak = equity
        dd = peak - equity
        if dd > max_dd:  # noqa: PLR1730
            max_dd = dd
        if peak > 0.0 and dd / peak > max_frac:
            max_frac = dd / peak
    curve[0] = peak
    curve[1] = max_dd
    curve[2] = max_frac
    curve[3] = equity


@njit(cache=True, nogil=True)
def _mark_sampled_kernel(
    ts: np.ndarray,
    instrument_col: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    qty: np.ndarray,
    avg: np.ndarray,
    mult: np.ndarray,
    unrealized: np.ndarray,
    mark_price: np.ndarray,
    balance: float,
    curve: np.ndarray,
    state: np.ndarray,
    s_ts: np.ndarray,
    s_kind: np.ndarray,
    s_balance: np.ndarray,
    s_equity: np.ndarray,
    s_mark: np.ndarray,
    s_rows: np.ndarray,
    s_fills: np.ndarray,
    d_ts: np.ndarray,
    d_equity: np.ndarray,
    start: int,
) -> int:  # pragma: no cover - compiled
    """:func:`_mark_run` from tick ``start`` on, recording grid samples and day
    closes as :meth:`AccountHistory._cross` does. ``state`` is [rows, days, next grid
    point, next midnight, interval, fills, samples] and is updated. Returns the index of
    the first tick not marked: ``len(ts)``, or earlier when the row, sample or day columns
    are full."""
    m = unrealized.shape[0]
    n = state[0]
    nd = state[1]
    next_sample = state[2]
    next_day = state[3]
    interval = state[4]
    fills = state[5]
    ns = state[6]
    day = np.int64(86_400_000_000_000)
    stop = ts.shape[0]
    t = start
    while t < stop:
        boundary = min(next_sample, next_day)
        until = stop
        if ts[stop - 1] >= boundary:
            # the first tick at or after it: ticks are about evenly spread in time, so
            # guess by interpolation (a probe or two into memory not read yet), and bisect
            # every other step so that uneven data costs no more than a binary search
            lo, hi = t, stop - 1
            step = 0
            while lo < hi:
                probe = (lo + hi) // 2
                if step % 2 == 0 and ts[lo] < boundary:
                    span = ts[hi] - ts[lo]
                    probe = lo + int((boundary - ts[lo]) / span * (hi - lo)) if span > 0 else lo
                    probe = min(max(probe, lo), hi - 1)
                if ts[probe] < boundary:
                    lo = probe + 1
                else:
                    hi = probe
                step += 1
            until = lo
        # the run of ticks before the next grid point or midnight
        _mark_run(
            instrument_col,
            bid,
            ask,
            t,
            until,
            qty,
            avg,
            mult,
            unrealized,
            mark_price,
            balance,
            curve,
        )
        t = until
        if t >= stop:
            break
        # tick t is at or past a grid point or midnight: record, then mark it next round
        if n >= s_ts.shape[0] or ns >= s_rows.shape[0] or nd >= d_ts.shape[0]:
            stop = t
            break
        now = ts[t]
        equity = curve[3]
        if now >= next_sample:
            s_ts[n] = next_sample
            s_kind[n] = 1
            s_balance[n] = balance
            s_equity[n] = equity
            for j in range(m):
                s_mark[n, j] = mark_price[j]
            s_rows[ns] = n
            s_fills[ns] = fills
            ns += 1
            n += 1
            next_sample = (now // interval + 1) * interval
        if now >= next_day:
            d_ts[nd] = next_day
            d_equity[nd] = equity
            nd += 1
            next_day = (now // day + 1) * day
    state[0] = n
    state[1] = nd
    state[2] = next_sample
    state[3] = next_day
    state[6] = ns
    return int(stop)
