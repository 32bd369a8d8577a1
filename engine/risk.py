"""Pre-trade risk checks, as pure code. The gate fails closed.

For now: the trading state (ACTIVE / REDUCING / HALTED), order sanity (known instrument,
positive quantity on the lot size, a limit or stop price where one is needed) and a maximum
order notional: market orders priced at the touch, limits at their limit, stops at the
worse of their stop and the touch. Every check is evaluated on what the
order would do; a denial comes back as a sentence a person can act on.

REDUCING counts working orders as if filled, so two reducing orders cannot together flip
a position.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from engine.instruments import InstrumentTable
from engine.messages import (
    FillEvent,
    OrderRequest,
    OrderType,
    Side,
    TradingState,
)

__all__ = ["PreTradeRisk", "RiskLimits"]


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Order-level limits. Notional is in the account currency."""

    max_order_notional: float | None = None
    max_order_quantity: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_order_notional", "max_order_quantity"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive")


# Enum members as module constants: on Python 3.11 every ``Enum.MEMBER`` lookup goes
# through the enum metaclass's ``__getattr__`` hook, ten times the cost of a global
_BUY = Side.BUY
_MARKET = OrderType.MARKET
_STOP = OrderType.STOP
_HALTED = TradingState.HALTED
_REDUCING = TradingState.REDUCING
_NEEDS_LIMIT = (OrderType.LIMIT, OrderType.STOP_LIMIT)
_NEEDS_STOP = (OrderType.STOP, OrderType.STOP_LIMIT)


def _money(x: float) -> str:
    return f"{x:,.2f}"


class PreTradeRisk:
    """The risk gate's decisions and the state they depend on."""

    def __init__(
        self,
        instruments: InstrumentTable,
        limits: RiskLimits,
        currency: str,
        state: TradingState = TradingState.ACTIVE,
    ) -> None:
        self.instruments = instruments
        self.limits = limits
        self.currency = currency
        self.state = state
        self.state_reason = "start"
        n = len(instruments)
        self.position = np.zeros(n, dtype=np.float64)
        self._lot = [inst.size_increment for inst in instruments]
        # per instrument id: (index, instrument), looked up once per order and per fill
        self._by_id = {inst.id: (i, inst) for i, inst in enumerate(instruments)}
        self.bid = np.full(n, np.nan)
        self.ask = np.full(n, np.nan)
        self.working: dict[str, tuple[int, float]] = {}  # client id -> (instrument, signed leaves)

    # --- state ---------------------------------------------------------------------------

    def set_state(self, state: TradingState, reason: str) -> TradingState | None:
        """Change the trading state; return the previous state, or None if unchanged."""
        if state is self.state:
            return None
        previous = self.state
        self.state = state
        self.state_reason = reason
        return previous

    def on_quote(self, instrument: int, bid: float, ask: float) -> None:
        self.bid[instrument] = bid
        self.ask[instrument] = ask

    def on_quote_batch(self, instrument_col: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
        """Keep the last quote of each instrument in the batch."""
        if len(bid) == 0:
            return
        if len(self.bid) == 1:
            self.bid[0] = bid[-1]
            self.ask[0] = ask[-1]
            return
        rev = instrument_col[::-1]
        seen, first = np.unique(rev, return_index=True)
        last = len(bid) - 1 - first
        self.bid[seen] = bid[last]
        self.ask[seen] = ask[last]

    def on_fill(self, fill: FillEvent) -> None:
        entry = self._by_id.get(fill.instrument_id)
        i = entry[0] if entry is not None else self.instruments.index(fill.instrument_id)
        sign = 1 if fill.side is _BUY else -1  # Side.sign
        position = self.position.item(i) + fill.last_qty * sign
        if abs(position) < 0.5 * self._lot[i]:  # partial fills that close it leave no dust
            position = 0.0
        self.position[i] = position
        working = self.working
        order_id = fill.client_order_id
        if order_id in working:
            if fill.leaves_qty <= 0:
                del working[order_id]
            else:
                working[order_id] = (working[order_id][0], fill.leaves_qty * sign)

    def on_order_done(self, client_order_id: str) -> None:
        """Cancelled, rejected or expired: nothing more will fill."""
        self.working.pop(client_order_id, None)

    # --- the check -----------------------------------------------------------------------

    def check(self, order: OrderRequest) -> str | None:
        """None to approve, else the reason for denial. Approval books the order as working."""
        if self.state is _HALTED:
            return f"trading is HALTED ({self.state_reason}); no orders until it is resumed"
        found = self._by_id.get(order.instrument_id)
        if found is None:
            return f"unknown instrument {order.instrument_id}"
        i, inst = found
        qty = order.quantity
        if not (qty > 0 and math.isfinite(qty)):
            return f"quantity must be a positive number, got {qty}"
        lots = qty / inst.size_increment
        if abs(lots - round(lots)) > 1e-9 * max(1.0, abs(lots)):
            return f"quantity {qty} is not a multiple of the lot size {inst.size_increment}"
        limits = self.limits
        if limits.max_order_quantity is not None and qty > limits.max_order_quantity:
            return f"quantity {qty:g} exceeds the limit {limits.max_order_quantity:g}"
        kind = order.order_type
        is_buy = order.side is _BUY
        touch = self.ask.item(i) if is_buy else self.bid.item(i)
        if kind is _MARKET:  # the common case: neither a limit nor a stop price to check
            pass
        elif kind in _NEEDS_LIMIT and not (order.limit_price is not None and order.limit_price > 0):
            return f"a {kind.value} order needs a positive limit price"
        elif kind in _NEEDS_STOP and not (order.stop_price is not None and order.stop_price > 0):
            return f"a {kind.value} order needs a positive stop price"
        if kind is _MARKET or kind is _STOP:
            if not (touch > 0 and math.isfinite(touch)):
                return (
                    f"no market price for {order.instrument_id}; "
                    f"cannot value a {kind.value.lower()} order"
                )
            price = touch
            if kind is _STOP:
                # it trades at the touch once triggered: value it at the worse of the two
                assert order.stop_price is not None
                price = max(touch, order.stop_price) if is_buy else min(touch, order.stop_price)
        else:
            assert order.limit_price is not None
            price = order.limit_price
        notional = inst.notional(price, qty)
        cap = limits.max_order_notional
        if cap is not None and notional > cap:
            return (
                f"order notional {_money(notional)} {self.currency} exceeds the limit "
                f"{_money(cap)} {self.currency}"
            )
        signed = qty * (1 if is_buy else -1)  # Side.sign
        if self.state is _REDUCING:
            exposure = float(self.position[i]) + sum(q for j, q in self.working.values() if j == i)
            after = exposure + signed
            if not (abs(after) < abs(exposure) and (after == 0 or (after > 0) == (exposure > 0))):
                return (
                    f"trading is REDUCING ({self.state_reason}): only orders that shrink a "
                    f"position pass; this one takes {order.instrument_id} from {exposure:g} "
                    f"to {after:g}"
                )
        self.working[order.client_order_id] = (i, signed)
        return None
