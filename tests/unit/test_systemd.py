"""The sd_notify client, the watchdog pinger, credentials and the state directory.

The notifier sends to a real AF_UNIX datagram socket, bound the way systemd binds its own
(a path, or an abstract name), and the test reads back exactly the bytes systemd would.
Pinger timing is measured by a thread that stamps each datagram as it arrives, so a
blocked event loop cannot hide its own gaps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.systemd import (
    CredentialError,
    SystemdEnvironmentError,
    SystemdNotifier,
    credential,
    state_directory,
    watchdog_interval_s,
    watchdog_pinger,
)
from engine.errors import ConfigError


class Receiver:
    """A bound SOCK_DGRAM socket standing in for systemd's notification socket."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket
        self.sock.settimeout(2.0)

    def recv(self) -> bytes:
        return self.sock.recv(4096)

    def pending(self) -> list[bytes]:
        """Every datagram already queued, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture
def path_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    # a short directory: an AF_UNIX path must fit in 108 bytes
    path = tmp_path_factory.mktemp("n") / "notify"
    assert len(str(path)) < 100, path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield Receiver(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"tradingd-test-{secrets.token_hex(8)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield Receiver(sock, "@" + name)
    sock.close()


class StampedPings:
    """Receives datagrams on a thread and records (monotonic time, payload) for each."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.receiver.sock.settimeout(0.05)
        self.records: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.receiver.sock.recv(4096)
            except TimeoutError:
                continue
            self.records.append((time.monotonic(), data))

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        assert all(data == b"WATCHDOG=1" for _, data in self.records), self.records
        return [t for t, _ in self.records]


# --- the notifier --------------------------------------------------------------------


def test_a_path_socket_receives_exactly_what_the_notifier_sends(path_receiver: Receiver) -> None:
    with SystemdNotifier(environ={"NOTIFY_SOCKET": path_receiver.notify_socket}) as notifier:
        assert notifier.enabled
        assert notifier.ready("recovering: 0 of 12 positions") is True
        assert path_receiver.recv() == b"READY=1\nSTATUS=recovering: 0 of 12 positions"
        assert notifier.ready() is True
        assert path_receiver.recv() == b"READY=1"
        assert notifier.status("ready\nACTIVE, equity 100,250.00 USD\r\n") is True
        assert path_receiver.recv() == b"STATUS=ready ACTIVE, equity 100,250.00 USD"
        assert notifier.watchdog() is True
        assert path_receiver.recv() == b"WATCHDOG=1"
        assert notifier.stopping() is True
        assert path_receiver.recv() == b"STOPPING=1"
        assert notifier.send(errno=5, mainpid=4242, status="failed: broker gone") is True
        assert path_receiver.recv() == b"ERRNO=5\nMAINPID=4242\nSTATUS=failed: broker gone"
        assert notifier.sent == 6
        assert notifier.failures == 0
    assert path_receiver.pending() == []


def test_an_abstract_socket_receives_the_notifications(abstract_receiver: Receiver) -> None:
    notifier = SystemdNotifier(abstract_receiver.notify_socket)
    assert notifier.ready("ready") is True
    assert abstract_receiver.recv() == b"READY=1\nSTATUS=ready"
    assert notifier.watchdog() is True
    assert abstract_receiver.recv() == b"WATCHDOG=1"
    assert notifier.stopping() is True
    assert abstract_receiver.recv() == b"STOPPING=1"
    notifier.close()


def test_notify_socket_is_read_from_the_process_environment(
    path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.notify_socket)
    notifier = SystemdNotifier()
    assert notifier.address == path_receiver.notify_socket
    assert notifier.ready() is True
    assert path_receiver.recv() == b"READY=1"
    notifier.close()


def test_reloading_carries_the_monotonic_time_systemd_253_wants(path_receiver: Receiver) -> None:
    notifier = SystemdNotifier(path_receiver.notify_socket)
    before = time.monotonic_ns() // 1000
    assert notifier.reloading() is True
    after = time.monotonic_ns() // 1000
    reloading, monotonic = path_receiver.recv().decode().split("\n")
    assert reloading == "RELOADING=1"
    key, value = monotonic.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    notifier.close()


def test_without_notify_socket_every_notification_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for notifier in (SystemdNotifier(), SystemdNotifier(environ={"NOTIFY_SOCKET": ""})):
        assert not notifier.enabled
        assert notifier.ready("ready") is False
        assert notifier.status("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
        assert notifier.reloading() is False
        assert notifier.send(errno=1) is False
        assert (notifier.sent, notifier.failures) == (0, 0)


def test_a_failed_send_returns_false_counts_and_logs_once_per_outage(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    notifier = SystemdNotifier(str(missing))
    with capture_logs() as logs:
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
        assert notifier.status("still here") is False
    assert notifier.failures == 3
    assert [entry["event"] for entry in logs] == ["systemd_notify_failed"]
    assert logs[0]["socket"] == str(missing)
    assert logs[0]["message"] == "WATCHDOG=1"

    # systemd comes back (binds the socket): sends work again, and a new outage is logged
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(missing))
    receiver.settimeout(2.0)
    with capture_logs() as logs:
        assert notifier.watchdog() is True
        assert receiver.recv(4096) == b"WATCHDOG=1"
        receiver.close()
        missing.unlink()
        assert notifier.watchdog() is False
    assert [entry["event"] for entry in logs] == [
        "systemd_notify_recovered",
        "systemd_notify_failed",
    ]
    assert (notifier.sent, notifier.failures) == (1, 4)
    notifier.close()


def test_a_malformed_notify_socket_is_a_clear_error_at_start() -> None:
    with pytest.raises(SystemdEnvironmentError, match=r"\$NOTIFY_SOCKET: 'run/notify' is neither"):
        SystemdNotifier(environ={"NOTIFY_SOCKET": "run/notify"})
    with pytest.raises(ConfigError, match="NOTIFY_SOCKET"):
        SystemdNotifier("@")


def test_a_field_name_that_is_not_sd_notify_is_refused(path_receiver: Receiver) -> None:
    notifier = SystemdNotifier(path_receiver.notify_socket)
    with pytest.raises(ValueError, match="'ready-now' is not an sd_notify field name"):
        notifier.send(**{"ready-now": 1})
    assert path_receiver.pending() == []
    notifier.close()


# --- the watchdog interval -----------------------------------------------------------


def test_watchdog_interval_comes_from_watchdog_usec_for_this_process() -> None:
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000"}) == 10.0
    mine = {"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_s(mine) == 2.5
    # inherited from a parent systemd watches: not ours to ping
    assert watchdog_interval_s({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "1"}) is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WATCHDOG_USEC": "10s"}, r"\$WATCHDOG_USEC: '10s' is not a whole number"),
        ({"WATCHDOG_USEC": "0"}, r"\$WATCHDOG_USEC: '0' must be a positive"),
        ({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"}, r"\$WATCHDOG_PID: 'me' is not"),
    ],
)
def test_a_malformed_watchdog_variable_is_a_clear_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SystemdEnvironmentError, match=message):
        watchdog_interval_s(environ)


# --- the watchdog pinger -------------------------------------------------------------

PERIOD = 0.1  # the pinger pings every interval/2
INTERVAL = 2 * PERIOD


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_the_pinger_pings_every_half_interval_on_a_live_loop(
    path_receiver: Receiver,
) -> None:
    notifier = SystemdNotifier(path_receiver.notify_socket)
    pings = StampedPings(path_receiver)
    task = asyncio.create_task(watchdog_pinger(notifier, INTERVAL))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    times = pings.stop()
    # one at start, then one every 0.1 s: about 11 in 1 s (a loaded machine may lose one)
    assert 8 <= len(times) <= 12, times
    gaps = sorted(_gaps(times))
    median = gaps[len(gaps) // 2]
    assert 0.08 <= median <= 0.15, gaps
    assert notifier.sent == len(times)
    notifier.close()


async def test_a_blocked_event_loop_stops_the_pings(path_receiver: Receiver) -> None:
    notifier = SystemdNotifier(path_receiver.notify_socket)
    pings = StampedPings(path_receiver)
    task = asyncio.create_task(watchdog_pinger(notifier, INTERVAL))
    await asyncio.sleep(0.35)
    blocked: list[float] = []

    def block_the_loop() -> None:
        blocked.append(time.monotonic())
        time.sleep(0.8)  # a synchronous call that never yields, as a hung handler would
        blocked.append(time.monotonic())

    asyncio.get_running_loop().call_soon(block_the_loop)
    await asyncio.sleep(0.35)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    times = pings.stop()
    start, end = blocked
    # nothing reached "systemd" while the loop was blocked ...
    assert not [t for t in times if start + 0.02 < t < end], (blocked, times)
    # ... so the gap spans the whole block: with WatchdogSec=0.2s systemd would restart us
    assert max(_gaps(times)) >= 0.8 - 0.02, (blocked, times)
    assert max(_gaps(times)) > INTERVAL
    # and pinging resumed once the loop was free again
    assert [t for t in times if t > end], (blocked, times)
    notifier.close()


async def test_no_pings_while_the_daemon_reports_itself_unhealthy(
    path_receiver: Receiver,
) -> None:
    notifier = SystemdNotifier(path_receiver.notify_socket)
    pings = StampedPings(path_receiver)
    healthy = True
    task = asyncio.create_task(watchdog_pinger(notifier, INTERVAL, lambda: healthy))
    await asyncio.sleep(0.35)
    with capture_logs() as logs:
        healthy = False
        sick_from = time.monotonic()
        await asyncio.sleep(0.6)
        sick_until = time.monotonic()
        healthy = True
        await asyncio.sleep(0.35)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    times = pings.stop()
    # the thread stamps a datagram a moment after it was sent: allow 50 ms
    assert not [t for t in times if sick_from + 0.05 < t <= sick_until], times
    assert len([t for t in times if t < sick_from]) >= 3, times
    assert len([t for t in times if t > sick_until]) >= 2, times
    events = [entry["event"] for entry in logs]
    assert events == ["watchdog_ping_withheld", "watchdog_pings_resumed"], logs
    assert logs[1]["skipped"] >= 5
    notifier.close()


async def test_a_health_check_that_raises_counts_as_unhealthy(path_receiver: Receiver) -> None:
    notifier = SystemdNotifier(path_receiver.notify_socket)

    def broken() -> bool:
        raise RuntimeError("monitor gone")

    with capture_logs() as logs:
        task = asyncio.create_task(watchdog_pinger(notifier, INTERVAL, broken))
        await asyncio.sleep(0.35)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert path_receiver.pending() == []
    assert notifier.sent == 0
    assert "watchdog_health_check_failed" in [entry["event"] for entry in logs]
    assert "monitor gone" in next(e["error"] for e in logs if "error" in e)
    notifier.close()


async def test_the_pinger_returns_at_once_outside_systemd_and_refuses_a_bad_interval() -> None:
    disabled = SystemdNotifier(environ={})
    await asyncio.wait_for(watchdog_pinger(disabled, INTERVAL), timeout=1.0)
    with pytest.raises(ValueError, match="must be positive, got 0"):
        await watchdog_pinger(disabled, 0)


# --- credentials and the state directory ---------------------------------------------


def test_credential_reads_a_file_from_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "control-token").write_text("9f2c1e7a-token\n")
    (tmp_path / "webhook-url").write_bytes(b"  https://hooks.example.test/T0/B0  \n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert credential("control-token", env) == "9f2c1e7a-token"
    assert credential("webhook-url", env) == "https://hooks.example.test/T0/B0"
    assert credential("redis-password", env) is None
    assert credential("control-token", {}) is None


def test_credential_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "control-token").write_text("abc")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert credential("control-token") == "abc"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert credential("control-token") is None


def test_an_unreadable_credential_is_a_clear_error(tmp_path: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    (tmp_path / "control-token").mkdir()  # not a file
    with pytest.raises(CredentialError, match=r"credential 'control-token': cannot read .*"):
        credential("control-token", env)
    (tmp_path / "webhook-url").write_bytes(b"\xff\xfe binary")
    with pytest.raises(CredentialError, match="webhook-url is not UTF-8 text"):
        credential("webhook-url", env)
    with pytest.raises(ValueError, match="is not a credential name"):
        credential("../etc/passwd", env)


def test_state_directory_comes_from_state_directory() -> None:
    assert state_directory({}) is None
    assert state_directory({"STATE_DIRECTORY": "/var/lib/tradingd"}) == Path("/var/lib/tradingd")
    joined = {"STATE_DIRECTORY": "/var/lib/tradingd:/var/lib/other"}
    assert state_directory(joined) == Path("/var/lib/tradingd")
    with pytest.raises(SystemdEnvironmentError, match="does not start with an absolute path"):
        state_directory({"STATE_DIRECTORY": "tradingd"})
