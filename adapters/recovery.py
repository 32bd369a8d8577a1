"""Start-up after a crash: rebuild from the journal, then reconcile with the broker.

1. **Rebuild.** The journal's records are handed to the actors that took them the first
   time, in order, through their own handlers: fills and order events to everything the
   journal's ``events`` port feeds (the portfolio books them again, the risk gate and the
   monitor see the same positions), control records to what its ``control`` port feeds
   (the trading state, the limits and stopped strategies come back as they were), order
   requests, decisions and alerts to the event log and the monitor (working orders, the
   blotter, the alert history). While this runs every actor's output is switched off:
   what they would send was sent, and journaled, the first time. Order sequences continue
   after the highest id in the journal, so no client order id is used twice.
2. **Reconcile.** The broker's books (``adapters/broker_ledger.py``) say what really
   happened. Executions the journal does not hold (the daemon died after the broker
   filled and before the report was journaled) are reported again, now through the
   journal. Orders still working from the earlier session are cancelled by the broker.
   Orders the journal approved that never reached the broker are reported rejected; none
   is sent again. Then the positions must equal the broker's, or trading is HALTED with
   a CRITICAL alert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import structlog

from engine.actor import Actor
from engine.journal import JournalRecord
from engine.limits import LimitsConfig
from engine.mailbox import Overflow
from engine.messages import (
    Alert,
    CancelOrder,
    ControlCommand,
    LimitsChanged,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    RiskDecision,
    SetLimits,
    SetTradingState,
    TradingStateChanged,
)
from engine.wiring import System

__all__ = ["RecoveryReport", "rebuild", "reconcile"]

_EVENTS = (
    OrderAccepted,
    OrderRejected,
    OrderPartiallyFilled,
    OrderFilled,
    OrderCancelled,
    OrderExpired,
    OrderDenied,
)
_CONTROL = (SetTradingState, SetLimits, ControlCommand)
_RECORDS = (RiskDecision, Alert, TradingStateChanged, LimitsChanged)
_DONE = (OrderRejected, OrderCancelled, OrderExpired, OrderDenied)


class RecoveryReport(msgspec.Struct, kw_only=True):
    records: int = 0
    fills: int = 0
    open_orders: int = 0
    """Orders the journal left working (approved, not finished)."""
    executions_reported: int = 0
    """Broker executions the journal did not have, reported again through it (with any
    other report of the broker's it lacked: acceptances, cancels, expiries)."""
    orphans_cancelled: int = 0
    lost_orders: int = 0
    """Approved orders that never reached the broker, reported rejected (not resent)."""
    positions_match: bool = True
    mismatches: dict[str, tuple[float, float]] = {}
    """instrument -> (ours, the broker's) where they differ"""
    seconds: float = 0.0


def _targets(system: System, actor: Actor[Any], port: str) -> list[tuple[Actor[Any], Any]]:
    return [(system.actors[edge.target.owner], edge.types) for edge in actor.ports[port]]


def rebuild(
    system: System, journal: Actor[Any], records: Iterable[JournalRecord]
) -> tuple[RecoveryReport, dict[str, OrderRequest]]:
    """Step 1: hand the journal's records to the actors (see the module docstring). Also
    returns the orders the journal left working, by client order id."""
    started = time.monotonic()
    report = RecoveryReport()
    events = _targets(system, journal, "events")
    control = _targets(system, journal, "control")
    watchers = [a for a in system.actors.values() if a.config.kind in ("event_log", "risk_monitor")]
    log_actors = [a for a in system.actors.values() if a.config.kind == "event_log"]
    saved = {name: a.ports for name, a in system.actors.items()}
    highest: dict[str, int] = {}
    open_orders: dict[str, OrderRequest] = {}
    try:
        for actor in system.actors.values():  # outputs off: all of it was sent already
            actor.ports = {port: [] for port in actor.ports}
        for record in records:
            msg = record.msg
            report.records += 1
            cid = getattr(msg, "client_order_id", None)
            if cid is not None:
                name, _, seq = cid.rpartition("-")
                if seq.isdigit():
                    highest[name] = max(highest.get(name, 0), int(seq))
            if isinstance(msg, OrderRequest):
                open_orders[msg.client_order_id] = msg
                _deliver(watchers, msg)
            elif isinstance(msg, _EVENTS):
                if isinstance(msg, OrderPartiallyFilled):
                    report.fills += 1
                    if isinstance(msg, OrderFilled) or msg.leaves_qty <= 0:
                        open_orders.pop(msg.client_order_id, None)
                elif isinstance(msg, _DONE):
                    open_orders.pop(msg.client_order_id, None)
                for actor, types in events:
                    if types is None or type(msg) in types:
                        actor.on_message(msg)
            elif isinstance(msg, _CONTROL):
                if isinstance(msg, SetLimits) and isinstance(msg.limits, dict):
                    msg = msgspec.structs.replace(
                        msg, limits=msgspec.convert(msg.limits, LimitsConfig)
                    )
                for actor, types in control:
                    if types is None or type(msg) in types:
                        actor.on_message(msg)
            elif isinstance(msg, _RECORDS):
                _deliver(log_actors, msg)
            elif isinstance(msg, CancelOrder):
                pass  # its outcome is in the journal as an event, or comes from the broker
    finally:
        for name, actor in system.actors.items():
            actor.ports = saved[name]
    # order ids go on after the highest the journal holds
    for actor in system.actors.values():
        core = getattr(actor, "core", None)
        if hasattr(actor, "order_seq"):
            actor.order_seq = max(actor.order_seq, highest.get(actor.name, 0))
        if core is not None and hasattr(core, "_seq"):
            core._seq = max(core._seq, highest.get(actor.name, 0))
    report.open_orders = len(open_orders)
    report.seconds = time.monotonic() - started
    return report, open_orders


def _deliver(actors: list[Actor[Any]], msg: Message) -> None:
    for actor in actors:
        actor.on_message(msg)


async def reconcile(
    system: System,
    journal: Actor[Any],
    broker: Actor[Any],
    records: list[JournalRecord],
    report: RecoveryReport,
    open_orders: dict[str, OrderRequest],
) -> RecoveryReport:
    """Step 2: the broker's books against ours (see the module docstring)."""
    log = structlog.get_logger("tradingd.recovery")
    ledger = broker.ledger  # type: ignore[attr-defined]
    now = system.clock.now()
    journaled = {_key(r.msg) for r in records if isinstance(r.msg, _EVENTS)}
    missing = [e for e in ledger.events if _key(e) not in journaled]
    for event in missing:  # in the order the broker reported them
        await journal.inbox.put(event, Overflow.BLOCK)
    report.executions_reported = sum(isinstance(e, OrderPartiallyFilled) for e in missing)
    # finished at the broker: its report of that is in the journal now
    open_orders = {
        cid: o for cid, o in open_orders.items() if cid in ledger.working or not ledger.seen(cid)
    }
    cancels = ledger.cancel_orphans(now)
    for cancel in cancels:
        open_orders.pop(cancel.client_order_id, None)
        await journal.inbox.put(cancel, Overflow.BLOCK)
    report.orphans_cancelled = len(cancels)
    lost = [o for cid, o in open_orders.items() if not ledger.seen(cid)]
    for order in lost:
        await journal.inbox.put(
            OrderRejected(
                client_order_id=order.client_order_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                reason="never reached the broker before the daemon stopped; not sent again",
                ts_event=now,
                ts_init=now,
            ),
            Overflow.BLOCK,
        )
    report.lost_orders = len(lost)
    await system.quiescence.wait()
    await asyncio.sleep(0)
    portfolio = [a for a in system.actors.values() if a.config.kind == "portfolio"]
    if portfolio:
        pf = portfolio[0].portfolio  # type: ignore[attr-defined]
        for i, inst in enumerate(system.instruments):
            ours = float(pf.qty[i])
            theirs = float(ledger.position.get(inst.id, 0.0))
            if abs(ours - theirs) > 1e-9 * max(1.0, abs(theirs)):
                report.mismatches[inst.id] = (ours, theirs)
    report.positions_match = not report.mismatches
    log.info("reconciled with the broker", **msgspec.to_builtins(report))
    return report


def _key(msg: Any) -> tuple[str, str]:
    """What identifies a broker report: an execution by its trade id, the rest by kind and
    order."""
    if isinstance(msg, OrderPartiallyFilled):
        return ("fill", msg.trade_id)
    return (type(msg).__name__, msg.client_order_id)
