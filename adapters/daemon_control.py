"""The running daemon as the control API sees it: :class:`DaemonController`, the
implementation of :class:`adapters.control.Controller`.

Queries read the actors' state directly. That is safe: they run on the same event loop,
and a handler never awaits, so a query sees the state between two messages, never in the
middle of one. Commands become messages: each is first recorded as a ``ControlCommand``
(who asked, when, with what) in the journal, then sent the way any other actor would send
it (``SetTradingState`` and ``SetLimits`` to the risk gate, ``CancelOrder`` to the router,
closing orders through the risk gate), so they pass the same checks and land in the same
journal.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.control import COMMANDS, QUERIES, ControlError, merge
from engine.actor import Actor, ActorState
from engine.limits import LimitsConfig
from engine.messages import (
    Alert,
    CancelOrder,
    ControlCommand,
    OrderRequest,
    OrderType,
    SetLimits,
    SetTradingState,
    Side,
    TimeInForce,
    TradingState,
)

if TYPE_CHECKING:
    from adapters.daemon import Daemon

__all__ = ["DaemonController"]

_NS = 1_000_000_000


class DaemonController:
    """Queries and commands on one running :class:`~adapters.daemon.Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.system = daemon.system
        self._seq = 0
        self._flatten_lock = asyncio.Lock()

    # --- the actors ------------------------------------------------------------------------

    @property
    def gate(self) -> Any:
        """The risk gate actor (its ``risk`` is the gate's state)."""
        gate = self.system.first_of_kind("risk_gate")
        if gate is None:
            raise ControlError("this configuration has no risk gate", status=409)
        return gate

    def strategies(self) -> list[Actor[Any]]:
        return [a for a in self.system.actors.values() if a.is_strategy]

    # --- queries ---------------------------------------------------------------------------

    def read(self, name: str) -> dict[str, Any]:
        """Query ``name`` with no arguments, synchronously (for the daemon's own status line,
        metrics and stop)."""
        result: dict[str, Any] = getattr(self, "_q_" + name)({})
        return result

    async def query(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name not in QUERIES:
            raise ControlError(f"unknown query {name!r}; queries: {', '.join(QUERIES)}", status=404)
        result: dict[str, Any] = getattr(self, "_q_" + name)(args)
        return result

    def _q_status(self, args: dict[str, Any]) -> dict[str, Any]:
        d = self.daemon
        gate = self.system.first_of_kind("risk_gate")
        risk = getattr(gate, "risk", None)
        pf = d.portfolio()
        counts = d.counts()
        blotter = d.blotter()
        out = {
            "mode": self.system.config.mode,
            "state": d.state,
            "trading_state": risk.state.value if risk is not None else "ACTIVE",
            "trading_reason": getattr(risk, "state_reason", "") if risk is not None else "",
            "uptime_s": (time.time_ns() - d.started_ns) / _NS,
            "ticks": d.ticks(),
            "orders": counts.get("orders", 0),
            "fills": counts.get("fills", 0),
            "working_orders": len(blotter.working) if blotter is not None else 0,
            "equity": pf.equity if pf is not None else None,
            "currency": self.system.config.account.currency,
            "data_time_ns": d.paced.last_data_ts if d.paced is not None else None,
            "recovery": msgspec.to_builtins(d.recovery) if d.recovery is not None else None,
        }
        out["summary"] = d.summary(out)
        return out

    def _q_positions(self, args: dict[str, Any]) -> dict[str, Any]:
        pf = self.daemon.portfolio()
        rows: list[dict[str, Any]] = []
        if pf is not None:
            for i, inst in enumerate(self.system.instruments):
                qty = float(pf.qty[i])
                realized = float(pf.realized[i])
                if qty == 0.0 and realized == 0.0:
                    continue
                mark = float(pf.mark_price[i])
                rows.append(
                    {
                        "instrument": inst.id,
                        "quantity": qty,
                        "avg_price": float(pf.avg[i]),
                        "mark": _num(mark),
                        "market_value": _num(qty * mark * inst.multiplier),
                        "unrealized_pnl": float(pf.unrealized[i]),
                        "realized_pnl": realized,
                        "region": inst.region,
                        "asset_class": inst.asset_class,
                        "sector": getattr(inst, "sector", None),
                    }
                )
        return {"currency": self.system.config.account.currency, "positions": rows}

    def _q_orders(self, args: dict[str, Any]) -> dict[str, Any]:
        blotter = self.daemon.blotter()
        if blotter is None:
            return {"working": [], "fills": []}
        n = int(args.get("n", 50))
        return {
            "working": sorted(blotter.working.values(), key=lambda o: o["ts"], reverse=True),
            "fills": list(blotter.fills)[:n],
        }

    def _q_pnl(self, args: dict[str, Any]) -> dict[str, Any]:
        pf = self.daemon.portfolio()
        currency = self.system.config.account.currency
        if pf is None:
            raise ControlError("this configuration has no portfolio actor", status=409)
        by: dict[str, dict[str, float]] = {"region": {}, "asset_class": {}, "instrument": {}}
        marks: dict[str, float] = {}
        for i, inst in enumerate(self.system.instruments):
            pnl = float(pf.realized[i] + pf.unrealized[i] - pf.commission_paid[i])
            mark = float(pf.mark_price[i])
            if not math.isnan(mark):
                marks[inst.id] = mark
            if pnl == 0.0 and pf.qty[i] == 0.0:
                continue
            by["instrument"][inst.id] = pnl
            for key in ("region", "asset_class"):
                group = str(getattr(inst, key, None) or "unknown")
                by[key][group] = by[key].get(group, 0.0) + pnl
        blotter = self.daemon.blotter()
        return {
            "currency": currency,
            "equity": pf.equity,
            "balance": pf.balance,
            "realized": pf.realized_pnl,
            "unrealized": pf.unrealized_pnl,
            "commissions": pf.commissions,
            "by_strategy": blotter.pnl_by_strategy(marks) if blotter is not None else {},
            "by_region": by["region"],
            "by_asset_class": by["asset_class"],
            "by_instrument": by["instrument"],
        }

    def _q_risk(self, args: dict[str, Any]) -> dict[str, Any]:
        gate = self.system.first_of_kind("risk_gate")
        risk = getattr(gate, "risk", None)
        monitor = self.system.first_of_kind("risk_monitor")
        core = getattr(monitor, "core", None)
        out: dict[str, Any] = {
            "trading_state": risk.state.value if risk is not None else None,
            "var": None,
            "drawdown": None,
            "nav": risk.nav if risk is not None else None,
            "high_water": None,
            "limits": [],
        }
        if core is not None:
            last = core.last
            for key in ("var", "drawdown", "nav", "high_water"):
                out[key] = _num(last.get(key))
            out["limits"] = [
                {
                    "level": row.level,
                    "group": row.key,
                    "measure": row.rule,
                    "value": _num(row.used),
                    "limit": row.limit,
                    "utilisation": _num(row.fraction),
                }
                for row in core.measure(self.system.clock.now())
            ]
        return out

    def _q_limits(self, args: dict[str, Any]) -> dict[str, Any]:
        limits: dict[str, Any] = msgspec.to_builtins(self.gate.risk.limits)
        return limits

    def _q_strategies(self, args: dict[str, Any]) -> dict[str, Any]:
        stopped = getattr(self.system.first_of_kind("risk_gate"), "stopped", {})
        rows = []
        for actor in self.strategies():
            params = msgspec.to_builtins(actor.config)
            for key in ("kind", "inbox", "critical", "restart_budget", "restart_window_s"):
                params.pop(key, None)
            params.pop("backoff_initial_s", None)
            params.pop("backoff_max_s", None)
            rows.append(
                {
                    "name": actor.name,
                    "kind": actor.config.kind,
                    "running": actor.state is ActorState.RUNNING and actor.name not in stopped,
                    "stopped_reason": stopped.get(actor.name),
                    "params": params,
                }
            )
        return {"strategies": rows}

    def _q_actors(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"actors": self.system.snapshot()}

    def _q_health(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.daemon.health()

    def _q_journal(self, args: dict[str, Any]) -> dict[str, Any]:
        n = int(args.get("n", 20))
        return {"records": self.daemon.journal_tail(n)}

    def _q_alerts(self, args: dict[str, Any]) -> dict[str, Any]:
        n = int(args.get("n", 100))
        return {"alerts": [_alert(a) for a in self.daemon.alerts()[-n:]][::-1]}

    # --- commands --------------------------------------------------------------------------

    async def command(self, name: str, args: dict[str, Any], origin: str) -> dict[str, Any]:
        if name not in COMMANDS:
            raise ControlError(
                f"unknown command {name!r}; commands: {', '.join(COMMANDS)}", status=404
            )
        if self.daemon.state != "ready":
            raise ControlError(f"the daemon is {self.daemon.state}; try again", status=409)
        self._seq += 1
        now = self.system.clock.now()
        record = ControlCommand(
            request_id=f"{self.daemon.run_id}-{self._seq}",
            command=name,
            args=args,
            origin=origin,
            ts_event=now,
            ts_init=now,
        )
        handler = getattr(self, "_c_" + name.replace(".", "_"))
        result: dict[str, Any] = await handler(args, origin, record)
        self.daemon.log.warning("control command", command=name, args=args, origin=origin)
        return {"ok": True, "request_id": record.request_id, **result}

    async def _record(self, record: ControlCommand) -> None:
        await self.daemon.deliver(record, None)

    async def _c_halt(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        reason = str(args.get("reason") or "halted from the console")
        await self._record(record)
        await self._set_state(TradingState.HALTED, reason, origin)
        return {"trading_state": "HALTED"}

    async def _c_resume(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        await self._record(record)
        await self._set_state(TradingState.ACTIVE, "resumed from the console", origin)
        return {"trading_state": "ACTIVE"}

    async def _set_state(self, state: TradingState, reason: str, origin: str) -> None:
        now = self.system.clock.now()
        msg = SetTradingState(state=state, reason=reason, origin=origin, ts_event=now, ts_init=now)
        gate = self.gate
        await self.daemon.deliver(msg, gate)
        await self.wait_for(lambda: gate.risk.state is state, 5.0, f"trading state {state.value}")

    async def wait_for(self, done: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise ControlError(f"timed out waiting for {what}", status=504)
            await asyncio.sleep(0.01)

    def working_orders(self, instrument: str | None) -> list[dict[str, Any]]:
        blotter = self.daemon.blotter()
        if blotter is None:
            return []
        return [
            o
            for o in blotter.working.values()
            if instrument is None or o["instrument"] == instrument
        ]

    async def cancel_orders(self, orders: list[dict[str, Any]]) -> None:
        router = self.system.first_of_kind("router")
        if router is None:
            raise ControlError("this configuration has no router", status=409)
        now = self.system.clock.now()
        for o in orders:
            msg = CancelOrder(
                client_order_id=o["client_order_id"],
                strategy_id=o["strategy"],
                instrument_id=o["instrument"],
                ts_event=now,
                ts_init=now,
            )
            await self.daemon.deliver(msg, router)

    async def _c_cancel(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        target = str(args.get("id", ""))
        if not target:
            raise ControlError('cancel needs an order id or "all"')
        orders = self.working_orders(None)
        if target != "all":
            orders = [o for o in orders if o["client_order_id"] == target]
            if not orders:
                raise ControlError(f"no working order {target!r}", status=404)
        await self._record(record)
        await self.cancel_orders(orders)
        return {"cancelled": [o["client_order_id"] for o in orders]}

    async def _c_flatten(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        """Cancel the working orders, wait until they are gone, then close the positions
        with market orders through the risk gate (REDUCING lets only those through), then
        put the trading state back as it was."""
        instrument = args.get("instrument") or None
        if instrument is not None and instrument not in self.system.instruments:
            known = ", ".join(i.id for i in self.system.instruments)
            raise ControlError(
                f"unknown instrument {instrument!r}; instruments: {known}", status=404
            )
        pf = self.daemon.portfolio()
        if pf is None:
            raise ControlError("this configuration has no portfolio actor", status=409)
        async with self._flatten_lock:
            await self._record(record)
            gate = self.gate
            before, before_reason = gate.risk.state, gate.risk.state_reason
            await self._set_state(TradingState.REDUCING, f"flatten by {origin}", origin)
            working = self.working_orders(instrument)
            await self.cancel_orders(working)
            await self.wait_for(lambda: not self.working_orders(instrument), 10.0, "the cancels")
            closing = []
            now = self.system.clock.now()
            for i, inst in enumerate(self.system.instruments):
                qty = float(pf.qty[i])
                if qty == 0.0 or (instrument is not None and inst.id != instrument):
                    continue
                self._seq += 1
                order = OrderRequest(
                    client_order_id=f"ctl-{self.daemon.run_id}-{self._seq}",
                    strategy_id="control",
                    instrument_id=inst.id,
                    side=Side.SELL if qty > 0 else Side.BUY,
                    quantity=abs(qty),
                    order_type=OrderType.MARKET,
                    time_in_force=TimeInForce.GTC,
                    ts_event=now,
                    ts_init=now,
                )
                closing.append(order.client_order_id)
                await self.daemon.deliver(order, gate)
            ids = {i.id for i in self.system.instruments if instrument in (None, i.id)}
            try:
                await self.wait_for(
                    lambda: all(pf.qty[self.system.instruments.index(i)] == 0.0 for i in ids),
                    15.0,
                    "the positions to close",
                )
            finally:
                restore = before if before is not TradingState.REDUCING else TradingState.ACTIVE
                if restore is not TradingState.REDUCING:
                    await self._set_state(restore, before_reason or "flatten done", origin)
        return {"cancelled": [o["client_order_id"] for o in working], "closing_orders": closing}

    def _strategy(self, args: dict[str, Any]) -> Actor[Any]:
        name = str(args.get("name", ""))
        for actor in self.strategies():
            if actor.name == name:
                return actor
        names = ", ".join(a.name for a in self.strategies()) or "none"
        raise ControlError(f"no strategy {name!r}; strategies: {names}", status=404)

    async def _c_strategy_stop(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        return await self._strategy_running(args, record, running=False)

    async def _c_strategy_start(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        return await self._strategy_running(args, record, running=True)

    async def _strategy_running(
        self, args: dict[str, Any], record: ControlCommand, *, running: bool
    ) -> dict[str, Any]:
        """Stop or start a strategy at the gate (which denies a stopped one's orders)."""
        actor = self._strategy(args)
        await self.daemon.deliver(record, self.gate)  # journaled on its way
        return {"strategy": actor.name, "running": running}

    async def _c_strategy_set(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        actor = self._strategy(args)
        params = args.get("params")
        if not isinstance(params, dict) or not params:
            raise ControlError('strategy.set needs "params": {"name": value, ...}')
        if "kind" in params:
            raise ControlError("the kind of a strategy cannot be changed")
        merged = {**msgspec.to_builtins(actor.config), **params}
        try:
            config = msgspec.convert(merged, type(actor.config))
        except (msgspec.ValidationError, ValueError) as exc:
            raise ControlError(f"strategy {actor.name}: {exc}") from None
        await self._record(record)
        self.daemon.reconfigure(actor, config)
        return {"strategy": actor.name, "params": params}

    async def _c_limits_set(
        self, args: dict[str, Any], origin: str, record: ControlCommand
    ) -> dict[str, Any]:
        change = args.get("limits")
        if not isinstance(change, dict) or not change:
            raise ControlError('limits.set needs "limits": {"section": {"key": value}}')
        gate = self.gate
        current: dict[str, Any] = msgspec.to_builtins(gate.risk.limits)
        try:
            limits = msgspec.convert(merge(current, change), LimitsConfig)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise ControlError(f"limits refused: {exc}") from None
        await self._record(record)
        now = self.system.clock.now()
        reason = str(args.get("reason") or "set from the console")
        msg = SetLimits(limits=limits, reason=reason, origin=origin, ts_event=now, ts_init=now)
        await self.daemon.deliver(msg, gate)
        await self.wait_for(lambda: gate.risk.limits == limits, 5.0, "the new limits")
        return {"limits": msgspec.to_builtins(limits)}

    # --- live updates ----------------------------------------------------------------------

    async def updates(self) -> AsyncIterator[dict[str, Any]]:
        seen_records = self.daemon.risk_record_count()
        blotter = self.daemon.blotter()
        seen_fills = self.daemon.counts().get("fills", 0)
        while True:
            snap: dict[str, Any] = {"type": "snapshot"}
            for name in ("status", "pnl", "risk", "positions", "orders", "actors", "health"):
                try:
                    snap[name] = await self.query(name, {})
                except ControlError as exc:
                    snap[name] = {"error": str(exc)}
            records, seen_records = self.daemon.risk_records_since(seen_records)
            for record in records:
                if isinstance(record, Alert):
                    yield {"type": "alert", **_alert(record)}
            fills = self.daemon.counts().get("fills", 0)
            if blotter is not None and fills > seen_fills:
                for fill in list(blotter.fills)[: fills - seen_fills][::-1]:
                    yield {"type": "fill", **fill}
            seen_fills = fills
            yield snap
            await asyncio.sleep(1.0)


def _num(x: float | None) -> float | None:
    """JSON has no NaN: an unmeasured figure is None."""
    return None if x is None or math.isnan(x) else float(x)


def _alert(a: Alert) -> dict[str, Any]:
    return {
        "level": a.level.name,
        "source": a.source,
        "rule": a.rule,
        "message": a.message,
        "action": a.action,
        "figures": {k: _num(v) for k, v in a.figures.items()},
        "ts": a.ts_event,
    }
