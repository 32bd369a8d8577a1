"""The Redis mirror: the daemon's state in Redis, for other processes to follow.

Redis is a mirror, not the source of truth. The actor's handlers only update the mirror
kept in memory (``engine.mirror.MirrorState``: the last quote of each instrument, the open orders,
the latest portfolio snapshot, the trading state) and queue the events for the stream; a
writer task the actor owns writes what changed, in one pipeline per round, whenever it
can. While Redis is down trading goes on: the writer counts the failed writes, reconnects
with back-off, and when Redis answers again it rebuilds every hash from the mirror in one
MULTI/EXEC transaction, then resumes the stream. Events that did not fit in
``queue_limit`` meanwhile are dropped, counted, and marked in the stream by a ``Gap``
entry where they were lost.

Keys (``{p}`` is ``prefix``):

=======================  ===========  ==================================================
key                      type         content
=======================  ===========  ==================================================
``{p}:quote:{inst}``     hash         bid, ask, bid_size, ask_size, ts (ns)
``{p}:positions``        hash         instrument -> JSON ``PositionRow``
``{p}:orders``           hash         client order id -> JSON of the open order
``{p}:pnl``              hash         currency, balance, equity, realized_pnl,
                                      unrealized_pnl, commissions, max_drawdown, fills,
                                      ts; ``strategy:{id}`` -> JSON
``{p}:status``           hash         trading state, limits, last write, counters
``{p}:events``           stream       type, ts, body (JSON of the message); ``MAXLEN ~``
``{p}:alerts``           pub/sub      JSON of each ``Alert``
=======================  ===========  ==================================================

Floats are written as Python's ``repr``, so they read back bit for bit. JSON bodies are
msgspec's encoding of the message (tagged with its ``type``), so
``msgspec.json.decode(body, type=OrderFilled)`` gives the message back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from itertools import islice
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from engine.actor import Actor, ActorConfig, ActorState, RunContext
from engine.messages import (
    Alert,
    AlertLevel,
    LimitsChanged,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderDenied,
    OrderExpired,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    PortfolioSnapshot,
    QuoteBatch,
    QuoteTick,
    RiskDecision,
    TradingStateChanged,
)
from engine.mirror import HashFields, MirrorState, StreamGap

__all__ = ["RedisMirror", "RedisMirrorConfig"]

_SCHEMES = ("redis", "rediss", "unix")
_CHUNK = 1_000
"""Stream entries per pipeline: a long backlog goes out in rounds, yielding in between."""


class RedisMirrorConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how to mirror. ``queue_limit`` bounds the events waiting for the stream
    (beyond it they are dropped and counted); ``timeout_s`` bounds a connect and a
    command; reconnection waits from ``reconnect_initial_s``, doubling up to
    ``reconnect_max_s``; on stop the writer tries for up to ``stop_timeout_s`` to write
    what is left."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "tradingd"
    stream_maxlen: int = 100_000
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 5.0
    queue_limit: int = 100_000
    timeout_s: float = 1.0
    stop_timeout_s: float = 5.0
    write_interval_s: float = 0.005
    """At least this long between two write rounds: what changes meanwhile is coalesced,
    so a busy market costs Redis (and the event loop) a bounded rate of round trips."""
    heartbeat_s: float = 1.0
    """With nothing to write, the status hash is still written this often: followers see
    the mirror is alive (``last_write_ts``), and an outage in a quiet market is found
    (and the mirror rebuilt) without waiting for the next trade."""

    def __post_init__(self) -> None:
        super().__post_init__()
        parts = urlsplit(self.url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"url must start with redis://, rediss:// or unix://, got {self.url!r}"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"url names no host: {self.url!r}")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"prefix must be a non-empty word without spaces, got {self.prefix!r}")
        if self.stream_maxlen < 1:
            raise ValueError("stream_maxlen must be at least 1")
        if self.queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_initial_s <= reconnect_max_s")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if not self.stop_timeout_s >= 0:
            raise ValueError("stop_timeout_s must be 0 or more")
        if not self.write_interval_s >= 0:
            raise ValueError("write_interval_s must be 0 or more")
        if not self.heartbeat_s > 0:
            raise ValueError("heartbeat_s must be positive")


class _OwnAlert:
    """An alert of the writer task, handed to the actor's own handler to send."""

    __slots__ = ("alert",)

    def __init__(self, alert: Alert) -> None:
        self.alert = alert


_FAILURES = (RedisError, OSError, TimeoutError)


class _WriterControl:
    """One writer task's controls: ``wake`` (something changed), ``stop`` / ``stopping``
    (write what is left, then end), ``retired`` (end now: a restart replaced it), and
    whether Redis must be rebuilt before the next write."""

    __slots__ = ("needs_rebuild", "retired", "stop", "stopping", "wake")

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.wake.set()  # the first round: connect and rebuild
        self.stop = asyncio.Event()
        self.stopping = False
        self.retired = False
        self.needs_rebuild = True  # a new writer owns nothing of what Redis holds


async def _pause(ctl: _WriterControl, seconds: float) -> None:
    """Wait ``seconds``, or less if a stop is requested."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctl.stop.wait(), seconds)


class RedisMirror(Actor[RedisMirrorConfig]):
    """Mirrors quotes, open orders, positions, P&L, the event stream and alerts to Redis.

    Counters (attributes and :meth:`snapshot`): ``write_failures`` (pipelines that
    failed), ``events_dropped``, ``events_written``, ``outages``, ``rebuilds``,
    ``connected``. Alerts on its ``events`` port: WARNING when Redis goes away, INFO once
    the mirror has been rebuilt, once per outage.
    """

    Config = RedisMirrorConfig
    outputs: ClassVar[tuple[str, ...]] = ("events",)
    receives_system_alerts = True
    """The supervisor's alerts (crashes, restarts) go out too."""
    observer = True

    def __init__(self, name: str, config: RedisMirrorConfig, ctx: RunContext) -> None:
        super().__init__(name, config, ctx)
        # made once and kept across restarts: the mirror is what Redis should hold
        self.mirror = MirrorState(config.queue_limit)
        self.write_failures = 0
        self.events_written = 0
        self.outages = 0
        self.rebuilds = 0
        self.ignored = 0
        self.connected = False
        self._down = False

    def on_start(self) -> None:
        cfg = self.config
        self.join_timeout_s = cfg.stop_timeout_s + 2 * cfg.timeout_s + 1.0
        # each writer has its own controls: after a restart the old one, being cancelled,
        # must not answer to the new one's (Python 3.11's wait_for can swallow a cancel)
        self._ctl = ctl = _WriterControl()
        self._writer = self.own_task(self._write_loop(ctl), "redis-writer")

    def on_stop(self) -> None:
        ctl = self._ctl
        if self.state is ActorState.RESTARTING:
            # a restart starts a writer of its own; this one need not finish the queue
            ctl.retired = True
            self._writer.cancel()
        ctl.stopping = True
        ctl.stop.set()
        ctl.wake.set()

    def on_message(self, msg: Any) -> None:
        mirror = self.mirror
        match msg:
            case QuoteBatch(data=data, instrument_ids=ids):
                mirror.quote_batch(data, ids)
            case QuoteTick():
                mirror.quote(
                    msg.instrument_id, msg.bid, msg.ask, msg.bid_size, msg.ask_size, msg.ts_event
                )
            case PortfolioSnapshot():
                mirror.snapshot(msg)
            case OrderRequest():
                mirror.order_request(msg)
            case (
                OrderAccepted()
                | OrderPartiallyFilled()
                | OrderCancelled()
                | OrderExpired()
                | OrderRejected()
                | OrderDenied()
                | OrderCancelRejected()
            ):
                mirror.order_event(msg)
            case Alert():
                mirror.event(msg, publish=True)
            case RiskDecision():
                mirror.event(msg)
            case TradingStateChanged():
                mirror.trading_state(msg)
            case LimitsChanged():
                mirror.limits(msg)
            case _OwnAlert(alert=alert):
                self.emit("events", alert)
                mirror.event(alert, publish=True)
            case _:
                self.ignored += 1
                return
        wake = self._ctl.wake
        if not wake.is_set():
            wake.set()

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(),
            "connected": self.connected,
            "write_failures": self.write_failures,
            "events_written": self.events_written,
            "events_dropped": self.mirror.events_dropped,
            "events_queued": self.mirror.queued,
            "events_queue_high_water": self.mirror.queue_high_water,
            "outages": self.outages,
            "rebuilds": self.rebuilds,
        }

    @property
    def events_dropped(self) -> int:
        return self.mirror.events_dropped

    # --- the writer ----------------------------------------------------------------------

    async def _write_loop(self, ctl: _WriterControl) -> None:
        cfg = self.config
        delay = cfg.reconnect_initial_s
        client: aioredis.Redis | None = None
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while not ctl.retired:
                if ctl.stopping and deadline is None:
                    deadline = loop.time() + cfg.stop_timeout_s
                try:
                    if client is None:
                        client = self._client()
                    if ctl.needs_rebuild:
                        await self._rebuild(client)
                        ctl.needs_rebuild = False
                    await self._write_pending(client, ctl)
                except Exception as exc:
                    if not isinstance(exc, _FAILURES):
                        # not the network: a bug, or a reply we did not expect. Still
                        # never the daemon's problem: counted and retried like an outage
                        self.log.error("redis mirror: write failed", exc_info=exc)
                    if ctl.retired:
                        break
                    ctl.needs_rebuild = True
                    self._failed(exc)
                    if client is not None:
                        await _close(client)
                        client = None
                    if deadline is not None:
                        left = deadline - loop.time()
                        if left <= 0:
                            break
                        await asyncio.sleep(min(delay, left))
                    else:
                        await _pause(ctl, delay)
                    delay = min(2 * delay, cfg.reconnect_max_s)
                    continue
                delay = cfg.reconnect_initial_s
                if ctl.retired:
                    break
                if self._down:
                    self._restored()
                if ctl.stopping:
                    if self.mirror.dirty:
                        continue  # the last messages before the stop
                    break
                await _pause(ctl, cfg.write_interval_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctl.wake.wait(), cfg.heartbeat_s)
        finally:
            if client is not None:
                await _close(client)
            if ctl.stopping and not ctl.retired and self.mirror.dirty:
                self.log.warning(
                    "redis mirror stopped with writes pending",
                    events_queued=self.mirror.queued,
                    hashes_behind=True,
                )

    def _client(self) -> aioredis.Redis:
        cfg = self.config
        return aioredis.Redis.from_url(
            cfg.url,
            socket_timeout=cfg.timeout_s,
            socket_connect_timeout=cfg.timeout_s,
            # reconnection is ours (counted, with back-off), not the client's
            retry=Retry(NoBackoff(), 0),
        )

    async def _write_pending(self, client: aioredis.Redis, ctl: _WriterControl) -> None:
        """One round: what changed, and up to a chunk of queued events. A backlog longer
        than a chunk (after an outage) goes out in several rounds, one after the other;
        what arrives meanwhile waits for the next round."""
        mirror = self.mirror
        backlog = len(mirror.events)
        while True:
            ctl.wake.clear()
            pipe = client.pipeline(transaction=False)
            self._write_changes(pipe)
            n = self._write_events(pipe, _CHUNK)
            self._write_status(pipe)
            await pipe.execute()
            self.events_written += mirror.written(n)
            self.connected = True
            backlog -= n
            if backlog <= 0:
                return

    def _write_changes(self, pipe: Any) -> None:
        mirror = self.mirror
        p = self.config.prefix
        for inst in mirror.dirty_quotes:
            pipe.hset(f"{p}:quote:{inst}", mapping=mirror.quotes[inst])
        mirror.dirty_quotes.clear()
        if mirror.dirty_positions:
            changed: dict[FieldT, EncodableT] = {
                i: mirror.positions[i] for i in mirror.dirty_positions if i in mirror.positions
            }
            gone = [i for i in mirror.dirty_positions if i not in mirror.positions]
            if changed:
                pipe.hset(f"{p}:positions", mapping=changed)
            if gone:
                pipe.hdel(f"{p}:positions", *gone)
            mirror.dirty_positions.clear()
        if mirror.dirty_orders:
            encode = msgspec.json.encode
            open_ = {c: encode(mirror.orders[c]) for c in mirror.dirty_orders if c in mirror.orders}
            done = [c for c in mirror.dirty_orders if c not in mirror.orders]
            if open_:
                pipe.hset(f"{p}:orders", mapping=open_)
            if done:
                pipe.hdel(f"{p}:orders", *done)
            mirror.dirty_orders.clear()
        if mirror.dirty_pnl:
            pipe.delete(f"{p}:pnl")  # a strategy's field never goes, but the hash is small
            pipe.hset(f"{p}:pnl", mapping=mirror.pnl)
            mirror.dirty_pnl = False

    def _write_events(self, pipe: Any, limit: int) -> int:
        """XADD (and PUBLISH) the first ``limit`` queued items; returns how many."""
        p = self.config.prefix
        stream, channel = f"{p}:events", f"{p}:alerts"
        maxlen = self.config.stream_maxlen
        n = 0
        for item in islice(self.mirror.events, limit):
            if isinstance(item, StreamGap):
                item.closed = True  # drops from now on make a new gap
                fields: dict[FieldT, EncodableT] = {
                    "type": "Gap",
                    "ts": item.last_ts,
                    "body": item.body(),
                }
                pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
            else:
                kind, ts, body, publish = item
                pipe.xadd(
                    stream,
                    {"type": kind, "ts": ts, "body": body},
                    maxlen=maxlen,
                    approximate=True,
                )
                if publish:
                    pipe.publish(channel, body)
            n += 1
        return n

    def _write_status(self, pipe: Any) -> None:
        status: dict[FieldT, EncodableT] = {
            **_fields(self.mirror.status),
            "last_write_ts": time.time_ns(),
            "clock_ts": self.clock.now(),
            "write_failures": self.write_failures,
            "events_dropped": self.mirror.events_dropped,
            "events_written": self.events_written,
            "rebuilds": self.rebuilds,
        }
        pipe.hset(f"{self.config.prefix}:status", mapping=status)

    async def _rebuild(self, client: aioredis.Redis) -> None:
        """Replace every hash by the mirror as it is, in one MULTI/EXEC transaction."""
        p = self.config.prefix
        stale = [key async for key in client.scan_iter(match=f"{p}:quote:*", count=1_000)]
        mirror = self.mirror
        pipe = client.pipeline(transaction=True)
        pipe.delete(f"{p}:positions", f"{p}:orders", f"{p}:pnl", f"{p}:status", *stale)
        for inst, fields in mirror.quotes.items():
            pipe.hset(f"{p}:quote:{inst}", mapping=_fields(fields))
        if mirror.positions:
            positions: dict[FieldT, EncodableT] = {i: row for i, row in mirror.positions.items()}
            pipe.hset(f"{p}:positions", mapping=positions)
        if mirror.orders:
            encode = msgspec.json.encode
            pipe.hset(f"{p}:orders", mapping={c: encode(o) for c, o in mirror.orders.items()})
        if mirror.pnl:
            pipe.hset(f"{p}:pnl", mapping=_fields(mirror.pnl))
        self._write_status(pipe)
        # what changes while the transaction is on its way is written in the next round
        mirror.clean()
        await pipe.execute()
        if self._down:
            self.rebuilds += 1

    # --- outages -------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        self.write_failures += 1
        self.connected = False
        if self._down:
            return
        self._down = True
        self.outages += 1
        self.log.warning("redis mirror: Redis unreachable", error=repr(exc), url=self.config.url)
        self._alert(
            AlertLevel.WARNING,
            f"Redis at {self.config.url} is unreachable ({exc}); trading goes on, "
            "the mirror will be rebuilt when it returns",
            action="reconnect",
        )

    def _restored(self) -> None:
        self._down = False
        self.log.info("redis mirror rebuilt", url=self.config.url, rebuilds=self.rebuilds)
        self._alert(
            AlertLevel.INFO,
            f"Redis at {self.config.url} is back; the mirror was rebuilt "
            f"({self.mirror.events_dropped} events dropped so far)",
            action="rebuilt",
        )

    def _alert(self, level: AlertLevel, message: str, *, action: str) -> None:
        now = self.clock.now()
        alert = Alert(
            level=level,
            source=self.name,
            rule="redis_mirror",
            message=message,
            action=action,
            figures={
                "write_failures": float(self.write_failures),
                "events_dropped": float(self.mirror.events_dropped),
            },
            ts_event=now,
            ts_init=now,
        )
        if self.state in (ActorState.RUNNING, ActorState.RESTARTING):
            # through the inbox: only the actor's own handler sends
            self.inbox.put_nowait(_OwnAlert(alert))


def _fields(fields: HashFields) -> Mapping[FieldT, EncodableT]:
    """A hash's fields as redis-py types them (its key type is wider than ``str``)."""
    return cast("Mapping[FieldT, EncodableT]", fields)


async def _close(client: aioredis.Redis) -> None:
    with contextlib.suppress(*_FAILURES):  # the connection may be gone already
        await client.aclose()
