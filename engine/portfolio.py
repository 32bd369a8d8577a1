"""Portfolio accounting for a netting margin account, as pure code.

- One position per instrument, signed quantity (+ long, - short) in instrument units,
  with its average entry price.
- A fill in the direction of the position (or from flat) moves the average price; a fill
  against it realises P&L on the closed part, ``closed * (price - avg) * multiplier``
  with the position's sign, and any excess opens a new position at the fill price.
- The account balance (cash of a margin account) moves by realised P&L minus commission
  at each fill. Equity is the balance plus unrealised P&L, marked at the mid price.
- Every mark updates the equity's high-water mark and the maximum drawdown, so the
  drawdown is exact at tick resolution. A batch of marks goes through a numba kernel that
  does the same arithmetic in the same order as one mark at a time.

All money is in the account currency (instruments must be quoted in it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.instruments import InstrumentTable
from engine.ticks import QUOTE_DTYPE

__all__ = ["Portfolio", "PositionView", "warm_up"]


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
        self.unrealized = np.zeros(n, dtype=np.float64)
        self.mark_price = np.full(n, np.nan, dtype=np.float64)
        self.realized = np.zeros(n, dtype=np.float64)
        self.commission_paid = np.zeros(n, dtype=np.float64)
        self.fills = 0
        self.traded_notional = 0.0
        # [peak equity, max drawdown (money), max drawdown (fraction of peak), last equity]
        self.curve = np.array([starting_balance, 0.0, 0.0, starting_balance], dtype=np.float64)

    # --- fills ---------------------------------------------------------------------------

    def apply_fill(
        self, instrument_id: str, signed_qty: float, price: float, commission: float
    ) -> float:
        """Book a fill of ``signed_qty`` (+ buy, - sell) at ``price``; return realised P&L."""
        i = self.instruments.index(instrument_id)
        mult = float(self.mult[i])
        pos = float(self.qty[i])
        avg = float(self.avg[i])
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
        self.qty[i] = pos
        self.avg[i] = avg
        self.realized[i] += realized
        self.commission_paid[i] += commission
        self.balance += realized - commission
        self.fills += 1
        self.traded_notional += abs(signed_qty * price) * mult
        mark = float(self.mark_price[i])
        if not math.isnan(mark):  # re-mark so equity reflects the fill at once
            self._mark_one(i, mark)
        else:
            self.unrealized[i] = 0.0
            self._equity_point()
        return realized

    # --- marks ---------------------------------------------------------------------------

    def _equity_point(self) -> None:
        equity = self._equity()
        peak, max_dd, max_frac, _ = self.curve.tolist()
        if equity > peak:  # noqa: PLR1730 - the same comparisons as the batch kernel
            peak = equity
        dd = peak - equity
        if dd > max_dd:  # noqa: PLR1730
            max_dd = dd
        if peak > 0.0 and dd / peak > max_frac:
            max_frac = dd / peak
        self.curve[:] = (peak, max_dd, max_frac, equity)

    def _equity(self) -> float:
        total = 0.0
        for u in self.unrealized.tolist():
            total += u
        return self.balance + total

    def _mark_one(self, i: int, mid: float) -> None:
        self.mark_price[i] = mid
        self.unrealized[i] = float(self.qty[i]) * (mid - float(self.avg[i])) * float(self.mult[i])
        self._equity_point()

    def mark(self, instrument_index: int, bid: float, ask: float) -> None:
        """Mark one instrument at the mid of ``bid`` and ``ask``."""
        self._mark_one(instrument_index, (bid + ask) * 0.5)

    def mark_batch(self, instrument_col: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
        """Mark every tick of a batch, in order; same result as :meth:`mark` per tick."""
        _mark_batch_kernel(
            instrument_col,
            bid,
            ask,
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


@njit(cache=True, nogil=True)
def _mark_batch_kernel(
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
) -> None:  # pragma: no cover - compiled
    peak = curve[0]
    max_dd = curve[1]
    max_frac = curve[2]
    equity = curve[3]
    m = unrealized.shape[0]
    for t in range(bid.shape[0]):
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


def warm_up() -> None:
    """Load the compiled kernel now rather than on the first tick. Column views of a batch
    are strided, except in a one-row batch; numba compiles each layout apart."""
    one = np.ones(1)
    for rows in (1, 2):
        batch = np.zeros(rows, dtype=QUOTE_DTYPE)
        _mark_batch_kernel(
            batch["instrument"],
            batch["bid"],
            batch["ask"],
            np.zeros(1),
            np.zeros(1),
            one,
            np.zeros(1),
            np.zeros(1),
            0.0,
            np.zeros(4),
        )
