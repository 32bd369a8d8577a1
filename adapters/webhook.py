"""Alerts to a webhook: a JSON POST per alert, retried, de-duplicated and rate-limited.

:class:`WebhookNotifier` is the sender; :class:`AlertWebhook` (kind ``alert_webhook``) is
the actor that feeds it the :class:`~engine.messages.Alert` messages wired to it (the risk
monitor's ``events``, the supervisor's alert sinks) and owns its sender task::

    [actors.alerts]
    kind = "alert_webhook"
    url_credential = "webhook-url"   # $CREDENTIALS_DIRECTORY/webhook-url (LoadCredential)
    min_level = "WARNING"

    [[edges]]
    from = "monitor.events"
    to = "alerts"
    only = ["Alert"]

What goes out, in order:

- ``submit`` never blocks and never raises for a full queue. Alerts below ``min_level``
  are ignored; the rest go to a bounded queue (``queue_limit``), CRITICAL ones ahead of
  the others. A full queue drops the new alert, or, for a CRITICAL one, the oldest
  non-critical alert queued; either way the drop is counted and reported.
- **De-duplication.** An alert with the same source, rule and level as one queued less
  than ``dedupe_window_s`` ago is not queued: it is counted, and when the window closes
  the latest of them is sent once with ``repeats``, the number folded into it (and a new
  window opens, so a flood gives one message per window). CRITICAL alerts bypass it:
  each is an event a person must see on its own (a halt, a flatten).
- **Rate limit.** A token bucket of ``burst`` tokens refilled at ``rate_per_minute``
  bounds what is sent, summaries included. A non-critical alert that finds the bucket
  empty is not sent but counted, and the next message carries a summary of everything
  not sent (``suppressed``: over the limit by level/source/rule, dropped with the queue
  full); with nothing else to send, the summary goes alone at the next token. A CRITICAL
  alert waits for the next token instead: it is delayed, never summarised away.
- **Retries.** Connection errors, timeouts, 5xx and 429 are retried up to
  ``max_retries`` times with exponential back-off (jittered, from ``backoff_initial_s``
  up to ``backoff_max_s``); a ``Retry-After`` header (seconds or an HTTP date) is
  honoured, up to ``retry_after_max_s``. Any other 4xx is a mistake a retry will not fix:
  it fails at once. Alerts are sent one at a time, in order.
- **Stop.** Cancelling :meth:`WebhookNotifier.run` sends what is queued, the repeats of
  open windows and the summary, within ``flush_timeout_s``; what is left then is counted
  as dropped.

The URL is never logged (a chat webhook's URL is its secret), only its host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import os
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec
import orjson
import structlog

from engine.actor import Actor, ActorConfig
from engine.messages import Alert, AlertLevel

__all__ = [
    "AlertWebhook",
    "AlertWebhookConfig",
    "WebhookNotifier",
    "WebhookStats",
    "alert_payload",
    "read_credential",
]

SERVICE = "tradingd"
_NS = 1_000_000_000


class WebhookStats:
    """What a notifier did, counted since it was made.

    ``sent``: messages the webhook accepted (summaries included); ``failed``: messages given
    up (a 4xx, or retries spent); ``retried``: attempts after the first; ``deduped``:
    alerts folded into a repeat count; ``rate_limited``: alerts not sent for the rate limit
    (summarised); ``dropped``: alerts lost to a full queue or to the stop deadline
    (summarised while the notifier runs); ``ignored``: alerts below ``min_level``.
    """

    __slots__ = ("deduped", "dropped", "failed", "ignored", "rate_limited", "retried", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.deduped = 0
        self.rate_limited = 0
        self.dropped = 0
        self.ignored = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in sorted(self.__slots__)}

    def __repr__(self) -> str:
        return f"WebhookStats({self.as_dict()})"


def _iso_utc(ts_ns: int) -> str:
    """``2024-08-09T00:00:00.123456Z``: microseconds, which every ISO-8601 parser reads."""
    seconds, ns = divmod(ts_ns, _NS)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ns // 1000:06d}Z"


def _figure(value: float) -> float | str:
    # JSON has no infinity: an unmeasurable VaR must still read as one, not as null
    return value if math.isfinite(value) else str(value)


def alert_payload(alert: Alert, *, host: str, repeats: int = 0) -> dict[str, Any]:
    """The JSON object sent for ``alert`` (see the module docstring); the notifier adds
    ``suppressed``."""
    return {
        "level": alert.level.name,
        "source": alert.source,
        "rule": alert.rule,
        "message": alert.message,
        "action": alert.action,
        "figures": {name: _figure(v) for name, v in alert.figures.items()},
        "ts": _iso_utc(alert.ts_event),
        "host": host,
        "service": SERVICE,
        "repeats": repeats,
    }


def _level(value: AlertLevel | str) -> AlertLevel:
    if isinstance(value, AlertLevel):
        return value
    try:
        return AlertLevel[str(value).upper()]
    except KeyError:
        names = ", ".join(level.name for level in AlertLevel)
        raise ValueError(f"unknown alert level {value!r} (one of {names})") from None


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        # the URL itself is not echoed: it may carry a token
        raise ValueError(
            "the webhook URL must be http:// or https:// with a host "
            f"(got one with scheme {parts.scheme or 'none'!r})"
        )
    return url


class _TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` per second."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)


class _Window:
    """A de-duplication window of one source/rule/level."""

    __slots__ = ("count", "ends", "latest")

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.count = 0
        self.latest: Alert | None = None


_Key = tuple[str, str, AlertLevel]


class _Outgoing(msgspec.Struct, frozen=True):
    alert: Alert
    repeats: int = 0
    alerts: int = 1
    """How many submitted alerts the message stands for."""
    summary: bool = False
    """A message that only carries the summary of what was not sent."""


class WebhookNotifier:
    """Sends alerts to ``url`` as JSON POSTs; see the module docstring for the rules.

    ``submit`` queues (synchronous, never blocks); ``run`` is the sender task, to run for
    as long as alerts should go out and to cancel at the end. ``clock`` (seconds, monotonic)
    times the de-duplication windows and the rate limit. Not thread-safe: call ``submit``
    from the event loop ``run`` runs on.
    """

    def __init__(
        self,
        url: str,
        *,
        min_level: AlertLevel | str = AlertLevel.WARNING,
        timeout_s: float = 5.0,
        max_retries: int = 5,
        dedupe_window_s: float = 60.0,
        rate_per_minute: float = 30.0,
        burst: int = 10,
        queue_limit: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 60.0,
        flush_timeout_s: float = 2.0,
        host: str | None = None,
    ) -> None:
        for name, value in (
            ("timeout_s", timeout_s),
            ("rate_per_minute", rate_per_minute),
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
            ("flush_timeout_s", flush_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        for name, count in (("burst", burst), ("queue_limit", queue_limit)):
            if count < 1:
                raise ValueError(f"{name} must be at least 1, got {count!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries!r}")
        if dedupe_window_s < 0 or retry_after_max_s < 0:
            raise ValueError("dedupe_window_s and retry_after_max_s must not be negative")
        self.url = _check_url(url)
        self.url_host = urlsplit(url).hostname or ""
        self.min_level = _level(min_level)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.dedupe_window_s = dedupe_window_s
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.queue_limit = queue_limit
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.flush_timeout_s = flush_timeout_s
        self.host = host if host is not None else socket.gethostname()
        self.stats = WebhookStats()
        self._clock = clock
        self._bucket = _TokenBucket(rate_per_minute / 60.0, float(burst), clock())
        self._critical: deque[_Outgoing] = deque()
        self._others: deque[_Outgoing] = deque()
        self._windows: dict[_Key, _Window] = {}
        self._over_limit: Counter[str] = Counter()  # "LEVEL source/rule" -> alerts not sent
        self._dropped_unreported = 0
        self._wake = asyncio.Event()
        self._running = False
        self._in_flight: _Outgoing | None = None
        self._delivered = False
        self._rng = random.Random()
        self.log = structlog.get_logger("tradingd").bind(
            component="webhook", webhook_host=self.url_host
        )

    # --- the caller's side ---------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._critical) + len(self._others)

    def submit(self, alert: Alert) -> bool:
        """Take ``alert`` for sending. False if it is below ``min_level`` or was dropped
        for a full queue; True if queued or folded into a repeat count. Never blocks."""
        if alert.level < self.min_level:
            self.stats.ignored += 1
            return False
        critical = alert.level >= AlertLevel.CRITICAL
        if not critical and self.dedupe_window_s > 0:
            now = self._clock()
            key = (alert.source, alert.rule, alert.level)
            window = self._windows.get(key)
            if window is not None and now < window.ends:
                window.count += 1
                window.latest = alert
                self.stats.deduped += 1
                if window.count == 1:
                    self._wake.set()  # the sender now has a window close to wake up for
                return True
            if window is not None and window.count:
                # its window closed while the sender was busy: its repeats go with this one
                queued = self._enqueue(
                    _Outgoing(alert, repeats=window.count, alerts=1 + window.count)
                )
            else:
                queued = self._enqueue(_Outgoing(alert))
            if queued:
                self._windows[key] = _Window(now + self.dedupe_window_s)
            return queued
        return self._enqueue(_Outgoing(alert))

    def _enqueue(self, item: _Outgoing) -> bool:
        critical = item.alert.level >= AlertLevel.CRITICAL
        if self.queued >= self.queue_limit:
            if not (critical and self._others):
                self._count_dropped(item.alerts)
                return False
            # a CRITICAL alert makes room at the expense of the oldest other one
            self._count_dropped(self._others.popleft().alerts)
        (self._critical if critical else self._others).append(item)
        self._wake.set()
        return True

    def _count_dropped(self, n: int) -> None:
        self.stats.dropped += n
        self._dropped_unreported += n

    # --- the sender ----------------------------------------------------------------------

    async def run(self) -> None:
        """Send until cancelled; on cancel, flush (see the module docstring) and re-raise."""
        if self._running:
            raise RuntimeError("this notifier's run() is already running")
        self._running = True
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        headers = {"Content-Type": "application/json", "User-Agent": SERVICE}
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
                try:
                    while True:
                        self._wake.clear()
                        item = self._next(flushing=False)
                        if item is None:
                            await self._idle()
                            continue
                        self._in_flight = item
                        await self._send(session, item)
                        self._in_flight = None
                except asyncio.CancelledError:
                    if self._in_flight is not None:
                        # cut off mid-delivery: it goes first in the flush (it may then
                        # arrive twice, which beats not at all)
                        critical = self._in_flight.alert.level >= AlertLevel.CRITICAL
                        (self._critical if critical else self._others).appendleft(self._in_flight)
                        self._in_flight = None
                    await self._flush(session)
                    raise
        finally:
            self._running = False

    async def _idle(self) -> None:
        """Wait for a submit, a window to close or a token for what waits on one."""
        delay = self._next_wakeup_s()
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _next_wakeup_s(self) -> float | None:
        now = self._clock()
        due = [w.ends - now for w in self._windows.values() if w.count]
        if self._critical or self._has_summary():
            due.append(self._bucket.wait_s(now))
        if not due:
            return None
        # a floor, so a clock that has not moved yet does not spin the loop
        return max(0.001, min(due))

    def _has_summary(self) -> bool:
        return bool(self._over_limit) or self._dropped_unreported > 0

    def _close_windows(self, *, all_of_them: bool) -> None:
        now = self._clock()
        for key, window in list(self._windows.items()):
            if not all_of_them and now < window.ends:
                continue
            if window.count and window.latest is not None:
                self._others.append(
                    _Outgoing(window.latest, repeats=window.count, alerts=window.count)
                )
                # the summary opens a new window: a flood gives one message per window
                self._windows[key] = _Window(now + self.dedupe_window_s)
            else:
                del self._windows[key]

    def _next(self, *, flushing: bool) -> _Outgoing | None:
        """What to send now, or None. Non-critical alerts that find no token are counted
        into the summary; CRITICAL ones wait for one (not while flushing: the stop is
        the last chance to send them)."""
        self._close_windows(all_of_them=flushing)
        now = self._clock()
        if self._critical:
            if flushing or self._bucket.take(now):
                return self._critical.popleft()
            return None
        while self._others:
            item = self._others.popleft()
            if self._bucket.take(now):
                return item
            self._over_limit[self._label(item.alert)] += item.alerts
            self.stats.rate_limited += item.alerts
        if self._has_summary() and (flushing or self._bucket.take(now)):
            return self._summary_only()
        return None

    @staticmethod
    def _label(alert: Alert) -> str:
        return f"{alert.level.name} {alert.source}/{alert.rule}"

    def _summary_only(self) -> _Outgoing:
        levels = [AlertLevel[label.split(" ", 1)[0]] for label in self._over_limit]
        level = max(levels, default=self.min_level)
        limited = sum(self._over_limit.values())
        dropped = self._dropped_unreported
        now_ns = time.time_ns()
        alert = Alert(
            level=level,
            source="alert_webhook",
            rule="alerts_suppressed",
            message=(
                f"{limited + dropped} alerts were not sent: {limited} over the rate limit "
                f"({self.rate_per_minute:g} a minute), {dropped} dropped with the queue full"
            ),
            action="summarised",
            figures={"rate_limited": float(limited), "dropped": float(dropped)},
            ts_event=now_ns,
            ts_init=now_ns,
        )
        return _Outgoing(alert, summary=True)

    def _take_summary(self) -> tuple[dict[str, Any], Counter[str], int]:
        over, dropped = self._over_limit, self._dropped_unreported
        self._over_limit, self._dropped_unreported = Counter(), 0
        summary = {
            "rate_limited": sum(over.values()),
            "dropped": dropped,
            "alerts": dict(sorted(over.items())),
        }
        return summary, over, dropped

    def _give_back_summary(self, over: Counter[str], dropped: int) -> None:
        """The message that carried the summary failed: the next one carries it."""
        self._over_limit.update(over)
        self._dropped_unreported += dropped

    async def _send(self, session: aiohttp.ClientSession, item: _Outgoing) -> None:
        payload = alert_payload(item.alert, host=self.host, repeats=item.repeats)
        summary, over, dropped = self._take_summary()
        payload["suppressed"] = summary
        if (summary["rate_limited"] or summary["dropped"]) and not item.summary:
            payload["message"] += (
                f" [{summary['rate_limited'] + summary['dropped']} earlier alerts not sent: "
                f"{summary['rate_limited']} over the rate limit, {summary['dropped']} "
                "dropped with the queue full]"
            )
        body = orjson.dumps(payload)
        try:
            await self._post(body, session, item)
        except asyncio.CancelledError:
            self._give_back_summary(over, dropped)
            raise
        if not self._delivered and not item.summary:
            # the next message carries the summary (a summary message that failed is
            # not tried again: its counts stay in the stats and the log)
            self._give_back_summary(over, dropped)

    async def _post(self, body: bytes, session: aiohttp.ClientSession, item: _Outgoing) -> None:
        """POST ``body`` with retries; sets ``_delivered``."""
        self._delivered = False
        attempt = 0
        while True:
            retry_after: str | None = None
            try:
                async with session.post(self.url, data=body) as response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    text = await response.text(errors="replace")
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if 200 <= status < 300:
                    self.stats.sent += 1
                    self._delivered = True
                    return
                problem = f"HTTP {status}"
                if status != 429 and status < 500:
                    self.stats.failed += 1
                    self.log.error(
                        "webhook refused the alert; not retried",
                        status=status,
                        response=text[:200],
                        rule=item.alert.rule,
                    )
                    return
            if attempt >= self.max_retries:
                self.stats.failed += 1
                self.log.error(
                    "webhook delivery failed; retries spent",
                    problem=problem,
                    attempts=attempt + 1,
                    rule=item.alert.rule,
                )
                return
            delay = self._retry_delay(attempt, retry_after)
            attempt += 1
            self.stats.retried += 1
            self.log.warning(
                "webhook delivery failed; retrying", problem=problem, attempt=attempt, in_s=delay
            )
            await asyncio.sleep(delay)

    def _retry_delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            asked = _parse_retry_after(retry_after)
            if asked is not None:
                return min(asked, self.retry_after_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2.0**attempt)
        # jittered, so many daemons that lost the same endpoint do not retry in step
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def _flush(self, session: aiohttp.ClientSession) -> None:
        try:
            async with asyncio.timeout(self.flush_timeout_s):
                while (item := self._next(flushing=True)) is not None:
                    self._in_flight = item
                    await self._send(session, item)
                    self._in_flight = None
        except TimeoutError:
            items = [*self._critical, *self._others]
            if self._in_flight is not None:
                items.append(self._in_flight)
                self._in_flight = None
            left = sum(item.alerts for item in items if not item.summary)
            left += sum(w.count for w in self._windows.values())
            self._critical.clear()
            self._others.clear()
            self._windows.clear()
            self.stats.dropped += left
            self.log.error(
                "stop: alerts still queued at the flush deadline were dropped",
                dropped=left,
                flush_timeout_s=self.flush_timeout_s,
            )


def _parse_retry_after(value: str) -> float | None:
    """Seconds from a ``Retry-After`` value: delta-seconds or an HTTP date."""
    value = value.strip()
    with suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


# --- the actor -----------------------------------------------------------------------------


def read_credential(name: str) -> str:
    """The text of systemd credential ``name`` (``LoadCredential=``), stripped: the file
    ``$CREDENTIALS_DIRECTORY/name``. Raises ValueError naming the credential if it cannot."""
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"credential name {name!r} must be a plain file name")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ValueError(
            f"credential {name!r} cannot be read: CREDENTIALS_DIRECTORY is not set "
            f"(give it with LoadCredential={name}:/path/to/file in the unit)"
        )
    path = Path(directory) / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(
            f"credential {name!r} cannot be read from CREDENTIALS_DIRECTORY: {exc.strerror or exc}"
        ) from None
    if not value:
        raise ValueError(f"credential {name!r} is empty")
    return value


class AlertWebhookConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where alerts go: ``url``, or ``url_credential``, the name of a systemd credential
    holding it (read from ``$CREDENTIALS_DIRECTORY``; keeps the URL's token out of the
    configuration). The rest are :class:`WebhookNotifier`'s settings."""

    url: str | None = None
    url_credential: str | None = None
    min_level: Literal["INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    timeout_s: float = 5.0
    max_retries: int = 5
    dedupe_window_s: float = 60.0
    rate_per_minute: float = 30.0
    burst: int = 10
    queue_limit: int = 1000
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    flush_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.url is None) == (self.url_credential is None):
            raise ValueError("give the webhook as either `url` or `url_credential`, not both")


class AlertWebhook(Actor[AlertWebhookConfig]):
    """Sends the :class:`~engine.messages.Alert` messages it receives to a webhook; other
    messages are ignored. Its sender is a task it owns (cancelled on stop, when it sends
    what is queued within ``flush_timeout_s``); the notifier (queue, windows, counters)
    survives a restart of the actor."""

    Config = AlertWebhookConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    receives_system_alerts = True
    """The supervisor's alerts (crashes, restarts) go out too."""

    def check_config(self) -> None:
        try:
            self.notifier = self._make_notifier()
        except ValueError as exc:
            field = "url_credential" if self.config.url_credential is not None else "url"
            raise ValueError(f"{exc} - at `$.{field}`") from None

    def _make_notifier(self) -> WebhookNotifier:
        config = self.config
        url = config.url if config.url is not None else read_credential(str(config.url_credential))
        return WebhookNotifier(
            url,
            min_level=config.min_level,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
            dedupe_window_s=config.dedupe_window_s,
            rate_per_minute=config.rate_per_minute,
            burst=config.burst,
            queue_limit=config.queue_limit,
            backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s,
            flush_timeout_s=config.flush_timeout_s,
        )

    def on_start(self) -> None:
        if getattr(self, "notifier", None) is None:
            self.notifier = self._make_notifier()
        self.ignored = 0
        self.sender = self.own_task(self.notifier.run(), "webhook-sender")

    def on_stop(self) -> None:
        self.sender.cancel()  # the notifier flushes its queue, then ends

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, Alert):
            self.notifier.submit(msg)
        else:
            self.ignored += 1

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "webhook": self.notifier.stats.as_dict()}
