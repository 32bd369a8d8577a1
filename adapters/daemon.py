"""``tradingd run``: the daemon. Runs the configured actors on the live clock until it is
stopped.

Start-up, in order: load and check the configuration (a bad one exits 78 naming the key),
make the state directory, start every actor under the supervisor, open the control API on
its Unix socket (and TCP, with a token, when configured), tell systemd ``READY=1``, then
start the market data. In paper mode the data is the configured tick files, replayed in
real time (``adapters/paced_feed.py``).

While running: ``STATUS=`` with a one-line summary every ``status_interval_s``,
``WATCHDOG=1`` from the event loop (not while it lags or a critical actor is down),
SIGHUP reloads limits and strategy parameters (checked first; a bad file is refused and
the running configuration kept), SIGTERM or SIGINT stops in order within
``stop_timeout_s``: ``STOPPING=1``, the market data stops, working orders are cancelled
(``on_stop = "cancel"``) or left, the actors drain and stop, the journal is committed and
closed, exit 0. A critical actor that fails past its restart budget exits 70, and systemd
restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import structlog

from adapters.control import ControlError
from adapters.control_api import build_app, start_control_server
from adapters.daemon_control import DaemonController
from adapters.dashboard import add_dashboard_routes
from adapters.metrics import DaemonMetrics
from adapters.paced_feed import PacedReplay
from adapters.recovery import RecoveryReport, rebuild, reconcile
from adapters.systemd import (
    SystemdNotifier,
    credential,
    state_directory,
    watchdog_interval_s,
    watchdog_pinger,
)
from engine.actor import Actor, ActorConfig, ActorState
from engine.blotter import Blotter
from engine.clock import LiveClock
from engine.config import SystemConfig, load_config
from engine.errors import ConfigError, CriticalActorFailed
from engine.journal import read_journal
from engine.limits import LimitsConfig, resolve_limits
from engine.mailbox import Overflow
from engine.messages import (
    Alert,
    AlertLevel,
    CancelOrder,
    ControlCommand,
    Message,
    RiskDecision,
    SetLimits,
    SetTradingState,
    TradingState,
)
from engine.portfolio import Portfolio
from engine.supervisor import Supervisor
from engine.wiring import System

__all__ = ["Daemon", "load_daemon"]

_NS = 1_000_000_000
_THROUGH_JOURNAL = (SetTradingState, SetLimits, ControlCommand, CancelOrder)
"""What control sends by way of the journal (which records it, then forwards it)."""


def load_daemon(
    config_path: str | Path,
    *,
    state_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Daemon:
    """The daemon a paper (or live) configuration describes; errors name the key."""
    path = Path(config_path)
    config = load_config(path, overrides=overrides)
    if state_dir is None:
        systemd_dir = state_directory()
        state_dir = systemd_dir if systemd_dir is not None else config.daemon.state_dir
    state = Path(state_dir).resolve()
    # a journal's relative dir is in the state directory, not beside the configuration
    # so is a paper broker's ledger
    in_state = {"journal": "dir", "sim_exchange": "ledger"}
    moved = {
        f"actors.{name}.{key}": str(state / section[key])
        for name, section in config.actors.items()
        if (key := in_state.get(str(section.get("kind")), ""))
        and isinstance(section.get(key), str)
        and not Path(section[key]).is_absolute()
    }
    overrides = {**(overrides or {}), **moved}
    if moved:
        config = load_config(path, overrides=overrides)
    if config.mode == "backtest":
        raise ConfigError(
            'mode is "backtest"; `tradingd run` needs mode = "paper" (or "live"); '
            "use `tradingd backtest` for a backtest",
            path="$.mode",
            file=str(path),
        )
    if config.mode == "live":
        raise ConfigError(
            'mode "live" needs the Interactive Brokers adapter, which this version does not '
            'have yet; run mode = "paper"',
            path="$.mode",
            file=str(path),
        )
    return Daemon(config, path, state, overrides=overrides)


class Daemon:
    """One running daemon: the system of actors, its supervisor, the control server."""

    def __init__(
        self,
        config: SystemConfig,
        path: Path,
        state_dir: Path,
        *,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.overrides = dict(overrides or {})
        """What the command line and the state directory changed: a reload keeps it."""
        self.path = path
        self.state_dir = state_dir.resolve()
        self.clock = LiveClock()
        self.system = System(config, self.clock, file=str(path), base_dir=path.parent)
        self.log = structlog.get_logger("tradingd.daemon")
        self.state = "starting"
        self.started_ns = time.time_ns()
        self.run_id = f"{self.started_ns:x}"
        self.notifier = SystemdNotifier()
        self.supervisor = Supervisor(
            self.system.start_order,
            self.clock,
            self.system.quiescence,
            trading_state_owner=self.system.trading_state_owner(),
            alert_sinks=self.system.alert_sinks(),
        )
        self.feed = self.system.first_of_kind("replay_feed")
        self.paced = PacedReplay(self.system, self.feed) if self.feed is not None else None
        self.journal = self.system.first_of_kind("journal")
        self.controller = DaemonController(self)
        self.metrics = DaemonMetrics(
            actors=self.system.snapshot,
            portfolio=lambda: self.controller.read("pnl") | self.controller.read("positions"),
            risk=lambda: self.controller.read("risk"),
        )
        self._metric_counts: dict[str, int] = {}
        self._metric_records = 0
        self._feed_fresh = True
        for actor in self.system.actors.values():  # handling-time histograms, for /metrics
            actor.stats.track_handle_times()
        self.loop_lag_s = 0.0
        self.recovery: RecoveryReport | None = None
        self.reloads = 0
        self.reload_errors = 0
        self._stop = asyncio.Event()
        self.stop_reason = ""

    # --- what the controller reads ---------------------------------------------------------

    def portfolio(self) -> Portfolio | None:
        return getattr(self.system.first_of_kind("portfolio"), "portfolio", None)

    def blotter(self) -> Blotter | None:
        return getattr(self.system.first_of_kind("event_log"), "blotter", None)

    def counts(self) -> dict[str, int]:
        digest = getattr(self.system.first_of_kind("event_log"), "digest", None)
        return dict(digest.counts) if digest is not None else {}

    def ticks(self) -> int:
        return int(getattr(self.feed, "ticks", 0))

    def risk_record_count(self) -> int:
        """How many risk records the event log has kept so far (for ``risk_records_since``)."""
        return int(getattr(self.system.first_of_kind("event_log"), "risk_record_count", 0))

    def risk_records_since(self, seen: int) -> tuple[list[Message], int]:
        """What the event log recorded (decisions, alerts, state and limit changes) since
        ``seen`` records; the count to pass next time."""
        log = self.system.first_of_kind("event_log")
        if log is None:
            return [], 0
        records: tuple[list[Message], int] = log.records_since(seen)  # type: ignore[attr-defined]
        return records

    def alerts(self) -> list[Alert]:
        log = self.system.first_of_kind("event_log")
        records = getattr(log, "risk_records", ())
        return [r for r in records if isinstance(r, Alert)]

    def journal_tail(self, n: int) -> list[dict[str, Any]]:
        if self.journal is None:
            raise ControlError("this configuration has no journal actor", status=409)
        records = list(read_journal(self.journal.directory))[-n:]  # type: ignore[attr-defined]
        return [msgspec.to_builtins(r) for r in records]

    def summary(self, status: dict[str, Any]) -> str:
        equity = status.get("equity")
        money = "n/a" if equity is None else f"{equity:,.2f} {status['currency']}"
        return (
            f"{status['state']} {status['trading_state']} | equity {money} | "
            f"orders {status['orders']:,} fills {status['fills']:,} "
            f"working {status['working_orders']} | ticks {status['ticks']:,}"
        )

    def health(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        lag = self.loop_lag_s
        limit = self.config.daemon.max_loop_lag_s
        checks["event_loop"] = {
            "ok": lag <= limit,
            "age_s": lag,
            "detail": f"lag {lag * 1e3:.1f} ms (limit {limit * 1e3:.0f} ms)",
        }
        if self.paced is not None:
            checks["feed"] = self._feed_check(self.paced)
        for actor in self.system.actors.values():
            if actor.critical or actor.broker_session:
                ok = actor.state is ActorState.RUNNING
                name = "broker" if actor.broker_session else f"actor:{actor.name}"
                checks[name] = {"ok": ok, "age_s": None, "detail": actor.state.value}
        if self.state != "ready":
            checks["daemon"] = {"ok": False, "age_s": None, "detail": f"daemon is {self.state}"}
        reasons = [f"{k}: {v['detail']}" for k, v in checks.items() if not v["ok"]]
        return {"healthy": not reasons, "reasons": reasons, "checks": checks}

    def _feed_check(self, paced: PacedReplay) -> dict[str, Any]:
        """Fresh when the last data came within ``feed_stale_after_s``."""
        last = paced.last_sent_ns
        age = None if last is None else (time.time_ns() - last) / _NS
        return {
            "ok": age is not None and age <= self.config.daemon.feed_stale_after_s,
            "age_s": age,
            "detail": "no data yet" if age is None else f"last data {age:.1f} s ago",
        }

    # --- what the controller does ----------------------------------------------------------

    async def deliver(self, msg: Message, target: Actor[Any] | None) -> None:
        """Send a control message: by way of the journal (write-ahead, which then forwards
        it on its wiring) when there is one, else straight to ``target`` (None: a record
        only, kept by the event log)."""
        if self.journal is not None and (target is None or isinstance(msg, _THROUGH_JOURNAL)):
            await self.journal.inbox.put(msg, Overflow.BLOCK)
            return
        if target is None:
            target = self.system.first_of_kind("event_log")
            if target is None:
                return
        await target.inbox.put(msg, Overflow.BLOCK)

    def reconfigure(self, actor: Actor[Any], config: ActorConfig) -> None:
        """New parameters for an actor: it starts again with them (between two messages:
        handlers never await), keeping what survives a restart (its book, ids used)."""
        actor.config = config
        actor.on_start()
        self.log.warning("actor reconfigured", actor=actor.name)

    # --- running ---------------------------------------------------------------------------

    def request_stop(self, why: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = why
            self.log.warning("stop requested", signal=why)
            self._stop.set()

    async def run(self) -> int:
        """Run until stopped; the exit status."""
        loop = asyncio.get_running_loop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        self.notifier.status("starting")
        server = None
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.supervisor.run(), name="supervisor")
                await self.supervisor.started()
                self.state = "recovering"
                self.notifier.status("recovering from the journal, reconciling with the broker")
                await self._recover()
                server = await self._serve()
                self.state = "ready"
                status = self.controller.read("status")
                self.notifier.ready(status["summary"])
                self.log.info("ready", state_dir=str(self.state_dir), summary=status["summary"])
                helpers = [
                    group.create_task(self._status_loop(), name="status"),
                    group.create_task(self._lag_loop(), name="loop-lag"),
                ]
                interval = watchdog_interval_s()
                if interval is not None:
                    helpers.append(
                        group.create_task(
                            watchdog_pinger(self.notifier, interval, self._alive), name="watchdog"
                        )
                    )
                feed_task = (
                    group.create_task(self.paced.run(), name="paced-feed")
                    if self.paced is not None
                    else None
                )
                await self._stop.wait()
                await self._stop_in_order(feed_task, helpers)
        except BaseExceptionGroup as exc:
            critical = exc.subgroup(CriticalActorFailed)
            if critical is not None:
                self.log.critical(
                    "critical actor failed; exiting", error=str(critical.exceptions[0])
                )
                return 70
            raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if server is not None:
                await server.close()
        self.log.info("stopped", reason=self.stop_reason)
        return 0

    async def _recover(self) -> None:
        """Rebuild from the journal and reconcile with the broker (adapters/recovery.py)
        before anyone may trade; a position that differs from the broker's halts trading."""
        journal = self.journal
        if journal is None:
            return
        last = journal.writer.last_seq  # type: ignore[attr-defined]
        records = [r for r in read_journal(journal.directory) if r.seq <= last]  # type: ignore[attr-defined]
        report, open_orders = rebuild(self.system, journal, records)
        brokers = [
            a for a in self.system.of_kind("sim_exchange") if getattr(a, "ledger", None) is not None
        ]
        if brokers:
            report = await reconcile(self.system, journal, brokers[0], records, report, open_orders)
        self.recovery = report
        self.log.info("recovered", **msgspec.to_builtins(report))
        if not report.positions_match:
            detail = ", ".join(
                f"{inst}: ours {ours:g}, the broker's {theirs:g}"
                for inst, (ours, theirs) in report.mismatches.items()
            )
            reason = f"positions differ from the broker's after recovery ({detail})"
            await self.deliver(
                SetTradingState(
                    state=TradingState.HALTED,
                    reason=reason,
                    origin="recovery",
                    ts_event=self.clock.now(),
                    ts_init=self.clock.now(),
                ),
                self.controller.gate,
            )
            self.supervisor.alert(
                AlertLevel.CRITICAL, rule="reconciliation", message=reason, action="halt"
            )

    async def _serve(self) -> Any:
        control = self.config.daemon.control
        tokens = self._tokens()
        app = build_app(self.controller, tokens=tokens, metrics=self._scrape)
        add_dashboard_routes(app, self.controller)
        tcp = None
        if control.tcp is not None:
            host, _, port = control.tcp.rpartition(":")
            tcp = (host, int(port))
        return await start_control_server(
            app, unix_path=self.state_dir / control.socket, tcp=tcp, tokens=tokens
        )

    def _tokens(self) -> dict[str, str]:
        control = self.config.daemon.control
        secret = credential(control.token_credential)
        if secret is None and control.token_file is not None:
            path = Path(control.token_file)
            path = path if path.is_absolute() else self.path.parent / path
            try:
                secret = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the control token: {exc}",
                    path="$.daemon.control.token_file",
                    file=str(self.path),
                ) from None
        return {control.token_credential: secret} if secret else {}

    def _alive(self) -> bool:
        if self.loop_lag_s > self.config.daemon.max_loop_lag_s:
            return False
        return all(
            a.state is not ActorState.FAULTED for a in self.system.actors.values() if a.critical
        )

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.status_interval_s)
            self.notifier.status(self.controller.read("status")["summary"])

    async def _lag_loop(self) -> None:
        """How late the event loop runs a callback that should run now: a blocked loop
        shows here (and stops the watchdog pings)."""
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.25)
            self.loop_lag_s = max(0.0, time.monotonic() - t0 - 0.25)
            self.metrics.set_event_loop_lag(self.loop_lag_s)
            self._watch_feed()

    def _watch_feed(self) -> None:
        """A feed gone stale (no data for ``feed_stale_after_s``) raises a WARNING alert,
        once; its return an INFO."""
        if self.paced is None or self.paced.last_sent_ns is None:
            return
        check = self._feed_check(self.paced)
        if self._feed_fresh and not check["ok"]:
            self._feed_fresh = False
            self.supervisor.alert(
                AlertLevel.WARNING,
                rule="feed_stale",
                message=f"market data is stale: {check['detail']}",
                action="notify",
            )
        elif not self._feed_fresh and check["ok"]:
            self._feed_fresh = True
            self.supervisor.alert(
                AlertLevel.INFO, rule="feed_fresh", message="market data flows again"
            )

    def _scrape(self) -> tuple[bytes, str]:
        """``GET /metrics``: the counters brought up to date, then rendered."""
        self._count_for_metrics()
        return self.metrics.render()

    def _count_for_metrics(self) -> None:
        """Move the Prometheus counters on by what happened since the last scrape."""
        counts = self.counts()
        seen = self._metric_counts
        for _ in range(counts.get("orders", 0) - seen.get("orders", 0)):
            self.metrics.order_sent()
        blotter = self.blotter()
        new_fills = counts.get("fills", 0) - seen.get("fills", 0)
        recent = list(blotter.fills)[:new_fills] if blotter is not None else []
        for fill in recent:
            self.metrics.fill(abs(fill["quantity"] * fill["price"]), fill["commission"])
        for _ in range(new_fills - len(recent)):
            self.metrics.fill()
        records, self._metric_records = self.risk_records_since(self._metric_records)
        for record in records:
            if isinstance(record, Alert):
                self.metrics.alert(record.level)
            elif isinstance(record, RiskDecision) and record.action == "deny":
                self.metrics.denied(record.rule)
        self._metric_counts = counts

    async def _stop_in_order(
        self, feed_task: asyncio.Task[None] | None, helpers: list[asyncio.Task[Any]]
    ) -> None:
        self.state = "stopping"
        self.notifier.stopping()
        timeout = self.config.daemon.stop_timeout_s
        deadline = time.monotonic() + timeout
        if feed_task is not None:
            feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed_task
        if self.config.daemon.on_stop == "cancel":
            working = self.controller.working_orders(None)
            if working:
                self.log.warning("cancelling working orders on stop", orders=len(working))
                with contextlib.suppress(ControlError):
                    await self.controller.cancel_orders(working)
                    await self.controller.wait_for(
                        lambda: not self.controller.working_orders(None),
                        max(0.1, deadline - time.monotonic() - 1.0),
                        "the cancels on stop",
                    )
        remaining = max(0.5, deadline - time.monotonic())
        sources = [self.feed] if self.feed is not None else []
        await self.supervisor.stop(sources=sources, drain_timeout_s=remaining)
        for task in helpers:
            task.cancel()
        for task in helpers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reload(self) -> bool:
        """SIGHUP: read the configuration again; apply new limits and strategy parameters
        when every part of it checks out, else keep everything as it is."""
        self.notifier.reloading()
        try:
            fresh = load_config(self.path, overrides=self.overrides or None)
            changes = self._changes(fresh)
        except (ConfigError, msgspec.ValidationError, ValueError, OSError) as exc:
            self.reload_errors += 1
            self.log.error("reload refused; the running configuration is kept", error=str(exc))
            await self._alert(AlertLevel.WARNING, "reload_refused", f"reload refused: {exc}")
            self.notifier.ready(self.controller.read("status")["summary"])
            return False
        for apply in changes:
            await apply()
        self.reloads += 1
        self.log.warning("configuration reloaded", changes=len(changes))
        self.notifier.ready(self.controller.read("status")["summary"])
        return True

    def _changes(self, fresh: SystemConfig) -> list[Callable[[], Any]]:
        """What to change, every part checked before anything is applied."""
        changes: list[Callable[[], Any]] = []
        if set(fresh.actors) != set(self.config.actors) or fresh.edges != self.config.edges:
            raise ValueError(
                "actors or edges changed; a reload changes only limits and strategy "
                "parameters (restart the daemon for the rest)"
            )
        strategies = {a.name for a in self.controller.strategies()}
        for name, actor in self.system.actors.items():
            section = fresh.actors[name]
            if section.get("kind") != actor.config.kind:
                raise ValueError(f"actor {name}: its kind cannot change on reload")
            new = self.system.build_config(name, section)
            if actor.config.kind == "risk_gate":
                # the limits may live in a file whose name did not change: compare them
                limits = _gate_limits(actor, new)
                if limits != actor.risk.limits:  # type: ignore[attr-defined]
                    now = self.clock.now()
                    msg = SetLimits(
                        limits=limits,
                        reason="reload (SIGHUP)",
                        origin="sighup",
                        ts_event=now,
                        ts_init=now,
                    )

                    async def set_limits(msg: SetLimits = msg, actor: Actor[Any] = actor) -> None:
                        await self.deliver(msg, actor)

                    changes.append(set_limits)
            elif section == self.config.actors[name] or actor.config.kind == "risk_monitor":
                continue  # the monitor takes new limits from the gate
            elif name in strategies:

                async def reconfigure(actor: Actor[Any] = actor, new: ActorConfig = new) -> None:
                    self.reconfigure(actor, new)

                changes.append(reconfigure)
            else:
                raise ValueError(
                    f"actor {name} changed; a reload changes only limits and strategy "
                    "parameters (restart the daemon for the rest)"
                )
        self.config = fresh
        return changes

    async def _alert(self, level: AlertLevel, rule: str, message: str) -> None:
        self.supervisor.alert(level, rule=rule, message=message, action="none")


def _gate_limits(gate: Actor[Any], config: Any) -> LimitsConfig:
    limits: LimitsConfig = resolve_limits(config.limits, config.limits_file, gate.ctx.base_dir)
    return limits
