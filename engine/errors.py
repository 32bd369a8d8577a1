"""The root of tradingd's exceptions, one shallow tree per area.

A risk rejection is not an exception: it is an ``OrderDenied`` message with a reason.
Exceptions are for things that stop a component: bad configuration, broken wiring,
a critical actor that cannot be kept alive.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CriticalActorFailed",
    "DataError",
    "TradingdError",
    "WiringError",
]


class TradingdError(Exception):
    """Root of every error raised by tradingd itself."""

    code: str = "TRADINGD"


class ConfigError(TradingdError):
    """A configuration file is missing, malformed or inconsistent.

    ``path`` is where in the file the problem is, as ``$.section.key[2]``.
    """

    code = "CONFIG"

    def __init__(self, message: str, *, path: str = "$", file: str | None = None) -> None:
        self.path = path
        self.file = file
        where = f"{file}: " if file else ""
        super().__init__(
            f"{where}{message}" if path in message else f"{where}{message} - at `{path}`"
        )


class WiringError(ConfigError):
    """Actors or edges in the configuration do not fit together."""

    code = "WIRING"


class DataError(TradingdError):
    """Market data cannot be read or is not in the expected format."""

    code = "DATA"


class CriticalActorFailed(TradingdError):
    """A critical actor (risk gate, router, journal) crashed past its restart budget."""

    code = "CRITICAL_ACTOR"

    def __init__(self, actor: str, cause: BaseException | None) -> None:
        self.actor = actor
        self.cause = cause
        super().__init__(f"critical actor {actor!r} failed past its restart budget: {cause!r}")
