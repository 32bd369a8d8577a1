"""The paper broker's own books: what the simulated exchange was asked and did, on disk.

A real broker keeps its records whatever happens to us. In paper mode the simulated
exchange runs inside the daemon, so it keeps them here, in a hash-chained file of its own
(the journal format, ``engine/journal.py``), written before it reports anything. After a
crash of the daemon the ledger says which orders the broker took, which it filled (every
execution, by trade id), and which were still working; the daemon reconciles its journal
with it before it reports ready.

Like many brokers' sessions with cancel-on-disconnect, orders still working when the
session that placed them ended are cancelled by the broker when the next session starts
(:meth:`BrokerLedger.cancel_orphans`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.journal import JournalWriter, read_journal
from engine.messages import (
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
)

__all__ = ["BrokerLedger"]


class BrokerLedger:
    """The broker's books in ``directory``: ids taken, working orders, executions, and
    the position they add up to per instrument."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writer = JournalWriter(directory, fsync=True)  # cuts a torn tail, takes the lock
        self.ids: set[str] = set()
        self.working: dict[str, dict[str, Any]] = {}
        self.executions: dict[str, OrderPartiallyFilled] = {}
        self.position: dict[str, float] = {}
        self.events: list[Message] = []
        """Everything the broker reported, in order."""
        for record in read_journal(directory):
            self._book(record.msg)

    @property
    def orders_taken(self) -> int:
        return sum(isinstance(e, OrderAccepted) for e in self.events)

    def seen(self, client_order_id: str) -> bool:
        return client_order_id in self.ids

    def append(self, event: Message, ts: int) -> None:
        self._book(event)
        self.writer.append(event, ts)

    def commit(self) -> None:
        self.writer.commit()

    def close(self) -> None:
        self.writer.close()

    def _book(self, msg: Any) -> None:
        self.events.append(msg)
        match msg:
            case OrderAccepted():
                self.ids.add(msg.client_order_id)
                self.working[msg.client_order_id] = {
                    "strategy_id": msg.strategy_id,
                    "instrument_id": msg.instrument_id,
                }
            case OrderRejected():
                self.ids.add(msg.client_order_id)
            case OrderPartiallyFilled():  # OrderFilled too
                self.ids.add(msg.client_order_id)
                self.executions[msg.trade_id] = msg
                inst = msg.instrument_id
                self.position[inst] = self.position.get(inst, 0.0) + msg.side.sign * msg.last_qty
                if isinstance(msg, OrderFilled) or msg.leaves_qty <= 0:
                    self.working.pop(msg.client_order_id, None)
            case OrderCancelled() | OrderExpired():
                self.working.pop(msg.client_order_id, None)
            case _:
                pass

    def cancel_orphans(self, ts: int) -> list[OrderCancelled]:
        """Cancel, on the books, every order still working from an earlier session; the
        cancels are to be reported to the daemon (committed here first)."""
        out = [
            OrderCancelled(
                client_order_id=cid,
                strategy_id=order["strategy_id"],
                instrument_id=order["instrument_id"],
                reason="cancelled by the broker: the session that placed it ended",
                ts_event=ts,
                ts_init=ts,
            )
            for cid, order in sorted(self.working.items())
        ]
        for cancel in out:
            self.append(cancel, ts)
        if out:
            self.commit()
        return out
