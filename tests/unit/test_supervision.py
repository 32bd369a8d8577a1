"""Supervision: restarts with back-off, restart budgets, critical actors, cancellation and
the orderly stop, with small actors defined here and wired by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest

from actors.risk_gate import RiskGate, RiskGateConfig
from adapters.sim_exchange import SimExchange
from engine.actor import STOP, Actor, ActorConfig, ActorState, RunContext
from engine.clock import Clock, LiveClock, ReplayClock
from engine.config import AccountConfig
from engine.errors import CriticalActorFailed
from engine.instruments import Instrument, InstrumentTable
from engine.mailbox import Edge, Overflow
from engine.messages import (
    AlertLevel,
    Signal,
    TradingState,
    TradingStateChanged,
)
from engine.supervisor import Supervisor
from tests.helpers import eventually

# --- test actors -------------------------------------------------------------------------


class NodeConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str = "test"
    fail_on: list[float] = []
    """Values of ``Signal.value`` on which ``on_message`` raises."""
    fail_always: bool = False


class Node(Actor[NodeConfig]):
    """Forwards every message on ``out``, records what it handled, and raises where told.

    ``seen`` and ``journal`` live outside the working state (``on_start`` does not reset
    them), so a test can see everything across restarts.
    """

    Config = NodeConfig
    outputs: ClassVar[tuple[str, ...]] = ("out",)

    def __init__(self, name: str, config: NodeConfig, ctx: RunContext, journal: list[str]) -> None:
        super().__init__(name, config, ctx)
        self.seen: list[Any] = []
        self.journal = journal
        self.starts = 0
        self.start_times: list[float] = []
        self.crash_times: list[float] = []

    def on_start(self) -> None:
        self.starts += 1
        self.start_times.append(asyncio.get_running_loop().time())
        self.journal.append(f"start {self.name}")

    def on_message(self, msg: Any) -> None:
        value = getattr(msg, "value", None)
        if self.config.fail_always or value in self.config.fail_on:
            self.crash_times.append(asyncio.get_running_loop().time())
            raise RuntimeError(f"{self.name} cannot handle {value}")
        self.seen.append(msg)
        self.emit("out", msg)

    def on_stop(self) -> None:
        self.journal.append(f"stop {self.name}")


class CriticalNode(Node):
    critical_by_default = True


def signal(n: int) -> Signal:
    return Signal(
        strategy_id="t", instrument_id="A.SIM", name="n", value=float(n), ts_event=n, ts_init=n
    )


def values(actor: Node) -> list[float]:
    return [m.value for m in actor.seen if isinstance(m, Signal)]


class World:
    """Actors on one run context, wired by hand, and a supervisor for them."""

    def __init__(self, clock: Clock) -> None:
        instruments = InstrumentTable(
            [Instrument(id="A.SIM", asset_class="fx", quote_currency="USD", price_increment=0.01)]
        )
        self.ctx = RunContext(
            clock, instruments, AccountConfig(currency="USD", starting_balance=1_000.0)
        )
        self.clock = clock
        self.journal: list[str] = []
        self.actors: list[Actor[Any]] = []
        self.supervisor: Supervisor | None = None
        self.task: asyncio.Task[None] | None = None

    def node(self, name: str, cls: type[Node] = Node, **config: Any) -> Node:
        actor = cls(name, NodeConfig(**config), self.ctx, self.journal)
        self.actors.append(actor)
        return actor

    def add(self, actor: Actor[Any]) -> Actor[Any]:
        self.actors.append(actor)
        return actor

    @staticmethod
    def wire(
        source: Actor[Any], port: str, target: Actor[Any], policy: Overflow = Overflow.BLOCK
    ) -> None:
        source.ports[port].append(Edge(f"{source.name}.{port}", target.inbox, policy))

    async def start(self, start_order: list[Actor[Any]], **kwargs: Any) -> Supervisor:
        self.supervisor = Supervisor(start_order, self.clock, self.ctx.quiescence, **kwargs)
        self.task = asyncio.create_task(self.supervisor.run())
        await asyncio.wait_for(self.supervisor.started(), 2.0)
        return self.supervisor

    async def shutdown(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def worlds() -> AsyncIterator[Callable[[Clock], World]]:
    made: list[World] = []

    def make(clock: Clock) -> World:
        w = World(clock)
        made.append(w)
        return w

    yield make
    for w in made:
        await w.shutdown()


def feed(actor: Actor[Any], msgs: list[Any]) -> None:
    for m in msgs:
        actor.inbox.put_nowait(m)


# --- restarts ----------------------------------------------------------------------------


async def test_a_crashing_strategy_is_restarted_and_the_others_keep_running(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    feed_actor = w.node("feed")
    strategy = w.node("strategy", fail_on=[3.0])
    monitor = w.node("monitor")
    orders = w.node("orders")
    w.wire(feed_actor, "out", strategy)
    w.wire(feed_actor, "out", monitor)
    w.wire(strategy, "out", orders)
    sup = await w.start([orders, monitor, strategy, feed_actor])

    feed(feed_actor, [signal(n) for n in range(1, 8)])
    await asyncio.wait_for(w.ctx.quiescence.wait(), 2.0)

    assert strategy.stats.restarts == 1
    assert strategy.stats.errors == 1
    assert strategy.state is ActorState.RUNNING
    assert strategy.starts == 2, "a restart runs on_start again"
    assert values(strategy) == [1, 2, 4, 5, 6, 7], "messages after the crash are handled"
    assert values(orders) == [1, 2, 4, 5, 6, 7]
    assert values(monitor) == [1, 2, 3, 4, 5, 6, 7], "a sibling must receive everything"
    assert monitor.stats.restarts == 0

    assert [a.level for a in sup.alerts] == [AlertLevel.WARNING]
    alert = sup.alerts[0]
    assert alert.rule == "actor_restart"
    assert "strategy" in alert.message
    assert "cannot handle 3.0" in alert.message
    assert "restart 1 of 3" in alert.message
    assert strategy.snapshot()["restarts"] == 1

    assert await sup.stop(sources=[feed_actor], drain_timeout_s=2.0)
    await asyncio.wait_for(w.task, 2.0)  # type: ignore[arg-type]


async def test_past_its_budget_an_actor_is_faulted_its_inbox_closed_and_senders_go_on(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    source = w.node("source")
    broken = w.node("broken", fail_always=True, restart_budget=2, inbox=1)
    healthy = w.node("healthy", inbox=1)
    w.wire(source, "out", broken)  # BLOCK: the source would hang on a dead inbox
    w.wire(source, "out", healthy)
    sup = await w.start([healthy, broken, source])

    feed(source, [signal(n) for n in range(1, 11)])
    await asyncio.wait_for(w.ctx.quiescence.wait(), 2.0)

    assert broken.state is ActorState.FAULTED
    assert broken.stats.restarts == 2
    assert broken.stats.errors == 3
    assert broken.inbox.closed
    snap = broken.snapshot()
    assert snap["state"] == "FAULTED"
    assert snap["processed"] + snap["dropped"] == 10, "every message handled or counted"
    assert snap["processed"] == 3

    assert source.stats.processed == 10, "the sender was left waiting on a faulted actor"
    assert values(healthy) == list(range(1, 11))
    assert healthy.state is ActorState.RUNNING

    levels = [a.level for a in sup.alerts]
    assert levels == [AlertLevel.WARNING, AlertLevel.WARNING, AlertLevel.ERROR]
    final = sup.alerts[-1]
    assert final.rule == "restart_budget_spent"
    assert "broken" in final.message
    assert final.action == "stopped"

    # the rest still works after the fault, and stops in order
    feed(source, [signal(11)])
    await eventually(lambda: values(healthy)[-1:] == [11])
    assert await sup.stop(sources=[source], drain_timeout_s=2.0)
    await asyncio.wait_for(w.task, 2.0)  # type: ignore[arg-type]
    assert healthy.state is ActorState.STOPPED


async def test_crashes_outside_the_restart_window_do_not_use_up_the_budget(
    worlds: Callable[[Clock], World],
) -> None:
    clock = ReplayClock()
    w = worlds(clock)
    flaky = w.node("flaky", fail_always=True, restart_budget=1, restart_window_s=1.0)
    sup = await w.start([flaky])

    for n in range(1, 4):
        feed(flaky, [signal(n)])
        await asyncio.wait_for(w.ctx.quiescence.wait(), 2.0)
        clock.set_time(clock.now() + 2_000_000_000)  # 2 s later: the last crash has aged out

    assert flaky.state is ActorState.RUNNING
    assert flaky.stats.restarts == 3
    assert [a.level for a in sup.alerts] == [AlertLevel.WARNING] * 3


# --- critical actors ---------------------------------------------------------------------


def risk_gate(w: World) -> RiskGate:
    gate = RiskGate("risk", RiskGateConfig(kind="risk_gate"), w.ctx)
    w.add(gate)
    return gate


async def test_a_critical_crash_halts_trading_and_past_its_budget_ends_the_run(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    router = w.node("router", cls=CriticalNode, fail_always=True, restart_budget=1)
    gate = risk_gate(w)
    events = w.node("events")
    bystander = w.node("bystander")
    w.wire(gate, "events", events)
    sup = await w.start([events, bystander, gate, router], trading_state_owner=gate)
    assert router.critical
    assert gate.risk.state is TradingState.ACTIVE

    feed(router, [signal(1)])
    changed = await eventually(
        lambda: [m for m in events.seen if isinstance(m, TradingStateChanged)]
    )
    assert gate.risk.state is TradingState.HALTED
    assert [(c.previous, c.state, c.origin) for c in changed] == [
        (TradingState.ACTIVE, TradingState.HALTED, "supervisor")
    ]
    assert "router" in changed[0].reason
    assert router.state is ActorState.RUNNING, "first crash of a critical actor: restarted"
    assert router.stats.restarts == 1
    assert [(a.level, a.rule) for a in sup.alerts] == [
        (AlertLevel.CRITICAL, "critical_actor_crash"),
        (AlertLevel.WARNING, "actor_restart"),
    ]

    feed(router, [signal(2)])
    assert w.task is not None
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(w.task, 2.0)
    # the TaskGroup wraps it: exactly one error, the critical failure, caused by the crash
    group = caught.value
    assert len(group.exceptions) == 1
    failure = group.exceptions[0]
    assert isinstance(failure, CriticalActorFailed)
    assert failure.actor == "router"
    assert isinstance(failure.cause, RuntimeError)
    assert "router cannot handle 2.0" in str(failure)
    assert failure.__cause__ is failure.cause

    assert router.state is ActorState.FAULTED
    assert router.inbox.closed
    assert sup.alerts[-1].level is AlertLevel.CRITICAL
    assert sup.alerts[-1].action == "exit"
    assert "router" in sup.alerts[-1].message
    # the others were cancelled, not stopped
    for name in ("events", "bystander", "risk"):
        assert sup._tasks[name].cancelled(), f"{name} was not cancelled"
    assert "stop bystander" not in w.journal


async def test_critical_is_a_config_choice_too(worlds: Callable[[Clock], World]) -> None:
    w = worlds(ReplayClock())
    journal = w.node("journal", critical=True, fail_always=True, restart_budget=0)
    relaxed = w.node("relaxed_gate", cls=CriticalNode, critical=False)
    assert journal.critical
    assert not relaxed.critical
    await w.start([relaxed, journal])
    feed(journal, [signal(1)])
    assert w.task is not None
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(w.task, 2.0)
    assert [type(e) for e in caught.value.exceptions] == [CriticalActorFailed]


async def test_a_restarted_risk_gate_comes_back_halted(worlds: Callable[[Clock], World]) -> None:
    """The real gate as the crashing critical actor: it halts itself on restart."""

    class FragileGate(RiskGate):
        def on_message(self, msg: Any) -> None:
            if isinstance(msg, Signal):
                raise RuntimeError("bad message")
            super().on_message(msg)

    w = worlds(ReplayClock())
    gate = FragileGate("risk", RiskGateConfig(kind="risk_gate"), w.ctx)
    w.add(gate)
    sup = await w.start([gate], trading_state_owner=gate)
    feed(gate, [signal(1)])
    await eventually(lambda: gate.stats.restarts == 1)
    await asyncio.wait_for(w.ctx.quiescence.wait(), 2.0)
    assert gate.risk.state is TradingState.HALTED
    assert gate.state is ActorState.RUNNING
    assert [a.level for a in sup.alerts] == [AlertLevel.CRITICAL, AlertLevel.WARNING]


# --- back-off ----------------------------------------------------------------------------


async def test_restart_back_off_waits_in_real_time_on_a_live_clock_and_doubles(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(LiveClock())
    flaky = w.node("flaky", fail_on=[1.0, 2.0], backoff_initial_s=0.03, backoff_max_s=1.0)
    await w.start([flaky])
    feed(flaky, [signal(1), signal(2), signal(3)])
    await eventually(lambda: values(flaky) == [3], timeout=3.0)

    assert flaky.stats.restarts == 2
    first = flaky.start_times[1] - flaky.crash_times[0]
    second = flaky.start_times[2] - flaky.crash_times[1]
    assert first >= 0.03, f"restarted after {first:.4f}s, back-off is 0.03s"
    assert second >= 0.06, f"second restart after {second:.4f}s, back-off doubles to 0.06s"


async def test_restart_back_off_is_capped(worlds: Callable[[Clock], World]) -> None:
    w = worlds(LiveClock())
    flaky = w.node(
        "flaky", fail_on=[1.0, 2.0], backoff_initial_s=0.02, backoff_max_s=0.02, restart_budget=5
    )
    await w.start([flaky])
    feed(flaky, [signal(1), signal(2), signal(3)])
    await eventually(lambda: values(flaky) == [3], timeout=3.0)
    second = flaky.start_times[2] - flaky.crash_times[1]
    assert 0.02 <= second < 0.5, f"capped back-off took {second:.4f}s"


async def test_restart_back_off_takes_no_time_in_a_replay(
    worlds: Callable[[Clock], World],
) -> None:
    clock = ReplayClock(start_ns=1_000)
    w = worlds(clock)
    flaky = w.node("flaky", fail_on=[1.0], backoff_initial_s=60.0)
    await w.start([flaky])
    feed(flaky, [signal(1), signal(2)])
    # with a minute of back-off in real time this would time out
    await eventually(lambda: values(flaky) == [2], timeout=2.0)
    assert flaky.stats.restarts == 1
    assert clock.now() == 1_000, "a restart must not spend virtual time"


# --- cancellation ------------------------------------------------------------------------


async def test_cancelling_the_supervisor_ends_it_and_its_actors(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    a = w.node("a")
    b = w.node("b")
    sup = await w.start([a, b])
    assert w.task is not None
    w.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(w.task, 2.0)
    assert w.task.cancelled()
    assert all(t.cancelled() for t in sup._tasks.values())


async def test_cancelling_during_a_restart_back_off_is_not_swallowed(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(LiveClock())
    flaky = w.node("flaky", fail_always=True, backoff_initial_s=60.0, backoff_max_s=60.0)
    await w.start([flaky])
    feed(flaky, [signal(1)])
    await eventually(lambda: flaky.state is ActorState.RESTARTING)
    assert w.task is not None
    w.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(w.task, 2.0)
    assert flaky.stats.restarts == 0


# --- orderly stop ------------------------------------------------------------------------


async def test_stop_stops_sources_first_drains_then_the_rest_in_reverse_start_order(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    source = w.node("source")
    strategy = w.node("strategy", inbox=2)
    risk = w.node("risk", inbox=2)
    journal = w.node("journal", inbox=2)
    w.wire(source, "out", strategy)
    w.wire(strategy, "out", risk)
    w.wire(risk, "out", journal)
    sup = await w.start([journal, risk, strategy, source])
    assert w.journal == ["start journal", "start risk", "start strategy", "start source"]
    w.journal.clear()

    n = 200
    feed(source, [signal(i) for i in range(n)])
    drained = await asyncio.wait_for(sup.stop(sources=[source], drain_timeout_s=2.0), 5.0)
    await asyncio.wait_for(w.task, 2.0)  # type: ignore[arg-type]

    assert drained is True
    assert values(journal) == list(range(n)), "messages queued before the stop were lost"
    assert w.journal == ["stop source", "stop strategy", "stop risk", "stop journal"]
    assert all(a.state is ActorState.STOPPED for a in (source, strategy, risk, journal))
    assert w.ctx.quiescence.pending == 0


async def test_stop_drains_order_traffic_waiting_on_replay_timers(
    worlds: Callable[[Clock], World],
) -> None:
    """A venue with latency holds orders on drain timers; stop must let them arrive."""

    class LatentVenue(Node):
        def on_message(self, msg: Any) -> None:
            if isinstance(msg, Signal):
                self.timer_at(self.clock.now() + 1_000, f"arrive-{msg.value}", msg, drain=True)
            else:
                super().on_message(msg.payload)

    clock = ReplayClock()
    w = worlds(clock)
    venue = w.node("venue", cls=LatentVenue)
    fills = w.node("fills")
    w.wire(venue, "out", fills)
    sup = await w.start([fills, venue])
    feed(venue, [signal(i) for i in range(5)])
    await asyncio.wait_for(w.ctx.quiescence.wait(), 2.0)
    assert clock.pending_drain_timers() == 5

    assert await asyncio.wait_for(sup.stop(sources=[], drain_timeout_s=2.0), 5.0)
    assert values(fills) == [0, 1, 2, 3, 4]
    assert clock.pending_drain_timers() == 0
    assert w.journal[-2:] == ["stop venue", "stop fills"]


async def test_stop_times_out_and_says_so_when_an_actor_cannot_drain(
    worlds: Callable[[Clock], World],
) -> None:
    class Stalled(Node):
        """Takes no message until ``gate`` is set."""

        def on_start(self) -> None:
            super().on_start()
            self.gate = getattr(self, "gate", asyncio.Event())

        async def run_loop(self) -> None:
            await self.gate.wait()
            await super().run_loop()

    w = worlds(ReplayClock())
    stalled = w.node("stalled", cls=Stalled)
    sup = await w.start([stalled])
    feed(stalled, [signal(1)])

    stopping = asyncio.create_task(sup.stop(sources=[], drain_timeout_s=0.05))
    # the stop request is queued only after the drain has given up
    await eventually(lambda: STOP in stalled.inbox.items, timeout=2.0)
    assert not stopping.done()
    stalled.gate.set()  # type: ignore[attr-defined]
    drained = await asyncio.wait_for(stopping, 2.0)

    assert drained is False
    assert values(stalled) == [1], "a message queued before the stop is still handled"
    assert stalled.state is ActorState.STOPPED


async def test_a_source_that_faults_while_stopping_does_not_break_the_drain(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    source = w.node("source", fail_always=True, restart_budget=0)
    sink = w.node("sink")
    w.wire(source, "out", sink)
    sup = await w.start([sink, source])
    feed(source, [signal(1)])
    # awaited directly, so the stop request is queued behind the message before it runs
    drained = await sup.stop(sources=[source], drain_timeout_s=0.2)
    assert w.ctx.quiescence.pending >= 0
    assert drained is True


# --- broker sessions ---------------------------------------------------------------------


class BrokerNode(Node):
    broker_session = True


async def test_a_lost_broker_session_raises_disconnected_then_reconnected(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    broker = w.node("broker", BrokerNode, fail_on=[2.0], restart_budget=1)
    sup = await w.start([broker])
    feed(broker, [signal(n) for n in (1, 2, 3)])
    await asyncio.wait_for(w.ctx.quiescence.wait(), 2.0)

    assert [(a.level, a.rule, a.action) for a in sup.alerts] == [
        (AlertLevel.ERROR, "broker_disconnected", "reconnect"),
        (AlertLevel.WARNING, "actor_restart", "restart"),
        (AlertLevel.INFO, "broker_reconnected", "resume"),
    ]
    assert "broker session broker lost" in sup.alerts[0].message
    assert "cannot handle 2.0" in sup.alerts[0].message
    assert values(broker) == [1, 3], "what waited in its inbox is handled once it is back"

    # a second crash within the window spends the budget: down for good, and said so
    feed(broker, [signal(2)])
    await eventually(lambda: broker.state is ActorState.FAULTED)
    last = sup.alerts[-2:]
    assert [(a.level, a.rule, a.action) for a in last] == [
        (AlertLevel.ERROR, "broker_disconnected", "none"),
        (AlertLevel.ERROR, "restart_budget_spent", "stopped"),
    ]
    assert "restart budget is spent" in last[0].message


async def test_an_actor_without_a_broker_session_raises_no_broker_alert(
    worlds: Callable[[Clock], World],
) -> None:
    w = worlds(ReplayClock())
    node = w.node("router", fail_on=[1.0])
    sup = await w.start([node])
    feed(node, [signal(1)])
    await asyncio.wait_for(w.ctx.quiescence.wait(), 2.0)
    assert [a.rule for a in sup.alerts] == ["actor_restart"]


def test_the_simulated_exchange_holds_a_broker_session() -> None:
    assert SimExchange.broker_session
    assert not Node.broker_session
