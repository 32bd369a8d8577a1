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
