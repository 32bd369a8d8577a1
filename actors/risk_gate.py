"""The risk gate: nothing reaches a router without passing it. Fails closed.

Approved orders go out on ``approved``; denials come back on ``events`` as
``OrderDenied`` with the reason. It owns the trading state: ``SetTradingState`` (from
control, monitors or the supervisor) changes it and ``TradingStateChanged`` announces it.

The limits are given inline (``limits = { max_order_notional = ... }``) or in a limits file
(``limits_file = "limits.toml"``, relative to the configuration file), not both; see
``config/limits.toml`` and engine/limits.py.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import msgspec

from engine.actor import Actor, ActorConfig
from engine.limits import LimitsConfig, check_limits_source, resolve_limits
from engine.messages import (
    AlertLevel,
    Bar,
    BarBatch,
    ControlCommand,
    CorporateActionEvent,
    LimitsChanged,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    QuoteBatch,
    QuoteTick,
    RiskDecision,
    SetLimits,
    SetTradingState,
    TradingState,
    TradingStateChanged,
)
from engine.pretrade import Decision
from engine.risk import PreTradeRisk

__all__ = ["RiskGate", "RiskGateConfig"]


class RiskGateConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``limits`` inline, or ``limits_file`` (a TOML file of the same fields, relative to
    the configuration file); neither: only the trading state and order sanity apply."""

    limits: LimitsConfig | None = None
    limits_file: str | None = None
    initial_state: TradingState = TradingState.ACTIVE

    def __post_init__(self) -> None:
        super().__post_init__()
        check_limits_source(self.limits, self.limits_file)


class RiskGate(Actor[RiskGateConfig]):
    Config = RiskGateConfig
    outputs: ClassVar[tuple[str, ...]] = ("approved", "events")
    critical_by_default = True
    owns_trading_state = True

    def check_config(self) -> None:
        self._limits = self._load_limits()

    def _load_limits(self) -> LimitsConfig:
        return resolve_limits(self.config.limits, self.config.limits_file, self.ctx.base_dir)

    def on_start(self) -> None:
        previous = getattr(self, "risk", None)
        limits = getattr(self, "_limits", None)
        if limits is None:
            limits = self._limits = self._load_limits()
        self.risk = PreTradeRisk(
            self.ctx.instruments,
            limits,
            self.ctx.account.currency,
            self.config.initial_state,
            starting_cash=self.ctx.account.starting_balance,
        )
        if previous is not None:
            # a restarted gate keeps what it knew of positions, cash and limits, and comes
            # back HALTED: a crash of the gate is a reason to stop trading until a person
            # looks.
            self.risk.adopt(previous)
            self.risk.set_state(TradingState.HALTED, "risk gate restarted after a crash")
        self.approved = 0
        self.denied = 0
        # strategies a person stopped (name -> why); kept across a restart of the gate
        self.stopped: dict[str, str] = getattr(self, "stopped", {})

    def _deny(self, order: OrderRequest, decision: Decision) -> None:
        """``OrderDenied`` to the strategy, after a ``RiskDecision`` that keeps the request's
        figures for the journal (an approved request is journaled as itself)."""
        self.denied += 1
        now = self.clock.now()
        price = order.limit_price if order.limit_price is not None else order.stop_price
        self.emit(
            "events",
            RiskDecision(
                source=self.name,
                rule=decision.rule,
                level=AlertLevel.INFO,
                action="deny",
                reason=(
                    f"{order.client_order_id} ({order.strategy_id}) {order.side.value} "
                    f"{order.quantity:g} {order.instrument_id} {order.order_type.value}: "
                    f"{decision.reason}"
                ),
                inputs={
                    "quantity": order.quantity,
                    "side": float(order.side.sign),
                    "price": math.nan if price is None else price,
                },
                ts_event=now,
                ts_init=now,
            ),
        )
        self.emit(
            "events",
            OrderDenied(
                client_order_id=order.client_order_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                reason=decision.reason,
                ts_event=now,
                ts_init=now,
            ),
        )

    def on_message(self, msg: Any) -> None:
        risk = self.risk
        # the cases of a replay first (orders, quotes, fills): the types are disjoint, so the
        # order of the cases changes nothing but how many are tried
        match msg:
            case OrderRequest():
                stopped = self.stopped.get(msg.strategy_id) if self.stopped else None
                if stopped is not None:
                    decision = Decision(
                        approved=False,
                        rule="strategy_stopped",
                        reason=(
                            f"strategy {msg.strategy_id} is stopped ({stopped}); `tradingd ctl "
                            f"strategy start {msg.strategy_id}` lets it trade again"
                        ),
                    )
                else:
                    decision = risk.decide(msg, self.clock.now())
                if decision.approved:
                    self.approved += 1
                    self.emit("approved", msg)
                else:
                    self._deny(msg, decision)
            case QuoteBatch(data=data):
                risk.on_quote_batch(data["instrument"], data["bid"], data["ask"])
            case OrderFilled() | OrderPartiallyFilled():
                risk.on_fill(msg)
            case QuoteTick(instrument_id=inst_id, bid=bid, ask=ask):
                if inst_id in self.ctx.instruments:
                    risk.on_quote(self.ctx.instruments.index(inst_id), bid, ask)
            case BarBatch(data=data):  # instruments traded on bars are priced at the close
                risk.on_quote_batch(data["instrument"], data["close"], data["close"])
            case Bar(instrument_id=inst_id, close=close):
                if inst_id in self.ctx.instruments:
                    risk.on_quote(self.ctx.instruments.index(inst_id), close, close)
            case CorporateActionEvent(instrument_id=inst_id, split_ratio=ratio, dividend=cash):
                if inst_id in self.ctx.instruments:
                    risk.on_corporate_action(self.ctx.instruments.index(inst_id), ratio, cash)
            case OrderRejected() | OrderCancelled() | OrderExpired():
                risk.on_order_done(msg.client_order_id)
            case ControlCommand(command="strategy.stop", args=args, origin=origin):
                name = str(args.get("name", ""))
                self.stopped[name] = f"stopped by {origin or 'control'}"
                self.log.warning("strategy stopped", strategy=name, origin=origin)
            case ControlCommand(command="strategy.start", args=args, origin=origin):
                name = str(args.get("name", ""))
                if self.stopped.pop(name, None) is not None:
                    self.log.warning("strategy started", strategy=name, origin=origin)
            case SetLimits(limits=limits, reason=reason, origin=origin):
                now = self.clock.now()
                try:
                    risk.set_limits(limits)
                except (TypeError, ValueError) as exc:
                    self.log.error("limits refused", reason=str(exc), origin=origin)
                    return
                self.log.warning("limits changed", reason=reason, origin=origin)
                self.emit(
                    "events",
                    LimitsChanged(
                        limits=msgspec.to_builtins(limits),
                        reason=reason,
                        origin=origin,
                        ts_event=now,
                        ts_init=now,
                    ),
                )
            case SetTradingState(state=state, reason=reason, origin=origin):
                previous = risk.set_state(state, reason)
                if previous is not None:
                    now = self.clock.now()
                    self.log.warning(
                        "trading state changed",
                        previous=previous.value,
                        state=state.value,
                        reason=reason,
                        origin=origin,
                    )
                    self.emit(
                        "events",
                        TradingStateChanged(
                            previous=previous,
                            state=state,
                            reason=reason,
                            origin=origin,
                            ts_event=now,
                            ts_init=now,
                        ),
                    )
            case _:
                pass
