"""The replay feed: where replayed ticks enter the actor system.

The replay scheduler hands it batches of stored ticks. It sends them on as they are
(``QuoteBatch``, ``TradeBatch``, ``BarBatch``) or, with ``per_tick``, as one ``QuoteTick``,
``TradeTick`` or ``Bar`` message per row: the shape in which a live feed delivers them, and
the reference that batched replay must match. Corporate actions pass as they come.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.messages import (
    Bar,
    BarBatch,
    CorporateActionEvent,
    Message,
    QuoteBatch,
    QuoteTick,
    TradeBatch,
    TradeTick,
)

__all__ = ["ReplayFeed", "ReplayFeedConfig"]


class ReplayFeedConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    per_tick: bool = False


class ReplayFeed(Actor[ReplayFeedConfig]):
    Config = ReplayFeedConfig
    outputs: ClassVar[tuple[str, ...]] = ("ticks",)
    market_data_ports: ClassVar[frozenset[str]] = frozenset({"ticks"})

    def on_start(self) -> None:
        self.ticks = 0
        self.per_tick = self.config.per_tick

    def publish(self, batch: Message) -> None:
        """Send a batch of replayed ticks on (called by the replay scheduler, which is
        this feed's source: ticks do not queue in its own inbox)."""
        self.on_message(batch)

    def on_message(self, msg: Any) -> None:
        match msg:
            case QuoteBatch(data=data, instrument_ids=ids):
                self.ticks += len(data)
                if not self.per_tick:
                    self.emit("ticks", msg)
                    return
                now = self.clock.now()
                for row in data.tolist():
                    ts_event, _ts_init, inst, _flags, bid, ask, bid_size, ask_size = row
                    self.emit(
                        "ticks",
                        QuoteTick(
                            instrument_id=ids[inst],
                            bid=bid,
                            ask=ask,
                            bid_size=bid_size,
                            ask_size=ask_size,
                            ts_event=ts_event,
                            ts_init=now,
                        ),
                    )
            case TradeBatch(data=data, instrument_ids=ids):
                self.ticks += len(data)
                if not self.per_tick:
                    self.emit("ticks", msg)
                    return
                now = self.clock.now()
                for ts_event, _ts_init, inst, aggressor, price, size in data.tolist():
                    self.emit(
                        "ticks",
                        TradeTick(
                            instrument_id=ids[inst],
                            price=price,
                            size=size,
                            aggressor=aggressor,
                            ts_event=ts_event,
                            ts_init=now,
                        ),
                    )
            case BarBatch(data=data, instrument_ids=ids):
                self.ticks += len(data)
                if not self.per_tick:
                    self.emit("ticks", msg)
                    return
                now = self.clock.now()
                for ts_event, _ts_init, inst, interval, o, h, lo, c, v in data.tolist():
                    self.emit(
                        "ticks",
                        Bar(
                            instrument_id=ids[inst],
                            interval_ns=interval,
                            open=o,
                            high=h,
                            low=lo,
                            close=c,
                            volume=v,
                            ts_event=ts_event,
                            ts_init=now,
                        ),
                    )
            case QuoteTick() | TradeTick() | Bar():
                self.ticks += 1
                self.emit("ticks", msg)
            case CorporateActionEvent():
                self.emit("ticks", msg)
            case _:
                self.log.warning("replay feed ignores message", type=type(msg).__name__)
