"""``tradingd journal``: check, read and export the write-ahead journal.

    tradingd journal verify --dir DIR [--repair] [--json]
    tradingd journal show --dir DIR [--tail N] [--from-seq N] [--type OrderFilled ...] [--json]
    tradingd journal export --dir DIR --format jsonl|parquet --out FILE

``verify`` checks every record (the hash chain, the sequence, that each message decodes).
A torn tail (the last record half written by a crash) is reported and, with ``--repair``,
cut back to the last whole record; an edited record is reported with its segment, line
and seq and never repaired.

Exit codes: 0 the journal is whole (or its torn tail was cut); 1 a torn tail was found and
not cut; 2 a record is corrupt (edited, missing, out of chain) or bad usage; 66 no journal
in DIR; 75 ``--repair`` while a writer (the daemon) has the journal open.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson

from engine.journal import (
    JOURNALED_TYPES,
    JournalCorrupt,
    JournalError,
    JournalRecord,
    VerifyReport,
    read_journal,
    verify_journal,
)
from engine.messages import (
    CancelOrder,
    Message,
    OrderPartiallyFilled,
    OrderRequest,
)

__all__ = ["register"]

EXIT_OK = 0
EXIT_TORN = 1
EXIT_CORRUPT = 2
EXIT_NO_JOURNAL = 66
EXIT_IN_USE = 75

_TYPE_NAMES = frozenset(cls.__name__ for cls in JOURNALED_TYPES)
_TIMES = frozenset({"ts_event", "ts_init"})


def fmt_ns(ts: int | None) -> str:
    """An integer-nanosecond UTC time as ``2024-08-09 00:00:00.123456789``."""
    if ts is None:
        return "-"
    seconds, nanos = divmod(ts, 1_000_000_000)
    day = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return f"{day:%Y-%m-%d %H:%M:%S}.{nanos:09d}"


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _fail(message: str, code: int) -> int:
    print(f"tradingd journal: {message}", file=sys.stderr)
    return code


def _error_code(exc: JournalError) -> int:
    if isinstance(exc, JournalCorrupt):
        return EXIT_CORRUPT
    if "open by another writer" in str(exc):
        return EXIT_IN_USE
    return EXIT_NO_JOURNAL


# --- verify --------------------------------------------------------------------------------


def _verify_text(r: VerifyReport) -> str:
    if r.torn_bytes == 0:
        torn = "none"
    else:
        where = f"{r.torn_bytes:,} bytes at the end of {r.torn_segment} (seq {r.torn_seq})"
        torn = f"{where}: cut" if r.repaired else f"{where}: not cut (--repair cuts it)"
    if r.error is not None:
        result = f"CORRUPT: {r.error}"
    elif r.torn_bytes and not r.repaired:
        result = "TORN TAIL"
    else:
        result = "OK"
    seqs = f" (seq {r.first_seq} .. {r.last_seq})" if r.records else ""
    if r.error is not None:
        seqs += ", whole before the corrupt one"
    types = ", ".join(f"{k} {v:,}" for k, v in sorted(r.types.items())) or "none"
    rows = [
        ("journal", r.directory),
        ("segments", f"{r.segments:,}"),
        ("records", f"{r.records:,}{seqs}"),
        ("written", f"{fmt_ns(r.first_ts)} .. {fmt_ns(r.last_ts)} UTC"),
        ("types", types),
        ("last hash", r.last_hash),
        ("torn tail", torn),
        ("result", result),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        report = verify_journal(args.dir, repair=args.repair)
    except JournalError as exc:
        return _fail(str(exc), _error_code(exc))
    if args.json:
        _print_json(msgspec.to_builtins(report))
    else:
        sys.stdout.write(_verify_text(report) + "\n")
    if report.error is not None:
        return EXIT_CORRUPT
    return EXIT_OK if report.ok else EXIT_TORN


# --- show ----------------------------------------------------------------------------------


def _brief(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(msg: Message) -> str:
    """One line a person reads: the order, the fill, or the fields of anything else."""
    match msg:
        case OrderRequest():
            price = ""
            if msg.limit_price is not None:
                price += f" limit {msg.limit_price:g}"
            if msg.stop_price is not None:
                price += f" stop {msg.stop_price:g}"
            return (
                f"{msg.client_order_id} {msg.side.value} {msg.quantity:g} {msg.instrument_id} "
                f"{msg.order_type.value}{price} {msg.time_in_force.value} ({msg.strategy_id})"
            )
        case OrderPartiallyFilled():  # and OrderFilled
            return (
                f"{msg.client_order_id} {msg.side.value} {msg.last_qty:g} {msg.instrument_id} "
                f"@ {msg.last_px:g}, leaves {msg.leaves_qty:g}, commission {msg.commission:g} "
                f"{msg.commission_currency} {msg.liquidity}"
            )
        case CancelOrder():
            return f"{msg.client_order_id} {msg.instrument_id} ({msg.strategy_id})"
    fields = msgspec.to_builtins(msg)
    return " ".join(
        f"{k}={_brief(v)}" for k, v in fields.items() if k not in _TIMES and k != "type"
    )


def _as_json(record: JournalRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "ts": record.ts,
        "type": type(record.msg).__name__,
        "hash": record.hash,
        "msg": msgspec.to_builtins(record.msg),
    }


def _selected(args: argparse.Namespace) -> Iterator[JournalRecord]:
    types = set(args.type or ())
    for record in read_journal(args.dir, from_seq=args.from_seq):
        if not types or type(record.msg).__name__ in types:
            yield record


def _check_types(args: argparse.Namespace) -> str | None:
    unknown = sorted(set(args.type or ()) - _TYPE_NAMES)
    if unknown:
        known = ", ".join(sorted(_TYPE_NAMES))
        return f"no journaled message type {', '.join(unknown)} (types: {known})"
    return None


def _cmd_show(args: argparse.Namespace) -> int:
    problem = _check_types(args)
    if problem is not None:
        return _fail(problem, EXIT_CORRUPT)
    if args.tail is not None and args.tail < 0:
        return _fail("--tail must be 0 or more", EXIT_CORRUPT)
    try:
        records: Iterator[JournalRecord] | deque[JournalRecord] = _selected(args)
        if args.tail is not None:
            records = deque(records, maxlen=args.tail)
        if args.json:
            out = sys.stdout
            for record in records:
                out.write(orjson.dumps(_as_json(record)).decode() + "\n")
            return EXIT_OK
        rows = [(f"{r.seq}", fmt_ns(r.ts), type(r.msg).__name__, describe(r.msg)) for r in records]
    except JournalError as exc:
        sys.stdout.flush()
        return _fail(str(exc), _error_code(exc))
    header = ("seq", "time (UTC)", "type", "details")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [
        f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip()
        for row in [header, *rows]
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    if not rows:
        print("tradingd journal: no records match", file=sys.stderr)
    return EXIT_OK


# --- export --------------------------------------------------------------------------------


def _columns(msg: Message) -> dict[str, Any]:
    """The columns every order-related message fills where it has them: qty is an order's
    quantity or a fill's last_qty, price a fill's last_px or an order's limit (else stop)
    price."""
    get: Callable[[str], Any] = lambda name: getattr(msg, name, None)  # noqa: E731
    side = get("side")
    qty = get("last_qty")
    if qty is None:
        qty = get("quantity") if isinstance(msg, OrderRequest) else None
    price = get("last_px")
    if price is None and isinstance(msg, OrderRequest):
        price = msg.limit_price if msg.limit_price is not None else msg.stop_price
    return {
        "client_order_id": get("client_order_id"),
        "strategy_id": get("strategy_id"),
        "instrument_id": get("instrument_id"),
        "side": side.value if side is not None else None,
        "qty": qty,
        "price": price,
        "reason": get("reason"),
    }


_BATCH_ROWS = 65_536


def _export_parquet(records: Iterator[JournalRecord], out: Path) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]  # noqa: PLC0415 - export only
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415

    schema = pa.schema(
        [
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("ts", pa.int64(), nullable=False),
            pa.field("time", pa.timestamp("ns", tz="UTC"), nullable=False),
            pa.field("type", pa.string(), nullable=False),
            pa.field("hash", pa.string(), nullable=False),
            pa.field("client_order_id", pa.string()),
            pa.field("strategy_id", pa.string()),
            pa.field("instrument_id", pa.string()),
            pa.field("side", pa.string()),
            pa.field("qty", pa.float64()),
            pa.field("price", pa.float64()),
            pa.field("reason", pa.string()),
            pa.field("msg", pa.string(), nullable=False),
        ]
    )
    names = schema.names
    n = 0
    with pq.ParquetWriter(str(out), schema, compression="zstd") as writer:
        batch: dict[str, list[Any]] = {name: [] for name in names}
        for record in records:
            batch["seq"].append(record.seq)
            batch["ts"].append(record.ts)
            batch["time"].append(record.ts)
            batch["type"].append(type(record.msg).__name__)
            batch["hash"].append(record.hash)
            for key, value in _columns(record.msg).items():
                batch[key].append(value)
            batch["msg"].append(msgspec.json.encode(record.msg).decode())
            n += 1
            if len(batch["seq"]) >= _BATCH_ROWS:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {name: [] for name in names}
        if batch["seq"] or n == 0:
            writer.write_table(pa.table(batch, schema=schema))
    return n


def _cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")  # a failed export leaves no half file
    try:
        records = read_journal(args.dir)
        if args.format == "parquet":
            n = _export_parquet(records, partial)
        else:
            n = 0
            with partial.open("wb") as f:
                for record in records:
                    f.write(orjson.dumps(_as_json(record)) + b"\n")
                    n += 1
    except JournalError as exc:
        partial.unlink(missing_ok=True)
        return _fail(str(exc), _error_code(exc))
    partial.replace(out)
    print(f"tradingd journal: {n:,} records written to {out}", file=sys.stderr)
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``journal`` command to the ``tradingd`` parser's subcommands."""
    journal = sub.add_parser("journal", help="check, read and export the write-ahead journal")
    cmds = journal.add_subparsers(dest="journal_command", required=True, metavar="COMMAND")

    v = cmds.add_parser("verify", help="check the hash chain of every record; cut a torn tail")
    v.add_argument("--dir", required=True, help="the journal's directory")
    v.add_argument(
        "--repair", action="store_true", help="cut a torn tail back to the last whole record"
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=_cmd_verify)

    s = cmds.add_parser("show", help="the records, as a table or JSON lines")
    s.add_argument("--dir", required=True, help="the journal's directory")
    s.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N records")
    s.add_argument("--from-seq", type=int, default=1, metavar="N", help="start at seq N")
    s.add_argument(
        "--type",
        action="extend",
        nargs="+",
        metavar="TYPE",
        help="only these message types (OrderRequest, OrderFilled, ...)",
    )
    s.add_argument("--json", action="store_true", help="one JSON object per record")
    s.set_defaults(func=_cmd_show)

    e = cmds.add_parser("export", help="the records to a JSON-lines or Parquet file")
    e.add_argument("--dir", required=True, help="the journal's directory")
    e.add_argument("--format", required=True, choices=["jsonl", "parquet"])
    e.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    e.set_defaults(func=_cmd_export)
