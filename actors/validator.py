"""The validator: no malformed tick reaches a strategy.

Every tick is checked (:mod:`engine.validation`); rejected ones are counted by reason and
go no further. Batches are checked in one numba pass and forwarded with the rejected
rows removed, with the same decisions as one tick at a time.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from engine.actor import Actor, ActorConfig
from engine.messages import QuoteBatch, QuoteTick
from engine.ticks import QuoteArray
from engine.validation import QuoteValidator, RejectReason, ValidatorConfig, warm_up

__all__ = ["Validator", "ValidatorActorConfig"]


class ValidatorActorConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rules: ValidatorConfig = ValidatorConfig()


class Validator(Actor[ValidatorActorConfig]):
    Config = ValidatorActorConfig
    outputs: ClassVar[tuple[str, ...]] = ("ticks",)

    def on_start(self) -> None:
        if getattr(self, "core", None) is None:
            # kept across restarts: the last accepted time per instrument must survive
            self.core = QuoteValidator(self.config.rules, len(self.ctx.instruments))
            warm_up()
        self.unknown_instrument = 0

    def preview(self, batch: QuoteArray) -> tuple[np.ndarray, int]:
        """Which ticks of ``batch`` would pass now and how many would not, changing
        nothing (the replay's look-ahead)."""
        return self.core.preview_mask(batch)

    def on_message(self, msg: Any) -> None:
        match msg:
            case QuoteBatch(data=data):
                mask, rejected = self.core.validate_mask(data)
                if not rejected:
                    self.emit("ticks", msg)
                    return
                clean = data[mask]
                if len(clean):
                    self.emit(
                        "ticks",
                        QuoteBatch(
                            data=clean,
                            instrument_ids=msg.instrument_ids,
                            ts_event=int(clean["ts_event"][-1]),
                            ts_init=msg.ts_init,
                        ),
                    )
            case QuoteTick(instrument_id=inst_id):
                instruments = self.ctx.instruments
                if inst_id not in instruments:
                    self.unknown_instrument += 1
                    return
                reason = self.core.check(
                    msg.ts_event,
                    instruments.index(inst_id),
                    msg.bid,
                    msg.ask,
                    msg.bid_size,
                    msg.ask_size,
                )
                if reason is RejectReason.OK:
                    self.emit("ticks", msg)
            case _:
                self.log.warning("validator ignores message", type=type(msg).__name__)

    def counts(self) -> dict[str, int]:
        counts = self.core.counts()
        if self.unknown_instrument:
            counts["unknown_instrument"] = self.unknown_instrument
        return counts
