"""The dashboard's test double: a :class:`adapters.control.Controller` whose state the test
moves (equity, fills, alerts, the trading state), and a helper that serves the dashboard
routes from it on 127.0.0.1.

It speaks the protocol's shapes (see ``adapters/control.py``) with made-up but consistent
figures; it is not the daemon. The system test of the daemon itself uses the real thing.

Time stamps come from a counter (one second per event from a fixed start), so every run
shows the same times.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from adapters.control import ControlError
from adapters.dashboard import add_dashboard_routes

__all__ = ["DashboardDouble", "serve_dashboard"]

START_NS = 1_709_303_400_000_000_000  # 2024-03-01 14:30:00 UTC
SECOND_NS = 1_000_000_000


class DashboardDouble:
    """The dashboard's test double (a Controller). See the module docstring."""

    def __init__(self, *, interval: float = 0.1) -> None:
        self.interval = interval
        self.subscriptions = 0
        """How many times ``updates()`` has been started."""
        self.open_streams = 0
        """How many ``updates()`` generators are running now."""
        self.failing_query: str | None = None
        """A query name that raises, to test how a failure reaches the page."""
        self.queries: list[str] = []
        self._now_ns = START_NS
        self._queues: list[asyncio.Queue[dict[str, Any] | None]] = []
        self._status: dict[str, Any] = {
            "mode": "paper",
            "state": "ready",
            "trading_state": "ACTIVE",
            "trading_reason": "",
            "uptime_s": 3725.0,
            "ticks": 120_000,
            "orders": 14,
            "fills": 2,
            "working_orders": 1,
            "equity": 1_000_000.0,
            "currency": "USD",
            "summary": "ready ACTIVE equity 1000000.00 USD",
            "data_time_ns": START_NS,
        }
        self._pnl: dict[str, Any] = {
            "currency": "USD",
            "equity": 1_000_000.0,
            "balance": 612_480.25,
            "realized": 4_210.5,
            "unrealized": -1_830.75,
            "commissions": 96.4,
            "by_strategy": {"ema_cross": 3_120.0, "trend": -740.25},
            "by_region": {"US": 2_902.5, "CRYPTO": -522.75},
            "by_asset_class": {"equity": 2_902.5, "crypto": -522.75},
            "by_instrument": {"AAPL": 2_100.0, "SPY": 802.5, "BTCUSDT": -522.75},
        }
        self._positions: list[dict[str, Any]] = [
            self._position("AAPL", 1_200, 171.2, 172.95, "US", "equity", "technology"),
            self._position("SPY", -300, 508.1, 505.425, "US", "equity", "index"),
            self._position("BTCUSDT", 2.5, 62_400.0, 62_190.9, "CRYPTO", "crypto", "crypto"),
        ]
        self._working: list[dict[str, Any]] = [
            {
                "client_order_id": "ema_cross-000013",
                "strategy": "ema_cross",
                "instrument": "AAPL",
                "side": "BUY",
                "quantity": 100.0,
                "filled": 0.0,
                "price": 172.5,
                "order_type": "LIMIT",
                "status": "accepted",
                "ts": START_NS - 20 * SECOND_NS,
            }
        ]
        self._fills: list[dict[str, Any]] = [
            self._fill("trend-000002", "trend", "SPY", "SELL", 300, 508.1, 1.5, -60),
            self._fill("ema_cross-000011", "ema_cross", "AAPL", "BUY", 1_200, 171.2, 6.0, -90),
        ]
        self._alerts: list[dict[str, Any]] = [
            {
                "level": 30,
                "source": "risk_monitor",
                "rule": "var_limit",
                "message": "VaR at 85% of its limit",
                "action": "",
                "figures": {"utilisation": 0.85},
                "ts": START_NS - 30 * SECOND_NS,
            }
        ]
        self._risk: dict[str, Any] = {
            "trading_state": "ACTIVE",
            "var": 18_250.0,
            "drawdown": 0.0125,
            "nav": 1_000_000.0,
            "high_water": 1_012_658.0,
            "limits": [
                self._limit("portfolio", "portfolio", "var", 18_250.0, 21_470.0),
                self._limit("portfolio", "portfolio", "gross_leverage", 0.93, 2.0),
                self._limit("region", "US", "gross_fraction", 0.76, 0.8),
                self._limit("security", "AAPL", "position_fraction", 0.2076, 0.2),
                self._limit("security", "SPY", "position_fraction", 0.1516, 0.2),
                self._limit("security", "BTCUSDT", "position_fraction", 0.1555, 0.2),
                self._limit("security", "AAPL", "adv_days", 0.002, 0.1),
            ],
        }
        self._actors: list[dict[str, Any]] = [
            self._actor("feed", 120_000, 480_000_000, 95_000, 3, 4096),
            self._actor("ema_cross", 118_500, 1_185_000_000, 260_000, 0, 1024),
            self._actor("risk_gate", 40, 2_400_000, 310_000, 0, 1024),
            self._actor("router", 38, 760_000, 45_000, 0, 1024),
        ]
        self._health: dict[str, Any] = {
            "healthy": True,
            "reasons": [],
            "checks": {
                "event_loop_lag": {"ok": True, "age_s": 0.0, "detail": "lag 0.4 ms"},
                "feed": {"ok": True, "age_s": 0.3, "detail": "last tick 0.3 s ago"},
                "broker": {"ok": True, "age_s": 1.1, "detail": "simulated exchange"},
            },
        }

    # --- the shapes ------------------------------------------------------------------

    @staticmethod
    def _position(
        instrument: str,
        quantity: float,
        avg_price: float,
        mark: float,
        region: str,
        asset_class: str,
        sector: str,
    ) -> dict[str, Any]:
        return {
            "instrument": instrument,
            "quantity": quantity,
            "avg_price": avg_price,
            "mark": mark,
            "market_value": quantity * mark,
            "unrealized_pnl": quantity * (mark - avg_price),
            "realized_pnl": 0.0,
            "region": region,
            "asset_class": asset_class,
            "sector": sector,
        }

    @staticmethod
    def _fill(
        order_id: str,
        strategy: str,
        instrument: str,
        side: str,
        quantity: float,
        price: float,
        commission: float,
        seconds: int,
    ) -> dict[str, Any]:
        return {
            "client_order_id": order_id,
            "strategy": strategy,
            "instrument": instrument,
            "side": side,
            "quantity": float(quantity),
            "price": price,
            "commission": commission,
            "ts": START_NS + seconds * SECOND_NS,
        }

    @staticmethod
    def _limit(level: str, group: str, measure: str, value: float, limit: float) -> dict[str, Any]:
        return {
            "level": level,
            "group": group,
            "measure": measure,
            "value": value,
            "limit": limit,
            "utilisation": value / limit,
        }

    @staticmethod
    def _actor(
        name: str, processed: int, handle_ns: int, max_ns: int, depth: int, capacity: int
    ) -> dict[str, Any]:
        return {
            "name": name,
            "state": "running",
            "processed": processed,
            "errors": 0,
            "restarts": 0,
            "handle_ns": handle_ns,
            "max_handle_ns": max_ns,
            "inbox_depth": depth,
            "inbox_high_water": depth + 10,
            "inbox_capacity": capacity,
            "blocked": 0,
            "conflated": 0,
            "dropped": 0,
        }

    # --- the test moves the state ----------------------------------------------------

    def _tick(self) -> int:
        self._now_ns += SECOND_NS
        self._status["data_time_ns"] = self._now_ns
        return self._now_ns

    def set_equity(self, equity: float) -> None:
        self._status["equity"] = equity
        self._pnl["equity"] = equity
        self._risk["nav"] = equity

    def add_fill(
        self, instrument: str, side: str, quantity: float, price: float, strategy: str = "trend"
    ) -> dict[str, Any]:
        """A fill of a new order, sent to subscribers at once and listed from then on."""
        ts = self._tick()
        order_id = f"{strategy}-{len(self._fills) + 100:06d}"
        fill = {
            "client_order_id": order_id,
            "strategy": strategy,
            "instrument": instrument,
            "side": side,
            "quantity": quantity,
            "price": price,
            "commission": round(quantity * price * 0.0001, 2),
            "ts": ts,
        }
        self._fills.insert(0, fill)
        self._status["fills"] += 1
        self.publish({"type": "fill", **fill})
        return fill

    def raise_alert(self, level: int, rule: str, message: str, action: str = "") -> None:
        alert = {
            "level": level,
            "source": "risk_monitor",
            "rule": rule,
            "message": message,
            "action": action,
            "figures": {},
            "ts": self._tick(),
        }
        self._alerts.insert(0, alert)
        self.publish({"type": "alert", **alert})

    def set_actor(self, name: str, **fields: Any) -> None:
        for actor in self._actors:
            if actor["name"] == name:
                actor.update(fields)
                return
        raise KeyError(name)

    def end_streams(self) -> None:
        """End every running ``updates()`` (as the daemon does when it stops)."""
        for queue in self._queues:
            queue.put_nowait(None)

    def publish(self, event: dict[str, Any]) -> None:
        """Send ``event`` as it is to every running ``updates()``."""
        for queue in self._queues:
            queue.put_nowait(copy.deepcopy(event))

    # --- the Controller protocol -----------------------------------------------------

    async def query(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.queries.append(name)
        if name == self.failing_query:
            raise ControlError(f"the {name} query failed in the test double", status=409)
        answers: dict[str, dict[str, Any]] = {
            "status": self._status,
            "pnl": self._pnl,
            "risk": self._risk,
            "positions": {"currency": "USD", "positions": self._positions},
            "orders": {"working": self._working, "fills": self._fills[:50]},
            "actors": {"actors": self._actors},
            "health": self._health,
            "alerts": {"alerts": self._alerts},
        }
        if name not in answers:
            raise ControlError(f"the dashboard's test double has no {name!r} query", status=404)
        return copy.deepcopy(answers[name])

    async def command(self, name: str, args: dict[str, Any], origin: str) -> dict[str, Any]:
        if name == "halt":
            reason = str(args.get("reason", "halted by an operator"))
            self._status["trading_state"] = self._risk["trading_state"] = "HALTED"
            self._status["trading_reason"] = reason
            self.raise_alert(50, "manual_halt", f"trading halted: {reason}", action="halt")
            return {"ok": True, "trading_state": "HALTED"}
        if name == "resume":
            self._status["trading_state"] = self._risk["trading_state"] = "ACTIVE"
            self._status["trading_reason"] = ""
            return {"ok": True, "trading_state": "ACTIVE"}
        raise ControlError(f"the dashboard's test double has no {name!r} command", status=404)

    async def _snapshot(self) -> dict[str, Any]:
        self._status["ticks"] += 17
        self._status["uptime_s"] += self.interval
        for actor in self._actors:
            # Ten more messages at the actor's usual cost: the mean stays where it was.
            mean_ns = actor["handle_ns"] // actor["processed"]
            actor["processed"] += 10
            actor["handle_ns"] = actor["processed"] * mean_ns
        frame: dict[str, Any] = {"type": "snapshot"}
        for name in ("status", "pnl", "risk", "positions", "orders", "actors", "health"):
            frame[name] = await self.query(name, {})
        return frame

    async def _stream(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._queues.append(queue)
        self.subscriptions += 1
        self.open_streams += 1
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), self.interval)
                except TimeoutError:
                    yield await self._snapshot()
                    continue
                if event is None:
                    return
                yield event
        finally:
            self._queues.remove(queue)
            self.open_streams -= 1

    def updates(self) -> AsyncIterator[dict[str, Any]]:
        return self._stream()


@asynccontextmanager
async def serve_dashboard(controller: DashboardDouble) -> AsyncIterator[str]:
    """Serve the dashboard routes on 127.0.0.1 (a free port); yield the base URL. Leaving
    the block shuts the application down as the daemon would."""
    app = web.Application()
    add_dashboard_routes(app, controller)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
