"""Inline execution: the actors of a replay driven in one task, deterministically.

In live and paper trading every actor is an asyncio task (:class:`~engine.supervisor.
Supervisor`). In a replay nothing runs concurrently anyway (virtual time waits for the
system to be quiet), so the per-message task switch is pure cost. The inline dispatcher
runs the same actors the same way without it:

- an actor whose inbox receives a message becomes ready; ready actors are run in the
  order they became ready, each until its inbox is empty;
- a send that finds a full inbox (block or conflate edge) is held, and the sender is
  not given another message until it is delivered; the receivers run meanwhile, exactly
  as the sender's task would wait in ``put``. A cycle of full inboxes is a deadlock and
  is reported as such rather than hanging;
- a crash goes through the supervisor's restart policy (``Supervisor.crashed``), so
  restarts, budgets, alerts, halting on a critical actor and the final
  ``CriticalActorFailed`` are the same as with tasks; restarts take no virtual time.

Same inboxes, edges, overflow policies, counters and hooks as the task executor; a test
shows the two give byte-identical journals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from engine.actor import Actor, ActorState
from engine.clock import ReplayClock, stopwatch_ns
from engine.errors import TradingdError
from engine.mailbox import _DEAD, _Slot
from engine.supervisor import Supervisor

__all__ = ["DeadlockError", "InlineDispatcher"]


class DeadlockError(TradingdError):
    """Every ready actor waits on a full inbox of another: nothing can move."""

    code = "DEADLOCK"


class InlineDispatcher:
    """Runs ``supervisor``'s actors inline, in one task. Call :meth:`start`, then
    :meth:`run_until_quiet` whenever messages were sent in, then :meth:`stop`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.actors = supervisor.actors
        self.ready: deque[Actor[Any]] = deque()

    def _waker(self, actor: Actor[Any]) -> Any:
        append = self.ready.append

        def wake() -> None:
            if not actor._ready:
                actor._ready = True
                append(actor)

        return wake

    def start(self) -> None:
        for actor in self.actors:
            actor.inbox.wakeup = self._waker(actor)
            actor.on_start()
            actor.state = ActorState.RUNNING
        for actor in self.actors:
            if actor.inbox.size:
                actor.inbox.wakeup()  # type: ignore[misc]

    def run_until_quiet(self) -> None:
        """Handle messages until every inbox is empty and nothing is held."""
        ready = self.ready
        running = ActorState.RUNNING  # looked up once: enum members are slow to reach
        drain = self._drain
        stalled = 0
        while ready:
            actor = ready.popleft()
            actor._ready = False
            if actor.state is not running and not actor._staged:
                continue
            if drain(actor):
                stalled = 0
                continue
            # held sends: let the receivers run first
            stalled += 1
            actor._ready = True
            ready.append(actor)
            if stalled > len(ready) + 1:
                held = {a.name: [e.target.owner for e, _ in a._staged] for a in ready if a._staged}
                raise DeadlockError(f"actors wait on each other's full inboxes: {held}")

    def _deliver(self, actor: Actor[Any]) -> bool:
        staged = actor._staged
        i = 0
        n = len(staged)
        while i < n:
            edge, msg = staged[i]
            if not edge.offer(msg):
                break
            i += 1
        del staged[:i]
        return not staged

    def _drain(self, actor: Actor[Any]) -> bool:
        """Run ``actor`` until its inbox is empty (True) or a send is held (False)."""
        inbox = actor.inbox
        quiescence = inbox.quiescence
        staged = actor._staged
        stats = actor.stats
        if staged:
            if not self._deliver(actor):
                return False
            quiescence.done()  # the message whose sends were held is now finished
        # on_message itself, unless handling times are tracked: then a wrapper that times
        # each call, so the loop below does no extra work when they are not
        handle = actor.on_message if stats.handle_times is None else actor.timed_handler()
        items = inbox.items
        # handling time is measured per run of messages, not per message: two clock
        # reads a message would cost more than a short handler itself
        started = stopwatch_ns()
        processed = 0
        try:
            # Mailbox.get_nowait and Quiescence.done are inlined in this loop, which runs
            # once for every message of a replay
            while items:
                msg = items.popleft()
                if type(msg) is _Slot:
                    msg = inbox.unslot(msg)
                    if msg is _DEAD:
                        continue
                inbox.size -= 1
                if inbox._putters:
                    inbox._wake_putter()
                processed += 1
                try:
                    handle(msg)
                except Exception as exc:
                    stats.errors += 1
                    if self.supervisor.crashed(actor, exc) is None:
                        # given up: what it sent before raising still goes out
                        if not (staged and not self._deliver(actor)):
                            quiescence.done()
                            return True
                        return False
                    self.supervisor.restart(actor)
                    handle = actor.timed_handler()
                    # as with tasks, what it sent before raising is delivered first
                    if staged and not self._deliver(actor):
                        return False
                    quiescence.done()
                    continue
                if staged and not self._deliver(actor):
                    return False
                quiescence.pending -= 1
                if not quiescence.pending and quiescence._waiters:
                    quiescence.wake()
            return True
        finally:
            took = stopwatch_ns() - started
            stats.processed += processed
            stats.handle_ns += took
            if processed == 1 and took > stats.max_handle_ns:
                stats.max_handle_ns = took

    def send_held(self, actor: Actor[Any]) -> None:
        """Deliver sends ``actor`` made from outside a handler (a source publishing),
        running the receivers until there is room."""
        while actor._staged and not self._deliver(actor):
            if not self.ready:
                raise DeadlockError(f"{actor.name} waits on a full inbox nobody drains")
            self.run_until_quiet()

    def drain(self, clock: ReplayClock) -> None:
        """Run until quiet, firing timers that carry order traffic (venue latency)."""
        self.run_until_quiet()
        while clock.pending_drain_timers():
            clock.fire_next()
            self.run_until_quiet()

    def stop(self, sources: Sequence[Actor[Any]], clock: ReplayClock) -> None:
        """Orderly stop: sources first, drain order traffic, then the rest in reverse
        start order, each ``on_stop`` called once."""
        source_names = {a.name for a in sources}
        for actor in sources:
            self._stop_one(actor)
        self.drain(clock)
        for actor in reversed(self.actors):
            if actor.name not in source_names:
                # what the actors stopped so far sent as they stopped is handled first, as
                # a task would take it before its STOP
                self.run_until_quiet()
                self._stop_one(actor)

    async def join_tasks(self) -> None:
        """Await the tasks the actors own (see ``Actor.own_task``), after :meth:`stop`."""
        for actor in reversed(self.actors):
            await actor.join_tasks()

    def _stop_one(self, actor: Actor[Any]) -> None:
        if actor.state is not ActorState.RUNNING:
            return
        actor.state = ActorState.STOPPED
        actor.cancel_all_timers()
        actor.on_stop()
        actor.inbox.wakeup = None
