"""Bounded inboxes, and what happens on each edge when one is full.

Every actor has one :class:`Mailbox`. Each edge into it declares an :class:`Overflow`
policy that applies when the inbox is full:

- ``BLOCK``: the sender waits until there is room. Orders, fills, order events and
  control travel this way; nothing is ever lost.
- ``CONFLATE``: if a message with the same key (the instrument) is already waiting, the
  new one replaces it in place (latest wins, position in the queue kept); otherwise the
  sender waits. Counted as ``conflated``.
- ``DROP_OLDEST``: the oldest waiting message that came over a drop-oldest edge is
  discarded to make room; if there is none, the new message is discarded. Counted as
  ``dropped``. For telemetry.

A :class:`Quiescence` counts messages that are queued or being handled across one
runtime; the replay scheduler waits for it to reach zero before moving time.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Final

__all__ = ["EMPTY", "STOP", "Edge", "Mailbox", "Overflow", "Quiescence"]


class Overflow(enum.StrEnum):
    BLOCK = "block"
    CONFLATE = "conflate"
    DROP_OLDEST = "drop_oldest"


# read as module constants on the paths every message takes: a member read as
# ``Overflow.BLOCK`` goes through the enum metaclass
_BLOCK = Overflow.BLOCK
_CONFLATE = Overflow.CONFLATE
_DROP_OLDEST = Overflow.DROP_OLDEST


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


EMPTY: Final = _Sentinel("EMPTY")
STOP: Final = _Sentinel("STOP")
"""Put in an inbox (uncounted) to make the actor finish what is queued before it and stop."""
_DEAD: Final = _Sentinel("DEAD")
_DROPPABLE: Final = _Sentinel("DROPPABLE")


class Quiescence:
    """How many messages are queued or in handling across a runtime; wakes waiters at 0."""

    __slots__ = ("_waiters", "pending")

    def __init__(self) -> None:
        self.pending = 0
        self._waiters: list[asyncio.Future[None]] = []

    def add(self) -> None:
        self.pending += 1

    def done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self._waiters:
            self.wake()

    def wake(self) -> None:
        """Wake the waiters of :meth:`wait` (``pending`` has reached 0)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    @property
    def quiet(self) -> bool:
        return self.pending == 0

    async def wait(self) -> None:
        """Return once nothing is queued or being handled anywhere."""
        while self.pending:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut


class _Slot:
    """A queue entry that can be replaced (conflation) or killed (drop-oldest) in place."""

    __slots__ = ("key", "msg")

    def __init__(self, msg: Any, key: Hashable) -> None:
        self.msg = msg
        self.key = key


class Mailbox:
    """A bounded FIFO inbox with per-edge overflow policies and counters."""

    __slots__ = (
        "_droppable",
        "_getter",
        "_putters",
        "_slots",
        "blocked",
        "capacity",
        "closed",
        "conflated",
        "dropped",
        "high_water",
        "items",
        "owner",
        "quiescence",
        "received",
        "reserve",
        "size",
        "wakeup",
    )

    def __init__(self, owner: str, capacity: int, quiescence: Quiescence) -> None:
        if capacity < 1:
            raise ValueError(f"inbox of {owner!r} must hold at least 1 message, got {capacity}")
        self.owner = owner
        self.capacity = capacity
        self.reserve = capacity // 8
        """Slots market data may not take: order traffic always finds room, so a cycle of
        blocking edges (strategy -> gate -> strategy) cannot deadlock on a flood of ticks."""
        self.quiescence = quiescence
        self.items: deque[Any] = deque()
        self.size = 0
        self.high_water = 0
        self.received = 0
        self.conflated = 0
        self.dropped = 0
        self.blocked = 0
        self.closed = False
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._slots: dict[Hashable, _Slot] = {}
        self._droppable = 0
        self.wakeup: Callable[[], None] | None = None
        """Called when a message arrives and no task waits in ``get`` (inline execution)."""

    def __len__(self) -> int:
        return self.size

    def _accepted(self, entry: Any) -> None:
        self.items.append(entry)
        size = self.size + 1
        self.size = size
        self.received += 1
        if size > self.high_water:  # noqa: PLR1730 - hot path: a branch beats max()
            self.high_water = size
        self.quiescence.pending += 1  # Quiescence.add, inlined
        self._wake_getter()

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        elif self.wakeup is not None:
            self.wakeup()

    def offer_block(self, msg: Any, market_data: bool = False) -> bool:
        """``offer(msg, Overflow.BLOCK, None, market_data)``: the path of nearly every
        message, in one call."""
        size = self.size
        limit = self.capacity - self.reserve if market_data else self.capacity
        if size < limit and not self.closed:
            self.items.append(msg)
            size += 1
            self.size = size
            self.received += 1
            if size > self.high_water:  # noqa: PLR1730 - hot path: a branch beats max()
                self.high_water = size
            self.quiescence.pending += 1  # Quiescence.add, inlined
            if self._getter is not None:
                self._wake_getter()
            elif self.wakeup is not None:
                self.wakeup()
            return True
        return self.offer(msg, _BLOCK, None, market_data)

    def offer(
        self, msg: Any, policy: Overflow, key: Hashable = None, market_data: bool = False
    ) -> bool:
        """Try to enqueue without waiting. False means the sender must wait (``put``).
        Market data fills the inbox only up to ``capacity - reserve``."""
        limit = self.capacity - self.reserve if market_data else self.capacity
        if self.size < limit and not self.closed:
            if policy is _BLOCK:
                self._accepted(msg)
            elif policy is _CONFLATE:
                slot = _Slot(msg, key)
                self._slots[key] = slot
                self._accepted(slot)
            else:
                self._droppable += 1
                self._accepted(_Slot(msg, _DROPPABLE))
            return True
        if self.closed:
            self.dropped += 1
            return True
        if policy is _CONFLATE:
            slot_or_none = self._slots.get(key)
            if slot_or_none is not None:
                slot_or_none.msg = msg
                self.conflated += 1
                return True
            return False
        if policy is _DROP_OLDEST:
            oldest = None
            if self._droppable:
                for entry in self.items:
                    if type(entry) is _Slot and entry.key is _DROPPABLE and entry.msg is not _DEAD:
                        oldest = entry
                        break
            self.dropped += 1
            if oldest is not None:
                oldest.msg = _DEAD  # evicted in place; the count of droppable entries is unchanged
                self.size -= 1
                self._accepted(_Slot(msg, _DROPPABLE))
                self.quiescence.done()  # for the evicted one, after the add: never touches 0
            return True
        return False

    async def put(
        self, msg: Any, policy: Overflow, key: Hashable = None, market_data: bool = False
    ) -> None:
        """Enqueue, waiting for room where the policy says so."""
        while not self.offer(msg, policy, key, market_data):
            self.blocked += 1
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                if self.size < self.capacity:
                    self._wake_putter()
                raise

    def put_nowait(self, msg: Any, *, counted: bool = True) -> None:
        """Enqueue past the capacity: for the actor's own timers and for stop requests,
        which are bounded by their nature. ``counted=False`` keeps it out of quiescence."""
        self.items.append(msg)
        self.size += 1
        self.high_water = max(self.high_water, self.size)
        if counted:
            self.received += 1
            self.quiescence.add()
        self._wake_getter()

    def _wake_putter(self) -> None:
        putters = self._putters
        while putters:
            fut = putters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def get_nowait(self) -> Any:
        """The next message, or ``EMPTY``."""
        items = self.items
        while items:
            entry = items.popleft()
            if type(entry) is _Slot:
                entry = self.unslot(entry)
                if entry is _DEAD:
                    continue
            self.size -= 1
            if self._putters:
                self._wake_putter()
            return entry
        return EMPTY

    def unslot(self, slot: _Slot) -> Any:
        """The message of a slot just taken from ``items`` (``_DEAD`` if it was evicted; the
        size already counts that). A reader that takes ``items`` directly calls this for
        every ``_Slot`` it finds, and then counts the message out as :meth:`get_nowait`
        does."""
        msg = slot.msg
        if msg is _DEAD:
            return msg
        if slot.key is _DROPPABLE:
            self._droppable -= 1
        elif self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
        return msg

    async def get(self) -> Any:
        while True:
            msg = self.get_nowait()
            if msg is not EMPTY:
                return msg
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = fut
            await fut

    def close(self) -> int:
        """Stop accepting (everything offered is counted as dropped) and discard what waits.

        Used when an actor is stopped for good, so senders never wait on it forever.
        Returns how many waiting messages were discarded.
        """
        self.closed = True
        discarded = 0
        while (msg := self.get_nowait()) is not EMPTY:
            discarded += 1
            if not isinstance(msg, _Sentinel):
                self.quiescence.done()
        self.dropped += discarded
        while self._putters:
            self._wake_putter()
        return discarded


def _instrument_key(msg: Any) -> Hashable:
    """Conflate per instrument; messages without one conflate per message type."""
    key: Hashable = getattr(msg, "instrument_id", None)
    return type(msg).__name__ if key is None else key


class Edge:
    """One wired connection: messages from a port of one actor into another's inbox."""

    __slots__ = ("fast", "key", "market_data", "policy", "source", "target", "types")

    def __init__(
        self,
        source: str,
        target: Mailbox,
        policy: Overflow,
        key: Callable[[Any], Hashable] = _instrument_key,
        types: frozenset[type] | None = None,
        market_data: bool = False,
    ) -> None:
        self.source = source
        self.target = target
        self.policy = policy
        self.key = key
        self.types = types
        """Only messages of these types travel this edge (None: all)."""
        self.market_data = market_data
        """It carries market data, which may not take an inbox's reserved slots."""
        self.fast = policy is Overflow.BLOCK and not market_data
        """``Mailbox.offer_block`` is the whole of an offer on this edge."""

    def offer(self, msg: Any) -> bool:
        policy = self.policy
        if policy is _BLOCK:  # market data on a blocking edge: the common case of a replay
            return self.target.offer_block(msg, self.market_data)
        if policy is _CONFLATE:
            return self.target.offer(msg, policy, self.key(msg), self.market_data)
        return self.target.offer(msg, policy, None, self.market_data)

    async def put(self, msg: Any) -> None:
        if self.policy is Overflow.CONFLATE:
            await self.target.put(msg, Overflow.CONFLATE, self.key(msg), self.market_data)
        else:
            await self.target.put(msg, self.policy, None, self.market_data)

    def __repr__(self) -> str:
        return f"Edge({self.source} -> {self.target.owner}, {self.policy.value})"
