"""The event log: every order request, order event and fill of a run, hashed in order.

Its digest is the run's fingerprint (``events_sha256``): two runs that traded the same
way have the same one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.digest import EventDigest

__all__ = ["EventLog", "EventLogConfig"]


class EventLogConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class EventLog(Actor[EventLogConfig]):
    Config = EventLogConfig
    outputs: ClassVar[tuple[str, ...]] = ()

    def on_start(self) -> None:
        if getattr(self, "digest", None) is None:
            self.digest = EventDigest()
        self.ignored = 0

    def on_message(self, msg: Any) -> None:
        if not self.digest.add(msg):
            self.ignored += 1
