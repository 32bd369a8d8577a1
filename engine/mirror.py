"""The state a mirror of the daemon shows other processes (adapters/redis_mirror.py), kept
in memory: the last quote of each instrument, the open orders, the latest portfolio
snapshot, the trading state and limits, and the events waiting for the stream, with what
changed since it was last written out.

Pure and synchronous: the mirror actor's handlers update it, and its writer reads it
between two awaits, so it always sees a consistent state. Values are ready to be written
as hash fields (numbers, strings, JSON bytes).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import msgspec
import numpy as np

from engine.messages import (
    LimitsChanged,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderDenied,
    OrderExpired,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    PortfolioSnapshot,
    TradingStateChanged,
)
from engine.ticks import last_rows

__all__ = ["HashFields", "MirrorState", "StreamEvent", "StreamGap"]

HashFields = dict[str, bytes | float | int | str]
"""The fields of one hash: name -> number, string or JSON bytes."""

_DONE_KEPT = 10_000
"""Finished orders remembered, so that a request arriving after its fill (on another edge)
does not bring the order back."""


class StreamGap:
    """Events dropped while the queue was full, at the place in the stream where they were
    lost; written as one ``Gap`` entry. ``closed`` once taken for writing: later drops
    start a new gap."""

    __slots__ = ("closed", "count", "first_ts", "last_ts")

    def __init__(self, ts: int) -> None:
        self.count = 0
        self.first_ts = ts
        self.last_ts = ts
        self.closed = False

    def body(self) -> bytes:
        return msgspec.json.encode(
            {"dropped": self.count, "first_ts": self.first_ts, "last_ts": self.last_ts}
        )


StreamEvent = tuple[str, int, bytes, bool]
"""An event for the stream: its type, ``ts_event``, JSON body, and whether it is an alert
to publish."""


class MirrorState:
    """What the mirror should hold, and what changed since the last write (see the module
    docstring). ``events`` is bounded by ``queue_limit``: past it new events are dropped,
    counted (``events_dropped``), and a :class:`StreamGap` stands where they were lost."""

    def __init__(self, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self.quotes: dict[str, HashFields] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.positions: dict[str, bytes] = {}
        self.pnl: HashFields = {}
        self.status: HashFields = {}
        self.dirty_quotes: set[str] = set()
        self.dirty_orders: set[str] = set()
        self.dirty_positions: set[str] = set()
        self.dirty_pnl = False
        self.events: deque[StreamEvent | StreamGap] = deque()
        self.queued = 0  # events in ``events`` (gaps not counted)
        self.queue_high_water = 0
        self.events_dropped = 0
        self._gap: StreamGap | None = None
        self._done: OrderedDict[str, None] = OrderedDict()
        self._encode = msgspec.json.Encoder().encode

    # --- market data ---------------------------------------------------------------------

    def quote(
        self, instrument_id: str, bid: float, ask: float, bid_size: float, ask_size: float, ts: int
    ) -> None:
        self.quotes[instrument_id] = {
            "bid": bid,
            "ask": ask,
            "bid_size": bid_size,
            "ask_size": ask_size,
            "ts": ts,
        }
        self.dirty_quotes.add(instrument_id)

    def quote_batch(self, data: np.ndarray, instrument_ids: tuple[str, ...]) -> None:
        """The last row of each instrument in the batch."""
        if len(data) == 1:  # one tick at a time: no need to look for instruments
            seen, rows = data["instrument"], np.zeros(1, dtype=np.intp)
        else:
            seen, rows = last_rows(data["instrument"])
        for inst, row in zip(seen.tolist(), rows.tolist(), strict=True):
            r = data[row]
            self.quote(
                instrument_ids[inst],
                float(r["bid"]),
                float(r["ask"]),
                float(r["bid_size"]),
                float(r["ask_size"]),
                int(r["ts_event"]),
            )

    # --- orders --------------------------------------------------------------------------

    def order_request(self, msg: OrderRequest) -> None:
        coid = msg.client_order_id
        if coid in self._done or coid in self.orders:
            return
        self.orders[coid] = {
            "client_order_id": coid,
            "strategy_id": msg.strategy_id,
            "instrument_id": msg.instrument_id,
            "side": msg.side.value,
            "quantity": msg.quantity,
            "order_type": msg.order_type.value,
            "limit_price": msg.limit_price,
            "stop_price": msg.stop_price,
            "time_in_force": msg.time_in_force.value,
            "status": "PENDING",
            "venue_order_id": None,
            "filled_qty": 0.0,
            "leaves_qty": msg.quantity,
            "avg_px": None,
            "ts": msg.ts_event,
        }
        self.dirty_orders.add(coid)
        self.event(msg)

    def _open(self, msg: Any) -> dict[str, Any] | None:
        """The open order an event is about, made from the event if no request came."""
        coid = msg.client_order_id
        if coid in self._done:
            return None
        order = self.orders.get(coid)
        if order is None:
            order = self.orders[coid] = {
                "client_order_id": coid,
                "strategy_id": msg.strategy_id,
                "instrument_id": msg.instrument_id,
                "quantity": None,
                "status": "ACCEPTED",
                "venue_order_id": None,
                "filled_qty": 0.0,
                "leaves_qty": None,
                "avg_px": None,
            }
        order["ts"] = msg.ts_event
        self.dirty_orders.add(coid)
        return order

    def _finish(self, coid: str) -> None:
        if self.orders.pop(coid, None) is not None:
            self.dirty_orders.add(coid)
        self._done[coid] = None
        if len(self._done) > _DONE_KEPT:
            self._done.popitem(last=False)

    def order_event(self, msg: Any) -> None:
        """An ``engine.messages.OrderEvent``: update or close the open order; queue it."""
        match msg:
            case OrderAccepted():
                order = self._open(msg)
                if order is not None:
                    if order["status"] == "PENDING":
                        order["status"] = "ACCEPTED"
                    order["venue_order_id"] = msg.venue_order_id
            case OrderPartiallyFilled(leaves_qty=leaves) if leaves > 0.0:
                order = self._open(msg)
                if order is not None:
                    filled = order["filled_qty"]
                    done = filled + msg.last_qty
                    avg = order["avg_px"]
                    order["avg_px"] = (
                        msg.last_px
                        if avg is None
                        else (avg * filled + msg.last_px * msg.last_qty) / done
                    )
                    order["filled_qty"] = done
                    order["leaves_qty"] = leaves
                    order["venue_order_id"] = msg.venue_order_id
                    order["status"] = "PARTIALLY_FILLED"
            case OrderPartiallyFilled() | OrderCancelled() | OrderExpired():
                self._finish(msg.client_order_id)  # a fill leaving nothing: OrderFilled
            case OrderRejected() | OrderDenied():
                self._finish(msg.client_order_id)
            case OrderCancelRejected():
                pass  # the order, if any, is as it was
        self.event(msg)

    # --- account, risk -------------------------------------------------------------------

    def snapshot(self, msg: PortfolioSnapshot) -> None:
        encode = self._encode
        seen = set()
        for row in msg.positions:
            inst = row.instrument_id
            seen.add(inst)
            body = encode(row)
            if self.positions.get(inst) != body:
                self.positions[inst] = body
                self.dirty_positions.add(inst)
        for inst in [i for i in self.positions if i not in seen]:
            del self.positions[inst]
            self.dirty_positions.add(inst)
        pnl: HashFields = {
            "currency": msg.currency,
            "balance": msg.balance,
            "equity": msg.equity,
            "realized_pnl": msg.realized_pnl,
            "unrealized_pnl": msg.unrealized_pnl,
            "commissions": msg.commissions,
            "max_drawdown": msg.max_drawdown,
            "fills": msg.fills,
            "ts": msg.ts_event,
        }
        for s in msg.strategies:
            pnl[f"strategy:{s.strategy_id}"] = encode(s)
        self.pnl = pnl
        self.dirty_pnl = True

    def trading_state(self, msg: TradingStateChanged) -> None:
        self.status.update(
            trading_state=msg.state.value,
            trading_state_reason=msg.reason,
            trading_state_origin=msg.origin,
            trading_state_ts=msg.ts_event,
        )
        self.event(msg)

    def limits(self, msg: LimitsChanged) -> None:
        self.status.update(
            limits=self._encode(msg.limits),
            limits_reason=msg.reason,
            limits_origin=msg.origin,
            limits_ts=msg.ts_event,
        )
        self.event(msg)

    # --- the stream ----------------------------------------------------------------------

    def event(self, msg: Message, *, publish: bool = False) -> None:
        """Queue ``msg`` for the stream (and the alerts channel); drop and count it if
        ``queue_limit`` events are waiting."""
        if self.queued >= self.queue_limit:
            self.events_dropped += 1
            gap = self._gap
            if gap is None or gap.closed:
                gap = self._gap = StreamGap(msg.ts_event)
                self.events.append(gap)
            gap.count += 1
            gap.last_ts = msg.ts_event
            return
        self._gap = None
        self.events.append((type(msg).__name__, msg.ts_event, self._encode(msg), publish))
        self.queued += 1
        self.queue_high_water = max(self.queue_high_water, self.queued)

    def written(self, n: int) -> int:
        """The first ``n`` queued items were written; returns how many were events."""
        events = 0
        for _ in range(n):
            if not isinstance(self.events.popleft(), StreamGap):
                events += 1
        self.queued -= events
        return events

    def clean(self) -> None:
        """What the mirror holds now is on its way out whole (a rebuild)."""
        self.dirty_quotes.clear()
        self.dirty_orders.clear()
        self.dirty_positions.clear()
        self.dirty_pnl = False

    @property
    def dirty(self) -> bool:
        return bool(
            self.events
            or self.dirty_quotes
            or self.dirty_orders
            or self.dirty_positions
            or self.dirty_pnl
        )
