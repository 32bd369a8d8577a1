"""Supervision: owning the actor tasks, restarting the ones that crash, stopping in order.

- Every actor runs as a task in one ``asyncio.TaskGroup`` owned by the supervisor.
- An actor whose hook raises is restarted (``on_stop`` then ``on_start``; its inbox is
  kept, the message that failed is counted as an error) after a back-off that doubles,
  as long as it has crashed fewer than ``restart_budget`` times within
  ``restart_window_s``. Each crash raises a WARNING alert.
- Past the budget the actor stays stopped (FAULTED), its inbox is closed so that nobody
  waits on it, and an ERROR alert is raised.
- A critical actor (risk gate, router, journal) that crashes halts trading at once: the
  supervisor sends ``SetTradingState(HALTED)`` to the actor that owns the trading state
  and raises a CRITICAL alert (``critical_actor_crash``), on which the risk monitor
  flattens the book (``flatten_on_system_failure``).
  Past its budget it raises :class:`~engine.errors.CriticalActorFailed`, which ends the
  run; the daemon then exits non-zero so that systemd restarts it.
- An actor that holds a broker session (``broker_session``) that crashes means the broker
  is disconnected: an ERROR alert (``broker_disconnected``) as it goes down, an INFO one
  (``broker_reconnected``) when its restart brings it back.
- ``CancelledError`` is never swallowed.

Start order is sinks first (``start_order``); stop is the reverse: sources stop first,
then the supervisor waits until every inbox is empty and no order traffic is pending on a
timer (bounded by ``drain_timeout_s``), then stops the others one by one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from engine.actor import Actor, ActorState
from engine.clock import NANOS_PER_SECOND, Clock, ReplayClock, pause
from engine.errors import CriticalActorFailed
from engine.mailbox import STOP, Quiescence
from engine.messages import Alert, AlertLevel, SetTradingState, TradingState

__all__ = ["Supervisor"]

AlertSink = Callable[[Alert], None]


class Supervisor:
    """Runs a set of wired actors. ``actors`` is in start order (sinks first)."""

    def __init__(
        self,
        actors: Sequence[Actor[Any]],
        clock: Clock,
        quiescence: Quiescence,
        *,
        trading_state_owner: Actor[Any] | None = None,
        alert_sinks: Sequence[Actor[Any]] = (),
    ) -> None:
        self.actors = list(actors)
        self.clock = clock
        self.quiescence = quiescence
        self.trading_state_owner = trading_state_owner
        self.alert_sinks = list(alert_sinks)
        self.alerts: list[Alert] = []
        self.log = structlog.get_logger("tradingd").bind(component="supervisor")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashes: dict[str, deque[int]] = {}
        self._started = asyncio.Event()
        self._stopping = False

    # --- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Start every actor and return when all have stopped (or raise on a critical
        failure past its budget, after cancelling the rest)."""
        async with asyncio.TaskGroup() as group:
            for actor in self.actors:
                actor.on_start()
                actor.state = ActorState.RUNNING
                self._tasks[actor.name] = group.create_task(
                    self._supervise(actor), name=f"actor:{actor.name}"
                )
            self._started.set()

    async def started(self) -> None:
        await self._started.wait()

    async def _supervise(self, actor: Actor[Any]) -> None:
        while True:
            try:
                await actor.run_loop()
            except Exception as exc:
                delay = self.crashed(actor, exc)
                if delay is None:
                    await actor.join_tasks()
                    return
                await pause(self.clock, delay)
                self.restart(actor)
                continue
            actor.state = ActorState.STOPPED
            actor.cancel_all_timers()
            try:
                actor.on_stop()
            finally:
                await actor.join_tasks()  # what on_stop asked to finish
            return

    def crashed(self, actor: Actor[Any], exc: Exception) -> float | None:
        """Apply the restart policy to a crash: the back-off before restarting, or None if
        the actor is given up (FAULTED). Raises CriticalActorFailed for a critical actor
        past its budget. Shared by every executor, so a crash means the same everywhere."""
        config = actor.config
        window_ns = int(config.restart_window_s * NANOS_PER_SECOND)
        crashes = self._crashes.setdefault(actor.name, deque())
        now = self.clock.now()
        while crashes and now - crashes[0] > window_ns:
            crashes.popleft()
        self.log.error(
            "actor crashed",
            actor=actor.name,
            error=repr(exc),
            crashes_in_window=len(crashes) + 1,
            exc_info=exc,
        )
        if actor.critical:
            reason = f"critical actor {actor.name} crashed: {exc!r}"
            self._halt_trading(reason)
            self.alert(
                AlertLevel.CRITICAL,
                rule="critical_actor_crash",
                message=f"{reason}; trading HALTED",
                action="halt",
            )
        giving_up = len(crashes) >= config.restart_budget
        if actor.broker_session:
            self.alert(
                AlertLevel.ERROR,
                rule="broker_disconnected",
                message=f"broker session {actor.name} lost ({exc!r}); "
                + (
                    "its restart budget is spent, so it stays down"
                    if giving_up
                    else "orders wait in its inbox until it is back"
                ),
                action="none" if giving_up else "reconnect",
            )
        if giving_up:
            self._give_up(actor, exc)
            if actor.critical:
                raise CriticalActorFailed(actor.name, exc) from exc
            return None
        crashes.append(now)
        actor.state = ActorState.RESTARTING
        self.alert(
            AlertLevel.WARNING,
            rule="actor_restart",
            message=(
                f"actor {actor.name} crashed ({exc!r}); restart "
                f"{len(crashes)} of {config.restart_budget}"
            ),
            action="restart",
        )
        n = len(crashes)
        return float(min(config.backoff_initial_s * 2 ** (n - 1), config.backoff_max_s))

    def restart(self, actor: Actor[Any]) -> None:
        """``on_stop`` (errors logged), cancel its timers, ``on_start``; the inbox is kept."""
        try:
            actor.on_stop()
        except Exception as stop_exc:
            self.log.warning(
                "on_stop failed during restart", actor=actor.name, error=repr(stop_exc)
            )
        actor.cancel_all_timers()
        actor.on_start()
        actor.stats.restarts += 1
        actor.state = ActorState.RUNNING
        if actor.broker_session:
            self.alert(
                AlertLevel.INFO,
                rule="broker_reconnected",
                message=f"broker session {actor.name} is back",
                action="resume",
            )

    def _give_up(self, actor: Actor[Any], exc: BaseException) -> None:
        actor.state = ActorState.FAULTED
        actor.cancel_all_timers()
        discarded = actor.inbox.close()
        try:
            actor.on_stop()
        except Exception as stop_exc:
            self.log.warning("on_stop failed after fault", actor=actor.name, error=repr(stop_exc))
        self.alert(
            AlertLevel.CRITICAL if actor.critical else AlertLevel.ERROR,
            rule="restart_budget_spent",
            message=(
                f"actor {actor.name} stopped for good after {actor.config.restart_budget} "
                f"restarts within {actor.config.restart_window_s:g}s; last error {exc!r}; "
                f"{discarded} queued messages discarded"
            ),
            action="exit" if actor.critical else "stopped",
        )

    def _halt_trading(self, reason: str) -> None:
        owner = self.trading_state_owner
        if owner is None or owner.state is ActorState.FAULTED:
            return
        now = self.clock.now()
        owner.inbox.put_nowait(
            SetTradingState(
                state=TradingState.HALTED,
                reason=reason,
                origin="supervisor",
                ts_event=now,
                ts_init=now,
            )
        )

    def alert(self, level: AlertLevel, *, rule: str, message: str, action: str = "") -> None:
        now = self.clock.now()
        alert = Alert(
            level=level,
            source="supervisor",
            rule=rule,
            message=message,
            action=action,
            ts_event=now,
            ts_init=now,
        )
        self.alerts.append(alert)
        self.log.log(int(level), "alert", rule=rule, alert_message=message, action=action)
        for sink in self.alert_sinks:
            if sink.state is ActorState.RUNNING:
                sink.inbox.put_nowait(alert)

    # --- stopping ------------------------------------------------------------------------

    async def stop(self, sources: Sequence[Actor[Any]] = (), drain_timeout_s: float = 10.0) -> bool:
        """Stop in order: ``sources`` first, then drain, then the rest in reverse start
        order. Returns False if draining timed out (what was still queued is logged)."""
        self._stopping = True
        source_names = {a.name for a in sources}
        for actor in sources:
            await self._stop_one(actor)
        drained = await self._drain(drain_timeout_s)
        for actor in reversed(self.actors):
            if actor.name not in source_names:
                await self._stop_one(actor)
        return drained

    async def _drain(self, timeout_s: float) -> bool:
        async def quiet_and_no_order_timers() -> None:
            clock = self.clock
            while True:
                await self.quiescence.wait()
                if not clock.pending_drain_timers():
                    return
                if isinstance(clock, ReplayClock):
                    clock.fire_next()
                else:
                    await pause(clock, 0.001)  # orders still travelling to a venue

        try:
            await asyncio.wait_for(quiet_and_no_order_timers(), timeout_s)
            return True
        except TimeoutError:
            self.log.error(
                "stop: order traffic did not drain in time",
                timeout_s=timeout_s,
                queued={a.name: a.inbox.size for a in self.actors if a.inbox.size},
                orders_in_flight=self.clock.pending_drain_timers(),
            )
            return False

    async def _stop_one(self, actor: Actor[Any]) -> None:
        task = self._tasks.get(actor.name)
        if task is None or task.done():
            return
        actor.inbox.put_nowait(STOP, counted=False)
        await asyncio.shield(task)
