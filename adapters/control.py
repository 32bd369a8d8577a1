"""What the control API, `tradingd ctl`, the dashboard and the metrics see of a running
daemon: the :class:`Controller` protocol, which the daemon implements.

Everything crosses as plain JSON values (dicts, lists, str, float, int, bool, None), so the
HTTP layer only serialises. Queries are read-only snapshots taken on the event loop, so
each one is consistent. Commands change the daemon; each is journaled with ``origin`` (who
asked: ``uid=1000 pid=4242`` from the Unix socket's peer credentials, or ``token:NAME``)
before it takes effect.

Queries (``Controller.query(name, args)``), and what they return:

``status``
    ``{"mode", "state" ("starting"|"recovering"|"ready"|"stopping"), "trading_state"
    ("ACTIVE"|"REDUCING"|"HALTED"), "trading_reason", "uptime_s", "ticks", "orders",
    "fills", "working_orders", "equity", "currency", "data_time_ns", "summary"}``;
    ``data_time_ns`` is the time of the last market data (None before any), ``summary``
    the one-line STATUS= text.
``positions``
    ``{"currency", "positions": [{"instrument", "quantity", "avg_price", "mark",
    "market_value", "unrealized_pnl", "realized_pnl", "region", "asset_class", "sector"}]}``
``orders``
    ``{"working": [{"client_order_id", "strategy", "instrument", "side", "quantity",
    "filled", "price", "order_type", "status", "ts"}], "fills": [{"client_order_id",
    "strategy", "instrument", "side", "quantity", "price", "commission", "ts"}]}`` (the
    last fills, newest first)
``pnl``
    ``{"currency", "equity", "balance", "realized", "unrealized", "commissions",
    "by_strategy": {name: pnl}, "by_region": {...}, "by_asset_class": {...},
    "by_instrument": {...}}``
``risk``
    ``{"trading_state", "var", "drawdown", "nav", "high_water", "limits": [{"level",
    "group", "measure", "value", "limit", "utilisation"}]}``
``limits``
    the limits in force, as plain data (``engine.limits.LimitsConfig``)
``strategies``
    ``{"strategies": [{"name", "kind", "running", "params": {...}}]}``
``actors``
    ``{"actors": [<engine.actor.Actor.snapshot()>...]}``: processed, errors, restarts,
    handle_ns, max_handle_ns, inbox_depth, inbox_high_water, inbox_capacity, blocked,
    conflated, dropped, state
``health``
    ``{"healthy": bool, "reasons": [str], "checks": {name: {"ok", "age_s", "detail"}}}``
    (event loop lag, feed freshness, broker connection)
``journal``
    ``{"records": [<journal record as JSON>...]}``, the last ``args["n"]`` (default 20)
``alerts``
    ``{"alerts": [{"level", "source", "rule", "message", "action", "figures", "ts"}]}``

Commands (``Controller.command(name, args, origin)``) return ``{"ok": True, ...}`` or
raise :class:`ControlError` with a sentence a person can act on:

``halt`` ``{"reason"?}``; ``resume`` ``{}``; ``flatten`` ``{"instrument"?}`` (cancels
working orders, then closes positions); ``cancel`` ``{"id": client_order_id | "all"}``;
``strategy.start`` / ``strategy.stop`` ``{"name"}``; ``strategy.set`` ``{"name",
"params": {...}}``; ``limits.set`` ``{"limits": {...partial LimitsConfig...}, "reason"?}``.

``Controller.updates()`` yields what the dashboard shows live: ``{"type": "snapshot",
"status", "pnl", "risk", "positions", "orders", "actors", "health"}`` about once a second,
and ``{"type": "alert", ...}`` / ``{"type": "fill", ...}`` as they happen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

__all__ = ["COMMANDS", "QUERIES", "ControlError", "Controller", "merge"]

QUERIES = (
    "status",
    "positions",
    "orders",
    "pnl",
    "risk",
    "limits",
    "strategies",
    "actors",
    "health",
    "journal",
    "alerts",
)
COMMANDS = (
    "halt",
    "resume",
    "flatten",
    "cancel",
    "strategy.start",
    "strategy.stop",
    "strategy.set",
    "limits.set",
)


def merge(base: dict[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` laid over it, nested tables merged key by key (how
    ``limits.set`` applies a partial change to the limits in force)."""
    out = dict(base)
    for key, value in change.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class ControlError(Exception):
    """A command or query that cannot be done as asked; the message says why and what to
    do instead. ``status`` is the HTTP status the API answers with (400 for a bad argument,
    404 for an unknown order or strategy, 409 for a state that forbids it)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Controller(Protocol):
    async def query(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """A read-only snapshot (see the module docstring for names and shapes)."""
        ...

    async def command(self, name: str, args: dict[str, Any], origin: str) -> dict[str, Any]:
        """Do it, journaled with ``origin`` before it takes effect."""
        ...

    def updates(self) -> AsyncIterator[dict[str, Any]]:
        """Live updates for one subscriber (the dashboard's WebSocket), until it stops."""
        ...
