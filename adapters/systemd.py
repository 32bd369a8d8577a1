"""systemd integration: readiness and watchdog notifications, credentials, the state directory.

The daemon runs as a ``Type=notify`` service (``systemd/tradingd.service``). This module
speaks the sd_notify protocol itself: one datagram of ``KEY=VALUE`` lines sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET``, so tradingd needs no libsystemd binding.
Outside systemd (no ``$NOTIFY_SOCKET``) every notification is a no-op that returns False,
so the same daemon runs unchanged from a terminal or a test.

Typical use in the daemon::

    notifier = SystemdNotifier()
    notifier.status("recovering from the journal")
    ...                                              # replay, reconcile
    notifier.ready("ready: 3 strategies, 12 positions")
    interval = watchdog_interval_s()
    if interval is not None:
        task_group.create_task(watchdog_pinger(notifier, interval, health.ok))
    ...
    notifier.stopping()                              # on SIGTERM, before the orderly stop

On SIGHUP the daemon calls ``notifier.reloading()``, reloads, then ``notifier.ready()``
again: systemd keeps the unit in "reloading" until that second READY=1.

Secrets reach the daemon as credentials (``LoadCredential=`` in the unit): files in
``$CREDENTIALS_DIRECTORY`` read with :func:`credential`. The journal and the tick store live
in :func:`state_directory` (``$STATE_DIRECTORY``, from ``StateDirectory=``).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from engine.errors import ConfigError

__all__ = [
    "CredentialError",
    "SystemdEnvironmentError",
    "SystemdNotifier",
    "credential",
    "state_directory",
    "watchdog_interval_s",
    "watchdog_pinger",
]

# A lazy proxy, not bound at import: the daemon configures logging after importing this.
_log = structlog.get_logger("tradingd")
_COMPONENT = "systemd"

# sd_notify field names are upper-case ASCII words (READY, STATUS, WATCHDOG_USEC, ...).
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
# A credential name is one path component: systemd refuses "/" and the dot names too.
_BAD_CREDENTIAL_NAMES = {"", ".", ".."}


class SystemdEnvironmentError(ConfigError):
    """A variable systemd sets (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``, ...) is malformed.

    systemd itself never sets these wrongly; this is someone setting them by hand.
    """

    code = "SYSTEMD_ENV"

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(f"${variable}: {message}", path=variable)


class CredentialError(ConfigError):
    """A credential file exists in ``$CREDENTIALS_DIRECTORY`` but cannot be read."""

    code = "CREDENTIAL"

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"credential {name!r}: {message}", path=name)


def _notify_address(raw: str) -> str:
    """The sendto() address for a ``$NOTIFY_SOCKET`` value: a path, or an abstract name."""
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        # Linux abstract namespace: a leading NUL byte instead of systemd's "@".
        return "\0" + raw[1:]
    raise SystemdEnvironmentError(
        "NOTIFY_SOCKET",
        f"{raw!r} is neither an absolute socket path nor an abstract socket name "
        "starting with '@' (tradingd speaks only AF_UNIX to systemd)",
    )


def _field_value(value: object) -> str:
    """One line: sd_notify fields are newline-separated, so a newline would end the field."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return " ".join(str(value).splitlines())


class SystemdNotifier:
    """Sends sd_notify datagrams to the service manager.

    ``address`` is a ``$NOTIFY_SOCKET`` value: an absolute path or ``@name`` for an
    abstract socket. Without it, ``$NOTIFY_SOCKET`` is read from ``environ`` (default
    ``os.environ``); unset or empty means not running under systemd, and every method
    returns False without doing anything. A malformed value raises
    :class:`SystemdEnvironmentError` here, at start, rather than silently dropping READY=1.

    Every send is one non-blocking datagram, so the event loop never waits on systemd.
    A failed send never raises: it returns False, counts in :attr:`failures`, and is logged
    once per run of consecutive failures (a watchdog ping every few seconds must not flood
    the log). :attr:`sent` counts the datagrams delivered.
    """

    def __init__(
        self, address: str | None = None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        if address is None:
            address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
        self.address: str | None = address or None
        self._sockaddr = _notify_address(address) if address else None
        self._sock: socket.socket | None = None
        self.sent = 0
        self.failures = 0
        self._failing = False

    @property
    def enabled(self) -> bool:
        """True when there is a notification socket to send to (running under systemd)."""
        return self._sockaddr is not None

    def send(self, **fields: object) -> bool:
        """Send the fields as one datagram: ``send(READY=1, STATUS="ready")``.

        Names are upper-cased (``status=`` is ``STATUS=``); values become one line each
        (newlines replaced by spaces; True/False as 1/0). Returns True when systemd got
        the datagram. A field name that is not an sd_notify name raises ValueError: that
        is a bug in the caller, not a send failure.
        """
        lines = []
        for name, value in fields.items():
            key = name.upper()
            if not _FIELD_NAME.match(key):
                raise ValueError(
                    f"{name!r} is not an sd_notify field name (upper-case letters, digits, _)"
                )
            lines.append(f"{key}={_field_value(value)}")
        if self._sockaddr is None or not lines:
            return False
        return self._send_datagram("\n".join(lines).encode())

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup (or a reload) is finished; optionally with a STATUS= line."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """STATUS=: the one line ``systemctl status`` shows under the unit."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        """WATCHDOG=1: the daemon is alive (see :func:`watchdog_pinger`)."""
        return self.send(WATCHDOG=1)

    def stopping(self) -> bool:
        """STOPPING=1: an orderly stop has begun."""
        return self.send(STOPPING=1)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC=, the CLOCK_MONOTONIC time of the request.

        systemd 253 and later want MONOTONIC_USEC with RELOADING=1 to tell this reload
        from an earlier one; older versions ignore it. Send :meth:`ready` when done.
        """
        # Python's monotonic clock is CLOCK_MONOTONIC on Linux, the clock systemd means.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def close(self) -> None:
        """Close the socket. Later sends open a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send_datagram(self, payload: bytes) -> bool:
        assert self._sockaddr is not None
        try:
            if self._sock is None:
                # Unconnected on purpose: sendto() looks the path up each time, so a
                # systemd that re-executes itself and binds the socket anew still hears us.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._sockaddr)
        except OSError as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                _log.warning(
                    "systemd_notify_failed",
                    component=_COMPONENT,
                    socket=self.address,
                    message=payload.decode(errors="replace"),
                    error=str(exc),
                    failures=self.failures,
                )
            return False
        if self._failing:
            self._failing = False
            _log.info(
                "systemd_notify_recovered",
                component=_COMPONENT,
                socket=self.address,
                failures=self.failures,
            )
        self.sent += 1
        return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd expects pings within, in seconds, or None.

    From ``$WATCHDOG_USEC`` (``WatchdogSec=`` in the unit). None when it is unset, or when
    ``$WATCHDOG_PID`` is set to another process's pid (the variables were inherited from
    a parent that systemd watches, not us). Ping at half this interval.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        raise SystemdEnvironmentError(
            "WATCHDOG_USEC", f"{raw_usec!r} is not a whole number of microseconds"
        ) from None
    if usec <= 0:
        raise SystemdEnvironmentError(
            "WATCHDOG_USEC", f"{raw_usec!r} must be a positive number of microseconds"
        )
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            raise SystemdEnvironmentError(
                "WATCHDOG_PID", f"{raw_pid!r} is not a process id"
            ) from None
        if pid != os.getpid():
            return None
    return usec / 1_000_000


async def watchdog_pinger(
    notifier: SystemdNotifier,
    interval_s: float,
    is_healthy: Callable[[], bool] = lambda: True,
) -> None:
    """Send WATCHDOG=1 every ``interval_s / 2`` seconds, from the event loop, for ever.

    Run it as a task of the daemon's task group. The pings come from the loop itself, so a
    loop blocked by a long synchronous call stops them, and systemd kills and restarts a
    daemon that stays blocked past ``WatchdogSec=``. While ``is_healthy()`` is False (the
    loop lags, a critical actor is down) no ping is sent either, to the same end; an
    exception from ``is_healthy`` counts as unhealthy. Skipped pings are logged when a run
    of them starts and ends.

    Returns at once when the notifier is disabled (not under systemd). Cancel the task to
    stop it; cancellation propagates.
    """
    if not interval_s > 0:
        raise ValueError(f"the watchdog interval must be positive, got {interval_s!r} s")
    if not notifier.enabled:
        return
    period = interval_s / 2
    skipped = 0
    while True:
        healthy = _healthy(is_healthy)
        if healthy:
            if skipped:
                _log.info("watchdog_pings_resumed", component=_COMPONENT, skipped=skipped)
                skipped = 0
            notifier.watchdog()
        else:
            if not skipped:
                _log.warning(
                    "watchdog_ping_withheld",
                    component=_COMPONENT,
                    reason="the daemon reports itself unhealthy",
                    restart_after_s=interval_s,
                )
            skipped += 1
        await asyncio.sleep(period)


def _healthy(is_healthy: Callable[[], bool]) -> bool:
    try:
        return bool(is_healthy())
    except Exception as exc:  # a broken health check must not keep a sick daemon alive
        _log.warning("watchdog_health_check_failed", component=_COMPONENT, error=repr(exc))
        return False


def credential(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The credential ``name`` from ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``), stripped.

    None when ``$CREDENTIALS_DIRECTORY`` is unset or holds no such file. A file that exists
    but cannot be read (permissions, not a file, not UTF-8) raises :class:`CredentialError`
    naming the file and the reason.
    """
    if name in _BAD_CREDENTIAL_NAMES or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a credential name (one file name, no '/')")
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        return None
    path = Path(directory) / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(name, f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise CredentialError(name, f"{path} is not UTF-8 text ({exc.reason})") from exc


def state_directory(environ: Mapping[str, str] | None = None) -> Path | None:
    """The service's state directory from ``$STATE_DIRECTORY`` (``StateDirectory=``), or None.

    With several ``StateDirectory=`` entries systemd joins them with ':'; the first is
    tradingd's.
    """
    env = os.environ if environ is None else environ
    raw = env.get("STATE_DIRECTORY", "")
    if not raw:
        return None
    first = raw.split(":", 1)[0]
    if not first.startswith("/"):
        raise SystemdEnvironmentError(
            "STATE_DIRECTORY", f"{raw!r} does not start with an absolute path"
        )
    return Path(first)
