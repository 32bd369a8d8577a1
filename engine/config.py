"""Typed configuration: TOML decoded once, at start, into frozen Structs.

An unknown or mistyped key fails with its path in the file, for example::

    config/backtest.toml: Expected `int`, got `str` - at `$.actors.ema.fast`

Which actors exist and how they are wired is configuration too: ``[actors.NAME]``
sections (each with a ``kind`` and that kind's settings) and ``[[edges]]`` entries.
Inside, code trusts the types.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from engine.errors import ConfigError
from engine.instruments import Instrument
from engine.mailbox import Overflow

__all__ = [
    "AccountConfig",
    "EdgeConfig",
    "LoggingConfig",
    "QuoteFileConfig",
    "ReplayConfig",
    "SystemConfig",
    "config_error",
    "convert_section",
    "load_config",
    "parse_config",
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
    gives each actor its own asyncio task, as in live trading. Both give the same results."""

    batch_size: int = 16_384
    per_tick: bool = False
    executor: Literal["inline", "tasks"] = "inline"
    quotes: list[QuoteFileConfig] = []

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


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


class SystemConfig(_Config, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: Mode
    account: AccountConfig
    instruments: list[Instrument]
    replay: ReplayConfig = ReplayConfig()
    logging: LoggingConfig = LoggingConfig()
    actors: dict[str, dict[str, Any]]
    edges: list[EdgeConfig] = []
    drain_timeout_s: float = 10.0

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
        for i, qf in enumerate(self.replay.quotes):
            if qf.instrument not in seen:
                raise ValueError(
                    f"unknown instrument {qf.instrument!r} - at `$.replay.quotes[{i}].instrument`"
                )
        for name, section in self.actors.items():
            if not isinstance(section, dict) or "kind" not in section:
                raise ValueError(f"actor {name!r} needs a `kind` - at `$.actors.{name}`")


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")

T = TypeVar("T")


def config_error(exc: Exception, *, prefix: str, file: str | None) -> ConfigError:
    """A ConfigError from a validation error, its ``$.path`` put under ``prefix``."""
    text = str(exc)
    match = _AT.search(text)
    if match:
        path = "$" + prefix + match.group("path")
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


def parse_config(text: str, *, file: str | None = None) -> SystemConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    return convert_section(raw, SystemConfig, file=file)


def load_config(path: str | Path) -> SystemConfig:
    """Read and check a configuration file. Raises ConfigError naming the bad key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror}", file=str(p)) from None
    return parse_config(text, file=str(p))
