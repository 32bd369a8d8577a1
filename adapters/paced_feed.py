"""Paper trading on recorded data: the configured tick files replayed in real time.

The rows are restamped to the live clock, ``speed`` times as fast as they were recorded
(``replay.speed``), and handed to the feed actor in small batches as they come due, so the
daemon looks and behaves as it would on a live feed. With ``replay.loop`` the data starts
again when it runs out, later by its own length, so time only moves forward.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import structlog

from engine.actor import Actor
from engine.backtest import file_source
from engine.mailbox import Overflow
from engine.messages import QuoteBatch, TradeBatch
from engine.ticks import QUOTE_DTYPE, TRADE_DTYPE
from engine.wiring import System

__all__ = ["PacedReplay"]

_MAX_ROWS = 512
"""At most this many rows in one batch (a burst after a pause is split)."""


class PacedReplay:
    """Feeds ``feed`` from the system's configured tick files, paced on the wall clock."""

    def __init__(self, system: System, feed: Actor[Any]) -> None:
        self.system = system
        self.feed = feed
        replay = system.config.replay
        self.speed = replay.speed
        self.loop = replay.loop
        self.ids = tuple(inst.id for inst in system.instruments)
        self.rows_sent = 0
        self.loops = 0
        self.last_sent_ns: int | None = None
        """Wall time of the last batch handed to the feed (for the health check)."""
        self.last_data_ts: int | None = None
        self.log = structlog.get_logger("tradingd.paced_feed")

    async def run(self) -> None:
        """Until cancelled (or, without ``loop``, until the data runs out)."""
        base = time.time_ns()  # the first row is due now
        first: int | None = None
        shift = 0  # wall time added by each loop over the data
        while True:
            last: int | None = None
            source = file_source(self.system, 4_096)
            while not source.exhausted:
                window = source.window(_MAX_ROWS, None)
                if len(window) == 0:
                    break
                ts = window["ts_event"].astype(np.int64)
                if first is None:
                    first = int(ts[0])
                due = base + shift + ((ts - first) / self.speed).astype(np.int64)
                now = time.time_ns()
                k = int(np.searchsorted(due, now, side="right"))
                if k == 0:
                    await asyncio.sleep(min(1.0, (int(due[0]) - now) / 1e9))
                    continue
                batch = np.array(window[:k])
                source.advance(k)
                batch["ts_event"] = due[:k]
                batch["ts_init"] = now
                last = int(ts[k - 1])
                await self._publish(batch, now)
            if not self.loop or first is None or last is None:
                self.log.info("paced replay finished", rows=self.rows_sent)
                return
            self.loops += 1
            shift += int((last - first) / self.speed) + 1_000_000  # 1 ms between loops
            self.log.info("paced replay starts its data again", loops=self.loops)

    async def _publish(self, batch: np.ndarray, now: int) -> None:
        ts = int(batch["ts_event"][-1])
        msg: QuoteBatch | TradeBatch
        if batch.dtype == QUOTE_DTYPE:
            msg = QuoteBatch(data=batch, instrument_ids=self.ids, ts_event=ts, ts_init=now)
        elif batch.dtype == TRADE_DTYPE:
            msg = TradeBatch(data=batch, instrument_ids=self.ids, ts_event=ts, ts_init=now)
        else:  # bars and actions are not replayed in paper mode
            return
        await self.feed.inbox.put(msg, Overflow.BLOCK)
        self.rows_sent += len(batch)
        self.last_sent_ns = now
        self.last_data_ts = ts
