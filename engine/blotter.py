"""The blotter: working orders, recent fills and P&L by strategy, kept from the order
traffic for the people watching a running daemon (``tradingd ctl orders``, the dashboard).

It follows order requests and order events only: working orders are added on the request
and leave on their last fill, a cancel, an expiry, a rejection or a denial. P&L by strategy
is the strategy's cash flow plus its positions at the marks it is given (commissions
included), so the strategies' figures add up to the account's trading P&L.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.messages import (
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
)

__all__ = ["Blotter"]


class Blotter:
    """Working orders by client order id, the last ``keep_fills`` fills, and per strategy
    the position in each instrument and the cash its fills moved."""

    def __init__(self, keep_fills: int = 200) -> None:
        self.working: dict[str, dict[str, Any]] = {}
        self.fills: deque[dict[str, Any]] = deque(maxlen=keep_fills)
        self.position: dict[str, dict[str, float]] = {}
        """strategy -> instrument -> signed quantity"""
        self.cash: dict[str, float] = {}
        """strategy -> cash its fills moved (sells in, buys and commissions out)"""
        self.multiplier: dict[str, float] = {}

    def on_message(self, msg: Any) -> None:
        match msg:
            case OrderRequest():
                self.working[msg.client_order_id] = {
                    "client_order_id": msg.client_order_id,
                    "strategy": msg.strategy_id,
                    "instrument": msg.instrument_id,
                    "side": msg.side.value,
                    "quantity": msg.quantity,
                    "filled": 0.0,
                    "price": msg.limit_price if msg.limit_price is not None else msg.stop_price,
                    "order_type": msg.order_type.value,
                    "status": "SUBMITTED",
                    "ts": msg.ts_event,
                }
            case OrderAccepted():
                order = self.working.get(msg.client_order_id)
                if order is not None:
                    order["status"] = "ACCEPTED"
            case OrderPartiallyFilled():  # OrderFilled too
                self._fill(msg)
            case OrderCancelled() | OrderExpired() | OrderRejected() | OrderDenied():
                self.working.pop(msg.client_order_id, None)
            case _:
                return

    def _fill(self, fill: OrderPartiallyFilled) -> None:
        sign = fill.side.sign
        strategy = fill.strategy_id
        book = self.position.setdefault(strategy, {})
        book[fill.instrument_id] = book.get(fill.instrument_id, 0.0) + sign * fill.last_qty
        mult = self.multiplier.get(fill.instrument_id, 1.0)
        self.cash[strategy] = (
            self.cash.get(strategy, 0.0)
            - sign * fill.last_qty * fill.last_px * mult
            - fill.commission
        )
        self.fills.appendleft(
            {
                "client_order_id": fill.client_order_id,
                "strategy": strategy,
                "instrument": fill.instrument_id,
                "side": fill.side.value,
                "quantity": fill.last_qty,
                "price": fill.last_px,
                "commission": fill.commission,
                "liquidity": fill.liquidity,
                "ts": fill.ts_event,
            }
        )
        order = self.working.get(fill.client_order_id)
        if order is not None:
            order["filled"] += fill.last_qty
            order["status"] = "PARTIALLY_FILLED"
            if isinstance(fill, OrderFilled) or fill.leaves_qty <= 0:
                del self.working[fill.client_order_id]

    def pnl_by_strategy(self, marks: dict[str, float]) -> dict[str, float]:
        """Each strategy's P&L: cash moved plus positions at ``marks`` (an instrument
        without a mark counts at nothing, so say so where it matters)."""
        out: dict[str, float] = {}
        for strategy, cash in self.cash.items():
            value = sum(
                qty * marks.get(inst, 0.0) * self.multiplier.get(inst, 1.0)
                for inst, qty in self.position.get(strategy, {}).items()
            )
            out[strategy] = cash + value
        return out
