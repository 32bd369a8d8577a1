"""Actors that fail on purpose, for supervision tests that run the real command."""

from __future__ import annotations

from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.messages import OrderRequest


class CrashOnOrderConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class CrashOnOrder(Actor[CrashOnOrderConfig]):
    """Forwards orders like a router, but raises on every one of them."""

    Config = CrashOnOrderConfig
    outputs: ClassVar[tuple[str, ...]] = ("venue", "events")
    critical_by_default = True

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, OrderRequest):
            raise RuntimeError(f"cannot route {msg.client_order_id}")


class CrashOnQuoteConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class CrashOnQuote(Actor[CrashOnQuoteConfig]):
    """A critical monitor that raises on every batch of market data."""

    Config = CrashOnQuoteConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    critical_by_default = True

    def on_message(self, msg: Any) -> None:
        raise RuntimeError(f"monitor cannot read {type(msg).__name__}")


class CrashOnceConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    after: int = 1
    """Crash on this message (1-based), once; then run on as if nothing happened."""


class CrashOnce(Actor[CrashOnceConfig]):
    """A critical actor (a stand-in for a feed handler or broker session) that fails once,
    part way through a run: a system failure."""

    Config = CrashOnceConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    critical_by_default = True

    def on_message(self, msg: Any) -> None:
        self.seen = getattr(self, "seen", 0) + 1
        if self.seen == self.config.after:
            raise RuntimeError(f"lost the session at message {self.seen}")
