"""Bounded inboxes: each overflow policy, the counters, quiescence, and closing.

The mailbox-level tests drive a :class:`Mailbox` directly (``offer``, ``put``,
``get_nowait``); the actor-level tests wire two real actors with an :class:`Edge` of each
policy, hold the consumer back with an ``asyncio.Event`` and read what happened from
``actor.snapshot()``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from engine.actor import STOP, Actor, ActorConfig, RunContext
from engine.clock import ReplayClock
from engine.config import AccountConfig
from engine.instruments import Instrument, InstrumentTable
from engine.mailbox import EMPTY, Edge, Mailbox, Overflow, Quiescence
from engine.messages import QuoteTick, Signal
from tests.helpers import eventually

BLOCK = Overflow.BLOCK
CONFLATE = Overflow.CONFLATE
DROP = Overflow.DROP_OLDEST


def quote(instrument_id: str, bid: float) -> QuoteTick:
    return QuoteTick(
        instrument_id=instrument_id,
        bid=bid,
        ask=bid + 1.0,
        bid_size=1.0,
        ask_size=1.0,
        ts_event=int(bid),
        ts_init=int(bid),
    )


def drain(mailbox: Mailbox, quiescence: Quiescence | None = None) -> list[Any]:
    """Take everything waiting, marking each as handled when a quiescence is given."""
    out = []
    while (msg := mailbox.get_nowait()) is not EMPTY:
        out.append(msg)
        if quiescence is not None:
            quiescence.done()
    return out


async def settle() -> None:
    """Let every task that is ready run until it waits again (no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


# --- BLOCK -------------------------------------------------------------------------------


async def test_block_put_on_full_inbox_waits_until_the_consumer_takes_one() -> None:
    q = Quiescence()
    box = Mailbox("strategy", 2, q)
    await box.put("order-1", BLOCK)
    await box.put("order-2", BLOCK)

    assert box.offer("order-3", BLOCK) is False, "offer on a full inbox must refuse"
    assert (box.size, box.received, box.blocked, box.dropped) == (2, 2, 0, 0)

    sender = asyncio.create_task(box.put("order-3", BLOCK))
    await settle()
    assert not sender.done(), "put on a full BLOCK inbox returned without room"
    assert box.blocked == 1
    assert box.size == 2

    assert box.get_nowait() == "order-1"
    await asyncio.wait_for(sender, 1.0)

    assert drain(box) == ["order-2", "order-3"]
    assert (box.received, box.dropped, box.conflated, box.high_water) == (3, 0, 0, 2)


async def test_block_many_senders_keep_their_order_and_lose_nothing(rand_seed: int) -> None:
    rng = random.Random(rand_seed)
    q = Quiescence()
    box = Mailbox("router", 3, q)
    per_sender = 100
    names = ("ema", "pairs", "manual")

    async def sender(name: str) -> None:
        for i in range(per_sender):
            await box.put((name, i), BLOCK)

    tasks = [asyncio.create_task(sender(name)) for name in names]
    received: list[tuple[str, int]] = []
    while len(received) < per_sender * len(names):
        # the consumer takes a random number of messages each time it gets to run
        for _ in range(rng.randint(0, 4)):
            msg = box.get_nowait()
            if msg is not EMPTY:
                received.append(msg)
                q.done()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)

    for name in names:
        mine = [i for who, i in received if who == name]
        assert mine == list(range(per_sender)), f"{name}: order changed (rand_seed={rand_seed})"
    assert box.received == per_sender * len(names)
    assert box.dropped == 0
    assert box.high_water == 3
    assert box.blocked > 0, f"no sender ever had to wait (rand_seed={rand_seed})"
    assert q.pending == 0


# --- CONFLATE ----------------------------------------------------------------------------


async def test_conflate_replaces_the_waiting_message_of_the_same_instrument_in_place() -> None:
    q = Quiescence()
    box = Mailbox("strategy", 3, q)
    edge = Edge("feed.ticks", box, CONFLATE)  # keyed by instrument_id
    for msg in (quote("A.SIM", 1), quote("B.SIM", 1), quote("C.SIM", 1)):
        assert edge.offer(msg)
    assert box.conflated == 0

    assert edge.offer(quote("A.SIM", 2)) is True
    assert edge.offer(quote("A.SIM", 3)) is True
    assert edge.offer(quote("B.SIM", 2)) is True

    assert box.conflated == 3
    assert box.size == 3
    assert box.received == 3, "a conflated message is not a new arrival"
    assert q.pending == 3, "conflation must not change the pending count"
    got = drain(box, q)
    # queue position kept (A first), latest value wins
    assert [(m.instrument_id, m.bid) for m in got] == [("A.SIM", 3), ("B.SIM", 2), ("C.SIM", 1)]
    assert q.pending == 0


async def test_conflate_with_a_new_key_on_a_full_inbox_blocks() -> None:
    q = Quiescence()
    box = Mailbox("strategy", 2, q)
    edge = Edge("feed.ticks", box, CONFLATE)
    edge.offer(quote("A.SIM", 1))
    edge.offer(quote("B.SIM", 1))

    assert edge.offer(quote("C.SIM", 1)) is False
    sender = asyncio.create_task(edge.put(quote("C.SIM", 1)))
    await settle()
    assert not sender.done(), "a new key on a full conflating inbox must wait"
    assert box.blocked == 1
    assert box.conflated == 0

    assert box.get_nowait().instrument_id == "A.SIM"
    await asyncio.wait_for(sender, 1.0)
    assert [m.instrument_id for m in drain(box)] == ["B.SIM", "C.SIM"]


async def test_conflate_does_not_happen_while_there_is_room() -> None:
    q = Quiescence()
    box = Mailbox("monitor", 4, q)
    edge = Edge("feed.ticks", box, CONFLATE)
    for bid in (1, 2, 3):
        assert edge.offer(quote("A.SIM", bid))
    assert box.conflated == 0
    assert [m.bid for m in drain(box)] == [1, 2, 3]


async def test_conflate_after_the_keyed_message_was_taken_queues_a_new_one() -> None:
    q = Quiescence()
    box = Mailbox("monitor", 2, q)
    edge = Edge("feed.ticks", box, CONFLATE)
    edge.offer(quote("A.SIM", 1))
    edge.offer(quote("B.SIM", 1))
    assert box.get_nowait().instrument_id == "A.SIM"
    edge.offer(quote("A.SIM", 2))  # room again: queued, not conflated into anything
    assert box.conflated == 0
    assert edge.offer(quote("A.SIM", 3))  # full now: replaces A2
    assert box.conflated == 1
    assert [(m.instrument_id, m.bid) for m in drain(box)] == [("B.SIM", 1), ("A.SIM", 3)]


async def test_conflate_replaces_the_latest_of_several_waiting_for_a_key() -> None:
    q = Quiescence()
    box = Mailbox("monitor", 3, q)
    edge = Edge("feed.ticks", box, CONFLATE)
    for msg in (quote("A.SIM", 1), quote("B.SIM", 1), quote("A.SIM", 2)):
        edge.offer(msg)
    edge.offer(quote("A.SIM", 3))
    assert [(m.instrument_id, m.bid) for m in drain(box)] == [
        ("A.SIM", 1),
        ("B.SIM", 1),
        ("A.SIM", 3),
    ]


async def test_messages_without_an_instrument_conflate_per_message_type() -> None:
    q = Quiescence()
    box = Mailbox("monitor", 1, q)
    edge = Edge("feed.ticks", box, CONFLATE)

    class Heartbeat:
        def __init__(self, n: int) -> None:
            self.n = n

    edge.offer(Heartbeat(1))
    assert edge.offer(Heartbeat(2))
    assert box.conflated == 1
    assert [m.n for m in drain(box)] == [2]


# --- DROP_OLDEST -------------------------------------------------------------------------


def telemetry(n: int) -> Signal:
    return Signal(
        strategy_id="s", instrument_id="A.SIM", name="lag", value=float(n), ts_event=n, ts_init=n
    )


async def test_drop_oldest_discards_the_oldest_droppable_message() -> None:
    q = Quiescence()
    box = Mailbox("metrics", 3, q)
    edge = Edge("strategy.telemetry", box, DROP)
    for n in range(1, 6):
        assert edge.offer(telemetry(n)) is True, "a drop-oldest edge never makes a sender wait"

    assert box.dropped == 2
    assert box.size == 3
    assert box.received == 5
    assert box.high_water == 3
    assert q.pending == 3
    assert [m.value for m in drain(box, q)] == [3.0, 4.0, 5.0]
    assert q.pending == 0


async def test_drop_oldest_never_drops_block_policy_messages() -> None:
    q = Quiescence()
    box = Mailbox("journal", 3, q)
    orders = Edge("risk.events", box, BLOCK)
    metrics = Edge("strategy.telemetry", box, DROP)
    orders.offer("fill-1")
    metrics.offer(telemetry(1))
    orders.offer("fill-2")

    assert metrics.offer(telemetry(2)) is True
    assert box.dropped == 1
    # the telemetry in the middle went, both fills stayed, in order
    assert drain(box, q) == ["fill-1", "fill-2", telemetry(2)]
    assert q.pending == 0


async def test_drop_oldest_into_an_inbox_full_of_block_messages_discards_the_new_one() -> None:
    q = Quiescence()
    box = Mailbox("journal", 2, q)
    box.offer("fill-1", BLOCK)
    box.offer("fill-2", BLOCK)

    assert box.offer(telemetry(1), DROP) is True
    assert box.offer(telemetry(2), DROP) is True
    assert box.dropped == 2
    assert box.received == 2
    assert q.pending == 2
    assert drain(box, q) == ["fill-1", "fill-2"]
    assert q.pending == 0


async def test_drop_oldest_repeatedly_after_evictions(rand_seed: int) -> None:
    """Mixed traffic: every block message arrives in order, the telemetry kept is the
    newest that fitted, and the counters add up."""
    rng = random.Random(rand_seed)
    q = Quiescence()
    box = Mailbox("journal", 4, q)
    blocks_sent: list[str] = []
    got: list[Any] = []
    offered_drop = 0
    for i in range(500):
        roll = rng.random()
        if roll < 0.3 and box.size < box.capacity:
            blocks_sent.append(f"fill-{i}")
            assert box.offer(f"fill-{i}", BLOCK)
        elif roll < 0.8:
            offered_drop += 1
            assert box.offer(telemetry(i), DROP)
        else:
            msg = box.get_nowait()
            if msg is not EMPTY:
                got.append(msg)
                q.done()
        assert 0 <= q.pending == box.size <= box.capacity, f"rand_seed={rand_seed}"
    got.extend(drain(box, q))

    assert [m for m in got if isinstance(m, str)] == blocks_sent, f"rand_seed={rand_seed}"
    kept = [m for m in got if isinstance(m, Signal)]
    assert kept == sorted(kept, key=lambda m: m.value), "telemetry order changed"
    assert len(kept) + box.dropped == offered_drop, f"rand_seed={rand_seed}"
    assert box.dropped > 0, f"the inbox never overflowed (rand_seed={rand_seed})"
    assert q.pending == 0


# --- quiescence --------------------------------------------------------------------------


async def test_pending_rises_on_enqueue_and_falls_when_handled() -> None:
    q = Quiescence()
    a = Mailbox("a", 4, q)
    b = Mailbox("b", 4, q)
    assert q.quiet
    a.offer(1, BLOCK)
    b.offer(2, BLOCK)
    b.put_nowait("timer")
    assert q.pending == 3
    assert not q.quiet

    a.get_nowait()
    assert q.pending == 3, "taking a message is not finishing it"
    q.done()
    assert q.pending == 2


async def test_wait_returns_only_when_everything_is_handled() -> None:
    q = Quiescence()
    box = Mailbox("a", 4, q)
    box.offer(1, BLOCK)
    box.offer(2, BLOCK)
    waiter = asyncio.create_task(q.wait())

    await settle()
    assert not waiter.done()
    box.get_nowait()
    q.done()
    await settle()
    assert not waiter.done(), "wait returned with one message still queued"
    box.get_nowait()
    q.done()
    await asyncio.wait_for(waiter, 1.0)
    assert q.pending == 0


async def test_wait_on_a_quiet_system_returns_at_once() -> None:
    q = Quiescence()
    await asyncio.wait_for(q.wait(), 1.0)


async def test_uncounted_put_stays_out_of_quiescence() -> None:
    q = Quiescence()
    box = Mailbox("a", 1, q)
    box.put_nowait(STOP, counted=False)
    assert q.pending == 0
    assert box.size == 1
    assert box.received == 0


async def test_put_nowait_goes_past_the_capacity() -> None:
    q = Quiescence()
    box = Mailbox("a", 1, q)
    box.offer("order", BLOCK)
    box.put_nowait("timer-1")
    box.put_nowait("timer-2")
    assert box.size == 3
    assert box.high_water == 3
    assert drain(box) == ["order", "timer-1", "timer-2"]


async def test_pending_stays_consistent_under_conflation_and_drops(rand_seed: int) -> None:
    rng = random.Random(rand_seed)
    q = Quiescence()
    boxes = [Mailbox(f"box{i}", rng.randint(1, 5), q) for i in range(3)]
    edges = [
        Edge(f"src.p{i}", box, policy) for i, box in enumerate(boxes) for policy in (CONFLATE, DROP)
    ]
    handled = 0
    for i in range(2_000):
        if rng.random() < 0.6:
            edge = rng.choice(edges)
            edge.offer(quote(rng.choice(["A.SIM", "B.SIM", "C.SIM"]), float(i)))
        else:
            box = rng.choice(boxes)
            if box.get_nowait() is not EMPTY:
                q.done()
                handled += 1
        total = sum(b.size for b in boxes)
        assert q.pending == total >= 0, f"step {i}: pending {q.pending} (rand_seed={rand_seed})"
    waiter = asyncio.create_task(q.wait())
    for box in boxes:
        handled += len(drain(box, q))
    await asyncio.wait_for(waiter, 1.0)
    assert q.pending == 0
    assert sum(b.conflated for b in boxes) > 0, f"nothing conflated (rand_seed={rand_seed})"
    assert sum(b.dropped for b in boxes) > 0, f"nothing dropped (rand_seed={rand_seed})"
    assert handled <= sum(b.received for b in boxes)


# --- close -------------------------------------------------------------------------------


async def test_close_discards_what_waits_and_counts_it() -> None:
    q = Quiescence()
    box = Mailbox("faulted", 4, q)
    for i in range(3):
        box.offer(i, BLOCK)
    assert q.pending == 3

    assert box.close() == 3
    assert box.closed
    assert box.size == 0
    assert box.dropped == 3
    assert q.pending == 0, "discarded messages must not keep the system from being quiet"
    assert box.get_nowait() is EMPTY


async def test_a_closed_inbox_drops_further_messages_so_senders_never_wait() -> None:
    q = Quiescence()
    box = Mailbox("faulted", 1, q)
    box.close()
    assert box.offer("order", BLOCK) is True
    await asyncio.wait_for(box.put("order", BLOCK), 1.0)
    await asyncio.wait_for(box.put(quote("A.SIM", 1), CONFLATE, "A.SIM"), 1.0)
    assert box.offer(telemetry(1), DROP) is True
    assert box.dropped == 4
    assert box.size == 0
    assert box.received == 0
    assert q.pending == 0


async def test_close_releases_senders_already_waiting() -> None:
    q = Quiescence()
    box = Mailbox("faulted", 1, q)
    box.offer("order-1", BLOCK)
    senders = [asyncio.create_task(box.put(f"order-{i}", BLOCK)) for i in (2, 3)]
    await settle()
    assert not any(s.done() for s in senders)
    assert box.blocked == 2

    box.close()
    await asyncio.wait_for(asyncio.gather(*senders), 1.0)
    assert box.dropped == 3  # one discarded, two refused
    assert q.pending == 0


async def test_close_with_an_uncounted_stop_request_queued_keeps_pending_right() -> None:
    """A stop request is queued uncounted; closing the inbox (an actor given up while a
    stop was pending) must not take it off the pending count."""
    q = Quiescence()
    box = Mailbox("faulted", 4, q)
    other = Mailbox("other", 4, q)
    box.offer("order", BLOCK)
    box.put_nowait(STOP, counted=False)
    other.offer("fill", BLOCK)
    assert q.pending == 2

    box.close()
    assert q.pending == 1, "closing discarded an uncounted STOP and uncounted it"
    assert not q.quiet


async def test_cancelled_sender_passes_its_turn_to_the_next() -> None:
    q = Quiescence()
    box = Mailbox("a", 1, q)
    box.offer("first", BLOCK)
    first = asyncio.create_task(box.put("cancelled", BLOCK))
    second = asyncio.create_task(box.put("second", BLOCK))
    await settle()
    first.cancel()
    box.get_nowait()
    q.done()
    await asyncio.wait_for(second, 1.0)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert drain(box) == ["second"]


# --- counters ----------------------------------------------------------------------------


async def test_high_water_and_received() -> None:
    q = Quiescence()
    box = Mailbox("a", 5, q)
    for i in range(4):
        box.offer(i, BLOCK)
    box.get_nowait()
    box.get_nowait()
    box.offer(4, BLOCK)
    assert box.high_water == 4
    assert box.received == 5
    assert len(box) == 3


def test_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Mailbox("a", 0, Quiescence())


# --- actors wired by an edge of each policy ------------------------------------------------


class RelayConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str = "relay"


class Producer(Actor[RelayConfig]):
    """Sends every message it is given on ``out``."""

    Config = RelayConfig
    outputs: ClassVar[tuple[str, ...]] = ("out",)

    def on_message(self, msg: Any) -> None:
        self.emit("out", msg)


class GatedConsumer(Actor[RelayConfig]):
    """Records what it handles; does not start taking messages until ``gate`` is set."""

    Config = RelayConfig

    def __init__(self, name: str, config: RelayConfig, ctx: RunContext) -> None:
        super().__init__(name, config, ctx)
        self.gate = asyncio.Event()
        self.seen: list[Any] = []

    async def run_loop(self) -> None:
        await self.gate.wait()
        await super().run_loop()

    def on_message(self, msg: Any) -> None:
        self.seen.append(msg)


def make_ctx() -> RunContext:
    instruments = InstrumentTable(
        [
            Instrument(id=f"{s}.SIM", asset_class="fx", quote_currency="USD", price_increment=0.01)
            for s in "ABC"
        ]
    )
    return RunContext(
        ReplayClock(), instruments, AccountConfig(currency="USD", starting_balance=1_000.0)
    )


class Pair:
    """A producer wired to a gated consumer, each running its own loop in a task."""

    def __init__(self, policy: Overflow, capacity: int) -> None:
        self.ctx = make_ctx()
        self.producer = Producer("producer", RelayConfig(inbox=10_000), self.ctx)
        self.consumer = GatedConsumer("consumer", RelayConfig(inbox=capacity), self.ctx)
        self.producer.ports["out"].append(Edge("producer.out", self.consumer.inbox, policy))
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for actor in (self.consumer, self.producer):
            actor.on_start()
            self.tasks.append(asyncio.create_task(actor.run_loop()))

    def feed(self, msgs: list[Any]) -> None:
        for m in msgs:
            self.producer.inbox.put_nowait(m)

    async def stop(self) -> None:
        self.consumer.gate.set()
        for actor in (self.producer, self.consumer):
            actor.inbox.put_nowait(STOP, counted=False)
        await asyncio.wait_for(asyncio.gather(*self.tasks), 2.0)


@pytest.fixture
async def pairs() -> AsyncIterator[list[Pair]]:
    made: list[Pair] = []
    yield made
    for p in made:
        for t in p.tasks:
            t.cancel()
        await asyncio.gather(*p.tasks, return_exceptions=True)


async def test_actor_block_edge_holds_the_producer_until_the_consumer_takes(
    pairs: list[Pair],
) -> None:
    pair = Pair(BLOCK, capacity=3)
    pairs.append(pair)
    pair.start()
    orders = [f"order-{i}" for i in range(10)]
    pair.feed(orders)

    # the producer handles capacity + 1 messages: the last one's send is held
    await eventually(lambda: pair.consumer.inbox.size == 3 and pair.consumer.inbox.blocked == 1)
    await settle()
    producer = pair.producer.snapshot()
    consumer = pair.consumer.snapshot()
    assert producer["processed"] == 4
    assert producer["inbox_depth"] == 6
    assert consumer["inbox_depth"] == 3
    assert consumer["blocked"] == 1
    assert consumer["dropped"] == 0
    assert pair.ctx.quiescence.pending == 10

    pair.consumer.gate.set()
    await asyncio.wait_for(pair.ctx.quiescence.wait(), 2.0)
    assert pair.consumer.seen == orders, "a BLOCK edge lost or reordered orders"
    consumer = pair.consumer.snapshot()
    assert consumer["processed"] == 10
    assert consumer["inbox_high_water"] == 3
    assert consumer["dropped"] == 0
    assert consumer["conflated"] == 0
    assert consumer["blocked"] >= 1
    assert pair.producer.snapshot()["processed"] == 10
    await pair.stop()


async def test_actor_conflate_edge_keeps_the_latest_per_instrument(pairs: list[Pair]) -> None:
    pair = Pair(CONFLATE, capacity=2)
    pairs.append(pair)
    pair.start()
    ticks = [quote(inst, float(i)) for i in range(1, 51) for inst in ("A.SIM", "B.SIM")]
    pair.feed(ticks)

    await eventually(lambda: pair.producer.stats.processed == 100)
    producer = pair.producer.snapshot()
    consumer = pair.consumer.snapshot()
    assert consumer["conflated"] == 98
    assert consumer["blocked"] == 0, "same-key messages on a full inbox must not block"
    assert consumer["inbox_depth"] == 2
    assert producer["inbox_depth"] == 0

    # a third instrument finds no waiting message to replace: the producer is held
    pair.feed([quote("C.SIM", 1.0)])
    await eventually(lambda: pair.consumer.inbox.blocked == 1)
    assert pair.producer.stats.processed == 101
    assert pair.ctx.quiescence.pending == 3, "the held tick's message is still in handling"

    pair.consumer.gate.set()
    await asyncio.wait_for(pair.ctx.quiescence.wait(), 2.0)
    assert [(m.instrument_id, m.bid) for m in pair.consumer.seen] == [
        ("A.SIM", 50.0),
        ("B.SIM", 50.0),
        ("C.SIM", 1.0),
    ]
    assert pair.consumer.snapshot()["processed"] == 3
    await pair.stop()


async def test_actor_drop_oldest_edge_never_holds_the_producer(pairs: list[Pair]) -> None:
    pair = Pair(DROP, capacity=3)
    pairs.append(pair)
    pair.start()
    pair.feed([telemetry(n) for n in range(20)])

    await eventually(lambda: pair.producer.stats.processed == 20)
    consumer = pair.consumer.snapshot()
    assert consumer["dropped"] == 17
    assert consumer["blocked"] == 0
    assert consumer["inbox_depth"] == 3
    assert pair.ctx.quiescence.pending == 3

    pair.consumer.gate.set()
    await asyncio.wait_for(pair.ctx.quiescence.wait(), 2.0)
    assert [m.value for m in pair.consumer.seen] == [17.0, 18.0, 19.0]
    assert pair.consumer.snapshot()["processed"] == 3
    await pair.stop()


def test_market_data_leaves_the_reserved_slots_to_order_traffic() -> None:
    """A flood of ticks cannot fill an inbox: order traffic always finds room, so a cycle
    of blocking edges (strategy -> gate -> strategy) cannot deadlock."""
    q = Quiescence()
    inbox = Mailbox("strategy", 16, q)
    assert inbox.reserve == 2
    ticks = Edge("validator.ticks", inbox, Overflow.BLOCK, market_data=True)
    events = Edge("gate.events", inbox, Overflow.BLOCK)
    assert not ticks.fast and events.fast
    accepted = 0
    while ticks.offer(("tick", accepted)):
        accepted += 1
    assert accepted == 14 and inbox.size == 14
    assert events.offer("denied") and events.offer("filled")
    assert not events.offer("one too many")  # the reserve is bounded too
    conflating = Edge("validator.ticks", inbox, Overflow.CONFLATE, market_data=True)
    assert not conflating.offer(("tick", -1))
