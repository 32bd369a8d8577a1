"""``tradingd run`` as a process, under a fake systemd: READY, STATUS and watchdog pings on a
real ``NOTIFY_SOCKET``; driven with ``tradingd ctl`` (halt, resume, flatten, limits set);
stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.cli import main
from engine.journal import read_journal
from engine.messages import (
    ControlCommand,
    OrderAccepted,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRequest,
    RiskDecision,
    TradingStateChanged,
)
from tests.helpers import eventually, wait_until
from tests.system.daemon_process import own_config, start_daemon

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


class FakeSystemd:
    """The receiving end of ``NOTIFY_SOCKET``: every datagram, with the time it came."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.path = path
        self.messages: list[tuple[float, dict[str, str]]] = []

    def poll(self) -> list[tuple[float, dict[str, str]]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def seen(self, key: str, value: str | None = None) -> list[float]:
        return [t for t, f in self.poll() if key in f and (value is None or f[key] == value)]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], FakeSystemd, Path]]:
    notify = FakeSystemd(tmp_path / "notify.sock")
    state = tmp_path / "state"
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    proc = start_daemon(own_config(tmp_path), state, tmp_path / "daemon.log", env=env)
    try:
        yield proc, notify, state
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def ctl(state: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(["ctl", "--socket", str(state / "control.sock"), "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def _get(state: Path, path: str) -> tuple[int, str]:
    """A GET on the daemon's control socket (what a probe or Prometheus would do)."""

    async def get() -> tuple[int, str]:
        connector = aiohttp.UnixConnector(path=str(state / "control.sock"))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"http://localhost{path}") as reply,
        ):
            return reply.status, await reply.text()

    return asyncio.run(get())


def _router_orders(state: Path, capsys: pytest.CaptureFixture[str]) -> int:
    code, reply = ctl(state, capsys, "actors")
    assert code == 0
    (router,) = [a for a in reply["actors"] if a["name"] == "router"]
    return int(router["processed"])


def test_the_daemon_under_a_fake_systemd_driven_by_ctl(
    daemon: tuple[subprocess.Popen[bytes], FakeSystemd, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    proc, notify, state = daemon
    log = tmp_path / "daemon.log"
    wait_until(lambda: notify.seen("READY", "1") or proc.poll() is not None, 120)
    assert proc.poll() is None, log.read_text()[-3000:]
    ready_at = notify.seen("READY", "1")[0]
    # the control socket is private to the daemon's user
    assert (state / "control.sock").stat().st_mode & 0o777 == 0o600
    # watchdog pings from the event loop, about every second (WATCHDOG_USEC / 2)
    wait_until(lambda: len([t for t in notify.seen("WATCHDOG", "1") if t > ready_at]) >= 3, 10)
    assert any("ready ACTIVE" in f.get("STATUS", "") for _, f in notify.poll())

    # orders flow: the strategy trades the replayed sample (20x real time)
    wait_until(lambda: _router_orders(state, capsys) >= 3, 60, message="orders routed")

    # health and Prometheus metrics on the same socket
    status, body = _get(state, "/health")
    assert status == 200 and json.loads(body)["healthy"] is True, body
    status, body = _get(state, "/metrics")
    metrics = {f.name: f for f in text_string_to_metric_families(body)}
    assert status == 200
    routed_seen = [
        s for s in metrics["tradingd_actor_messages"].samples if s.labels["actor"] == "router"
    ]
    assert routed_seen and routed_seen[0].value >= 3
    assert metrics["tradingd_equity"].samples[0].value > 0
    handled = [
        s
        for s in metrics["tradingd_actor_handle_seconds"].samples
        if s.labels["actor"] == "risk" and s.name.endswith("_count")
    ]
    assert handled and handled[0].value > 0

    # halt means halt: no order leaves while the strategy goes on asking
    code, reply = ctl(state, capsys, "halt", "--reason", "system test")
    assert code == 0 and reply["trading_state"] == "HALTED"
    routed = _router_orders(state, capsys)
    _, status = ctl(state, capsys, "status")
    asked = status["orders"]
    wait_until(lambda: ctl(state, capsys, "status")[1]["orders"] >= asked + 3, 60)
    assert _router_orders(state, capsys) == routed
    # the denials are counted for Prometheus by the rule that denied them
    _, body = _get(state, "/metrics")
    denied = {
        s.labels["rule"]: s.value
        for f in text_string_to_metric_families(body)
        if f.name == "tradingd_orders_denied"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert sum(denied.values()) >= 3 and all(denied), denied

    # flatten while halted: working orders cancelled, the position closed, still HALTED
    code, reply = ctl(state, capsys, "flatten")
    assert code == 0, reply
    _, positions = ctl(state, capsys, "positions")
    assert all(p["quantity"] == 0.0 for p in positions["positions"])
    _, status = ctl(state, capsys, "status")
    assert status["trading_state"] == "HALTED" and status["working_orders"] == 0

    # limits set: checked, applied, announced
    code, reply = ctl(state, capsys, "limits", "set", "max_order_quantity=0.05")
    assert code == 0
    _, limits = ctl(state, capsys, "limits", "show")
    assert limits["max_order_quantity"] == 0.05
    code = main(
        ["ctl", "--socket", str(state / "control.sock"), "limits", "set", "max_order_quantity=-1"]
    )
    assert code == 1
    refused = capsys.readouterr().err
    assert "limits refused" in refused and "max_order_quantity" in refused, refused
    _, limits = ctl(state, capsys, "limits", "show")
    assert limits["max_order_quantity"] == 0.05  # the running limits were kept
    code, _ = ctl(state, capsys, "limits", "set", "max_order_quantity=1.0")
    assert code == 0

    # resume: orders flow again
    code, reply = ctl(state, capsys, "resume")
    assert code == 0 and reply["trading_state"] == "ACTIVE"
    wait_until(lambda: _router_orders(state, capsys) > routed + 1, 60, message="orders again")

    # a wrong command gets a readable error and a usage exit code
    with pytest.raises(SystemExit) as usage:
        main(["ctl", "--socket", str(state / "control.sock"), "hlat"])
    assert usage.value.code == 2
    capsys.readouterr()

    # SIGTERM: an orderly stop, STOPPING=1, exit 0
    _, before_stop = ctl(state, capsys, "status")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]
    assert notify.seen("STOPPING", "1")
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "stopped" for e in events)
    assert not (state / "control.sock").exists()

    # the journal: whole, chained, and complete
    code = main(["journal", "verify", "--dir", str(state / "journal"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report
    records = list(read_journal(state / "journal"))
    fills = [r.msg for r in records if isinstance(r.msg, OrderFilled | OrderPartiallyFilled)]
    assert len(fills) >= before_stop["fills"] > 0
    commands = [r.msg for r in records if isinstance(r.msg, ControlCommand)]
    assert [c.command for c in commands if c.command != "strategy.set"] == [
        "halt",
        "flatten",
        "limits.set",
        "limits.set",
        "resume",
    ]
    me = f"uid={os.getuid()}"
    assert all(me in c.origin for c in commands), [c.origin for c in commands]
    states = [r.msg.state.value for r in records if isinstance(r.msg, TradingStateChanged)]
    assert states[:4] == ["HALTED", "REDUCING", "HALTED", "ACTIVE"], states
    # the requests denied while halted are journaled with their figures and the reason
    denials = [r.msg for r in records if isinstance(r.msg, RiskDecision) and r.msg.action == "deny"]
    assert len(denials) >= 3, denials
    assert all("HALTED" in d.reason and d.inputs["quantity"] > 0 for d in denials[:3])
    # write-ahead: every order the router saw was journaled before it
    approved = {r.msg.client_order_id for r in records if isinstance(r.msg, OrderRequest)}
    accepted = {r.msg.client_order_id for r in records if isinstance(r.msg, OrderAccepted)}
    assert accepted <= approved


def test_sighup_reloads_limits_and_parameters_and_refuses_a_bad_file(
    daemon: tuple[subprocess.Popen[bytes], FakeSystemd, Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    proc, notify, state = daemon
    wait_until(lambda: notify.seen("READY", "1") or proc.poll() is not None, 120)
    assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
    limits_file = tmp_path / "paper_limits.toml"
    config = tmp_path / "paper.toml"
    good_limits = limits_file.read_text()

    # new limits and a new strategy parameter, both applied
    limits_file.write_text(
        good_limits.replace("max_order_quantity = 1.0", "max_order_quantity = 0.5")
    )
    config.write_text(config.read_text().replace("quantity = 0.1", "quantity = 0.2"))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: ctl(state, capsys, "limits", "show")[1]["max_order_quantity"] == 0.5, 20)
    _, strategies = ctl(state, capsys, "strategy", "list")
    (ema,) = strategies["strategies"]
    assert ema["params"]["quantity"] == 0.2
    assert len(notify.seen("RELOADING", "1")) == 1

    # a bad limits file: refused, the running limits kept, an alert raised
    limits_file.write_text(
        good_limits.replace("max_order_quantity = 1.0", "max_order_quantity = -3")
    )
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(notify.seen("RELOADING", "1")) == 2, 20)
    wait_until(
        lambda: any(
            a["rule"] == "reload_refused" for a in ctl(state, capsys, "alerts")[1]["alerts"]
        ),
        20,
    )
    _, limits = ctl(state, capsys, "limits", "show")
    assert limits["max_order_quantity"] == 0.5
    _, status = ctl(state, capsys, "status")
    assert status["state"] == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed")
async def test_the_dashboard_of_a_running_daemon_shows_live_values(tmp_path: Path) -> None:
    """The real daemon, its dashboard on TCP behind a token, opened in headless Chromium:
    equity, fills and the trading state arrive and change as the daemon trades."""
    playwright_api = pytest.importorskip("playwright.async_api")
    expect = playwright_api.expect
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = own_config(tmp_path)
    (tmp_path / "token").write_text("s3cret-token\n")
    config.write_text(
        config.read_text().replace(
            '# tcp = "127.0.0.1:8787"', f'tcp = "127.0.0.1:{port}"\ntoken_file = "token"'
        )
    )
    state = tmp_path / "state"
    proc = start_daemon(config, state, tmp_path / "daemon.log")
    try:
        sock = state / "control.sock"
        await eventually(lambda: sock.exists() or proc.poll() is not None, 120)
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
            page = await browser.new_page()
            outside: list[str] = []

            async def only_loopback(route: Any) -> None:
                if route.request.url.startswith(
                    f"http://127.0.0.1:{port}"
                ) or route.request.url.startswith(f"ws://127.0.0.1:{port}"):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_loopback)
            await page.goto(f"http://127.0.0.1:{port}/?token=s3cret-token")
            field = lambda name: page.locator(f'[data-field="{name}"]')  # noqa: E731
            await expect(field("connection")).to_have_attribute("data-value", "live")
            await expect(field("mode")).to_have_text("paper")
            await expect(field("trading-state")).to_have_text("ACTIVE")
            # fills arrive in the blotter, and the equity moves with them
            await expect(field("fills").locator("tr")).not_to_have_count(0, timeout=60_000)
            first = await field("equity").get_attribute("data-value")
            await expect(field("equity")).not_to_have_attribute(
                "data-value", first or "", timeout=60_000
            )
            # a halt from the console shows on the page
            code = await asyncio.to_thread(
                main, ["ctl", "--socket", str(sock), "halt", "--reason", "dashboard test"]
            )
            assert code == 0
            await expect(field("trading-state")).to_have_text("HALTED", timeout=10_000)
            await browser.close()
        assert outside == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_a_feed_gone_quiet_makes_the_daemon_unhealthy_and_raises_an_alert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sample played once at 1000x, then silence: /health answers 503 naming the feed,
    `tradingd ctl health` exits 1, and a WARNING alert says the data is stale."""
    config = own_config(
        tmp_path,
        replace={
            "loop = true": "loop = false",
            "feed_stale_after_s = 30.0": "feed_stale_after_s = 1.0",
        },
    )
    state = tmp_path / "state"
    proc = start_daemon(config, state, tmp_path / "daemon.log", speed=1000.0)
    try:
        wait_until(lambda: (state / "control.sock").exists() or proc.poll() is not None, 120)
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]

        def stale_alert() -> bool:
            code, reply = ctl(state, capsys, "alerts")
            return code == 0 and any(a["rule"] == "feed_stale" for a in reply["alerts"])

        wait_until(stale_alert, 30)
        status, body = _get(state, "/health")
        assert status == 503, body
        reasons = json.loads(body)["reasons"]
        assert any(r.startswith("feed:") for r in reasons), reasons
        assert main(["ctl", "--socket", str(state / "control.sock"), "health"]) == 1
        capsys.readouterr()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
