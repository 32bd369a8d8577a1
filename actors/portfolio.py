"""The portfolio: positions, cash, P&L and drawdown of the account, from fills and marks,
and the account's history over data time (equity samples, day closes, the fill log) for
the backtest's metrics and report.

Where its ``snapshots`` port is wired, it also sends a :class:`PortfolioSnapshot` of the
account every ``snapshot_interval_s`` of clock time, after every fill and once on stop,
for processes that follow the daemon (the Redis mirror, the dashboard). Unwired, it sets
no timer and builds nothing: a backtest runs exactly as without the port.

Quotes mark at the mid, bars at their close. On a corporate action the position is put on
the new basis and dividends are paid in cash (see ``Portfolio.apply_corporate_action``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import attrgetter
from typing import Any, ClassVar

import numpy as np

from engine.actor import Actor, ActorConfig
from engine.clock import NANOS_PER_SECOND
from engine.messages import (
    Bar,
    BarBatch,
    CorporateActionEvent,
    OrderFilled,
    OrderPartiallyFilled,
    PortfolioSnapshot,
    PositionRow,
    QuoteBatch,
    QuoteTick,
    StrategyPnl,
    TimerFired,
)
from engine.portfolio import AccountHistory, Portfolio, warm_up
from engine.ticks import QUOTE_DTYPE

__all__ = ["COST_KINDS", "PortfolioActor", "PortfolioConfig"]

# Costs a fill reports besides commission: every ``<kind>_cost`` field of the fill message
# (measured, already in the fill price). A kind added to the message shows up by itself.
_COST_FIELDS = tuple(f for f in OrderPartiallyFilled.__struct_fields__ if f.endswith("_cost"))
COST_KINDS = tuple(f.removesuffix("_cost") for f in _COST_FIELDS)


def _costs_getter(fields: tuple[str, ...]) -> Callable[[Any], tuple[float, ...]]:
    if not fields:
        return lambda _msg: ()
    if len(fields) == 1:
        one = attrgetter(fields[0])
        return lambda msg: (one(msg),)
    many: Callable[[Any], tuple[float, ...]] = attrgetter(*fields)
    return many


_costs_of = _costs_getter(_COST_FIELDS)

_SNAPSHOT_TIMER = "portfolio_snapshot"


class PortfolioConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``sample_interval_s``: the account is sampled every this many seconds of data time,
    on a grid of UTC time (60 s: at whole minutes), and at every fill.
    ``trading_days_per_year``: periods a year for daily metrics (252 for exchange-traded
    markets; 365 suits crypto), and the scale of intraday ones (a day of 24 hours)."""

    sample_interval_s: float = 60.0
    trading_days_per_year: float = 252.0
    snapshot_interval_s: float = 1.0
    """How often a snapshot goes out on the ``snapshots`` port (clock time), when wired."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.snapshot_interval_s > 0 and math.isfinite(self.snapshot_interval_s)):
            raise ValueError("snapshot_interval_s must be a positive number of seconds")
        if self.snapshot_interval_s * NANOS_PER_SECOND < 1:
            raise ValueError("snapshot_interval_s must be at least 1 ns")
        if not (self.sample_interval_s > 0 and math.isfinite(self.sample_interval_s)):
            raise ValueError("sample_interval_s must be a positive number of seconds")
        if self.sample_interval_s * NANOS_PER_SECOND < 1:
            raise ValueError("sample_interval_s must be at least 1 ns")
        if not (self.trading_days_per_year > 0 and math.isfinite(self.trading_days_per_year)):
            raise ValueError("trading_days_per_year must be a positive number")


class PortfolioActor(Actor[PortfolioConfig]):
    Config = PortfolioConfig
    outputs: ClassVar[tuple[str, ...]] = ("snapshots",)

    def on_start(self) -> None:
        if getattr(self, "portfolio", None) is None:
            # kept across restarts: the book must not forget fills because of a crash
            self.portfolio = Portfolio(self.ctx.instruments, self.ctx.account.starting_balance)
            self.history = AccountHistory(
                self.portfolio,
                round(self.config.sample_interval_s * NANOS_PER_SECOND),
                cost_kinds=COST_KINDS,
            )
            warm_up()
            # realised P&L and commissions by strategy, kept only for snapshots
            self.strategy_pnl: dict[str, list[float]] = {}
        self.history.start(self.clock.now())  # once: a restart does not start it again
        self.snapshots_wired = self.wired("snapshots")
        if self.snapshots_wired:
            interval = round(self.config.snapshot_interval_s * NANOS_PER_SECOND)
            # on a grid of clock time (whole seconds for 1 s), like the account's samples
            first = (self.clock.now() // interval + 1) * interval
            self.timer_every(interval, _SNAPSHOT_TIMER, start=first)

    def on_message(self, msg: Any) -> None:
        # quotes and fills first, the messages of a replay: the types are disjoint, so the
        # order of the cases changes nothing but how many are tried
        match msg:
            case QuoteBatch(data=data, ts_event=last):
                self.history.mark_batch(data, last)
            case OrderFilled() | OrderPartiallyFilled():
                # booked at the clock's time: in a replay the venue's fill time, and never
                # before a tick the book has already been marked with
                realized = self.history.fill(
                    self.clock.now(),
                    msg.strategy_id,
                    msg.instrument_id,
                    msg.last_qty * msg.side.sign,
                    msg.last_px,
                    msg.commission,
                    _costs_of(msg),
                )
                if self.snapshots_wired:
                    pnl = self.strategy_pnl.get(msg.strategy_id)
                    if pnl is None:
                        pnl = self.strategy_pnl[msg.strategy_id] = [0.0, 0.0]
                    pnl[0] += realized
                    pnl[1] += msg.commission
                    self.emit("snapshots", self.snapshot_message())
            case QuoteTick(instrument_id=inst_id, bid=bid, ask=ask, ts_event=ts):
                if inst_id in self.ctx.instruments:
                    self.history.mark(self.ctx.instruments.index(inst_id), bid, ask, ts)
            case BarBatch(data=data, ts_event=last):
                self.history.mark_batch(_close_marks(data), last)
            case Bar(instrument_id=inst_id, close=close, ts_event=ts):
                if inst_id in self.ctx.instruments:
                    self.history.mark(self.ctx.instruments.index(inst_id), close, close, ts)
            case CorporateActionEvent(instrument_id=inst_id):
                if inst_id in self.ctx.instruments:
                    paid = self.portfolio.apply_corporate_action(
                        self.ctx.instruments.index(inst_id),
                        msg.split_ratio,
                        msg.dividend,
                        msg.ts_event,
                    )
                    if paid:
                        self.log.info("dividend", instrument=inst_id, cash=paid)
            case TimerFired(name=name) if name == _SNAPSHOT_TIMER:
                self.emit("snapshots", self.snapshot_message())
            case _:
                pass

    def on_stop(self) -> None:
        history = getattr(self, "history", None)
        if history is not None:
            history.finish(self.clock.now())
            if getattr(self, "snapshots_wired", False):
                # the account as it ends: delivered to receivers still running (an
                # observer such as the Redis mirror stops after the portfolio)
                self.emit("snapshots", self.snapshot_message())

    def snapshot_message(self) -> PortfolioSnapshot:
        """The account now, as a :class:`PortfolioSnapshot`."""
        pf = self.portfolio
        now = self.clock.now()
        marks = pf.mark_price.tolist()
        qty = pf.qty.tolist()
        avg = pf.avg.tolist()
        unrealized = pf.unrealized.tolist()
        realized = pf.realized.tolist()
        rows = [
            PositionRow(
                instrument_id=inst.id,
                quantity=qty[i],
                avg_price=avg[i],
                mark=None if math.isnan(marks[i]) else marks[i],
                unrealized_pnl=unrealized[i],
                realized_pnl=realized[i],
            )
            for i, inst in enumerate(pf.instruments)
        ]
        return PortfolioSnapshot(
            currency=self.ctx.account.currency,
            balance=pf.balance,
            equity=pf.equity,
            realized_pnl=pf.realized_pnl,
            unrealized_pnl=pf.unrealized_pnl,
            commissions=pf.commissions,
            max_drawdown=pf.max_drawdown,
            fills=pf.fills,
            positions=rows,
            strategies=[
                StrategyPnl(strategy_id=sid, realized_pnl=r, commissions=c)
                for sid, (r, c) in self.strategy_pnl.items()
            ],
            ts_event=now,
            ts_init=now,
        )


def _close_marks(bars: np.ndarray) -> np.ndarray:
    """Bars as the quotes the account is marked with: bid and ask at the close."""
    marks = np.zeros(len(bars), dtype=QUOTE_DTYPE)
    marks["ts_event"] = bars["ts_event"]
    marks["ts_init"] = bars["ts_init"]
    marks["instrument"] = bars["instrument"]
    marks["bid"] = bars["close"]
    marks["ask"] = bars["close"]
    return marks
