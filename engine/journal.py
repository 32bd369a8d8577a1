"""The write-ahead journal: every order request, risk decision, order event, fill, limit
change, trading-state change, alert and control command, hash-chained, group-committed.

Format
------
A journal is a directory of segments ``journal-000001.jsonl``, ``journal-000002.jsonl``,
... Each line is one record, JSON, in this exact shape (no spaces)::

    {"seq":12,"ts":1723161600000000000,"msg":{"type":"OrderFilled",...},"prev":"<hex>","hash":"<hex>"}

- ``seq`` counts records from 1, with no gap, across segments;
- ``ts`` is the time of writing in integer nanoseconds, from the caller's injected clock;
- ``msg`` is the :mod:`engine.messages` message, msgspec JSON, tagged by ``type``;
- ``prev`` is the previous record's ``hash`` (the first record's is :data:`GENESIS_HASH`);
- ``hash`` is hex SHA-256 over the previous record's 32-byte digest followed by the
  record's *canonical bytes*: the line as written up to ``"prev":"<hex>"`` and closed with
  ``}``, i.e. the record without its ``hash`` field.

So the chain is checked with slicing and hashing alone, and any edited byte of a whole
record changes its hash (or the next record's link). Readers decode with msgspec into the
union of every journaled message type (:data:`JOURNALED_TYPES`).

A float that is infinite or NaN (a VaR of a book with an unpriced position) has no JSON
number; such a message is written with the value as a string (``"inf"``, ``"-inf"``,
``"nan"``), which the reader turns back into the float where the field is typed ``float``.

Torn tail: a crash can leave the end of the last segment half written. The last line of the
last segment, if it has no newline, does not parse, or does not match its hash, is a torn
tail: :class:`JournalWriter` cuts it when it opens the journal (``torn_bytes``), readers
skip it, :func:`verify_journal` reports it and cuts it with ``repair=True``. Anything wrong
before that last line is corruption (:class:`JournalCorrupt`, naming the segment, line and
seq), never repaired.

Group commit: :meth:`JournalWriter.append` encodes, chains and buffers;
:meth:`JournalWriter.commit` writes everything buffered with one ``write`` and one
``os.fsync``. A segment is rotated before a commit that would take it past
``rotate_bytes`` (a single commit larger than that gets a segment of its own).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import math
import operator
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from engine import messages
from engine.clock import stopwatch_ns
from engine.errors import TradingdError
from engine.messages import BarBatch, Message, QuoteBatch, TradeBatch

__all__ = [
    "DEFAULT_ROTATE_BYTES",
    "GENESIS_HASH",
    "JOURNALED_TYPES",
    "JournalCorrupt",
    "JournalError",
    "JournalRecord",
    "JournalWriter",
    "VerifyReport",
    "read_journal",
    "segment_name",
    "segment_paths",
    "verify_journal",
]

DEFAULT_ROTATE_BYTES: Final = 64 << 20

GENESIS_HASH: Final = hashlib.sha256(b"tradingd journal v1").hexdigest()
"""What the first record chains from. Naming the format version in it means a journal of
another format fails on its first record instead of being misread."""

_GENESIS: Final = bytes.fromhex(GENESIS_HASH)

_SEGMENT_RE: Final = re.compile(r"journal-(\d{6,})\.jsonl")

_NOT_JOURNALED: Final = (QuoteBatch, TradeBatch, BarBatch)
"""numpy batches: replay-only bulk market data, never a fact to keep."""


def _journaled_types() -> tuple[type[Message], ...]:
    found = []
    for name in messages.__all__:
        cls = getattr(messages, name)
        if (
            isinstance(cls, type)
            and issubclass(cls, Message)
            and cls is not Message
            and cls not in _NOT_JOURNALED
        ):
            found.append(cls)
    return tuple(found)


JOURNALED_TYPES: Final[tuple[type[Message], ...]] = _journaled_types()
"""Every message type of :mod:`engine.messages` a journal can hold (all but the numpy
batches)."""

_JOURNALED: Final = frozenset(JOURNALED_TYPES)
_MessageUnion: Any = typing.Union[JOURNALED_TYPES]  # noqa: UP007 - built from a tuple
_Line: Any = msgspec.defstruct(
    "_Line",
    [("seq", int), ("ts", int), ("msg", _MessageUnion), ("prev", str), ("hash", str)],
    frozen=True,
)
_line_decoder: Final = msgspec.json.Decoder(_Line)
_lax_line_decoder: Final = msgspec.json.Decoder(_Line, strict=False)  # "inf" -> inf


def _scalar(t: Any) -> bool:
    """A type whose values are never floats nor hold any (int, str, bool, an enum, or an
    optional one of those)."""
    if t in (int, str, bool, types.NoneType) or (isinstance(t, type) and issubclass(t, enum.Enum)):
        return True
    args = typing.get_args(t)
    return (
        bool(args)
        and typing.get_origin(t) in (types.UnionType, typing.Union)
        and all(_scalar(a) for a in args)
    )


def _finite_check(cls: type[Message]) -> Callable[[Any], bool] | None:
    """A fast test that a message of ``cls`` holds only finite floats (False: maybe not,
    look closer), from the types of its fields; None if a field holds plain data (a dict,
    ``Any``), where only a look at every value can tell."""
    required: list[str] = []
    optional: list[str] = []
    for f in msgspec.structs.fields(cls):
        if f.type is float:
            required.append(f.name)
        elif set(typing.get_args(f.type)) == {float, types.NoneType}:
            optional.append(f.name)
        elif not _scalar(f.type):
            return None
    names = (*required, *optional)
    if not names:
        return lambda msg: True
    if len(names) == 1:
        name = names[0]
        values: Callable[[Any], tuple[Any, ...]] = lambda msg: (getattr(msg, name),)  # noqa: E731
    else:
        values = operator.attrgetter(*names)
    n = len(required)
    if not optional:

        def check(msg: Any) -> bool:
            total = sum(values(msg))  # inf or nan if any is (or if they overflow: look closer)
            return bool(total - total == 0.0)

        return check

    def check_optional(msg: Any) -> bool:
        got = values(msg)
        total = sum(got[:n])
        for value in got[n:]:
            if value is not None:
                total += value
        return bool(total - total == 0.0)

    return check_optional


_CHECKS: Final[dict[type, Callable[[Any], bool] | None]] = {
    cls: _finite_check(cls) for cls in _JOURNALED
}


# The fixed parts of a line. The tail of every line is HASH_KEY + 64 hex + LINE_END, and
# the canonical bytes end with PREV_KEY + 64 hex + '"'.
_HASH_KEY: Final = b',"hash":"'
_LINE_END: Final = b'"}\n'
_PREV_KEY: Final = b',"prev":"'
_TAIL: Final = len(_HASH_KEY) + 64 + len(_LINE_END)  # 76 bytes
_PREV_PART: Final = len(_PREV_KEY) + 64 + 1  # 74 bytes
_SEQ_KEY: Final = b'{"seq":'
_SHORTEST: Final = len(_SEQ_KEY) + len(b'1,"ts":0,"msg":{}') + _PREV_PART + _TAIL


class JournalError(TradingdError):
    """The journal cannot be opened, written or read."""

    code = "JOURNAL"


class JournalCorrupt(JournalError):
    """A whole record of the journal is not what was written: an edited byte, a broken
    chain, a missing segment. ``segment`` (file name), ``line`` (1-based, in the segment)
    and ``seq`` (the sequence number the record should have) say where."""

    code = "JOURNAL_CORRUPT"

    def __init__(self, segment: str, line: int, seq: int, reason: str) -> None:
        self.segment = segment
        self.line = line
        self.seq = seq
        self.reason = reason
        super().__init__(f"{segment} line {line} (seq {seq}): {reason}")


class JournalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One record as read back: its sequence number, the time it was written (ns), the
    message, and its chain hash (hex)."""

    seq: int
    ts: int
    msg: Message
    hash: str


class VerifyReport(msgspec.Struct, kw_only=True):
    """What :func:`verify_journal` found.

    ``ok``: every record is whole and chained, and there is no torn tail (or it was cut
    with ``repair``). ``torn_bytes``: bytes after the last whole record of the last
    segment (cut if ``repaired``); ``torn_seq`` the seq the torn record would have had.
    ``error`` (with ``error_segment``, ``error_line``, ``error_seq``): the first corrupt
    record, after which nothing is trusted; ``records`` counts those verified before it.
    """

    ok: bool
    directory: str
    records: int = 0
    segments: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = GENESIS_HASH
    first_ts: int | None = None
    last_ts: int | None = None
    types: dict[str, int] = {}
    torn_bytes: int = 0
    torn_segment: str | None = None
    torn_seq: int | None = None
    repaired: bool = False
    error: str | None = None
    error_segment: str | None = None
    error_line: int | None = None
    error_seq: int | None = None


def segment_name(number: int) -> str:
    return f"journal-{number:06d}.jsonl"


def segment_paths(directory: Path) -> list[Path]:
    """The segments of the journal in ``directory``, in order. Raises JournalCorrupt if one
    in the middle is missing (numbers must run from 1 with no gap)."""
    found: list[tuple[int, Path]] = []
    for entry in directory.iterdir():
        m = _SEGMENT_RE.fullmatch(entry.name)
        if m is not None and entry.is_file():
            found.append((int(m.group(1)), entry))
    found.sort()
    for expected, (number, _) in enumerate(found, start=1):
        if number != expected:
            raise JournalCorrupt(segment_name(expected), 0, 0, "segment missing")
    return [path for _, path in found]


# --- encoding ------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def _nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_nonfinite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_nonfinite(v) for v in value)
    return False


def _finite_safe(value: Any) -> Any:
    """``value`` (plain data) with each non-finite float written as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_safe(v) for v in value]
    return value


def _encode_message(msg: Message) -> bytes:
    cls = type(msg)
    check = _CHECKS.get(cls, _refuse)
    if check is _refuse:
        _refuse(msg)
    try:
        data = _encode(msg)
    except (TypeError, msgspec.EncodeError) as exc:
        raise JournalError(f"cannot encode {cls.__name__} for the journal: {exc}") from None
    # msgspec writes an infinite or NaN float as null, which would not read back: such
    # floats are written as strings instead. Plain data (Any, dicts) is looked at value by
    # value when its JSON has a null at all.
    if (b"null" in data) if check is None else not check(msg):
        plain = msgspec.to_builtins(msg)
        if _nonfinite(plain):
            data = _encode(_finite_safe(plain))
    return data


def _refuse(msg: Any) -> bool:
    cls = type(msg)
    if isinstance(msg, _NOT_JOURNALED):
        raise JournalError(f"{cls.__name__} is a numpy batch of market data and is never journaled")
    raise JournalError(
        f"cannot journal a {cls.__module__}.{cls.__qualname__}: only the message types "
        "of engine.messages can be read back"
    )


def _decode_line(line: bytes) -> Any:
    try:
        return _line_decoder.decode(line)
    except msgspec.ValidationError:
        return _lax_line_decoder.decode(line)  # a non-finite float written as a string


# --- checking one line ---------------------------------------------------------------------


class _BadLine(Exception):
    """A line that is not the next record of the chain (internal: becomes a torn tail or
    JournalCorrupt)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _line_seq(line: bytes) -> int | None:
    """The seq a line says it has, or None if it does not start like a record."""
    if not line.startswith(_SEQ_KEY):
        return None
    end = line.find(b",", len(_SEQ_KEY), len(_SEQ_KEY) + 21)
    digits = line[len(_SEQ_KEY) : end] if end > 0 else b""
    return int(digits) if digits.isdigit() else None


def _check_line(line: bytes, prev: bytes, prev_hex: bytes, seq: int) -> tuple[bytes, bytes]:
    """Check one line (newline included) against the chain: the record ``seq`` following
    the record whose digest is ``prev``. Returns its digest and hex hash."""
    if not line.endswith(b"\n"):
        raise _BadLine("the record ends without a newline (cut short)")
    if len(line) < _SHORTEST or line[-_TAIL : -_TAIL + len(_HASH_KEY)] != _HASH_KEY:
        raise _BadLine("not a journal record")
    if line[-len(_LINE_END) :] != _LINE_END:
        raise _BadLine("not a journal record")
    head = line[:-_TAIL]
    stored = line[-_TAIL + len(_HASH_KEY) : -len(_LINE_END)]
    digest = hashlib.sha256(prev + head + b"}").digest()
    hexed = digest.hex().encode()
    if hexed != stored:
        raise _BadLine("hash does not match the record (edited, or the chain is broken)")
    # the hash covers prev and the record, so these hold unless the writer was wrong
    if head[-_PREV_PART:] != _PREV_KEY + prev_hex + b'"':
        raise _BadLine("prev is not the previous record's hash")
    found = _line_seq(line)
    if found != seq:
        raise _BadLine(f"seq is {found}, expected {seq}")
    return digest, hexed


def _self_check_last_line(path: Path) -> tuple[int, bytes, bytes]:
    """The seq, digest and hex hash of the last record of a finished segment, checked
    against the ``prev`` it names (the link before it is checked when the whole journal
    is verified)."""
    size = path.stat().st_size
    if size == 0:
        raise JournalCorrupt(path.name, 1, 0, "segment is empty, but a later one exists")
    with path.open("rb") as f:
        window = 4096
        while True:
            start = max(0, size - window)
            f.seek(start)
            chunk = f.read(size - start)
            cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
            if cut >= 0 or start == 0:
                break
            window *= 4
    line = chunk[cut + 1 :]
    seq = _line_seq(line)
    prev_hex = line[-_TAIL - 65 : -_TAIL - 1]  # the 64 hex digits of "prev"
    try:
        if seq is None:
            raise _BadLine("not a journal record")
        prev = bytes.fromhex(prev_hex.decode("ascii"))
        digest, hexed = _check_line(line, prev, prev_hex, seq)
    except (ValueError, _BadLine) as exc:
        where = path.read_bytes().count(b"\n") + (not line.endswith(b"\n"))  # error path only
        raise JournalCorrupt(
            path.name, where, seq or 0, f"the last record of a finished segment is not whole: {exc}"
        ) from None
    return seq, digest, hexed


def _whole_record_inside(line: bytes, prev: bytes, prev_hex: bytes, seq: int) -> bool:
    """Whether ``line`` starts with the whole record ``seq`` followed by something other
    than its newline. A write cut short leaves a prefix of what was written, so that is an
    edit (two records joined into one line), not a torn tail."""
    start = 0
    while (at := line.find(_HASH_KEY, start)) >= 0:
        end = at + len(_HASH_KEY) + 64 + 2
        if end < len(line) and line[end] not in b"\n\x00":  # NULs: a crash's unwritten bytes
            try:
                _check_line(line[:end] + b"\n", prev, prev_hex, seq)
            except _BadLine:
                pass
            else:
                return True
        start = at + 1
    return False


# --- walking the chain ---------------------------------------------------------------------


class _Walk:
    """The chain's state while segments are read, and what the walk found."""

    def __init__(self, prev: bytes = _GENESIS, seq: int = 0) -> None:
        self.prev = prev
        self.prev_hex = prev.hex().encode()
        self.seq = seq
        self.records = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.types: dict[str, int] = {}
        self.torn_segment: Path | None = None
        self.torn_offset = 0
        self.torn_bytes = 0
        self.torn_seq: int | None = None
        self.torn_reason = ""

    def segment(
        self, path: Path, *, last: bool, decode: bool, from_seq: int = 1
    ) -> Iterator[JournalRecord]:
        """Check every line of ``path`` (the chain continues from the walk's state), yield
        decoded records from ``from_seq`` on if ``decode``. A bad last line of the ``last``
        segment is a torn tail; anything else bad raises JournalCorrupt."""
        offset = 0
        number = 0
        with path.open("rb") as f:
            lines = iter(f)
            line = next(lines, None)
            while line is not None:
                number += 1
                following = next(lines, None)
                seq = self.seq + 1
                try:
                    digest, hexed = _check_line(line, self.prev, self.prev_hex, seq)
                except _BadLine as bad:
                    reason = bad.reason
                    if last and following is None:
                        if not _whole_record_inside(line, self.prev, self.prev_hex, seq):
                            self.torn_segment = path
                            self.torn_offset = offset
                            self.torn_bytes = len(line)
                            self.torn_seq = seq
                            self.torn_reason = reason
                            return
                        reason = "the record runs into the next: its newline was replaced"
                    raise JournalCorrupt(path.name, number, seq, reason) from None
                if decode and seq >= from_seq:
                    try:
                        record = _decode_line(line)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        raise JournalCorrupt(
                            path.name, number, seq, f"the record is whole but cannot be read: {exc}"
                        ) from None
                    name = type(record.msg).__name__
                    self.types[name] = self.types.get(name, 0) + 1
                    if self.first_ts is None:
                        self.first_ts = record.ts
                    self.last_ts = record.ts
                    yield JournalRecord(seq=seq, ts=record.ts, msg=record.msg, hash=record.hash)
                self.prev, self.prev_hex, self.seq = digest, hexed, seq
                self.records += 1
                offset += len(line)
                line = following
        if number == 0 and not last:
            raise JournalCorrupt(
                path.name, 1, self.seq + 1, "segment is empty, but a later one exists"
            )


def _need_journal(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise JournalError(f"no journal at {directory}: not a directory")
    paths = segment_paths(directory)
    if not paths:
        raise JournalError(f"no journal at {directory}: no journal-*.jsonl segments")
    return paths


def read_journal(
    directory: str | Path, *, from_seq: int = 1, strict: bool = False
) -> Iterator[JournalRecord]:
    """The records of the journal in ``directory`` from ``from_seq`` on, in order, each
    checked against the chain from the first record (earlier ones are checked, not
    decoded). Raises JournalCorrupt at the first record that is not what was written.

    A torn tail (the last line of the last segment half written) is skipped: it was never
    committed, so nothing acted on it. ``strict=True`` raises JournalCorrupt for it too.
    """
    paths = _need_journal(Path(directory))
    walk = _Walk()
    for i, path in enumerate(paths):
        last = i == len(paths) - 1
        yield from walk.segment(path, last=last, decode=True, from_seq=from_seq)
    if strict and walk.torn_segment is not None:
        raise JournalCorrupt(
            walk.torn_segment.name,
            walk.records + 1,
            walk.torn_seq or 0,
            f"torn tail of {walk.torn_bytes} bytes: {walk.torn_reason}",
        )


def _lock(directory: Path) -> int:
    """An exclusive lock on the journal directory, held by the one process writing it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"the journal at {directory} is open by another writer") from None
    return fd


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut(path: Path, length: int, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, length)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def verify_journal(directory: str | Path, *, repair: bool = False) -> VerifyReport:
    """Check every record of the journal in ``directory``: chain, sequence, decoding.

    A torn tail is reported (``torn_bytes``) and, with ``repair``, cut back to the last
    whole record (under the writer's lock, so not while a daemon writes). An edited or
    missing record is reported in ``error`` and never repaired."""
    root = Path(directory)
    paths = _need_journal(root)
    report = VerifyReport(ok=False, directory=str(root), segments=len(paths))
    walk = _Walk()
    try:
        for i, path in enumerate(paths):
            for _ in walk.segment(path, last=i == len(paths) - 1, decode=True):
                pass
    except JournalCorrupt as exc:
        report.error = str(exc)
        report.error_segment = exc.segment
        report.error_line = exc.line
        report.error_seq = exc.seq
    report.records = walk.records
    report.first_seq = 1 if walk.records else None
    report.last_seq = walk.seq if walk.records else None
    report.last_hash = walk.prev_hex.decode()
    report.first_ts, report.last_ts = walk.first_ts, walk.last_ts
    report.types = walk.types
    if walk.torn_segment is not None:
        report.torn_bytes = walk.torn_bytes
        report.torn_segment = walk.torn_segment.name
        report.torn_seq = walk.torn_seq
        if repair and report.error is None:
            fd = _lock(root)
            try:
                _cut(walk.torn_segment, walk.torn_offset, sync=True)
            finally:
                os.close(fd)
            report.repaired = True
    report.ok = report.error is None and (report.torn_bytes == 0 or report.repaired)
    return report


# --- writing -------------------------------------------------------------------------------


class JournalWriter:
    """Appends records to the journal in ``directory`` (created if missing).

    Opening an existing journal checks its last segment record by record, chained from the
    last record of the segment before (``check_all``: every segment from the first), and
    cuts a torn tail (``torn_bytes``, ``torn_seq``: say so in the log); anything else wrong
    raises :class:`JournalCorrupt`. Then the chain and seq continue. Decoding every record
    is left to :func:`read_journal` and :func:`verify_journal`.

    :meth:`append` buffers, :meth:`commit` writes the buffer with one write and one fsync
    (``fsync=False`` skips the fsync: for backtests). Nothing appended is on disk before
    its commit. One writer per directory (an exclusive lock, released by :meth:`close`).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync: bool = True,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        check_all: bool = False,
    ) -> None:
        if rotate_bytes < 1:
            raise ValueError(f"rotate_bytes must be at least 1, got {rotate_bytes}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.rotate_bytes = rotate_bytes
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            if fsync:  # the new folder's name, in its parent
                _sync_directory(self.directory.parent)
        self._dir_fd = _lock(self.directory)
        self._fd = -1
        self._number = 0
        self._size = 0
        self._prev, self._prev_hex, self._seq = _GENESIS, GENESIS_HASH.encode(), 0
        self._buffer: list[bytes] = []
        self._pending = 0
        self._pending_bytes = 0
        self._failed: BaseException | None = None
        self.torn_bytes = 0
        """Bytes of a torn tail cut when the journal was opened (0: none)."""
        self.torn_seq: int | None = None
        """The seq the cut record would have had."""
        self.stats: dict[str, int] = {
            "records": 0,
            "commits": 0,
            "fsyncs": 0,
            "bytes": 0,
            "fsync_ns": 0,
            "fsync_max_ns": 0,
            "segments_opened": 0,
        }
        """Committed records, commits, fsyncs, bytes written, time spent in fsync (ns,
        total and longest), segments started by this writer. For metrics."""
        try:
            self._open(check_all)
        except BaseException:
            os.close(self._dir_fd)
            raise

    def _open(self, check_all: bool) -> None:
        paths = segment_paths(self.directory)
        if not paths:
            self._start_segment(1)
            return
        walk = _Walk()
        if check_all:
            for path in paths[:-1]:
                for _ in walk.segment(path, last=False, decode=False):
                    pass
        elif len(paths) > 1:
            seq, digest, _ = _self_check_last_line(paths[-2])
            walk = _Walk(digest, seq)
        last = paths[-1]
        for _ in walk.segment(last, last=True, decode=False):
            pass
        if walk.torn_segment is not None:
            _cut(last, walk.torn_offset, sync=self.fsync)
            self.torn_bytes = walk.torn_bytes
            self.torn_seq = walk.torn_seq
        self._prev, self._prev_hex, self._seq = walk.prev, walk.prev_hex, walk.seq
        self._number = len(paths)
        self._fd = os.open(last, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def _start_segment(self, number: int) -> None:
        path = self.directory / segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._number = number
        self._size = 0
        self.stats["segments_opened"] += 1
        if self.fsync:  # the new name must survive a crash as much as what goes in it
            os.fsync(self._dir_fd)

    # --- the chain, as it stands after what was appended ---

    @property
    def last_seq(self) -> int:
        """The seq of the last record appended (committed or not); 0 for an empty journal."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """The hash of the last record appended (:data:`GENESIS_HASH` if none)."""
        return self._prev_hex.decode()

    @property
    def pending(self) -> int:
        """Records appended and not committed yet."""
        return self._pending

    @property
    def segment(self) -> Path:
        """The segment being written."""
        return self.directory / segment_name(self._number)

    def _usable(self) -> None:
        if self._failed is not None:
            raise JournalError(
                f"the journal writer of {self.directory} failed ({self._failed!r}); "
                "open the journal again"
            )
        if self._fd < 0:
            raise JournalError(f"the journal writer of {self.directory} is closed")

    def append(self, msg: Message, ts: int) -> int:
        """Encode ``msg`` as the next record, written at ``ts`` (ns, from the injected
        clock), and buffer it. Returns its seq. On disk only after :meth:`commit`."""
        if self._failed is not None or self._fd < 0:
            self._usable()
        if type(ts) is not int:
            raise TypeError(f"ts must be int nanoseconds, got {type(ts).__name__}")
        data = _encode_message(msg)
        seq = self._seq + 1
        head = b'{"seq":%d,"ts":%d,"msg":%b,"prev":"%b"' % (seq, ts, data, self._prev_hex)
        digest = hashlib.sha256(self._prev + head + b"}").digest()
        hexed = digest.hex().encode()
        line = head + _HASH_KEY + hexed + _LINE_END
        self._buffer.append(line)
        self._pending += 1
        self._pending_bytes += len(line)
        self._prev, self._prev_hex, self._seq = digest, hexed, seq
        return seq

    def commit(self) -> int:
        """Write every buffered record with one write and one fsync. Returns how many."""
        self._usable()
        n = self._pending
        if n == 0:
            return 0
        data = b"".join(self._buffer)
        try:
            if self._size > 0 and self._size + len(data) > self.rotate_bytes:
                self._start_segment(self._number + 1)
            view = memoryview(data)
            while view:  # a regular file takes it all at once; a short write goes on
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                started = stopwatch_ns()
                os.fsync(self._fd)
                took = stopwatch_ns() - started
                stats = self.stats
                stats["fsyncs"] += 1
                stats["fsync_ns"] += took
                stats["fsync_max_ns"] = max(stats["fsync_max_ns"], took)
        except OSError as exc:
            # what reached the file is unknown: no more appends until it is opened again
            # (which checks the tail)
            self._failed = exc
            raise JournalError(f"cannot write the journal segment {self.segment}: {exc}") from exc
        self._buffer.clear()
        self._pending = 0
        self._pending_bytes = 0
        self._size += len(data)
        stats = self.stats
        stats["records"] += n
        stats["commits"] += 1
        stats["bytes"] += len(data)
        return n

    @property
    def closed(self) -> bool:
        return self._dir_fd < 0

    @property
    def failed(self) -> BaseException | None:
        """The error of a commit that failed; the writer takes nothing more after one."""
        return self._failed

    def close(self) -> None:
        """Commit what is buffered (unless the writer failed), close, release the lock."""
        if self._dir_fd < 0:
            return
        try:
            if self._failed is None and self._fd >= 0 and self._pending:
                self.commit()
        finally:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
            os.close(self._dir_fd)  # releases the lock
            self._dir_fd = -1

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<JournalWriter {self.directory} seq {self._seq} pending {self._pending}>"
