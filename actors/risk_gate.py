"""The risk gate: nothing reaches a router without passing it. Fails closed.

Approved orders go out on ``approved``; denials come back on ``events`` as
``OrderDenied`` with the reason. It owns the trading state: ``SetTradingState`` (from
control, monitors or the supervisor) changes it and ``TradingStateChanged`` announces it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
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
    QuoteBatch,
    QuoteTick,
    SetTradingState,
    TradingState,
    TradingStateChanged,
)
from engine.risk import PreTradeRisk, RiskLimits

__all__ = ["RiskGate", "RiskGateConfig"]


class RiskGateConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    limits: RiskLimits = RiskLimits()
    initial_state: TradingState = TradingState.ACTIVE


class RiskGate(Actor[RiskGateConfig]):
    Config = RiskGateConfig
    outputs: ClassVar[tuple[str, ...]] = ("approved", "events")
    critical_by_default = True
    owns_trading_state = True

    def on_start(self) -> None:
        previous = getattr(self, "risk", None)
        self.risk = PreTradeRisk(
            self.ctx.instruments,
            self.config.limits,
            self.ctx.account.currency,
            self.config.initial_state,
        )
        if previous is not None:
            # a restarted gate keeps what it knew of positions, and comes back HALTED:
            # a crash of the gate is a reason to stop trading until a person looks.
            self.risk.position[:] = previous.position
            self.risk.working.update(previous.working)
            self.risk.set_state(TradingState.HALTED, "risk gate restarted after a crash")
        self.approved = 0
        self.denied = 0

    def on_message(self, msg: Any) -> None:
        risk = self.risk
        match msg:
            case OrderRequest():
                reason = risk.check(msg)
                if reason is None:
                    self.approved += 1
                    self.emit("approved", msg)
                else:
                    self.denied += 1
                    now = self.clock.now()
                    self.emit(
                        "events",
                        OrderDenied(
                            client_order_id=msg.client_order_id,
                            strategy_id=msg.strategy_id,
                            instrument_id=msg.instrument_id,
                            reason=reason,
                            ts_event=now,
                            ts_init=now,
                        ),
                    )
            case QuoteBatch(data=data):
                risk.on_quote_batch(data["instrument"], data["bid"], data["ask"])
            case QuoteTick(instrument_id=inst_id, bid=bid, ask=ask):
                if inst_id in self.ctx.instruments:
                    risk.on_quote(self.ctx.instruments.index(inst_id), bid, ask)
            case BarBatch(data=data):  # instruments traded on bars are priced at the close
                risk.on_quote_batch(data["instrument"], data["close"], data["close"])
            case Bar(instrument_id=inst_id, close=close):
                if inst_id in self.ctx.instruments:
                    risk.on_quote(self.ctx.instruments.index(inst_id), close, close)
            case CorporateActionEvent(instrument_id=inst_id, split_ratio=ratio):
                if inst_id in self.ctx.instruments and ratio != 1.0:
                    i = self.ctx.instruments.index(inst_id)
                    risk.position[i] = risk.position[i] / ratio
                    for cid, (inst, leaves) in list(risk.working.items()):
                        if inst == i:
                            risk.working[cid] = (inst, leaves / ratio)
            case OrderFilled() | OrderPartiallyFilled():
                risk.on_fill(msg)
            case OrderRejected() | OrderCancelled() | OrderExpired():
                risk.on_order_done(msg.client_order_id)
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
