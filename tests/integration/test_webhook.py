"""Alerts to a webhook, against a real aiohttp server on loopback: the payload, retries
(5xx, a dropped connection, 429 with Retry-After), no retry on 400, de-duplication, the
rate limit, CRITICAL alerts, the queue bound, the flush on stop, and the ``alert_webhook``
actor (its URL from a systemd credential, its sender owned by the supervisor)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.webhook import AlertWebhook, WebhookNotifier
from engine.clock import LiveClock
from engine.config import parse_config
from engine.errors import ConfigError
from engine.messages import Alert, AlertLevel, Signal
from engine.supervisor import Supervisor
from engine.wiring import System
from tests.helpers import eventually

TS = 1_723_161_601_500_000_000  # 2024-08-09T00:00:01.5Z


class Receiver:
    """A webhook endpoint. ``script`` says how to answer the next requests: a status, a
    ``(status, headers)`` pair, ``"drop"`` (close the connection without an answer) or
    ``"hang"`` (answer after a long while); then 200. Every request is recorded."""

    def __init__(self) -> None:
        self.script: deque[Any] = deque()
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    @property
    def delivered(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["answer"] == 200]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        answer = self.script.popleft() if self.script else 200
        self.requests.append(
            {
                "at": time.monotonic(),
                "body": await request.json(),
                "headers": dict(request.headers),
                "path": request.path,
                "answer": answer,
            }
        )
        if answer == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=200)
        if answer == "hang":
            await asyncio.sleep(30)
        if isinstance(answer, tuple):
            status, headers = answer
            return web.Response(status=status, headers=headers, text="slow down")
        return web.Response(status=int(answer), text="ok" if answer == 200 else "no")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hooks/{token}", r.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    r.url = f"http://127.0.0.1:{port}/hooks/t0k3n"
    yield r
    await runner.cleanup()


def alert(
    level: AlertLevel = AlertLevel.WARNING,
    rule: str = "var_limit",
    message: str = "VaR over its limit",
    source: str = "risk_monitor",
    figures: dict[str, float] | None = None,
) -> Alert:
    return Alert(
        level=level,
        source=source,
        rule=rule,
        message=message,
        action="reduce",
        figures=figures or {"var": 12_500.0, "limit": 10_000.0},
        ts_event=TS,
        ts_init=TS,
    )


def notifier(url: str, **settings: Any) -> WebhookNotifier:
    """Short intervals for tests: back-off from 10 ms, a generous rate unless told."""
    settings.setdefault("backoff_initial_s", 0.01)
    settings.setdefault("backoff_max_s", 0.05)
    settings.setdefault("rate_per_minute", 6000.0)
    settings.setdefault("burst", 100)
    settings.setdefault("host", "trader-1")
    return WebhookNotifier(url, **settings)


def acknowledged(n: WebhookNotifier, receiver: Receiver, count: int) -> bool:
    """``count`` alerts arrived and the sender has read every answer. The receiver records
    a request before it answers, so waiting on it alone may stop the sender mid-delivery,
    and the flush then sends that alert again (by design: twice beats never)."""
    return len(receiver.delivered) == count and n.stats.sent == count


@asynccontextmanager
async def running(n: WebhookNotifier) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(n.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- delivery -----------------------------------------------------------------------------


async def test_an_alert_is_posted_as_json_with_every_field(receiver: Receiver) -> None:
    n = notifier(receiver.url)
    assert n.submit(alert(figures={"var": 12_500.0, "limit": 10_000.0, "es": math.inf}))
    assert not n.submit(alert(AlertLevel.INFO, rule="heartbeat")), "INFO is below WARNING"
    async with running(n):
        await eventually(lambda: n.stats.sent == 1)
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/hooks/t0k3n"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {
        "level": "WARNING",
        "source": "risk_monitor",
        "rule": "var_limit",
        "message": "VaR over its limit",
        "action": "reduce",
        "figures": {"var": 12_500.0, "limit": 10_000.0, "es": "inf"},
        "ts": "2024-08-09T00:00:01.500000Z",
        "host": "trader-1",
        "service": "tradingd",
        "repeats": 0,
        "suppressed": {"rate_limited": 0, "dropped": 0, "alerts": {}},
    }
    assert n.stats.as_dict() == {
        "deduped": 0,
        "dropped": 0,
        "failed": 0,
        "ignored": 1,
        "rate_limited": 0,
        "retried": 0,
        "sent": 1,
    }


@pytest.mark.parametrize("failure", [503, "drop"], ids=["503", "dropped-connection"])
async def test_a_failed_delivery_is_retried_until_it_succeeds(
    receiver: Receiver, failure: Any
) -> None:
    receiver.script.extend([failure, failure])
    n = notifier(receiver.url)
    n.submit(alert())
    async with running(n):
        await eventually(lambda: n.stats.sent == 1)
    assert [r["answer"] for r in receiver.requests] == [failure, failure, 200]
    assert receiver.requests[0]["body"] == receiver.requests[2]["body"]
    assert (n.stats.retried, n.stats.failed) == (2, 0)


async def test_retries_stop_after_max_retries(receiver: Receiver) -> None:
    receiver.script.extend([500] * 10)
    n = notifier(receiver.url, max_retries=2)
    n.submit(alert())
    async with running(n):
        await eventually(lambda: n.stats.failed == 1)
        # given up on that one; the next alert is delivered
        receiver.script.clear()
        n.submit(alert(rule="drawdown"))
        await eventually(lambda: n.stats.sent == 1)
    assert [r["answer"] for r in receiver.requests] == [500, 500, 500, 200]
    assert n.stats.retried == 2


async def test_a_429_is_retried_after_the_time_retry_after_asks(receiver: Receiver) -> None:
    receiver.script.append((429, {"Retry-After": "1"}))
    n = notifier(receiver.url)
    n.submit(alert())
    async with running(n):
        await eventually(lambda: n.stats.sent == 1, timeout=5)
    first, second = receiver.requests
    # the back-off alone would have retried after 5 to 10 ms
    assert second["at"] - first["at"] >= 0.95
    assert n.stats.retried == 1


async def test_a_400_is_not_retried(receiver: Receiver) -> None:
    receiver.script.append(400)
    n = notifier(receiver.url)
    n.submit(alert())
    async with running(n):
        await eventually(lambda: n.stats.failed == 1)
        n.submit(alert(rule="drawdown"))
        await eventually(lambda: n.stats.sent == 1)
    assert [(r["answer"], r["body"]["rule"]) for r in receiver.requests] == [
        (400, "var_limit"),
        (200, "drawdown"),
    ]
    assert n.stats.retried == 0


# --- de-duplication, the rate limit, CRITICAL, the queue ------------------------------------


async def test_a_burst_of_identical_alerts_is_sent_once_then_once_per_window_with_repeats(
    receiver: Receiver,
) -> None:
    n = notifier(receiver.url, dedupe_window_s=0.4)
    async with running(n):
        for i in range(1, 21):
            assert n.submit(alert(message=f"VaR over its limit ({i})"))
        n.submit(alert(rule="drawdown", message="drawdown 6%"))  # another rule: its own
        await eventually(lambda: acknowledged(n, receiver, 2))
        assert [(b["rule"], b["message"], b["repeats"]) for b in receiver.delivered] == [
            ("var_limit", "VaR over its limit (1)", 0),
            ("drawdown", "drawdown 6%", 0),
        ]
        # the window closes: the latest of the 19 repeats goes, counting them
        await eventually(lambda: acknowledged(n, receiver, 3), timeout=3)
        assert receiver.delivered[2]["message"] == "VaR over its limit (20)"
        assert receiver.delivered[2]["repeats"] == 19
        # the flood goes on: still one message per window
        n.submit(alert(message="VaR over its limit (21)"))
        n.submit(alert(message="VaR over its limit (22)"))
        await eventually(lambda: acknowledged(n, receiver, 4), timeout=3)
    assert receiver.delivered[3]["message"] == "VaR over its limit (22)"
    assert receiver.delivered[3]["repeats"] == 2
    assert n.stats.deduped == 21
    assert n.stats.sent == 4


async def test_over_the_rate_limit_alerts_are_counted_and_summarised(
    receiver: Receiver,
) -> None:
    # a token every 2 s: by the next one, however slow the machine, all five over the
    # limit have been counted, so one summary carries them all
    n = notifier(receiver.url, rate_per_minute=30.0, burst=3)
    for i in range(8):
        n.submit(alert(rule=f"limit_{i}"))
    async with running(n):
        await eventually(lambda: acknowledged(n, receiver, 4), timeout=10)
    bodies = receiver.delivered
    assert [b["rule"] for b in bodies] == ["limit_0", "limit_1", "limit_2", "alerts_suppressed"]
    summary = bodies[3]
    assert summary["suppressed"] == {
        "rate_limited": 5,
        "dropped": 0,
        "alerts": {f"WARNING risk_monitor/limit_{i}": 1 for i in range(3, 8)},
    }
    assert summary["level"] == "WARNING"
    assert summary["message"].startswith("5 alerts were not sent: 5 over the rate limit")
    times = [r["at"] for r in receiver.requests]
    assert times[2] - times[0] < 1.0, "the burst goes at once, well before the next token"
    assert times[3] - times[0] >= 1.8, "the summary waits for the next token (2 s)"
    assert n.stats.rate_limited == 5
    assert n.stats.sent == 4


async def test_a_critical_alert_waits_for_a_token_and_carries_the_summary(
    receiver: Receiver,
) -> None:
    n = notifier(receiver.url, rate_per_minute=60.0, burst=2)
    async with running(n):
        for i in range(3):
            n.submit(alert(rule=f"limit_{i}"))
        await eventually(lambda: n.stats.rate_limited == 1)
        assert n.submit(alert(AlertLevel.CRITICAL, rule="drawdown_halt", message="halted"))
        await eventually(lambda: acknowledged(n, receiver, 3), timeout=3)
    critical = receiver.delivered[2]
    assert (critical["level"], critical["rule"]) == ("CRITICAL", "drawdown_halt")
    assert critical["suppressed"]["rate_limited"] == 1
    assert critical["suppressed"]["alerts"] == {"WARNING risk_monitor/limit_2": 1}
    assert critical["message"].startswith("halted [1 earlier alerts not sent")
    # nothing was left to report: the stop would have flushed a summary still pending
    assert len(receiver.requests) == 3


async def test_critical_alerts_bypass_de_duplication(receiver: Receiver) -> None:
    n = notifier(receiver.url, min_level="ERROR", dedupe_window_s=60.0)
    assert not n.submit(alert(AlertLevel.WARNING))
    for i in range(3):
        assert n.submit(alert(AlertLevel.CRITICAL, rule="flatten", message=f"flatten {i}"))
    n.submit(alert(AlertLevel.ERROR, rule="restart_budget_spent"))
    n.submit(alert(AlertLevel.ERROR, rule="restart_budget_spent"))
    async with running(n):
        await eventually(lambda: acknowledged(n, receiver, 4))
    # the stop flushes the open window of the repeated ERROR
    assert [(b["level"], b["message"], b["repeats"]) for b in receiver.delivered] == [
        ("CRITICAL", "flatten 0", 0),
        ("CRITICAL", "flatten 1", 0),
        ("CRITICAL", "flatten 2", 0),
        ("ERROR", "VaR over its limit", 0),
        ("ERROR", "VaR over its limit", 1),
    ]
    assert (n.stats.deduped, n.stats.ignored) == (1, 1)


async def test_the_queue_is_bounded_and_what_overflows_is_counted_and_reported(
    receiver: Receiver,
) -> None:
    n = notifier(receiver.url, queue_limit=3)
    taken = [n.submit(alert(rule=f"limit_{i}")) for i in range(5)]
    assert taken == [True, True, True, False, False]
    assert n.stats.dropped == 2
    # a CRITICAL alert is not turned away: the oldest other alert makes room
    assert n.submit(alert(AlertLevel.CRITICAL, rule="drawdown_halt"))
    assert n.queued == 3
    assert n.stats.dropped == 3
    async with running(n):
        await eventually(lambda: acknowledged(n, receiver, 3))
    bodies = receiver.delivered
    assert [b["rule"] for b in bodies] == ["drawdown_halt", "limit_1", "limit_2"]
    assert bodies[0]["suppressed"] == {"rate_limited": 0, "dropped": 3, "alerts": {}}
    assert bodies[1]["suppressed"]["dropped"] == 0


# --- stopping ------------------------------------------------------------------------------


async def test_cancelling_the_sender_flushes_what_is_queued_and_open_repeats(
    receiver: Receiver,
) -> None:
    n = notifier(receiver.url, dedupe_window_s=60.0)
    async with running(n) as task:
        n.submit(alert(message="first"))
        await eventually(lambda: n.stats.sent == 1)
        for i in range(4):
            n.submit(alert(message=f"repeat {i}"))
        n.submit(alert(rule="drawdown"))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled(), "the sender re-raises CancelledError after flushing"
    assert [(b["rule"], b["message"], b["repeats"]) for b in receiver.delivered] == [
        ("var_limit", "first", 0),
        ("drawdown", "VaR over its limit", 0),
        ("var_limit", "repeat 3", 4),
    ]


async def test_the_flush_gives_up_at_its_deadline(receiver: Receiver) -> None:
    receiver.script.extend(["hang"] * 3)
    n = notifier(receiver.url, flush_timeout_s=0.3, timeout_s=10.0)
    async with running(n) as task:
        n.submit(alert())
        n.submit(alert(rule="drawdown"))
        await eventually(lambda: len(receiver.requests) == 1)
        started = time.monotonic()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        took = time.monotonic() - started
    # the request cut off by the cancel is tried again in the flush, and hangs again
    assert [r["body"]["rule"] for r in receiver.requests] == ["var_limit", "var_limit"]
    assert took < 1.5, f"the stop took {took:.2f}s"
    assert n.stats.sent == 0
    assert n.stats.dropped == 2, "both alerts are counted as lost"


# --- the actor -----------------------------------------------------------------------------

CONFIG = """
mode = "paper"
[account]
currency = "USD"
starting_balance = 1000.0
[[instruments]]
id = "A.SIM"
asset_class = "fx"
quote_currency = "USD"
price_increment = 0.01
[actors.alerts]
kind = "alert_webhook"
{url_setting}
dedupe_window_s = 30.0
backoff_initial_s = 0.01
"""


def system_with(url_setting: str) -> System:
    config = parse_config(CONFIG.format(url_setting=url_setting), file="daemon.toml")
    return System(config, LiveClock(), file="daemon.toml")


def test_a_missing_credential_fails_at_start_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as err:
        system_with('url_credential = "webhook-url"')
    message = str(err.value)
    assert "'webhook-url'" in message
    assert "CREDENTIALS_DIRECTORY is not set" in message
    assert "$.actors.alerts.url_credential" in message

    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError, match=r"credential 'webhook-url' cannot be read"):
        system_with('url_credential = "webhook-url"')


def test_the_url_is_url_or_url_credential_and_must_be_http() -> None:
    with pytest.raises(ConfigError, match="either `url` or `url_credential`"):
        system_with("")
    with pytest.raises(ConfigError, match=r"http:// or https://.*\$\.actors\.alerts\.url"):
        system_with('url = "ftp://example.org/hook"')


async def test_the_actor_sends_the_alerts_it_receives_and_flushes_on_stop(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "webhook-url").write_text(receiver.url + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    system = system_with('url_credential = "webhook-url"')
    actor = system.actors["alerts"]
    assert isinstance(actor, AlertWebhook)
    assert actor.notifier.url == receiver.url
    supervisor = Supervisor(system.start_order, system.clock, system.quiescence)
    run = asyncio.create_task(supervisor.run())
    try:
        await supervisor.started()
        actor.inbox.put_nowait(alert(message="first"))
        actor.inbox.put_nowait(
            Signal(
                strategy_id="s", instrument_id="A.SIM", name="x", value=1.0, ts_event=1, ts_init=1
            )
        )
        await eventually(lambda: acknowledged(actor.notifier, receiver, 1))
        actor.inbox.put_nowait(alert(message="again"))  # within the window: held as a repeat
        await eventually(lambda: actor.notifier.stats.deduped == 1)
        assert len(receiver.delivered) == 1
        await supervisor.stop(drain_timeout_s=2.0)
        await asyncio.wait_for(run, 5.0)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert [(b["message"], b["repeats"]) for b in receiver.delivered] == [
        ("first", 0),
        ("again", 1),
    ]
    assert actor.ignored == 1
    assert actor.snapshot()["webhook"]["sent"] == 2
