"""The control API's test double: a :class:`adapters.control.Controller` over real in-memory
state (positions, working orders, fills, a trading state, strategies, risk limits, a
journal of commands with their origin), for the tests of the HTTP layer and of
``tradingd ctl``.

It is not the daemon: the daemon's own system test drives the real thing. It keeps the
contract of ``adapters/control.py`` (names, shapes, ControlError statuses), and its
commands change its state, so a test can see a command take effect through a later query.

``ServedDouble`` serves it with the real ``start_control_server`` on an event loop in a
thread of its own, for synchronous callers such as ``adapters.cli.main``.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from adapters.control import ControlError, merge
from adapters.control_api import ControlServer, build_app, start_control_server
from engine.limits import LimitsConfig

__all__ = ["ControllerDouble", "ServedDouble", "serve_double"]

T0 = 1_767_225_600_000_000_000  # 2026-01-01 00:00:00 UTC, in ns
START_CASH = 1_000_000.0


class ControllerDouble:
    """The control API's test double (see the module docstring)."""

    def __init__(self) -> None:
        self.now = T0
        self.trading_state = "ACTIVE"
        self.trading_reason = ""
        self.realized = 0.0
        self.commissions = 0.0
        self.positions: dict[str, dict[str, Any]] = {
            "IBM.US": {
                "quantity": 1_500.0,
                "avg_price": 180.25,
                "mark": 185.5,
                "region": "US",
                "asset_class": "equity",
                "sector": "tech",
            },
            "EURUSD.FX": {
                "quantity": -250_000.0,
                "avg_price": 1.0850,
                "mark": 1.0825,
                "region": "EU",
                "asset_class": "fx",
                "sector": None,
            },
        }
        self.working: dict[str, dict[str, Any]] = {
            "ema-1-7": self._order("ema-1-7", "ema", "IBM.US", "BUY", 200.0, 184.0),
            "ema-1-8": self._order("ema-1-8", "ema", "IBM.US", "SELL", 100.0, 190.0),
        }
        self.fills: list[dict[str, Any]] = [
            {
                "client_order_id": "ema-1-6",
                "strategy": "ema",
                "instrument": "IBM.US",
                "side": "BUY",
                "quantity": 1_500.0,
                "price": 180.25,
                "commission": 7.5,
                "ts": T0 - 60_000_000_000,
            }
        ]
        self.strategies: dict[str, dict[str, Any]] = {
            "ema": {"kind": "ema_cross", "running": True, "params": {"fast": 12, "slow": 26}},
            "trend": {"kind": "trend", "running": False, "params": {"lookback": 50}},
        }
        self.limits = msgspec.convert(
            {
                "max_order_notional": 1_000_000.0,
                "portfolio": {"max_gross_leverage": 2.0},
                "security": {"max_position_fraction": 0.25},
            },
            LimitsConfig,
        )
        self.journal: list[dict[str, Any]] = []
        self.healthy = True
        self.fail_on: str | None = None  # a query or command that raises a plain bug

    @staticmethod
    def _order(
        oid: str, strategy: str, instrument: str, side: str, quantity: float, price: float
    ) -> dict[str, Any]:
        return {
            "client_order_id": oid,
            "strategy": strategy,
            "instrument": instrument,
            "side": side,
            "quantity": quantity,
            "filled": 0.0,
            "price": price,
            "order_type": "LIMIT",
            "status": "WORKING",
            "ts": T0,
        }

    # --- figures --------------------------------------------------------------------------

    def _position_rows(self) -> list[dict[str, Any]]:
        rows = []
        for instrument, p in sorted(self.positions.items()):
            rows.append(
                {
                    "instrument": instrument,
                    "quantity": p["quantity"],
                    "avg_price": p["avg_price"],
                    "mark": p["mark"],
                    "market_value": p["quantity"] * p["mark"],
                    "unrealized_pnl": (p["mark"] - p["avg_price"]) * p["quantity"],
                    "realized_pnl": 0.0,
                    "region": p["region"],
                    "asset_class": p["asset_class"],
                    "sector": p["sector"],
                }
            )
        return rows

    def _unrealized(self) -> float:
        return sum(r["unrealized_pnl"] for r in self._position_rows())

    def _balance(self) -> float:
        return START_CASH + self.realized - self.commissions

    def _equity(self) -> float:
        return self._balance() + self._unrealized()

    def _risk_rows(self) -> list[dict[str, Any]]:
        nav = self._equity()
        rows = []
        gross = sum(abs(r["market_value"]) for r in self._position_rows())
        lev = self.limits.portfolio.max_gross_leverage
        if lev is not None:
            rows.append(
                {
                    "level": "portfolio",
                    "group": "portfolio",
                    "measure": "gross_leverage",
                    "value": gross / nav,
                    "limit": lev,
                    "utilisation": gross / nav / lev,
                }
            )
        frac = self.limits.security.max_position_fraction
        if frac is not None:
            for r in self._position_rows():
                used = abs(r["market_value"]) / nav
                rows.append(
                    {
                        "level": "security",
                        "group": r["instrument"],
                        "measure": "position_fraction",
                        "value": used,
                        "limit": frac,
                        "utilisation": used / frac,
                    }
                )
        return rows

    # --- the protocol ---------------------------------------------------------------------

    async def query(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == self.fail_on:
            raise RuntimeError(f"the double was told to fail on {name}")
        match name:
            case "status":
                return {
                    "mode": "paper",
                    "state": "ready",
                    "trading_state": self.trading_state,
                    "trading_reason": self.trading_reason,
                    "uptime_s": 3_725.0,
                    "ticks": 1_234_567,
                    "orders": 42,
                    "fills": len(self.fills),
                    "working_orders": len(self.working),
                    "equity": self._equity(),
                    "currency": "USD",
                    "summary": f"{self.trading_state}; {len(self.working)} working",
                }
            case "positions":
                return {"currency": "USD", "positions": self._position_rows()}
            case "orders":
                return {
                    "working": list(self.working.values()),
                    "fills": sorted(self.fills, key=lambda f: -f["ts"]),
                }
            case "pnl":
                rows = self._position_rows()
                return {
                    "currency": "USD",
                    "equity": self._equity(),
                    "balance": self._balance(),
                    "realized": self.realized,
                    "unrealized": self._unrealized(),
                    "commissions": self.commissions,
                    "by_strategy": {"ema": self.realized + self._unrealized()},
                    "by_region": {r["region"]: r["unrealized_pnl"] for r in rows},
                    "by_asset_class": {r["asset_class"]: r["unrealized_pnl"] for r in rows},
                    "by_instrument": {r["instrument"]: r["unrealized_pnl"] for r in rows},
                }
            case "risk":
                nav = self._equity()
                return {
                    "trading_state": self.trading_state,
                    "var": 12_345.67,
                    "drawdown": 0.0125,
                    "nav": nav,
                    "high_water": nav * 1.0125,
                    "limits": self._risk_rows(),
                }
            case "limits":
                out: dict[str, Any] = msgspec.to_builtins(self.limits)
                return out
            case "strategies":
                return {
                    "strategies": [
                        {"name": n, **copy.deepcopy(s)} for n, s in self.strategies.items()
                    ]
                }
            case "actors":
                return {
                    "actors": [
                        {
                            "name": "risk_gate",
                            "processed": 10_000,
                            "errors": 0,
                            "restarts": 0,
                            "handle_ns": 5_000_000,
                            "max_handle_ns": 90_000,
                            "inbox_depth": 0,
                            "inbox_high_water": 17,
                            "inbox_capacity": 1024,
                            "blocked": 0,
                            "conflated": 0,
                            "dropped": 0,
                            "state": "running",
                        }
                    ]
                }
            case "health":
                reasons = [] if self.healthy else ["feed IBM.US silent for 42 s"]
                return {
                    "healthy": self.healthy,
                    "reasons": reasons,
                    "checks": {
                        "loop_lag": {"ok": True, "age_s": 0.0, "detail": "2 ms"},
                        "feed": {
                            "ok": self.healthy,
                            "age_s": 0.5 if self.healthy else 42.0,
                            "detail": "IBM.US",
                        },
                    },
                }
            case "journal":
                n = args.get("n", 20)
                if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
                    raise ControlError(f"n must be a whole number from 1 to 10000, got {n!r}")
                return {"records": self.journal[-n:]}
            case "alerts":
                return {"alerts": []}
        raise ControlError(f"no such query {name!r}", status=404)

    def _take(self, name: str, args: dict[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(args) - allowed)
        if unknown:
            takes = ", ".join(sorted(allowed)) or "no arguments"
            raise ControlError(f"{name} does not take {', '.join(unknown)}; it takes {takes}")

    def _strategy(self, args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("name")
        if not isinstance(name, str):
            raise ControlError('name the strategy: {"name": ...}')
        if name not in self.strategies:
            raise ControlError(
                f"no strategy {name!r}; the strategies are {', '.join(self.strategies)}",
                status=404,
            )
        return self.strategies[name]

    def _close(self, instrument: str) -> None:
        p = self.positions.pop(instrument)
        self.realized += (p["mark"] - p["avg_price"]) * p["quantity"]
        self.commissions += 1.0
        self.fills.append(
            {
                "client_order_id": f"flatten-{instrument}",
                "strategy": "flatten",
                "instrument": instrument,
                "side": "SELL" if p["quantity"] > 0 else "BUY",
                "quantity": abs(p["quantity"]),
                "price": p["mark"],
                "commission": 1.0,
                "ts": self.now,
            }
        )

    async def command(self, name: str, args: dict[str, Any], origin: str) -> dict[str, Any]:
        if name == self.fail_on:
            raise RuntimeError(f"the double was told to fail on {name}")
        self.now += 1_000_000_000
        # Journaled (with who asked) before it takes effect, like the daemon.
        self.journal.append(
            {"ts": self.now, "kind": "command", "name": name, "args": args, "origin": origin}
        )
        match name:
            case "halt":
                self._take(name, args, {"reason"})
                self.trading_state = "HALTED"
                self.trading_reason = str(args.get("reason") or "halted from the console")
                return {"ok": True, "trading_state": "HALTED"}
            case "resume":
                self._take(name, args, set())
                if self.trading_state != "HALTED":
                    raise ControlError(
                        f"trading is {self.trading_state}, not HALTED: nothing to resume",
                        status=409,
                    )
                self.trading_state, self.trading_reason = "ACTIVE", ""
                return {"ok": True, "trading_state": "ACTIVE"}
            case "flatten":
                self._take(name, args, {"instrument"})
                only = args.get("instrument")
                if only is not None and only not in self.positions:
                    raise ControlError(
                        f"no position in {only!r}; positions: {', '.join(self.positions)}",
                        status=404,
                    )
                cancelled = [
                    oid
                    for oid, o in self.working.items()
                    if only is None or o["instrument"] == only
                ]
                for oid in cancelled:
                    del self.working[oid]
                closing = [only] if only is not None else list(self.positions)
                for instrument in closing:
                    self._close(instrument)
                return {"ok": True, "cancelled": cancelled, "closed": closing}
            case "cancel":
                self._take(name, args, {"id"})
                oid = args.get("id")
                if not isinstance(oid, str):
                    raise ControlError('give the order: {"id": client_order_id or "all"}')
                if oid == "all":
                    cancelled = list(self.working)
                    self.working.clear()
                    return {"ok": True, "cancelled": cancelled}
                if oid not in self.working:
                    raise ControlError(
                        f"no working order {oid!r}; working: {', '.join(self.working) or 'none'}",
                        status=404,
                    )
                del self.working[oid]
                return {"ok": True, "cancelled": [oid]}
            case "strategy.start" | "strategy.stop":
                self._take(name, args, {"name"})
                s = self._strategy(args)
                want = name == "strategy.start"
                if s["running"] == want:
                    state = "running" if want else "stopped"
                    raise ControlError(f"{args['name']} is already {state}", status=409)
                s["running"] = want
                return {"ok": True, "running": want}
            case "strategy.set":
                self._take(name, args, {"name", "params"})
                s = self._strategy(args)
                params = args.get("params")
                if not isinstance(params, dict) or not params:
                    raise ControlError('give the parameters to change: {"params": {...}}')
                for key, value in params.items():
                    if key not in s["params"]:
                        raise ControlError(
                            f"{args['name']} has no parameter {key!r}; it has "
                            f"{', '.join(s['params'])}"
                        )
                    if type(value) is not type(s["params"][key]):
                        raise ControlError(
                            f"{key} must be {type(s['params'][key]).__name__}, got {value!r}"
                        )
                s["params"].update(params)
                return {"ok": True, "params": dict(s["params"])}
            case "limits.set":
                self._take(name, args, {"limits", "reason"})
                change = args.get("limits")
                if not isinstance(change, dict) or not change:
                    raise ControlError('give the limits to change: {"limits": {...}}')
                merged = merge(msgspec.to_builtins(self.limits), change)
                try:
                    self.limits = msgspec.convert(merged, LimitsConfig)
                except (msgspec.ValidationError, ValueError) as exc:
                    raise ControlError(f"limits refused: {exc}") from exc
                return {"ok": True}
        raise ControlError(f"no such command {name!r}", status=404)

    async def updates(self) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "snapshot", "status": await self.query("status", {})}


class ServedDouble:
    """A :class:`ControllerDouble` served on a Unix socket (and TCP with ``tokens``) by the
    real control server, on an event loop in a thread of its own."""

    def __init__(self, controller: ControllerDouble, server: ControlServer) -> None:
        self.controller = controller
        self.server = server

    @property
    def socket(self) -> Path:
        return self.server.unix_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.tcp_port}"


@contextmanager
def serve_double(
    unix_path: Path, *, tokens: Mapping[str, str] | None = None
) -> Iterator[ServedDouble]:
    controller = ControllerDouble()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="control-double", daemon=True)
    thread.start()
    try:
        app = build_app(controller, tokens=tokens)
        tcp = ("127.0.0.1", 0) if tokens else None
        server = asyncio.run_coroutine_threadsafe(
            start_control_server(app, unix_path=unix_path, tcp=tcp), loop
        ).result(timeout=10)
        try:
            yield ServedDouble(controller, server)
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
