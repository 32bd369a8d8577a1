"""The Redis mirror against real Redis servers on loopback: the bundled sample replayed with
the live (``tasks``) executor and a ``redis_mirror`` actor wired in, then read back from
Redis as another process would read it.

- the mirror ends equal to what the backtest ends with (positions, P&L, every fill of
  the stream in order, the last quote, open orders);
- a Redis server killed in the middle of a run: trading goes on unchanged, the failures
  and drops are counted, and once the server is back the mirror is rebuilt;
- alerts reach pub/sub subscribers; Redis absent from the start costs one alert, not one
  per write.

The shared Redis is 127.0.0.1:6379 (each test uses its own key prefix and deletes it); the
outage test starts and kills a throwaway ``redis-server`` of its own on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

from adapters.redis_mirror import RedisMirror
from engine.actor import Actor, ActorConfig
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.clock import LiveClock
from engine.config import parse_config
from engine.errors import ConfigError
from engine.messages import (
    Alert,
    AlertLevel,
    OrderAccepted,
    OrderDenied,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRequest,
    PortfolioSnapshot,
    PositionRow,
    QuoteBatch,
    QuoteTick,
    Side,
    TradingState,
    TradingStateChanged,
)
from engine.supervisor import Supervisor
from engine.ticks import open_quotes
from engine.wiring import System
from tests.helpers import eventually, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "backtest.toml"
SAMPLE = ROOT / "data" / "sample" / "binance-btcusdt" / "quotes.npy"
INSTRUMENT = "BTCUSDT.BINANCE"
SHARED_URL = "redis://127.0.0.1:6379/0"

MIRROR = """
[actors.mirror]
kind = "redis_mirror"
url = "{url}"
prefix = "{prefix}"
inbox = 4096
queue_limit = {queue_limit}
reconnect_initial_s = 0.02
reconnect_max_s = 0.1
timeout_s = 0.5
stop_timeout_s = 2.0

[[edges]]
from = "validator.ticks"
to = "mirror"
overflow = "conflate"

[[edges]]
from = "exchange.events"
to = "mirror"

[[edges]]
from = "risk.events"
to = "mirror"

[[edges]]
from = "ema.orders"
to = "mirror"

[[edges]]
from = "portfolio.snapshots"
to = "mirror"
overflow = "conflate"

[[edges]]
from = "mirror.events"
to = "events"
"""


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def prefix(tmp_path: Path) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis, deleted afterwards."""
    if not _answers(SHARED_URL):
        pytest.skip("no Redis answers on 127.0.0.1:6379 (start one: redis-server)")
    name = f"test-mirror:{tmp_path.name}"
    yield name
    client = redis.Redis.from_url(SHARED_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)


def _config(
    tmp_path: Path,
    *,
    mirror: dict[str, Any] | None = None,
    end: str | None = None,
    snapshot_interval_s: float | None = None,
    extra: str = "",
) -> Path:
    """config/backtest.toml (the bundled sample), with a mirror wired in if given."""
    text = CONFIG.read_text().replace(
        'path = "../data/sample/binance-btcusdt/quotes.npy"', f'path = "{SAMPLE}"'
    )
    if end is not None:
        text = text.replace("per_tick = false", f'per_tick = false\nend = "{end}"')
    if snapshot_interval_s is not None:
        text = text.replace(
            'kind = "portfolio"', f'kind = "portfolio"\nsnapshot_interval_s = {snapshot_interval_s}'
        )
    if mirror is not None:
        text += MIRROR.format(**{"queue_limit": 100_000, **mirror})
    text += extra
    path = tmp_path / ("mirrored.toml" if mirror else "plain.toml")
    path.write_text(text)
    return path


def _system(path: Path, *, per_tick: bool = False) -> System:
    system, _ = load_backtest(path, executor="tasks", per_tick=per_tick)
    return system


def _mirror(system: System) -> RedisMirror:
    mirror = system.actors["mirror"]
    assert isinstance(mirror, RedisMirror)
    return mirror


def _stream(client: redis.Redis, prefix: str) -> list[tuple[str, bytes]]:
    return [
        (fields[b"type"].decode(), fields[b"body"])
        for _, fields in client.xrange(f"{prefix}:events")
    ]


def _fills(entries: list[tuple[str, bytes]]) -> list[OrderPartiallyFilled]:
    fill = OrderFilled | OrderPartiallyFilled
    return [
        msgspec.json.decode(body, type=fill)
        for kind, body in entries
        if kind in ("OrderFilled", "OrderPartiallyFilled")
    ]


def _assert_mirror_is_the_final_state(
    client: redis.Redis, prefix: str, system: System, result: BacktestResult, last_tick: Any
) -> None:
    positions = {
        k.decode(): msgspec.json.decode(v, type=PositionRow)
        for k, v in client.hgetall(f"{prefix}:positions").items()
    }
    assert {i: row.quantity for i, row in positions.items()} == result.positions
    pnl = client.hgetall(f"{prefix}:pnl")
    assert float(pnl[b"equity"]) == result.final_equity
    assert float(pnl[b"balance"]) == result.final_balance
    assert float(pnl[b"realized_pnl"]) == result.realized_pnl
    assert float(pnl[b"unrealized_pnl"]) == result.unrealized_pnl
    assert float(pnl[b"commissions"]) == result.commissions
    assert int(pnl[b"fills"]) == result.fills
    assert pnl[b"currency"] == b"USDT"
    # the EMA cross is the one strategy: all the realised P&L and commissions are its
    ema = msgspec.json.decode(pnl[b"strategy:ema"])
    assert ema["realized_pnl"] == pytest.approx(result.realized_pnl, abs=1e-6)
    assert ema["commissions"] == pytest.approx(result.commissions, abs=1e-6)
    quote = client.hgetall(f"{prefix}:quote:{INSTRUMENT}")
    assert float(quote[b"bid"]) == float(last_tick["bid"])
    assert float(quote[b"ask"]) == float(last_tick["ask"])
    assert float(quote[b"bid_size"]) == float(last_tick["bid_size"])
    assert float(quote[b"ask_size"]) == float(last_tick["ask_size"])
    assert int(quote[b"ts"]) == int(last_tick["ts_event"])
    working = set(system.actors["exchange"].venue.working)  # type: ignore[attr-defined]
    assert {k.decode() for k in client.hkeys(f"{prefix}:orders")} == working


OPEN_END = "2024-08-09T00:02:00Z"


def _last_tick(end: str | None = None) -> Any:
    ticks = open_quotes(SAMPLE)
    if end is None:
        return ticks[-1]
    limit = np.datetime64(end.rstrip("Z"), "ns").astype(np.int64)
    return ticks[int(np.searchsorted(ticks["ts_event"], limit)) - 1]


@pytest.mark.parametrize(
    ("executor", "end"),
    [
        ("tasks", None),  # the whole sample: it ends flat
        ("tasks", OPEN_END),  # ends long 0.1 BTC: equity moves after the last fill
        ("inline", OPEN_END),  # the writer runs only as the replay stops: still all there
    ],
)
async def test_the_mirror_ends_as_the_backtest_ends(
    tmp_path: Path, prefix: str, executor: str, end: str | None
) -> None:
    # ending open, snapshots on fills only: the final P&L must come from the one on stop
    interval = None if end is None else 3600.0
    path = _config(
        tmp_path,
        mirror={"url": SHARED_URL, "prefix": prefix},
        end=end,
        snapshot_interval_s=interval,
    )
    system, _ = load_backtest(path, executor=executor)
    result = await run_backtest(system)
    reference = await run_backtest(_system(_config(tmp_path, end=end)))
    mirror = _mirror(system)

    # a mirror changes nothing in trading
    assert result.events_sha256 == reference.events_sha256
    assert result.fills == reference.fills > 0
    if end is None:
        assert result.fills == 403
    else:
        assert result.positions[INSTRUMENT] == 0.1 and result.unrealized_pnl != 0.0
    assert mirror.write_failures == 0
    assert mirror.events_dropped == 0
    assert mirror.outages == 0

    client = redis.Redis.from_url(SHARED_URL)
    _assert_mirror_is_the_final_state(client, prefix, system, result, _last_tick(end))

    # the stream holds every request and every fill, in the order they were booked
    entries = _stream(client, prefix)
    assert sum(kind == "OrderRequest" for kind, _ in entries) == result.orders
    fills = _fills(entries)
    assert len(fills) == result.fills
    booked = system.actors["portfolio"].history.fill_log(costs=False, account=False)  # type: ignore[attr-defined]
    assert [f.last_qty * f.side.sign for f in fills] == booked["qty"].tolist()
    assert [f.last_px for f in fills] == booked["price"].tolist()
    assert mirror.events_written == len(entries)

    status = client.hgetall(f"{prefix}:status")
    assert int(status[b"write_failures"]) == 0
    assert int(status[b"events_written"]) <= len(entries)
    snap = next(a for a in result.actors if a["name"] == "mirror")
    assert snap["connected"] is True and snap["events_written"] == len(entries)


# --- the portfolio's snapshots ----------------------------------------------------------


class SnapshotRecorder(Actor[ActorConfig]):
    """Keeps every message it receives (wired to the portfolio's snapshots)."""

    def on_start(self) -> None:
        if not hasattr(self, "seen"):
            self.seen: list[PortfolioSnapshot] = []

    def on_message(self, msg: Any) -> None:
        self.seen.append(msg)


RECORDER = """
[actors.recorder]
kind = "tests.integration.test_redis_mirror:SnapshotRecorder"

[[edges]]
from = "portfolio.snapshots"
to = "recorder"
"""


async def test_snapshots_on_the_clock_after_fills_and_on_stop_only_when_wired(
    tmp_path: Path,
) -> None:
    plain = await run_backtest(_system(_config(tmp_path, end=OPEN_END)))
    (tmp_path / "wired").mkdir()
    wired_path = _config(tmp_path / "wired", end=OPEN_END, extra=RECORDER)
    system, _ = load_backtest(wired_path)  # inline, as a backtest runs
    result = await run_backtest(system)
    snaps: list[PortfolioSnapshot] = system.actors["recorder"].seen  # type: ignore[attr-defined]

    assert result.events_sha256 == plain.events_sha256
    # unwired, the portfolio took the quote batches and the fills, and no timer
    processed = {a["name"]: a["processed"] for a in plain.actors}
    assert processed["portfolio"] == plain.batches + plain.fills
    # wired: one a second of data time (whole seconds), one per fill, one on stop
    first_tick = int(open_quotes(SAMPLE)["ts_event"][0])
    last_tick = int(_last_tick(OPEN_END)["ts_event"])
    second = 1_000_000_000
    grid = range((first_tick // second + 1) * second, last_tick + 1, second)
    on_grid = [s for s in snaps if s.ts_event % second == 0]
    assert [s.ts_event for s in on_grid] == list(grid)
    assert len(snaps) == len(grid) + result.fills + 1
    assert [s.fills for s in snaps] == sorted(s.fills for s in snaps)
    last = snaps[-1]
    assert last.ts_event == last_tick
    assert (last.balance, last.equity, last.fills) == (
        result.final_balance,
        result.final_equity,
        result.fills,
    )
    assert last.unrealized_pnl == result.unrealized_pnl != 0.0
    (row,) = last.positions
    assert (row.instrument_id, row.quantity) == (INSTRUMENT, result.positions[INSTRUMENT])
    assert row.mark == (float(_last_tick(OPEN_END)["bid"]) + float(_last_tick(OPEN_END)["ask"])) / 2
    assert [s.strategy_id for s in last.strategies] == ["ema"]
    assert last.strategies[0].commissions == pytest.approx(result.commissions, abs=1e-9)


# --- an outage in the middle of a run ------------------------------------------------------


class ThrowawayRedis:
    """A ``redis-server`` of the test's own on a free loopback port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _answers(self.url), timeout=10, message="redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


OUTAGE_END = "2024-08-09T00:00:00Z"  # the first 5 3/4 minutes of the sample
OUTAGE_QUEUE = 60
"""Events queued at most while Redis is down: more than the mirror ever has waiting when
it is up (about 35 on this run, one tick at a time), fewer than the outage brings."""


async def test_trading_goes_on_through_an_outage_and_the_mirror_is_rebuilt(
    tmp_path: Path, throwaway_redis: ThrowawayRedis
) -> None:
    server = throwaway_redis
    prefix = "outage"
    path = _config(
        tmp_path,
        mirror={"url": server.url, "prefix": prefix, "queue_limit": OUTAGE_QUEUE},
        end=OUTAGE_END,
    )
    # one tick at a time: the same trades as batched, and slow enough to act during it
    system = _system(path, per_tick=True)
    mirror = _mirror(system)
    run = asyncio.create_task(run_backtest(system))
    await eventually(lambda: mirror.events_written >= 20, timeout=30, message="mirror writing")
    assert mirror.events_dropped == 0
    server.kill()
    await eventually(lambda: mirror.write_failures > 0, message="a failed write")
    await eventually(lambda: mirror.events_dropped > 0, timeout=30, message="events dropped")
    assert not run.done(), "the run ended before the outage could be observed"
    failures_while_down = mirror.write_failures
    server.start()
    await eventually(lambda: mirror.rebuilds == 1, timeout=10, message="a rebuild")
    rebuilt_before_the_end = not run.done()
    result = await run
    reference = await run_backtest(_system(_config(tmp_path, end=OUTAGE_END)))

    # trading did not notice
    assert result.events_sha256 == reference.events_sha256
    assert result.fills == reference.fills > 0
    assert result.final_balance == reference.final_balance
    # the outage was counted, alerted once each way, and repaired
    assert rebuilt_before_the_end
    assert failures_while_down >= 1
    assert mirror.outages == 1
    alerts = [
        r
        for r in system.actors["events"].risk_records  # type: ignore[attr-defined]
        if isinstance(r, Alert) and r.source == "mirror"
    ]
    assert [(a.level, a.action) for a in alerts] == [
        (AlertLevel.WARNING, "reconnect"),
        (AlertLevel.INFO, "rebuilt"),
    ]
    assert alerts[0].figures["write_failures"] >= 1

    # the server came back empty: everything it holds is the rebuild and what followed
    client = redis.Redis.from_url(server.url)
    _assert_mirror_is_the_final_state(client, prefix, system, result, _last_tick(OUTAGE_END))
    entries = _stream(client, prefix)
    gaps = [msgspec.json.decode(body) for kind, body in entries if kind == "Gap"]
    assert gaps and sum(g["dropped"] for g in gaps) == mirror.events_dropped
    assert all(g["first_ts"] <= g["last_ts"] for g in gaps)
    # the stream resumed: its fills are the booked ones in order, with the dropped ones
    # missing, up to the last
    booked = system.actors["portfolio"].history.fill_log(costs=False, account=False)  # type: ignore[attr-defined]
    booked_fills = list(zip(booked["qty"].tolist(), booked["price"].tolist(), strict=True))
    streamed = [(f.last_qty * f.side.sign, f.last_px) for f in _fills(entries)]
    assert 0 < len(streamed) < len(booked_fills)
    assert streamed[-1] == booked_fills[-1]
    rest = iter(booked_fills)
    assert all(fill in rest for fill in streamed), "stream fills out of order"
    status = client.hgetall(f"{prefix}:status")
    assert int(status[b"write_failures"]) == mirror.write_failures
    assert int(status[b"events_dropped"]) == mirror.events_dropped
    assert int(status[b"rebuilds"]) == 1


# --- a mirror on its own, on a live clock ------------------------------------------------

LIVE = """\
mode = "paper"

[account]
currency = "USD"
starting_balance = 100_000.0

[[instruments]]
id = "EURUSD.SIM"
asset_class = "fx"
quote_currency = "USD"
price_increment = 0.00001
size_increment = 1.0

[actors.mirror]
kind = "redis_mirror"
url = "{url}"
prefix = "{prefix}"
reconnect_initial_s = 0.02
reconnect_max_s = 0.05
timeout_s = 0.5
stop_timeout_s = 0.2
heartbeat_s = 0.05
"""


@contextlib.asynccontextmanager
async def _live_mirror(url: str, prefix: str) -> AsyncIterator[RedisMirror]:
    clock = LiveClock()
    system = System(parse_config(LIVE.format(url=url, prefix=prefix)), clock)
    supervisor = Supervisor(system.start_order, clock, system.quiescence)
    task = asyncio.create_task(supervisor.run())
    await asyncio.wait_for(supervisor.started(), 2.0)
    try:
        yield _mirror(system)
    finally:
        await supervisor.stop()
        await task


def _alert(now: int) -> Alert:
    return Alert(
        level=AlertLevel.ERROR,
        source="monitor",
        rule="drawdown_halt",
        message="drawdown 10.4% over its 10% limit; trading halted",
        action="halt",
        figures={"drawdown": 0.104},
        ts_event=now,
        ts_init=now,
    )


async def test_alerts_reach_pubsub_subscribers(prefix: str) -> None:
    subscriber = aioredis.Redis.from_url(SHARED_URL)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe(f"{prefix}:alerts")
    await pubsub.get_message(timeout=1.0)  # the subscription's confirmation
    try:
        async with _live_mirror(SHARED_URL, prefix) as mirror:
            await eventually(lambda: mirror.connected, message="mirror connected")
            sent = _alert(mirror.clock.now())
            mirror.inbox.put_nowait(sent)
            got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
        assert got is not None, "no alert published"
        assert msgspec.json.decode(got["data"], type=Alert) == sent
        entries = _stream(redis.Redis.from_url(SHARED_URL), prefix)
        assert entries == [("Alert", msgspec.json.encode(sent))]
    finally:
        await pubsub.aclose()
        await subscriber.aclose()


async def test_open_orders_follow_their_events(prefix: str) -> None:
    client = redis.Redis.from_url(SHARED_URL)

    def orders() -> dict[str, Any]:
        return {
            k.decode(): msgspec.json.decode(v)
            for k, v in client.hgetall(f"{prefix}:orders").items()
        }

    async with _live_mirror(SHARED_URL, prefix) as mirror:
        now = mirror.clock.now()
        ids = {"strategy_id": "s", "instrument_id": "EURUSD.SIM", "ts_event": now, "ts_init": now}
        for coid in ("a", "b", "c"):
            mirror.inbox.put_nowait(
                OrderRequest(client_order_id=coid, side=Side.BUY, quantity=3000.0, **ids)
            )
        mirror.inbox.put_nowait(OrderAccepted(client_order_id="a", venue_order_id="v1", **ids))
        mirror.inbox.put_nowait(OrderDenied(client_order_id="c", reason="too big", **ids))
        fill = {
            "client_order_id": "a",
            "venue_order_id": "v1",
            "side": Side.BUY,
            "commission": 0.1,
            "commission_currency": "USD",
            "liquidity": "TAKER",
            **ids,
        }
        mirror.inbox.put_nowait(
            OrderPartiallyFilled(
                trade_id="t1", last_qty=1000.0, last_px=1.1, leaves_qty=2000.0, **fill
            )
        )
        seen = await eventually(lambda: (o := orders()).get("a", {}).get("filled_qty") and o)
        assert set(seen) == {"a", "b"}  # the denied order is gone
        assert seen["a"]["status"] == "PARTIALLY_FILLED"
        assert seen["a"]["leaves_qty"] == 2000.0 and seen["a"]["venue_order_id"] == "v1"
        assert seen["b"]["status"] == "PENDING" and seen["b"]["quantity"] == 3000.0
        mirror.inbox.put_nowait(
            OrderFilled(trade_id="t2", last_qty=2000.0, last_px=1.2, leaves_qty=0.0, **fill)
        )
        mirror.inbox.put_nowait(
            TradingStateChanged(
                previous=TradingState.ACTIVE,
                state=TradingState.REDUCING,
                reason="limit breached",
                origin="monitor",
                ts_event=now,
                ts_init=now,
            )
        )
        await eventually(lambda: set(orders()) == {"b"}, message="order a removed on its fill")
        status = await eventually(lambda: client.hgetall(f"{prefix}:status").get(b"trading_state"))
        assert status == b"REDUCING"
    kinds = [kind for kind, _ in _stream(client, prefix)]
    assert kinds == [
        *["OrderRequest"] * 3,
        "OrderAccepted",
        "OrderDenied",
        "OrderPartiallyFilled",
        "OrderFilled",
        "TradingStateChanged",
    ]


async def test_redis_absent_from_the_start_costs_one_alert_and_no_trading() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with _live_mirror(f"redis://127.0.0.1:{port}/0", "nowhere") as mirror:
        now = mirror.clock.now()
        for _ in range(3):
            mirror.inbox.put_nowait(_alert(now))
        await eventually(lambda: mirror.write_failures >= 3, message="reconnect attempts")
        assert mirror.outages == 1
        assert not mirror.connected
        # its own WARNING went out once, through its handler, queued for the stream too
        await eventually(lambda: mirror.mirror.queued == 4)
    assert mirror.outages == 1
    assert mirror.rebuilds == 0
    assert mirror.stats.errors == 0


async def test_a_crashed_mirror_restarts_with_one_writer_and_its_state(prefix: str) -> None:
    client = redis.Redis.from_url(SHARED_URL)
    async with _live_mirror(SHARED_URL, prefix) as mirror:
        now = mirror.clock.now()
        mirror.inbox.put_nowait(_alert(now))
        await eventually(lambda: mirror.events_written == 1)
        first_writer = mirror._writer
        # a batch without the columns of a quote batch: the handler raises
        bad = QuoteBatch(
            data=np.zeros(2), instrument_ids=("EURUSD.SIM",), ts_event=now, ts_init=now
        )
        mirror.inbox.put_nowait(bad)
        await eventually(lambda: mirror.stats.restarts == 1, message="a restart")
        await eventually(first_writer.done, message="the old writer gone")
        mirror.inbox.put_nowait(_alert(now))
        await eventually(lambda: mirror.events_written == 2, message="the new writer writing")
        assert [t for t in mirror._owned if not t.done()] == [mirror._writer]
    assert mirror.stats.errors == 1
    assert [kind for kind, _ in _stream(client, prefix)] == ["Alert", "Alert"]


_VOLATILE = {b"last_write_ts", b"clock_ts", b"write_failures", b"events_written", b"rebuilds"}


def _hashes(client: redis.Redis, prefix: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the mirror, less the status fields that move with each write."""
    out = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        if client.type(key) == b"hash":
            out[key] = {k: v for k, v in client.hgetall(key).items() if k not in _VOLATILE}
    return out


async def test_a_restarted_redis_gets_the_whole_mirror_back(
    throwaway_redis: ThrowawayRedis,
) -> None:
    server, prefix = throwaway_redis, "rebuild"
    async with _live_mirror(server.url, prefix) as mirror:
        now = mirror.clock.now()
        ids = {"strategy_id": "s", "instrument_id": "EURUSD.SIM", "ts_event": now, "ts_init": now}
        sent = [
            QuoteTick(
                instrument_id="EURUSD.SIM",
                bid=1.1,
                ask=1.10002,
                bid_size=1e6,
                ask_size=2e6,
                ts_event=now,
                ts_init=now,
            ),
            OrderRequest(client_order_id="a", side=Side.SELL, quantity=5000.0, **ids),
            OrderAccepted(client_order_id="a", venue_order_id="v1", **ids),
            PortfolioSnapshot(
                currency="USD",
                balance=99_990.0,
                equity=99_991.5,
                realized_pnl=0.0,
                unrealized_pnl=1.5,
                commissions=10.0,
                max_drawdown=10.0,
                fills=1,
                positions=[
                    PositionRow(
                        instrument_id="EURUSD.SIM",
                        quantity=1000.0,
                        avg_price=1.0985,
                        mark=1.10001,
                        unrealized_pnl=1.5,
                        realized_pnl=0.0,
                    )
                ],
                ts_event=now,
                ts_init=now,
            ),
            TradingStateChanged(
                previous=TradingState.ACTIVE,
                state=TradingState.HALTED,
                reason="operator",
                origin="ctl",
                ts_event=now,
                ts_init=now,
            ),
        ]
        for msg in sent:
            mirror.inbox.put_nowait(msg)
        client = redis.Redis.from_url(server.url)
        await eventually(lambda: mirror.events_written == 3, message="events written")
        before = _hashes(client, prefix)
        assert set(before) == {
            f"{prefix}:{k}".encode()
            for k in ("quote:EURUSD.SIM", "orders", "positions", "pnl", "status")
        }
        assert before[f"{prefix}:status".encode()][b"trading_state"] == b"HALTED"

        server.kill()  # no write is due: the heartbeat finds the outage
        await eventually(lambda: mirror.write_failures > 0, message="the outage noticed")
        server.start()  # empty: no persistence
        await eventually(lambda: mirror.rebuilds == 1, message="a rebuild")
        # nothing changed since: only the rebuild can have put all of it back
        after = _hashes(redis.Redis.from_url(server.url), prefix)
        assert after == before
        entries = await eventually(lambda: _stream(redis.Redis.from_url(server.url), prefix))
        alerts = [msgspec.json.decode(body, type=Alert) for _, body in entries]
        assert [(a.level, a.action) for a in alerts][:1] == [(AlertLevel.WARNING, "reconnect")]


def test_a_bad_url_is_refused_with_its_key(tmp_path: Path) -> None:
    path = _config(tmp_path, mirror={"url": "http://127.0.0.1:6379", "prefix": "x"})
    with pytest.raises(ConfigError, match=r"redis://.*actors\.mirror"):
        load_backtest(path)
