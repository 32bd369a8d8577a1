"""The validator: no malformed tick reaches a strategy.

Every quote is checked (:mod:`engine.validation`), every print and bar too
(:mod:`engine.tape_validation`); rejected ones are counted by reason and go no further.
Batches are checked in one numba pass and forwarded with the rejected rows removed, with
the same decisions as one tick at a time. A corporate action with a ratio that is not a
positive number is rejected (``bad_corporate_action``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from engine.actor import Actor, ActorConfig
from engine.messages import (
    Bar,
    BarBatch,
    CorporateActionEvent,
    QuoteBatch,
    QuoteTick,
    TradeBatch,
    TradeTick,
)
from engine.tape_validation import BarStreamValidator, TradeStreamValidator
from engine.tape_validation import warm_up as warm_up_tape
from engine.ticks import BAR_DTYPE, QUOTE_DTYPE, TRADE_DTYPE
from engine.validation import QuoteValidator, RejectReason, ValidatorConfig, warm_up

__all__ = ["Validator", "ValidatorActorConfig"]


class ValidatorActorConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rules: ValidatorConfig = ValidatorConfig()


class Validator(Actor[ValidatorActorConfig]):
    Config = ValidatorActorConfig
    outputs: ClassVar[tuple[str, ...]] = ("ticks",)
    market_data_ports: ClassVar[frozenset[str]] = frozenset({"ticks"})

    def on_start(self) -> None:
        if getattr(self, "core", None) is None:
            # kept across restarts: the last accepted time per instrument must survive
            n = len(self.ctx.instruments)
            self.core = QuoteValidator(self.config.rules, n)
            self.trades = TradeStreamValidator(n)
            self.bars = BarStreamValidator(n)
            self.bad_corporate_action = 0
            warm_up()
            warm_up_tape()
        self.unknown_instrument = 0

    def preview(self, batch: np.ndarray) -> tuple[np.ndarray, int]:
        """Which rows of ``batch`` (quotes, prints or bars) would pass now and how many
        would not, changing nothing (the replay's look-ahead)."""
        dtype = batch.dtype
        if dtype is QUOTE_DTYPE or dtype == QUOTE_DTYPE:
            return self.core.preview_mask(batch)
        if dtype == TRADE_DTYPE:
            return self.trades.preview_mask(batch)
        if dtype == BAR_DTYPE:
            return self.bars.preview_mask(batch)
        return np.ones(len(batch), dtype=np.bool_), 0

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
            case TradeBatch(data=data):
                self._forward_batch(msg, data, self.trades.validate_mask(data))
            case BarBatch(data=data):
                self._forward_batch(msg, data, self.bars.validate_mask(data))
            case TradeTick(instrument_id=inst_id):
                index = self._index(inst_id)
                if index is not None and self.trades.check_one(_trade_row(msg, index)) == "ok":
                    self.emit("ticks", msg)
            case Bar(instrument_id=inst_id):
                index = self._index(inst_id)
                if index is not None and self.bars.check_one(_bar_row(msg, index)) == "ok":
                    self.emit("ticks", msg)
            case CorporateActionEvent(instrument_id=inst_id):
                if self._index(inst_id) is None:
                    return
                ratios = (msg.split_ratio, msg.dividend_ratio)
                if all(math.isfinite(r) and r > 0 for r in ratios) and (
                    math.isfinite(msg.dividend) and msg.dividend >= 0
                ):
                    self.emit("ticks", msg)
                else:
                    self.bad_corporate_action += 1
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

    def _forward_batch(
        self, msg: TradeBatch | BarBatch, data: np.ndarray, decided: tuple[np.ndarray, int]
    ) -> None:
        mask, rejected = decided
        if not rejected:
            self.emit("ticks", msg)
            return
        clean = data[mask]
        if len(clean):
            self.emit(
                "ticks",
                type(msg)(
                    data=clean,
                    instrument_ids=msg.instrument_ids,
                    ts_event=int(clean["ts_event"][-1]),
                    ts_init=msg.ts_init,
                ),
            )

    def _index(self, instrument_id: str) -> int | None:
        instruments = self.ctx.instruments
        if instrument_id not in instruments:
            self.unknown_instrument += 1
            return None
        return instruments.index(instrument_id)

    def counts(self) -> dict[str, int]:
        """``accepted`` (quotes, prints and bars) and the rejected ticks by reason: quotes'
        reasons as they are, prints' and bars' prefixed ``trade_`` and ``bar_``."""
        counts = self.core.counts()
        for prefix, validator in (("trade", self.trades), ("bar", self.bars)):
            more = validator.counts()
            counts["accepted"] = counts.get("accepted", 0) + more.pop("accepted", 0)
            counts.update({f"{prefix}_{k}": v for k, v in more.items()})
        if self.bad_corporate_action:
            counts["bad_corporate_action"] = self.bad_corporate_action
        if self.unknown_instrument:
            counts["unknown_instrument"] = self.unknown_instrument
        return counts


def _trade_row(msg: TradeTick, index: int) -> np.ndarray:
    row = np.zeros(1, dtype=TRADE_DTYPE)
    row[0] = (msg.ts_event, msg.ts_init, index, msg.aggressor, msg.price, msg.size)
    return row


def _bar_row(msg: Bar, index: int) -> np.ndarray:
    row = np.zeros(1, dtype=BAR_DTYPE)
    row[0] = (
        msg.ts_event,
        msg.ts_init,
        index,
        msg.interval_ns,
        msg.open,
        msg.high,
        msg.low,
        msg.close,
        msg.volume,
    )
    return row
