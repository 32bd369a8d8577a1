"""Trend following on bars: hold a fixed notional long while a fast simple moving average
of the close is above a slow one (short, if allowed, while it is below; else flat).

Per instrument the strategy keeps the last ``slow`` closes *adjusted as of the latest bar*.
A :class:`~engine.messages.CorporateActionEvent` multiplies them by the event's split and
dividend ratios and divides the quantities the strategy tracks (its position, its working
orders) by the split ratio, as the venue and the portfolio do with holdings. The averages
therefore show no jump at a split, and never use a factor before its ex-date (the
point-in-time rule of :mod:`engine.corporate_actions`).

On each bar of an instrument, once ``slow`` bars of it have been seen:

- the target is ``+notional / (close x multiplier)`` while the fast average is above the
  slow one, ``-notional / (...)`` while it is below if ``allow_short``, else 0; in whole
  size increments, rounded toward zero;
- if no order of this strategy is working in the instrument, and the gap between target
  and position is at least one size increment and at least ``rebalance_threshold`` x the
  target, it sends one MARKET order for the gap (so it does not trade every day as the
  price moves the target a little).

The position is the sum of this strategy's fills. An order works from the moment it is sent
until ``OrderFilled``, ``OrderRejected``, ``OrderDenied``, ``OrderExpired`` or
``OrderCancelled``, so the order events of the risk gate, the router and the venue must be
wired back to this actor.

Bars come one at a time (:class:`~engine.messages.Bar`) or as a
:class:`~engine.messages.BarBatch`; both go through the same per-bar step, and
:meth:`TrendStrategy.scan_batch` runs that step on copies of the windows, so batched and
per-bar replays make the same decisions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar

import numpy as np

from engine.actor import Actor, ActorConfig
from engine.instruments import Instrument
from engine.messages import (
    Bar,
    BarBatch,
    CorporateActionEvent,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    OrderType,
    Side,
    TimeInForce,
)
from engine.ticks import BAR_DTYPE

__all__ = ["TrendConfig", "TrendStrategy"]


class TrendConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``fast``/``slow`` are moving-average lengths in bars (no order before ``slow`` bars of
    an instrument). ``notional`` is the value of the position held in each instrument, in
    the account currency (equal to the instruments' quote currency).
    ``rebalance_threshold`` is a fraction of the target quantity: a smaller gap between
    target and position is left alone. Orders are MARKET orders (filled, in a bar replay,
    at the next bar's open).
    """

    instruments: list[str]
    fast: int
    slow: int
    notional: float
    allow_short: bool = False
    rebalance_threshold: float = 0.25
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.GTC

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.instruments:
            raise ValueError("instruments must name at least one instrument")
        if len(set(self.instruments)) != len(self.instruments):
            raise ValueError("instruments must not repeat an instrument")
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        if not (self.notional > 0 and math.isfinite(self.notional)):
            raise ValueError(f"notional must be a positive number, got {self.notional!r}")
        if not (self.rebalance_threshold >= 0 and math.isfinite(self.rebalance_threshold)):
            raise ValueError("rebalance_threshold must be 0 or more")
        if self.order_type is not OrderType.MARKET:
            raise ValueError(f"order_type must be MARKET, got {self.order_type.value}")


@dataclass(slots=True)
class _WorkingOrder:
    instrument_id: str
    side: Side
    leaves: float
    """Units still to fill, on the instrument's current basis (after any split)."""


class TrendStrategy(Actor[TrendConfig]):
    Config = TrendConfig
    outputs: ClassVar[tuple[str, ...]] = ("orders",)
    is_strategy = True

    def check_config(self) -> None:
        for i, inst_id in enumerate(self.config.instruments):
            if inst_id not in self.ctx.instruments:
                known = ", ".join(inst.id for inst in self.ctx.instruments)
                raise ValueError(
                    f"unknown instrument {inst_id!r} (instruments: {known})"
                    f" - at `$.instruments[{i}]`"
                )

    def on_start(self) -> None:
        cfg = self.config
        self.traded: dict[str, Instrument] = {
            inst_id: self.ctx.instruments.get(inst_id) for inst_id in cfg.instruments
        }
        # Derived from market data: rebuilt after a restart (the averages warm up again),
        # since a handler that crashed may have left a window half-adjusted.
        self.closes: dict[str, deque[float]] = {
            inst_id: deque(maxlen=cfg.slow) for inst_id in cfg.instruments
        }
        self._columns: dict[tuple[str, ...], list[str | None]] = {}
        if getattr(self, "positions", None) is None:
            # The book is kept across restarts: forgetting a fill or a working order would
            # make the strategy trade it a second time, and reusing an order id is refused.
            self.positions: dict[str, float] = dict.fromkeys(cfg.instruments, 0.0)
            self.working: dict[str, _WorkingOrder] = {}
            self.order_seq = 0

    # --- what a monitor or a test may read -------------------------------------------------

    def position(self, instrument_id: str) -> float:
        """This strategy's position in ``instrument_id``, signed, in instrument units."""
        return self.positions[instrument_id]

    def averages(self, instrument_id: str) -> tuple[float, float] | None:
        """``(fast, slow)`` moving averages of the adjusted close, None before ``slow`` bars."""
        return _averages(self.closes[instrument_id], self.config.fast, self.config.slow)

    def working_orders(self, instrument_id: str) -> dict[str, float]:
        """``{client_order_id: signed units still working}`` in ``instrument_id``."""
        return {
            coid: order.side.sign * order.leaves
            for coid, order in self.working.items()
            if order.instrument_id == instrument_id
        }

    # --- messages --------------------------------------------------------------------------

    def on_message(self, msg: Any) -> None:
        match msg:
            case BarBatch(data=data, instrument_ids=ids):
                self._on_batch(data, ids)
            case Bar(instrument_id=inst_id, close=close, ts_event=ts) if inst_id in self.closes:
                self._on_bar(inst_id, close, ts)
            case CorporateActionEvent(instrument_id=inst_id) if inst_id in self.closes:
                self._on_corporate_action(msg)
            case OrderPartiallyFilled(strategy_id=sid) if sid == self.name:
                self._on_fill(msg)  # OrderFilled too: it is a subclass
            case (
                OrderRejected(strategy_id=sid)
                | OrderDenied(strategy_id=sid)
                | OrderExpired(strategy_id=sid)
                | OrderCancelled(strategy_id=sid)
            ) if sid == self.name:
                self.working.pop(msg.client_order_id, None)
            case _:
                pass  # quotes, prints, other instruments, acknowledgements: nothing to do

    def _on_batch(self, data: np.ndarray, ids: tuple[str, ...]) -> None:
        if data.dtype != BAR_DTYPE:
            return
        columns = self._columns_of(ids)
        closes = self.closes
        inst_col = data["instrument"]
        close_col = data["close"]
        ts_col = data["ts_event"]
        for i in range(len(data)):
            inst_id = columns[int(inst_col[i])]
            if inst_id is not None:
                self._step(inst_id, closes[inst_id], float(close_col[i]), int(ts_col[i]))

    def _on_bar(self, inst_id: str, close: float, ts_event: int) -> None:
        self._step(inst_id, self.closes[inst_id], close, ts_event)

    @property
    def may_act_on_market_data(self) -> bool:
        return self.wired("orders")

    def scan_batch(self, batch: np.ndarray, instrument_ids: tuple[str, ...]) -> int:
        """The first row of ``batch`` at which :meth:`on_message` would send an order, or
        ``len(batch)``. Runs the same step on copies of the windows it touches; positions
        and working orders cannot change before that row."""
        n = len(batch)
        if batch.dtype != BAR_DTYPE or not self.wired("orders"):
            return n
        columns = self._columns_of(instrument_ids)
        copies: dict[str, deque[float]] = {}
        inst_col = batch["instrument"]
        close_col = batch["close"]
        for i in range(n):
            inst_id = columns[int(inst_col[i])]
            if inst_id is None:
                continue
            window = copies.get(inst_id)
            if window is None:
                window = copies[inst_id] = self.closes[inst_id].copy()
            if _push(window, float(close_col[i])) and self._order_quantity(
                inst_id, window, float(close_col[i])
            ):
                return i
        return n

    # --- the step --------------------------------------------------------------------------

    def _step(self, inst_id: str, window: deque[float], close: float, ts_event: int) -> None:
        """One bar of ``inst_id``: update its window, and order if the target calls for it."""
        if not _push(window, close) or not self.wired("orders"):
            return
        qty = self._order_quantity(inst_id, window, close)
        if qty:
            self._send(inst_id, qty, ts_event)

    def _order_quantity(self, inst_id: str, window: deque[float], close: float) -> float:
        """The signed quantity to order on a bar closing at ``close`` (0: none), given the
        window including that bar. Reads state, never changes it (``scan_batch`` uses it)."""
        cfg = self.config
        means = _averages(window, cfg.fast, cfg.slow)
        if means is None or self._has_working(inst_id):
            return 0.0
        fast, slow = means
        direction = 1 if fast > slow else -1 if (fast < slow and cfg.allow_short) else 0
        inst = self.traded[inst_id]
        target = direction * _lots(inst, cfg.notional / (close * inst.multiplier))
        gap = target - self.positions[inst_id]
        qty = inst.round_size(abs(gap))
        if qty <= 0.0 or abs(gap) < cfg.rebalance_threshold * abs(target):
            return 0.0
        return math.copysign(qty, gap)

    def _has_working(self, inst_id: str) -> bool:
        return any(order.instrument_id == inst_id for order in self.working.values())

    def _send(self, inst_id: str, qty: float, ts_event: int) -> None:
        cfg = self.config
        side = Side.BUY if qty > 0 else Side.SELL
        self.order_seq += 1
        coid = f"{self.name}-{self.order_seq}"
        self.working[coid] = _WorkingOrder(inst_id, side, abs(qty))
        self.emit(
            "orders",
            OrderRequest(
                client_order_id=coid,
                strategy_id=self.name,
                instrument_id=inst_id,
                side=side,
                quantity=abs(qty),
                order_type=cfg.order_type,
                time_in_force=cfg.time_in_force,
                ts_event=ts_event,
                ts_init=self.clock.now(),
            ),
        )

    # --- order events and corporate actions ------------------------------------------------

    def _on_fill(self, fill: OrderPartiallyFilled) -> None:
        inst_id = fill.instrument_id
        if inst_id in self.positions:
            self.positions[inst_id] += fill.side.sign * fill.last_qty
        if isinstance(fill, OrderFilled) or fill.leaves_qty <= 0.0:
            self.working.pop(fill.client_order_id, None)
        else:
            order = self.working.get(fill.client_order_id)
            if order is not None:
                order.leaves = fill.leaves_qty

    def _on_corporate_action(self, event: CorporateActionEvent) -> None:
        inst_id = event.instrument_id
        ratio = event.split_ratio * event.dividend_ratio
        window = self.closes[inst_id]
        adjusted = [close * ratio for close in window]
        window.clear()
        window.extend(adjusted)
        split = event.split_ratio
        if split != 1.0:
            self.positions[inst_id] /= split
            for order in self.working.values():
                if order.instrument_id == inst_id:
                    order.leaves /= split

    def _columns_of(self, ids: tuple[str, ...]) -> list[str | None]:
        """Per value of a batch's ``instrument`` column: the instrument id if traded here."""
        columns = self._columns.get(ids)
        if columns is None:
            columns = [inst_id if inst_id in self.closes else None for inst_id in ids]
            self._columns[ids] = columns
        return columns


def _push(window: deque[float], close: float) -> bool:
    """Add a bar's close to the window; False (and nothing added) if it is not a price."""
    if not (close > 0.0 and math.isfinite(close)):
        return False
    window.append(close)
    return True


def _averages(window: deque[float], fast: int, slow: int) -> tuple[float, float] | None:
    """Fast and slow simple moving averages of a full window (``maxlen == slow``), else None.

    ``math.fsum`` is exactly rounded, so each average depends only on the closes, not on
    the order of additions, and an exact adjustment (a 2:1 split) scales it exactly.
    """
    if len(window) < slow:
        return None
    return (
        math.fsum(islice(window, slow - fast, slow)) / fast,
        math.fsum(window) / slow,
    )


def _lots(inst: Instrument, quantity: float) -> float:
    """``quantity`` in whole size increments, rounded toward zero (a hair of tolerance so
    that 299.99999999999994 lots, a float's way of writing 300, counts as 300)."""
    lots = math.floor(quantity / inst.size_increment + 1e-9)
    return inst.round_size(lots * inst.size_increment)
