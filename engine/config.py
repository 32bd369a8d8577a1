"""Typed configuration: TOML decoded once, at start, into frozen Structs.

An unknown or mistyped key fails with its path in the file, for example::

    config/backtest.toml: Expected `int`, got `str` - at `$.actors.ema.fast`

Which actors exist and how they are wired is configuration too: ``[actors.NAME]``
sections (each with a ``kind`` and that kind's settings) and ``[[edges]]`` entries.
Inside, code trusts the types.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from engine.errors import ConfigError
from engine.instruments import Instrument
from engine.mailbox import Overflow

__all__ = [
    "AccountConfig",
    "ControlConfig",
    "DaemonConfig",
    "EdgeConfig",
    "LoggingConfig",
    "QuoteFileConfig",
    "ReplayConfig",
    "SystemConfig",
    "apply_overrides",
    "config_error",
    "convert_section",
    "load_config",
    "parse_config",
    "utc_ns",
]

Mode = Literal["backtest", "paper", "live"]


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class AccountConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The trading account. ``starting_balance`` is in ``currency``. A margin account
    may be short; netting keeps one position per instrument."""

    currency: str
    starting_balance: float
    type: Literal["margin"] = "margin"
    oms: Literal["netting"] = "netting"

    def __post_init__(self) -> None:
        if self.starting_balance < 0:
            raise ValueError("starting_balance must not be negative")


class QuoteFileConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tick file (``.npy`` of quote ticks) and the instrument its rows belong to.
    A relative path is relative to the configuration file."""

    path: str
    instrument: str


class ReplayConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a backtest releases ticks. ``per_tick`` delivers one ``QuoteTick`` message at a
    time (slow, the reference behaviour); otherwise ticks travel in batches of at most
    ``batch_size``, cut wherever an actor acts, with identical results. ``executor``:
    ``inline`` drives the actors in one task (fast, see engine/dispatch.py); ``tasks``
    gives each actor its own asyncio task, as in live trading. Both give the same results.

    ``start`` / ``end`` bound the replay to ticks with ``start <= ts_event < end``: an
    ISO-8601 time with its UTC offset (``"2024-08-09T00:00:00Z"``, up to nanoseconds; a bare
    date is midnight UTC) or integer nanoseconds since the epoch. Either may be left out."""

    batch_size: int = 16_384
    per_tick: bool = False
    executor: Literal["inline", "tasks"] = "inline"
    quotes: list[QuoteFileConfig] = []
    trades: list[QuoteFileConfig] = []
    """Tick files of prints (``.npy`` of ``TRADE_DTYPE``), replayed with the quotes."""
    store: str | None = None
    """A tick store folder (relative to the configuration file) to replay every instrument
    of the run from, instead of tick files."""
    kinds: list[str] = msgspec.field(default_factory=lambda: ["quotes"])
    """What to replay from the store: ``quotes``, ``trades``, ``bars.<label>`` (``bars.1d``,
    ``bars.1m``); each for the instruments of the run that the store has it for."""
    corporate_actions: bool = False
    """Replay the splits and dividends the store holds for the run's instruments (from the
    factor files), each in force from the start of its ex-date."""
    start: str | int | None = None
    end: str | int | None = None
    speed: float = 1.0
    """Paper mode only: the replay is paced in real time, ``speed`` times as fast as the
    data was recorded, and restamped to the live clock."""
    loop: bool = True
    """Paper mode only: start the data again when it runs out (the daemon runs until it is
    stopped), later in time by the length of the data."""

    def __post_init__(self) -> None:
        if not (self.speed > 0 and self.speed < float("inf")):
            raise ValueError(f"speed must be a positive number, got {self.speed!r} - at `$.speed`")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.store is not None and (self.quotes or self.trades):
            raise ValueError("replay from `store` or from tick files, not both - at `$.store`")
        if self.trades and not self.quotes:
            raise ValueError("trade files are replayed with quote files - at `$.quotes`")
        if not self.kinds:
            raise ValueError("name at least one kind of data to replay - at `$.kinds`")
        for i, kind in enumerate(self.kinds):
            if kind not in ("quotes", "trades") and not (
                kind.startswith("bars.") and len(kind) > len("bars.")
            ):
                raise ValueError(
                    f"unknown kind {kind!r}: quotes, trades or bars.<label> - at `$.kinds[{i}]`"
                )
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError("a kind is named twice - at `$.kinds`")
        if self.store is None and (self.kinds != ["quotes"] or self.corporate_actions):
            raise ValueError(
                "kinds and corporate_actions choose what to replay from a tick store:"
                " set `store` - at `$.store`"
            )

    @property
    def start_ns(self) -> int | None:
        """``start`` in nanoseconds since the epoch, UTC (None: from the first tick)."""
        return None if self.start is None else utc_ns(self.start)

    @property
    def end_ns(self) -> int | None:
        """``end`` in nanoseconds since the epoch, UTC, exclusive (None: to the last tick)."""
        return None if self.end is None else utc_ns(self.end)


class EdgeConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``from = "actor.port"`` into ``to = "actor"``'s inbox, with the overflow policy.
    ``only`` names the message types (``OrderFilled``, ...) the edge carries; empty: all."""

    from_: str = msgspec.field(name="from")
    to: str
    overflow: Overflow = Overflow.BLOCK
    only: list[str] = []


class LoggingConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ControlConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The daemon's control API: always on a Unix socket (``socket``, relative to the state
    directory, mode 0600); on TCP too when ``tcp = "HOST:PORT"`` is set, and then only
    with a bearer token, read from the systemd credential ``token_credential`` (or the
    file ``token_file``)."""

    socket: str = "control.sock"
    tcp: str | None = None
    token_credential: str = "control-token"
    token_file: str | None = None
    """A file holding the token (relative to the configuration file), when not run under
    systemd with ``LoadCredential=``."""

    def __post_init__(self) -> None:
        if self.tcp is not None:
            host, sep, port = self.tcp.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f'tcp must be "HOST:PORT", got {self.tcp!r} - at `$.tcp`')


class DaemonConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How ``tradingd run`` runs: where its state lives (the journal; relative to the working
    directory; ``--state-dir`` or systemd's ``STATE_DIRECTORY`` win), how long an orderly
    stop may take and whether it cancels working orders (``on_stop``), how often the
    one-line status is refreshed, and when the event loop counts as stalled."""

    state_dir: str = "state"
    stop_timeout_s: float = 10.0
    on_stop: Literal["cancel", "leave"] = "cancel"
    status_interval_s: float = 2.0
    max_loop_lag_s: float = 1.0
    feed_stale_after_s: float = 30.0
    control: ControlConfig = ControlConfig()

    def __post_init__(self) -> None:
        for key in ("stop_timeout_s", "status_interval_s", "max_loop_lag_s", "feed_stale_after_s"):
            value = getattr(self, key)
            if not value > 0:
                raise ValueError(f"{key} must be positive, got {value!r} - at `$.{key}`")


class SystemConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: Mode
    account: AccountConfig
    instruments: list[Instrument]
    replay: ReplayConfig = ReplayConfig()
    logging: LoggingConfig = LoggingConfig()
    actors: dict[str, dict[str, Any]]
    edges: list[EdgeConfig] = []
    drain_timeout_s: float = 10.0
    daemon: DaemonConfig = DaemonConfig()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, inst in enumerate(self.instruments):
            if inst.id in seen:
                raise ValueError(
                    f"instrument {inst.id!r} is defined twice - at `$.instruments[{i}]`"
                )
            seen.add(inst.id)
            if inst.quote_currency != self.account.currency:
                raise ValueError(
                    f"instrument {inst.id} is quoted in {inst.quote_currency} but the account is "
                    f"in {self.account.currency}; cross-currency accounting is not supported yet "
                    f"- at `$.instruments[{i}].quote_currency`"
                )
        for key in ("quotes", "trades"):
            for i, qf in enumerate(getattr(self.replay, key)):
                if qf.instrument not in seen:
                    raise ValueError(
                        f"unknown instrument {qf.instrument!r}"
                        f" - at `$.replay.{key}[{i}].instrument`"
                    )
        bounds: dict[str, int] = {}
        for key in ("start", "end"):
            value = getattr(self.replay, key)
            if value is not None:
                try:
                    bounds[key] = utc_ns(value)
                except ValueError as exc:
                    raise ValueError(f"{exc} - at `$.replay.{key}`") from None
        if len(bounds) == 2 and bounds["end"] <= bounds["start"]:
            raise ValueError(
                f"replay end {self.replay.end!r} is not after start {self.replay.start!r}"
                " - at `$.replay.end`"
            )
        for name, section in self.actors.items():
            if not isinstance(section, dict) or "kind" not in section:
                raise ValueError(f"actor {name!r} needs a `kind` - at `$.actors.{name}`")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ISO_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"(?P<offset>Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)


def utc_ns(value: str | int) -> int:
    """A point in time as integer nanoseconds since the epoch, UTC.

    ``value`` is nanoseconds already, or an ISO-8601 string: ``2024-08-09T00:00:00Z``,
    ``2024-08-09T02:00:00.123456789+02:00``, or a bare date (midnight UTC). A time of day
    without an offset is refused rather than guessed: tick data comes in many time zones.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an ISO-8601 time or integer nanoseconds, got {value!r}")
    if isinstance(value, int):
        return value
    m = _ISO_TIME.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"not an ISO-8601 time: {value!r} (example: 2024-08-09T00:00:00Z)")
    time_of_day, offset = m.group("time"), m.group("offset")
    if time_of_day is not None and offset is None:
        raise ValueError(f"{value!r} has no UTC offset; add Z for UTC (2024-08-09T00:00:00Z)")
    offset = "+00:00" if offset is None or offset.upper() == "Z" else offset
    try:
        stamp = dt.datetime.fromisoformat(f"{m.group('date')}T{time_of_day or '00:00'}{offset}")
    except ValueError as exc:
        raise ValueError(f"not a valid time: {value!r} ({exc})") from None
    seconds = (stamp - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((m.group("fraction") or "").ljust(9, "0"))


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` (a decoded TOML document) with each dotted key of ``overrides`` set.

    ``{"actors.ema.fast": 50}`` sets ``fast`` in ``[actors.ema]``; missing tables are
    created. The result is checked like the file itself, so a misspelt key fails with its
    path. ``raw`` is not changed.
    """
    out = dict(raw)
    for key, value in overrides.items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"not a dotted key: {key!r}", path="$")
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part, {})
            if not isinstance(child, dict):
                where = "$." + ".".join(parts[: depth + 1])
                raise ConfigError(f"cannot set {key!r}: {where} is not a table", path=where)
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return out


_AT = re.compile(r"(?: - at `\$[^`]*`)+$")
_ONE_AT = re.compile(r" - at `\$([^`]*)`")

T = TypeVar("T")


def config_error(exc: Exception, *, prefix: str, file: str | None) -> ConfigError:
    """A ConfigError from a validation error, its ``$.path`` put under ``prefix``.

    A check inside a nested Struct names its own field (`` - at `$.var_limit` ``) and msgspec
    adds where that Struct sits (`` - at `$.portfolio` ``): the two are joined, outermost
    first, into one path (``$.portfolio.var_limit``)."""
    text = str(exc)
    match = _AT.search(text)
    if match:
        parts = _ONE_AT.findall(match.group(0))
        path = "$" + prefix + "".join(reversed(parts))
        text = text[: match.start()] + f" - at `{path}`"
    else:
        path = "$" + prefix
    return ConfigError(text, path=path, file=file)


def convert_section(raw: Any, type_: type[T], *, prefix: str = "", file: str | None = None) -> T:
    """Decode one section into ``type_``; errors name the full key path (``prefix``)."""
    try:
        return msgspec.convert(raw, type_)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise config_error(exc, prefix=prefix, file=file) from None


def parse_config(
    text: str, *, file: str | None = None, overrides: Mapping[str, Any] | None = None
) -> SystemConfig:
    """Check a configuration document, with ``overrides`` (see :func:`apply_overrides`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    if overrides:
        try:
            raw = apply_overrides(raw, overrides)
        except ConfigError as exc:
            raise ConfigError(str(exc), path=exc.path, file=file) from None
    return convert_section(raw, SystemConfig, file=file)


def load_config(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> SystemConfig:
    """Read and check a configuration file, with ``overrides`` (dotted key: value) applied.
    Raises ConfigError naming the bad key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror}", file=str(p)) from None
    return parse_config(text, file=str(p), overrides=overrides)
