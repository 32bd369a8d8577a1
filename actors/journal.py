"""The journal: the write-ahead stage of the order path.

Every message it receives is appended to the journal (engine/journal.py) with the clock's
time. Those that take effect elsewhere are sent on only once they are committed:

- ``orders``: ``OrderRequest``, ``CancelOrder`` (wire ``risk.approved -> journal -> router``);
- ``events``: order events and fills (wire ``exchange.events -> journal -> portfolio, risk,
  strategies``);
- ``control``: ``SetTradingState``, ``SetLimits``, ``ControlCommand``.

Everything else it is sent (``RiskDecision``, ``Alert``, ``TradingStateChanged``,
``LimitsChanged``, ...) is journaled only. Market data and timers are skipped.

Only orders that passed the risk gate may be wired into it: it sends on every
``OrderRequest`` it is given. A journal already in ``dir`` is continued (the chain and seq
go on), as a restarted daemon needs; give each backtest a directory of its own.

Group commit: the records of a burst are committed together, with one write and one fsync,
when the inbox is empty or ``group_records`` are pending; the messages held meanwhile then
go out in the order they came. It is critical: if it cannot write, trading halts.

    [actors.journal]
    kind = "journal"
    dir = "journal"        # relative to the configuration file's folder
    fsync = true           # false for backtests: written, not forced to disk
    rotate_mb = 64         # start a new segment past this size
    group_records = 256    # commit at least this often
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from engine.actor import Actor, ActorConfig
from engine.journal import JOURNALED_TYPES, JournalError, JournalWriter
from engine.messages import (
    Bar,
    BarBatch,
    CancelOrder,
    ControlCommand,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
    QuoteBatch,
    QuoteTick,
    SetLimits,
    SetTradingState,
    TimerFired,
    TradeBatch,
    TradeTick,
)

__all__ = ["Journal", "JournalConfig"]

_PORT_OF: dict[type, str] = {
    OrderRequest: "orders",
    CancelOrder: "orders",
    OrderAccepted: "events",
    OrderRejected: "events",
    OrderPartiallyFilled: "events",
    OrderFilled: "events",
    OrderCancelled: "events",
    OrderCancelRejected: "events",
    OrderExpired: "events",
    OrderDenied: "events",
    SetTradingState: "control",
    SetLimits: "control",
    ControlCommand: "control",
}
"""Where a message that takes effect elsewhere goes once it is committed."""

_SKIPPED = frozenset({QuoteBatch, TradeBatch, BarBatch, QuoteTick, TradeTick, Bar, TimerFired})
"""Market data (kept by the tick store, not the journal) and timers."""

_JOURNALED = frozenset(JOURNALED_TYPES)


class JournalConfig(ActorConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``dir``: the journal's directory (relative to the configuration file's folder);
    ``fsync``: force each group commit to disk (turn off only for backtests);
    ``rotate_mb``: start a new segment before one would grow past this (MiB);
    ``group_records``: commit at least every this many records, even in a long burst."""

    dir: str
    fsync: bool = True
    rotate_mb: float = 64.0
    group_records: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dir:
            raise ValueError("dir must name the journal's directory - at `$.dir`")
        if not self.rotate_mb > 0:
            raise ValueError(
                f"rotate_mb must be more than 0, got {self.rotate_mb} - at `$.rotate_mb`"
            )
        if self.group_records < 1:
            raise ValueError(
                f"group_records must be at least 1, got {self.group_records} - at `$.group_records`"
            )


class Journal(Actor[JournalConfig]):
    Config = JournalConfig
    outputs: ClassVar[tuple[str, ...]] = ("orders", "events", "control")
    critical_by_default = True
    receives_system_alerts = True
    """The supervisor's alerts (crashes, restarts) are journaled too."""

    @property
    def directory(self) -> Path:
        path = Path(self.config.dir)
        if path.is_absolute():
            return path
        return (self.ctx.base_dir or Path.cwd()) / path

    def check_config(self) -> None:
        existing = self.directory
        while not existing.exists():  # the first folder that exists must take a new one
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{existing} is not a directory - at `$.dir`")

    def on_start(self) -> None:
        held: list[tuple[int, str, Any]] | None = getattr(self, "held", None)
        if held is None:  # first start; after a crash the counters and held messages stay
            self.held = held = []
            self.skipped = 0
            self.unjournaled = 0
            self.torn_bytes_cut_at_open = 0
            self.earlier_stats: dict[str, int] = {}
        old: JournalWriter | None = getattr(self, "writer", None)
        if old is not None:
            if not old.closed:
                old.close()
            for key, value in old.stats.items():
                self.earlier_stats[key] = self.earlier_stats.get(key, 0) + value
        self.writer = JournalWriter(
            self.directory,
            fsync=self.config.fsync,
            rotate_bytes=max(1, int(self.config.rotate_mb * (1 << 20))),
        )
        if self.writer.torn_bytes:
            self.torn_bytes_cut_at_open += self.writer.torn_bytes
            self.log.warning(
                "journal torn tail cut",
                directory=str(self.directory),
                torn_bytes=self.writer.torn_bytes,
                seq=self.writer.torn_seq,
            )
        if held:
            # Held when a commit failed. What reached the journal whole takes effect; the
            # rest was never journaled, so it must not.
            last = self.writer.last_seq
            lost = [msg for seq, _, msg in held if seq > last]
            if lost:
                self.log.error(
                    "messages not journaled before a crash are dropped",
                    count=len(lost),
                    types=sorted({type(m).__name__ for m in lost}),
                )
            for seq, port, msg in held:
                if seq <= last:
                    self.emit(port, msg)
            held.clear()

    def on_message(self, msg: Any) -> None:
        cls = type(msg)
        if cls in _SKIPPED:
            self.skipped += 1
            return
        if cls not in _JOURNALED:  # another package's message: nothing here acts on it
            self.unjournaled += 1
            self.log.warning("message type not journaled", type=cls.__name__)
            return
        writer = self.writer
        try:
            seq = writer.append(msg, self.clock.now())
        except JournalError as exc:
            if writer.closed or writer.failed is not None:
                raise
            # it cannot be encoded (plain data that is not): it was not journaled, so it
            # must not take effect either
            self.unjournaled += 1
            self.log.error(
                "message cannot be journaled; dropped", type=cls.__name__, error=str(exc)
            )
            return
        port = _PORT_OF.get(cls)
        if port is not None:
            self.held.append((seq, port, msg))
        if writer.pending >= self.config.group_records or not self.inbox.size:
            self._commit()

    def _commit(self) -> None:
        self.writer.commit()
        held = self.held
        for _, port, msg in held:
            self.emit(port, msg)
        held.clear()

    def on_stop(self) -> None:
        writer: JournalWriter | None = getattr(self, "writer", None)
        if writer is None or writer.closed:
            return
        try:
            if writer.pending:
                self._commit()
        finally:
            writer.close()

    @property
    def journal_stats(self) -> dict[str, int]:
        """Records, commits, fsyncs, bytes (and fsync time in ns) since the first start,
        across restarts; torn bytes cut when the journal was opened."""
        totals = dict(getattr(self, "earlier_stats", {}))
        writer: JournalWriter | None = getattr(self, "writer", None)
        if writer is not None:
            for key, value in writer.stats.items():
                totals[key] = totals.get(key, 0) + value
        return {
            "records": totals.get("records", 0),
            "commits": totals.get("commits", 0),
            "fsyncs": totals.get("fsyncs", 0),
            "bytes": totals.get("bytes", 0),
            "fsync_ns": totals.get("fsync_ns", 0),
            "torn_bytes_cut_at_open": getattr(self, "torn_bytes_cut_at_open", 0),
            "last_seq": writer.last_seq if writer is not None else 0,
            "skipped": getattr(self, "skipped", 0),
            "unjournaled": getattr(self, "unjournaled", 0),
        }

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), **self.journal_stats}
