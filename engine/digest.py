"""A running SHA-256 over order traffic, so two runs can be compared in one line.

Every order request, order event and fill is encoded with msgpack (msgspec encodes a
Struct's fields in declaration order, so the bytes are stable) and fed to the hash in
the order the recorder received them. The encodings are collected in a buffer and hashed
a block at a time: SHA-256 of the concatenation is the same as fed one by one, and one
call per block costs less than one per message.
"""

from __future__ import annotations

import hashlib

import msgspec

from engine.messages import (
    CancelOrder,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderCancelRejected,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderRequest,
)

__all__ = ["EventDigest"]

_COUNTED: dict[type, str] = {
    OrderRequest: "orders",
    CancelOrder: "cancels",
    OrderDenied: "denied",
    OrderAccepted: "accepted",
    OrderRejected: "rejected",
    OrderPartiallyFilled: "fills",
    OrderFilled: "filled",
    OrderCancelled: "cancelled",
    OrderCancelRejected: "cancel_rejected",
    OrderExpired: "expired",
}


_BLOCK = 64 * 1024
"""Bytes of encoded messages collected before they are hashed."""


class EventDigest:
    """Hashes and counts order traffic."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._encode_into = msgspec.msgpack.Encoder().encode_into
        self._pending = bytearray()  # encoded, not hashed yet
        self.counts: dict[str, int] = dict.fromkeys(_COUNTED.values(), 0)
        """orders, cancels, denied, accepted, rejected, fills (every execution), filled
        (orders completed), cancelled, expired."""
        self.events = 0

    def add(self, msg: Message) -> bool:
        """Add one message; False (and nothing hashed) if it is not order traffic."""
        name = _COUNTED.get(type(msg))
        if name is None:
            return False
        self.counts[name] += 1
        if name == "filled":  # a completing fill is an execution too
            self.counts["fills"] += 1
        self.events += 1
        pending = self._pending
        self._encode_into(msg, pending, -1)  # appended to what is pending
        if len(pending) >= _BLOCK:
            self._hash.update(pending)
            pending.clear()
        return True

    def hexdigest(self) -> str:
        if self._pending:
            self._hash.update(self._pending)
            self._pending.clear()
        return self._hash.hexdigest()
