"""The simulated venue's matching, as pure code.

- A market order fills in full at the touch: buys at the ask, sells at the bid.
- A limit order that is marketable on arrival fills at the touch (taker); otherwise it
  rests and fills at its limit price (maker) on the first quote that crosses it: a buy
  when the ask is at or below the limit, a sell when the bid is at or above it.
- IOC and FOK limit orders that are not marketable on arrival expire at once.
- Commission is ``rate * notional``, rounded to cents, taker and maker rates separate.

Stop orders and DAY orders need more of the venue than this (a stop trigger model, a
trading calendar) and are rejected with a reason saying so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec
import numpy as np
from numba import njit

from engine.instruments import InstrumentTable
from engine.messages import (
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)
from engine.ticks import QUOTE_DTYPE

__all__ = ["SimulatedVenue", "VenueCosts", "warm_up"]


class VenueCosts(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Commission as a fraction of notional (0.0001 is 1 basis point)."""

    taker_rate: float = 0.0
    maker_rate: float | None = None  # None: same as taker
    rounding: float = 0.01  # commissions are rounded to this (cents)


class _Resting:
    __slots__ = ("instrument", "order", "price", "venue_order_id")

    def __init__(
        self, order: OrderRequest, instrument: int, price: float, venue_order_id: str
    ) -> None:
        self.order = order
        self.instrument = instrument
        self.price = price
        self.venue_order_id = venue_order_id


class SimulatedVenue:
    """Our orders against the replayed top of book. ``emit`` receives each event."""

    def __init__(
        self,
        name: str,
        instruments: InstrumentTable,
        costs: VenueCosts,
        currency: str,
        emit: Callable[[Message], None],
    ) -> None:
        self.name = name
        self.instruments = instruments
        self.costs = costs
        self.currency = currency
        self.emit = emit
        n = len(instruments)
        self.bid = np.full(n, np.nan)
        self.ask = np.full(n, np.nan)
        self.resting: dict[str, _Resting] = {}
        # per instrument: best resting buy limit (highest) and sell limit (lowest)
        self.best_buy = np.full(n, -np.inf)
        self.best_sell = np.full(n, np.inf)
        self._order_seq = 0
        self._trade_seq = 0
        self.now = 0

    # --- market data ---------------------------------------------------------------------

    def on_quote(self, instrument: int, bid: float, ask: float, ts: int) -> None:
        self.now = ts
        self.bid[instrument] = bid
        self.ask[instrument] = ask
        if bid < self.best_sell[instrument] and ask > self.best_buy[instrument]:
            return
        self._match_resting(instrument, ts)

    def on_quote_batch(
        self, instrument_col: np.ndarray, bid: np.ndarray, ask: np.ndarray, ts: np.ndarray
    ) -> None:
        """Ticks in order; resting orders are matched at the tick that crosses them."""
        start = 0
        n = len(bid)
        while start < n and self.resting:
            k = self.scan(instrument_col, bid, ask, start)
            if k >= n:
                break
            self.on_quote(int(instrument_col[k]), float(bid[k]), float(ask[k]), int(ts[k]))
            start = k + 1
        if n:
            self.now = int(ts[-1])
            if len(self.bid) == 1:
                self.bid[0] = bid[-1]
                self.ask[0] = ask[-1]
            else:
                _last_quotes(instrument_col, bid, ask, self.bid, self.ask)

    def scan(
        self, instrument_col: np.ndarray, bid: np.ndarray, ask: np.ndarray, start: int = 0
    ) -> int:
        """Index of the first tick (from ``start``) that fills a resting order, else len."""
        if not self.resting:
            return len(bid)
        return int(_first_cross(instrument_col, bid, ask, self.best_buy, self.best_sell, start))

    # --- orders --------------------------------------------------------------------------

    def submit(self, order: OrderRequest, ts: int) -> None:
        self.now = ts
        inst_id = order.instrument_id
        if inst_id not in self.instruments:
            self._reject(order, ts, f"{self.name} does not list {inst_id}")
            return
        i = self.instruments.index(inst_id)
        if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            self._reject(
                order,
                ts,
                f"{order.order_type.value} orders are not supported by the simulated venue yet",
            )
            return
        if order.time_in_force is TimeInForce.DAY:
            self._reject(
                order,
                ts,
                "DAY orders need a trading calendar; the simulated venue takes GTC, IOC, FOK",
            )
            return
        bid = float(self.bid[i])
        ask = float(self.ask[i])
        touch = ask if order.side is Side.BUY else bid
        if order.order_type is OrderType.MARKET:
            if not math.isfinite(touch):
                self._reject(order, ts, f"no market in {inst_id} yet")
                return
            venue_id = self._accept(order, ts)
            self._fill(order, venue_id, touch, ts, maker=False)
            return
        limit = order.limit_price
        if limit is None or not limit > 0:
            self._reject(order, ts, "a limit order needs a positive limit price")
            return
        marketable = math.isfinite(touch) and (
            touch <= limit if order.side is Side.BUY else touch >= limit
        )
        venue_id = self._accept(order, ts)
        if marketable:
            self._fill(order, venue_id, touch, ts, maker=False)
            return
        if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            self.emit(
                OrderExpired(
                    client_order_id=order.client_order_id,
                    strategy_id=order.strategy_id,
                    instrument_id=inst_id,
                    ts_event=ts,
                    ts_init=ts,
                )
            )
            return
        self.resting[order.client_order_id] = _Resting(order, i, limit, venue_id)
        self._refresh_best(i)

    def cancel(self, client_order_id: str, ts: int) -> bool:
        rest = self.resting.pop(client_order_id, None)
        if rest is None:
            return False
        self._refresh_best(rest.instrument)
        o = rest.order
        self.emit(
            OrderCancelled(
                client_order_id=o.client_order_id,
                strategy_id=o.strategy_id,
                instrument_id=o.instrument_id,
                reason="cancelled on request",
                ts_event=ts,
                ts_init=ts,
            )
        )
        return True

    # --- internals -----------------------------------------------------------------------

    def _accept(self, order: OrderRequest, ts: int) -> str:
        self._order_seq += 1
        venue_id = f"{self.name}-{self._order_seq}"
        self.emit(
            OrderAccepted(
                client_order_id=order.client_order_id,
                venue_order_id=venue_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                ts_event=ts,
                ts_init=ts,
            )
        )
        return venue_id

    def _reject(self, order: OrderRequest, ts: int, reason: str) -> None:
        self.emit(
            OrderRejected(
                client_order_id=order.client_order_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                reason=reason,
                ts_event=ts,
                ts_init=ts,
            )
        )

    def _commission(self, notional: float, maker: bool) -> float:
        c = self.costs
        rate = c.maker_rate if (maker and c.maker_rate is not None) else c.taker_rate
        step = c.rounding
        if step == 0.01:
            return round(notional * rate, 2)
        return round(round(notional * rate / step) * step, 10)

    def _fill(
        self, order: OrderRequest, venue_id: str, price: float, ts: int, *, maker: bool
    ) -> None:
        inst = self.instruments.get(order.instrument_id)
        self._trade_seq += 1
        notional = inst.notional(price, order.quantity)
        self.emit(
            OrderFilled(
                client_order_id=order.client_order_id,
                venue_order_id=venue_id,
                trade_id=f"{self.name}-T{self._trade_seq}",
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                side=order.side,
                last_qty=order.quantity,
                last_px=price,
                leaves_qty=0.0,
                commission=self._commission(notional, maker),
                commission_currency=self.currency,
                liquidity="MAKER" if maker else "TAKER",
                ts_event=ts,
                ts_init=ts,
            )
        )

    def _refresh_best(self, instrument: int) -> None:
        buys = [
            r.price
            for r in self.resting.values()
            if r.instrument == instrument and r.order.side is Side.BUY
        ]
        sells = [
            r.price
            for r in self.resting.values()
            if r.instrument == instrument and r.order.side is Side.SELL
        ]
        self.best_buy[instrument] = max(buys) if buys else -np.inf
        self.best_sell[instrument] = min(sells) if sells else np.inf

    def _match_resting(self, instrument: int, ts: int) -> None:
        bid = float(self.bid[instrument])
        ask = float(self.ask[instrument])
        crossed = [
            r
            for r in self.resting.values()
            if r.instrument == instrument
            and (
                (r.order.side is Side.BUY and ask <= r.price)
                or (r.order.side is Side.SELL and bid >= r.price)
            )
        ]
        for r in crossed:  # in arrival order (dict order)
            del self.resting[r.order.client_order_id]
            self._fill(r.order, r.venue_order_id, r.price, ts, maker=True)
        self._refresh_best(instrument)


@njit(cache=True, nogil=True)
def _first_cross(
    instrument_col: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    best_buy: np.ndarray,
    best_sell: np.ndarray,
    start: int,
) -> int:  # pragma: no cover - compiled
    for t in range(start, bid.shape[0]):
        i = instrument_col[t]
        if ask[t] <= best_buy[i] or bid[t] >= best_sell[i]:
            return t
    n: int = bid.shape[0]
    return n


@njit(cache=True, nogil=True)
def _last_quotes(
    instrument_col: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    out_bid: np.ndarray,
    out_ask: np.ndarray,
) -> None:  # pragma: no cover - compiled
    for t in range(bid.shape[0]):
        i = instrument_col[t]
        out_bid[i] = bid[t]
        out_ask[i] = ask[t]


def warm_up() -> None:
    """Load the compiled kernels now rather than on the first tick. Column views of a batch
    are strided, except in a one-row batch; numba compiles each layout apart."""
    for rows in (1, 2):
        batch = np.zeros(rows, dtype=QUOTE_DTYPE)
        col, bid, ask = batch["instrument"], batch["bid"], batch["ask"]
        _first_cross(col, bid, ask, np.full(1, -np.inf), np.full(1, np.inf), 0)
        _last_quotes(col, bid, ask, np.zeros(1), np.zeros(1))
