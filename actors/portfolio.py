"""The portfolio: positions, cash, P&L and drawdown of the account, from fills and marks."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.messages import OrderFilled, OrderPartiallyFilled, QuoteBatch, QuoteTick
from engine.portfolio import Portfolio, warm_up

__all__ = ["PortfolioActor", "PortfolioConfig"]


class PortfolioConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class PortfolioActor(Actor[PortfolioConfig]):
    Config = PortfolioConfig
    outputs: ClassVar[tuple[str, ...]] = ()

    def on_start(self) -> None:
        if getattr(self, "portfolio", None) is None:
            # kept across restarts: the book must not forget fills because of a crash
            self.portfolio = Portfolio(self.ctx.instruments, self.ctx.account.starting_balance)
            warm_up()

    def on_message(self, msg: Any) -> None:
        match msg:
            case QuoteBatch(data=data):
                self.portfolio.mark_batch(data["instrument"], data["bid"], data["ask"])
            case QuoteTick(instrument_id=inst_id, bid=bid, ask=ask):
                if inst_id in self.ctx.instruments:
                    self.portfolio.mark(self.ctx.instruments.index(inst_id), bid, ask)
            case OrderFilled() | OrderPartiallyFilled():
                self.portfolio.apply_fill(
                    msg.instrument_id, msg.last_qty * msg.side.sign, msg.last_px, msg.commission
                )
            case _:
                pass
