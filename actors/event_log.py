"""The event log: every order request, order event and fill of a run, hashed in order, and
the risk record: the risk monitor's decisions with their inputs, alerts, trading state and
limit changes, kept in order (the last ``keep_risk_records`` of them).

The digest is the run's fingerprint (``events_sha256``): two runs that traded the same
way have the same one.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.blotter import Blotter
from engine.digest import EventDigest
from engine.messages import Alert, LimitsChanged, Message, RiskDecision, TradingStateChanged

__all__ = ["EventLog", "EventLogConfig"]


class EventLogConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``blotter``: also keep working orders, the last ``keep_fills`` fills and P&L by
    strategy (engine/blotter.py), for a running daemon's console and dashboard."""

    keep_risk_records: int = 100_000
    blotter: bool = False
    keep_fills: int = 200


class EventLog(Actor[EventLogConfig]):
    Config = EventLogConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    receives_system_alerts = True
    """The supervisor's alerts (crashes, restarts) go to the risk record too."""

    def on_start(self) -> None:
        if getattr(self, "digest", None) is None:
            self.digest = EventDigest()
            self.risk_records: deque[Message] = deque(maxlen=self.config.keep_risk_records)
            self.risk_record_count = 0
            self.blotter: Blotter | None = None
            if self.config.blotter:
                self.blotter = Blotter(self.config.keep_fills)
                for inst in self.ctx.instruments:
                    self.blotter.multiplier[inst.id] = inst.multiplier
        self.ignored = 0

    def records_since(self, seen: int) -> tuple[list[Message], int]:
        """The risk records kept since ``seen`` of them had been counted, oldest first, and
        the count now (to pass next time). Counted, not indexed: the record is bounded, so
        the oldest leave it as new ones come."""
        new = min(self.risk_record_count - seen, len(self.risk_records))
        start = len(self.risk_records) - new
        return list(islice(self.risk_records, start, None)), self.risk_record_count

    def on_message(self, msg: Any) -> None:
        if self.digest.add(msg):
            if self.blotter is not None:
                self.blotter.on_message(msg)
            return
        if isinstance(msg, RiskDecision | Alert | TradingStateChanged | LimitsChanged):
            self.risk_records.append(msg)
            self.risk_record_count += 1
        else:
            self.ignored += 1
