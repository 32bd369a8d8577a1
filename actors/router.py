"""The order router: takes approved orders and cancels to the venue that trades them.

Every order reaching it has passed the risk gate. It routes by the instrument's venue:
the port ``venue`` carries orders for the configured ``venues`` (the one simulated or
live venue of a run). Execution algorithms (VWAP, TWAP, POV, IS) will live behind it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.messages import CancelOrder, OrderRejected, OrderRequest

__all__ = ["Router", "RouterConfig"]


class RouterConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venues: list[str] = []
    """Venues this router can reach (the part after the dot of an instrument id). Empty: all."""


class Router(Actor[RouterConfig]):
    Config = RouterConfig
    outputs: ClassVar[tuple[str, ...]] = ("venue", "events")
    critical_by_default = True

    def on_start(self) -> None:
        self.routed = 0
        self.unroutable = 0
        self.venues = frozenset(self.config.venues)

    def on_message(self, msg: Any) -> None:
        match msg:
            case OrderRequest(instrument_id=inst_id) | CancelOrder(instrument_id=inst_id):
                venue = inst_id.rsplit(".", 1)[-1]
                if self.venues and venue not in self.venues:
                    self.unroutable += 1
                    if isinstance(msg, OrderRequest):
                        now = self.clock.now()
                        self.emit(
                            "events",
                            OrderRejected(
                                client_order_id=msg.client_order_id,
                                strategy_id=msg.strategy_id,
                                instrument_id=inst_id,
                                reason=f"no route to venue {venue}",
                                ts_event=now,
                                ts_init=now,
                            ),
                        )
                    return
                self.routed += 1
                self.emit("venue", msg)
            case _:
                pass
