"""The event log: every order request, order event and fill of a run, hashed in order, and
the risk record: the risk monitor's decisions with their inputs, alerts, trading state and
limit changes, kept in order (the last ``keep_risk_records`` of them).

The digest is the run's fingerprint (``events_sha256``): two runs that traded the same
way have the same one.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.digest import EventDigest
from engine.messages import Alert, LimitsChanged, Message, RiskDecision, TradingStateChanged

__all__ = ["EventLog", "EventLogConfig"]


class EventLogConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    keep_risk_records: int = 100_000


class EventLog(Actor[EventLogConfig]):
    Config = EventLogConfig
    outputs: ClassVar[tuple[str, ...]] = ()

    def on_start(self) -> None:
        if getattr(self, "digest", None) is None:
            self.digest = EventDigest()
            self.risk_records: deque[Message] = deque(maxlen=self.config.keep_risk_records)
            self.risk_record_count = 0
        self.ignored = 0

    def on_message(self, msg: Any) -> None:
        if self.digest.add(msg):
            return
        if isinstance(msg, RiskDecision | Alert | TradingStateChanged | LimitsChanged):
            self.risk_records.append(msg)
            self.risk_record_count += 1
        else:
            self.ignored += 1
