"""EMA crossover: trade when a fast EMA of the mid price crosses a slow one.

On each cross it sends one order of ``quantity``: a buy when the fast EMA crosses above
the slow one, a sell when it crosses below; a market order, or a passive limit order.
The signal logic is :class:`engine.indicators.EmaCross`; this actor feeds it ticks, one at
a time or a batch at a time through its numba kernel, with identical results.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from engine.actor import Actor, ActorConfig
from engine.indicators import EmaCross
from engine.messages import OrderRequest, OrderType, QuoteBatch, QuoteTick, Side, TimeInForce
from engine.ticks import QUOTE_DTYPE

__all__ = ["EmaCrossConfig", "EmaCrossStrategy"]

# Column views of a batch are strided, except in a one-row batch; numba compiles each layout
# apart, so both are loaded at start.
_WARM_BATCHES = (np.zeros(1, dtype=QUOTE_DTYPE), np.zeros(2, dtype=QUOTE_DTYPE))


class EmaCrossConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``fast``/``slow`` are EMA periods in ticks; no order before ``warmup`` ticks.
    ``quantity`` is in instrument units.

    ``order_type = "LIMIT"`` sends passive limit orders instead of market orders: a buy
    ``limit_offset_ticks`` price increments below the bid, a sell as far above the ask
    (0 joins the touch), resting until the market trades through them.
    """

    instrument: str
    fast: int = 10
    slow: int = 20
    warmup: int = 20
    quantity: float
    order_type: OrderType = OrderType.MARKET
    limit_offset_ticks: int = 0
    time_in_force: TimeInForce = TimeInForce.GTC

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        if not self.quantity > 0:
            raise ValueError("quantity must be positive")
        if self.warmup < 0:
            raise ValueError("warmup must be 0 or more")
        if self.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            raise ValueError(f"order_type must be MARKET or LIMIT, got {self.order_type.value}")
        if self.limit_offset_ticks < 0:
            raise ValueError("limit_offset_ticks must be 0 or more")


class EmaCrossStrategy(Actor[EmaCrossConfig]):
    Config = EmaCrossConfig
    outputs: ClassVar[tuple[str, ...]] = ("orders",)
    is_strategy = True

    def check_config(self) -> None:
        if self.config.instrument not in self.ctx.instruments:
            known = ", ".join(i.id for i in self.ctx.instruments)
            raise ValueError(
                f"unknown instrument {self.config.instrument!r} (instruments: {known})"
                " - at `$.instrument`"
            )

    def on_start(self) -> None:
        cfg = self.config
        instruments = self.ctx.instruments
        inst = instruments.get(cfg.instrument)
        self.instrument_index = instruments.index(cfg.instrument)
        self.instrument = inst
        self.increment = inst.price_increment
        self.signal = EmaCross(cfg.fast, cfg.slow, cfg.warmup)
        # client order ids already used stay used: the sequence survives a restart
        self.order_seq = getattr(self, "order_seq", 0)
        # load the compiled kernel now, not on the first tick
        for warm in _WARM_BATCHES:
            self.scan_batch(warm, ())

    def on_message(self, msg: Any) -> None:
        match msg:
            case QuoteTick(instrument_id=inst_id, bid=bid, ask=ask) if (
                inst_id == self.config.instrument
            ):
                inc = self.increment
                cross = self.signal.update(float(round(bid / inc) + round(ask / inc)))
                if cross:
                    self._order(cross, msg.ts_event, bid, ask)
            case QuoteBatch(data=data):
                self._on_batch(data)
            case _:
                pass  # order events, other instruments: nothing to do for this strategy

    def _on_batch(self, data: np.ndarray) -> None:
        inst_col = data["instrument"]
        bid = data["bid"]
        ask = data["ask"]
        ts = data["ts_event"]
        n = len(bid)
        if not self.wired("orders"):  # orders switched off: signals only
            self.signal.run(
                inst_col, bid, ask, self.instrument_index, self.increment, stop_at_cross=False
            )
            return
        start = 0
        while start < n:
            k = self.signal.run(inst_col, bid, ask, self.instrument_index, self.increment, start)
            if k >= n:
                break
            self._order(self.signal.sign, int(ts[k]), float(bid[k]), float(ask[k]))
            start = k + 1

    @property
    def may_act_on_market_data(self) -> bool:
        return self.wired("orders")

    def scan_batch(self, batch: np.ndarray, instrument_ids: tuple[str, ...]) -> int:
        if batch.dtype is not QUOTE_DTYPE and batch.dtype != QUOTE_DTYPE:
            return len(batch)  # prints and bars: this strategy trades on quotes only
        return self.signal.run(
            batch["instrument"],
            batch["bid"],
            batch["ask"],
            self.instrument_index,
            self.increment,
            0,
            commit=False,
        )

    def _order(self, sign: int, ts_event: int, bid: float, ask: float) -> None:
        cfg = self.config
        limit_price = None
        if cfg.order_type is OrderType.LIMIT:
            offset = cfg.limit_offset_ticks * self.increment
            limit_price = self.instrument.round_price(bid - offset if sign > 0 else ask + offset)
        self.order_seq += 1
        self.emit(
            "orders",
            OrderRequest(
                client_order_id=f"{self.name}-{self.order_seq}",
                strategy_id=self.name,
                instrument_id=self.config.instrument,
                side=Side.BUY if sign > 0 else Side.SELL,
                quantity=self.config.quantity,
                order_type=cfg.order_type,
                limit_price=limit_price,
                time_in_force=cfg.time_in_force,
                ts_event=ts_event,
                ts_init=self.clock.now(),
            ),
        )
