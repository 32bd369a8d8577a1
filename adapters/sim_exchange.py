"""The simulated exchange: fills our orders against replayed (or live) quotes.

Orders and cancels arrive after the configured latency, applied on the clock (a
timer), so a backtest sees the market move while an order travels. Matching and
commission are :class:`engine.matching.SimulatedVenue`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.matching import SimulatedVenue, VenueCosts, warm_up
from engine.messages import CancelOrder, Message, OrderRequest, QuoteBatch, QuoteTick, TimerFired

__all__ = ["SimExchange", "SimExchangeConfig"]


class SimExchangeConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``latency_ms``: time from the router to the matching engine, for orders and cancels."""

    venue: str = "SIM"
    latency_ms: float = 0.0
    costs: VenueCosts = VenueCosts()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")


class SimExchange(Actor[SimExchangeConfig]):
    Config = SimExchangeConfig
    outputs: ClassVar[tuple[str, ...]] = ("events",)

    def on_start(self) -> None:
        if getattr(self, "venue", None) is None:
            self.venue = SimulatedVenue(
                self.config.venue,
                self.ctx.instruments,
                self.config.costs,
                self.ctx.account.currency,
                self._emit_event,
            )
            warm_up()
        self.latency_ns = round(self.config.latency_ms * 1_000_000)
        self._arrivals = 0

    def _emit_event(self, event: Message) -> None:
        self.emit("events", event)

    def on_message(self, msg: Any) -> None:
        venue = self.venue
        match msg:
            case QuoteBatch(data=data):
                venue.on_quote_batch(data["instrument"], data["bid"], data["ask"], data["ts_event"])
            case QuoteTick(instrument_id=inst_id, bid=bid, ask=ask, ts_event=ts):
                if inst_id in self.ctx.instruments:
                    venue.on_quote(self.ctx.instruments.index(inst_id), bid, ask, ts)
            case OrderRequest() | CancelOrder():
                if self.latency_ns:
                    self._arrivals += 1
                    self.timer_at(
                        self.clock.now() + self.latency_ns,
                        f"arrive-{self._arrivals}",
                        msg,
                        drain=True,
                    )
                else:
                    self._arrive(msg)
            case TimerFired(payload=payload):
                self._arrive(payload)
            case _:
                pass

    def _arrive(self, msg: Any) -> None:
        now = self.clock.now()
        if isinstance(msg, OrderRequest):
            self.venue.submit(msg, now)
        elif isinstance(msg, CancelOrder):
            self.venue.cancel(msg.client_order_id, now)

    @property
    def may_act_on_market_data(self) -> bool:
        return bool(self.venue.resting)

    def scan_batch(self, batch: Any, instrument_ids: tuple[str, ...]) -> int:
        return self.venue.scan(batch["instrument"], batch["bid"], batch["ask"])
