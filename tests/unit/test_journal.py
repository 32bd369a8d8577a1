"""The write-ahead journal (engine/journal.py) on real files: format, round trips, the hash
chain across rotation, torn tails cut back at every byte, edited records refused with
their seq, group commit with one fsync per batch, reopening."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import shutil
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from engine.journal import (
    GENESIS_HASH,
    JOURNALED_TYPES,
    JournalCorrupt,
    JournalError,
    JournalWriter,
    read_journal,
    segment_paths,
    verify_journal,
)
from engine.limits import LimitsConfig
from engine.messages import (
    Alert,
    AlertLevel,
    Bar,
    CancelOrder,
    ControlCommand,
    ControlReply,
    CorporateActionEvent,
    LimitsChanged,
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
    OrderType,
    PortfolioSnapshot,
    PositionRow,
    QuoteBatch,
    QuoteTick,
    RiskDecision,
    SetLimits,
    SetTradingState,
    Side,
    Signal,
    StrategyPnl,
    TargetPosition,
    TimeInForce,
    TimerFired,
    TradeTick,
    TradingState,
    TradingStateChanged,
)
from engine.ticks import QUOTE_DTYPE

T0 = 1_723_161_600_000_000_000  # 2024-08-09 00:00 UTC, ns
INST = "BTCUSDT.BINANCE"
IDS: dict[str, Any] = {"strategy_id": "ema", "instrument_id": INST}


def at(i: int) -> dict[str, int]:
    return {"ts_event": T0 + i, "ts_init": T0 + i}


def fill(i: int, cls: type[OrderPartiallyFilled] = OrderFilled) -> OrderPartiallyFilled:
    return cls(
        client_order_id=f"ema-{i}",
        venue_order_id=f"V{i}",
        trade_id=f"T{i}",
        side=Side.SELL,
        last_qty=0.1,
        last_px=60_123.45 + i / 100,
        leaves_qty=0.0 if cls is OrderFilled else 0.05,
        commission=6.01,
        commission_currency="USDT",
        liquidity="TAKER",
        spread_cost=0.5,
        slippage_cost=-0.1,
        **IDS,
        **at(i),
    )


def order(i: int) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"ema-{i}",
        side=Side.BUY,
        quantity=0.1,
        order_type=OrderType.LIMIT,
        limit_price=60_000.0 + i,
        time_in_force=TimeInForce.DAY,
        **IDS,
        **at(i),
    )


def one_of_each() -> list[Message]:
    """An example of every journaled message type, with the awkward values each can hold."""
    limits = LimitsConfig(max_order_notional=50_000.0, restricted=["GME.US"], region={"US": 1.0})
    return [
        PortfolioSnapshot(
            currency="USDT",
            balance=99_000.5,
            equity=100_123.25,
            realized_pnl=-12.5,
            unrealized_pnl=1_122.75,
            commissions=6.17,
            max_drawdown=310.0,
            fills=3,
            positions=[
                PositionRow(
                    instrument_id="BTCUSDT.BINANCE",
                    quantity=-0.1,
                    avg_price=61_000.0,
                    mark=None,
                    unrealized_pnl=0.0,
                    realized_pnl=-12.5,
                )
            ],
            strategies=[StrategyPnl(strategy_id="ema", realized_pnl=-12.5, commissions=6.17)],
            ts_event=1,
            ts_init=2,
        ),
        Alert(
            level=AlertLevel.CRITICAL,
            source="monitor",
            rule="var",
            message="VaR over its limit",
            action="deleverage",
            figures={"var": 1234.5, "limit": 1000.0},
            **at(1),
        ),
        Bar(
            instrument_id=INST,
            interval_ns=60_000_000_000,
            open=1.0,
            high=2.0,
            low=0.5,
            close=1.5,
            volume=10.0,
            **at(2),
        ),
        CancelOrder(client_order_id="ema-1", **IDS, **at(3)),
        ControlCommand(
            request_id="r1",
            command="set_state",
            args={"state": "HALTED", "nested": [1, 2.5, None, {"a": True}]},
            origin="uid:1000",
            **at(4),
        ),
        ControlReply(request_id="r1", ok=False, data={"n": 1}, error="no such command", **at(5)),
        CorporateActionEvent(instrument_id="AAPL.US", split_ratio=0.25, dividend=0.24, **at(6)),
        LimitsChanged(
            limits=msgspec.to_builtins(limits), reason="tighten", origin="monitor", **at(7)
        ),
        OrderAccepted(client_order_id="ema-1", venue_order_id="V1", **IDS, **at(8)),
        OrderCancelRejected(client_order_id="ema-1", reason="not working", **IDS, **at(9)),
        OrderCancelled(client_order_id="ema-1", reason="", **IDS, **at(10)),
        OrderDenied(client_order_id="ema-2", reason='max_order_notional: "é" 5e4', **IDS, **at(11)),
        OrderExpired(client_order_id="ema-3", reason="IOC", **IDS, **at(12)),
        fill(13),
        fill(14, OrderPartiallyFilled),
        OrderRejected(client_order_id="ema-4", reason="no route\nto venue", **IDS, **at(15)),
        order(16),
        QuoteTick(instrument_id=INST, bid=1.0, ask=1.5, bid_size=2.0, ask_size=0.0, **at(17)),
        RiskDecision(
            source="monitor",
            rule="drawdown_halt",
            level=AlertLevel.ERROR,
            action="halt",
            reason="drawdown 12% > 10%",
            inputs={"drawdown": 0.12, "nav": 88_000.0},
            **at(18),
        ),
        SetLimits(limits=limits, reason="regime shift", origin="monitor", **at(19)),
        SetTradingState(state=TradingState.REDUCING, reason="breach", origin="ctl", **at(20)),
        Signal(strategy_id="ema", instrument_id=INST, name="cross", value=-1.0, **at(21)),
        TargetPosition(strategy_id="ema", instrument_id=INST, quantity=-0.3, **at(22)),
        TimerFired(name="sample", payload={"k": [1, 2]}, **at(23)),
        TradeTick(instrument_id=INST, price=1.25, size=3.0, aggressor=-1, **at(24)),
        TradingStateChanged(
            previous=TradingState.ACTIVE,
            state=TradingState.HALTED,
            reason="crash",
            origin="supervisor",
            **at(25),
        ),
    ]


def write(directory: Path, msgs: list[Message], *, every: int = 1, **kw: Any) -> JournalWriter:
    """Journal ``msgs`` (ts = 1000 + i), committing every ``every`` appends; closed."""
    with JournalWriter(directory, fsync=False, **kw) as w:
        for i, msg in enumerate(msgs):
            w.append(msg, 1000 + i)
            if w.pending >= every:
                w.commit()
    return w


def lines(directory: Path) -> list[bytes]:
    return [line for p in segment_paths(directory) for line in p.read_bytes().splitlines(True)]


# --- format and round trips ----------------------------------------------------------------


def test_the_examples_cover_every_journaled_type() -> None:
    # a message type added to engine/messages.py without an example here fails this test
    assert {type(m) for m in one_of_each()} == set(JOURNALED_TYPES)
    assert QuoteBatch not in JOURNALED_TYPES


def test_every_journaled_type_round_trips(tmp_path: Path) -> None:
    msgs = one_of_each()
    write(tmp_path, msgs, every=4)
    records = list(read_journal(tmp_path))
    assert [r.seq for r in records] == list(range(1, len(msgs) + 1))
    assert [r.ts for r in records] == [1000 + i for i in range(len(msgs))]
    for original, record in zip(msgs, records, strict=True):
        assert type(record.msg) is type(original)
        # fields typed Any (SetLimits.limits, payloads) come back as plain data
        assert msgspec.to_builtins(record.msg) == msgspec.to_builtins(original)
        if not isinstance(original, SetLimits | TimerFired | ControlCommand):
            assert record.msg == original
    set_limits = next(r.msg for r in records if isinstance(r.msg, SetLimits))
    assert set_limits.limits["max_order_notional"] == 50_000.0
    assert set_limits.limits["restricted"] == ["GME.US"]
    assert msgspec.convert(set_limits.limits, LimitsConfig) == next(
        m.limits for m in msgs if isinstance(m, SetLimits)
    )


def test_the_line_format_is_the_documented_one(tmp_path: Path) -> None:
    msgs = [order(1), fill(2)]
    write(tmp_path, msgs)
    first, second = lines(tmp_path)
    prev = bytes.fromhex(GENESIS_HASH)
    for line, msg, seq in ((first, msgs[0], 1), (second, msgs[1], 2)):
        record = orjson.loads(line)
        assert list(record) == ["seq", "ts", "msg", "prev", "hash"]
        assert record["seq"] == seq
        assert record["ts"] == 999 + seq
        assert record["msg"] == orjson.loads(msgspec.json.encode(msg))
        assert record["msg"]["type"] == type(msg).__name__
        assert record["prev"] == prev.hex()
        canonical = line[: line.rindex(b',"hash":')] + b"}"  # the record without its hash
        assert orjson.loads(canonical) == {k: v for k, v in record.items() if k != "hash"}
        digest = hashlib.sha256(prev + canonical).digest()
        assert record["hash"] == digest.hex()
        assert line.endswith(b"}\n")
        assert b" " not in line.replace(b"no route to", b"")  # compact: one canonical form
        prev = digest


def test_infinite_and_nan_figures_survive(tmp_path: Path) -> None:
    # a VaR with an unpriced position is infinite; JSON has no number for it
    decision = RiskDecision(
        source="monitor",
        rule="var",
        level=AlertLevel.WARNING,
        action="notify",
        reason="unpriced",
        inputs={"var": math.inf, "floor": -math.inf, "ratio": math.nan, "nav": 1.0},
        **at(1),
    )
    bar = Bar(
        instrument_id=INST,
        interval_ns=1,
        open=math.nan,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=0,
        **at(2),
    )
    write(tmp_path, [decision, order(3), bar])
    got = [r.msg for r in read_journal(tmp_path)]
    assert isinstance(got[0], RiskDecision)
    assert got[0].inputs["var"] == math.inf
    assert got[0].inputs["floor"] == -math.inf
    assert math.isnan(got[0].inputs["ratio"])
    assert got[0].inputs["nav"] == 1.0
    assert got[1] == order(3)  # a market-less None (stop_price) is not mistaken for one
    assert isinstance(got[2], Bar)
    assert math.isnan(got[2].open)
    assert verify_journal(tmp_path).ok


def test_batches_and_foreign_messages_are_refused_clearly(tmp_path: Path) -> None:
    class MyMessage(Message, frozen=True, kw_only=True, tag=True):
        x: int

    with JournalWriter(tmp_path, fsync=False) as w:
        batch = QuoteBatch(data=np.zeros(3, QUOTE_DTYPE), instrument_ids=(INST,), **at(0))
        with pytest.raises(JournalError, match="QuoteBatch is a numpy batch"):
            w.append(batch, 1)
        with pytest.raises(JournalError, match=r"only the message types of engine\.messages"):
            w.append(MyMessage(x=1, **at(0)), 1)
        with pytest.raises(TypeError, match="ts must be int nanoseconds"):
            w.append(order(1), 1.5)  # type: ignore[arg-type]
        assert w.last_seq == 0
        assert w.pending == 0  # nothing half-appended


# --- group commit ----------------------------------------------------------------------------


def test_commit_writes_and_fsyncs_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, list[int]] = {"fsync": [], "write": []}
    real_fsync, real_write = os.fsync, os.write

    def fsync(fd: int) -> None:
        calls["fsync"].append(fd)
        real_fsync(fd)

    def write_(fd: int, data: Any) -> int:
        calls["write"].append(fd)
        return real_write(fd, data)

    w = JournalWriter(tmp_path / "j", fsync=True)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "write", write_)
    for i in range(1000):
        assert w.append(fill(i), T0 + i) == i + 1
        if w.pending == 256:
            assert w.commit() == 256
    assert len(calls["fsync"]) == 3  # one per full batch
    assert len(calls["write"]) == 3
    assert w.pending == 1000 - 3 * 256
    assert w.commit() == 232
    assert w.commit() == 0  # nothing pending: no write, no fsync
    assert len(calls["fsync"]) == 4
    assert len(calls["write"]) == 4
    assert w.stats["fsyncs"] == 4
    assert w.stats["commits"] == 4
    assert w.stats["records"] == 1000
    assert w.stats["bytes"] == w.segment.stat().st_size
    assert w.stats["fsync_ns"] > 0
    w.close()
    assert verify_journal(tmp_path / "j").records == 1000


def test_nothing_is_on_disk_before_commit_and_no_fsync_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    w = JournalWriter(tmp_path, fsync=False)
    w.append(order(1), 1)
    w.append(order(2), 2)
    assert w.segment.stat().st_size == 0
    assert w.pending == 2
    assert w.commit() == 2
    assert w.segment.stat().st_size > 0
    assert synced == []
    assert w.stats["fsyncs"] == 0
    w.close()


def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, fsync=False)
    w.append(order(1), 1)
    w.close()
    assert w.closed
    assert [r.seq for r in read_journal(tmp_path)] == [1]
    with pytest.raises(JournalError, match="closed"):
        w.append(order(2), 2)


# --- rotation and reopening ----------------------------------------------------------------


def test_the_chain_and_seq_continue_across_rotation(tmp_path: Path) -> None:
    msgs: list[Message] = [order(i) if i % 2 else fill(i) for i in range(200)]
    write(tmp_path, msgs, every=3, rotate_bytes=4096)
    paths = segment_paths(tmp_path)
    assert [p.name for p in paths[:3]] == [
        "journal-000001.jsonl",
        "journal-000002.jsonl",
        "journal-000003.jsonl",
    ]
    assert len(paths) > 10
    for p in paths:
        assert 0 < p.stat().st_size <= 4096  # every commit of 3 records fits in one
    for before, after in itertools.pairwise(paths):
        last = orjson.loads(before.read_bytes().splitlines()[-1])
        first = orjson.loads(after.read_bytes().splitlines()[0])
        assert first["seq"] == last["seq"] + 1
        assert first["prev"] == last["hash"]
    records = list(read_journal(tmp_path))
    assert [r.seq for r in records] == list(range(1, 201))
    assert [r.msg for r in records] == msgs
    report = verify_journal(tmp_path)
    assert report.ok
    assert (report.records, report.segments) == (200, len(paths))
    assert report.last_hash == records[-1].hash
    assert report.types == {"OrderRequest": 100, "OrderFilled": 100}
    assert [r.seq for r in read_journal(tmp_path, from_seq=150)] == list(range(150, 201))


def test_a_commit_larger_than_a_segment_gets_one_of_its_own(tmp_path: Path) -> None:
    write(tmp_path, [fill(i) for i in range(30)], every=10, rotate_bytes=1000)
    sizes = [p.stat().st_size for p in segment_paths(tmp_path)]
    assert len(sizes) == 3
    assert all(s > 1000 for s in sizes)
    assert verify_journal(tmp_path).records == 30


def test_reopening_continues_seq_and_chain(tmp_path: Path) -> None:
    w = write(tmp_path, [order(i) for i in range(10)], rotate_bytes=2000)
    seq, last_hash = w.last_seq, w.last_hash
    assert seq == 10
    with JournalWriter(tmp_path, fsync=False, rotate_bytes=2000) as again:
        assert again.last_seq == 10
        assert again.last_hash == last_hash
        assert again.torn_bytes == 0
        assert again.append(fill(11), 2000) == 11
        again.commit()
        assert again.stats["segments_opened"] == 0  # went on in the last segment
    records = list(read_journal(tmp_path))
    assert [r.seq for r in records] == list(range(1, 12))
    assert records[-1].msg == fill(11)
    assert verify_journal(tmp_path).ok
    # an empty journal starts from the genesis hash
    with JournalWriter(tmp_path / "new", fsync=False) as fresh:
        assert (fresh.last_seq, fresh.last_hash) == (0, GENESIS_HASH)


def test_one_writer_per_journal(tmp_path: Path) -> None:
    with (
        JournalWriter(tmp_path, fsync=False),
        pytest.raises(JournalError, match="open by another writer"),
    ):
        JournalWriter(tmp_path, fsync=False)
    JournalWriter(tmp_path, fsync=False).close()  # released on close


# --- torn tails ------------------------------------------------------------------------------


def test_a_torn_tail_at_every_byte_of_the_last_record_is_cut_and_the_journal_goes_on(
    tmp_path: Path,
) -> None:
    original = tmp_path / "original"
    msgs: list[Message] = [order(1), fill(2), order(3), fill(4)]
    write(original, msgs, rotate_bytes=700)  # the last record starts a segment of its own
    paths = segment_paths(original)
    assert len(paths) == 4
    last = paths[-1]
    whole = last.read_bytes()
    for cut in range(len(whole)):  # 0: the last record vanished entirely, nothing torn
        case = tmp_path / f"cut{cut}"
        shutil.copytree(original, case)
        (case / last.name).write_bytes(whole[:cut])
        report = verify_journal(case)
        assert report.error is None
        assert report.torn_bytes == cut
        assert report.ok is (cut == 0)
        with JournalWriter(case, fsync=False, rotate_bytes=700) as w:
            assert w.torn_bytes == cut
            assert w.torn_seq == (4 if cut else None)
            assert w.last_seq == 3
            assert w.append(order(99), 5000) == 4
        records = list(read_journal(case, strict=True))
        assert [r.seq for r in records] == [1, 2, 3, 4]
        assert records[-1].msg == order(99)
        assert verify_journal(case).ok
        shutil.rmtree(case)


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00" * 300,  # a crash's unwritten blocks
        b'{"seq":5,"ts":1,"msg":{"ty',
        b"\x00" * 40 + b"\n",
        b"garbage\n",
    ],
)
def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path: Path, tail: bytes) -> None:
    write(tmp_path, [order(i) for i in range(4)])
    with segment_paths(tmp_path)[-1].open("ab") as f:
        f.write(tail)
    report = verify_journal(tmp_path)
    assert (report.ok, report.torn_bytes, report.torn_seq, report.records) == (
        False,
        len(tail),
        5,
        4,
    )
    assert [r.seq for r in read_journal(tmp_path)] == [1, 2, 3, 4]  # skipped by readers
    with pytest.raises(JournalCorrupt, match="torn tail"):
        list(read_journal(tmp_path, strict=True))
    repaired = verify_journal(tmp_path, repair=True)
    assert (repaired.ok, repaired.repaired, repaired.torn_bytes) == (True, True, len(tail))
    assert verify_journal(tmp_path).torn_bytes == 0


def test_a_whole_last_line_with_a_wrong_hash_is_torn(tmp_path: Path) -> None:
    write(tmp_path, [order(i) for i in range(3)])
    path = segment_paths(tmp_path)[-1]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # a hex digit of the last hash
    path.write_bytes(bytes(data))
    report = verify_journal(tmp_path)
    assert (report.error, report.torn_seq, report.records) == (None, 3, 2)


# --- edited records --------------------------------------------------------------------------


def test_one_edited_byte_in_any_earlier_record_is_refused_with_its_seq(tmp_path: Path) -> None:
    original = tmp_path / "original"
    write(original, [order(1), fill(2), CancelOrder(client_order_id="x", **IDS, **at(3)), order(4)])
    data = segment_paths(original)[0].read_bytes()
    ends = np.cumsum([len(line) for line in data.splitlines(True)])
    case = tmp_path / "case"
    shutil.copytree(original, case)
    target = segment_paths(case)[0]
    checked = 0
    for pos in range(int(ends[-2])):  # every byte of every record but the last
        seq = int(np.searchsorted(ends, pos, side="right")) + 1
        edited = bytearray(data)
        edited[pos] = ord(" ") if data[pos] != ord(" ") else ord("x")
        target.write_bytes(bytes(edited))
        report = verify_journal(case)
        assert not report.ok, pos
        assert report.error_seq == seq, (pos, report.error)
        assert report.error_segment == "journal-000001.jsonl"
        assert report.error is not None
        assert f"(seq {seq})" in report.error
        with pytest.raises(JournalCorrupt) as caught:
            JournalWriter(case, fsync=False)
        assert caught.value.seq == seq
        checked += 1
    assert checked == ends[-2]


def test_an_edit_in_an_earlier_segment_is_found(tmp_path: Path) -> None:
    write(tmp_path, [order(i) for i in range(20)], rotate_bytes=1500)
    paths = segment_paths(tmp_path)
    assert len(paths) >= 4
    second = paths[1].read_bytes().splitlines(True)
    seq = orjson.loads(second[1])["seq"]
    second[1] = second[1].replace(b'"quantity":0.1', b'"quantity":1.0')
    paths[1].write_bytes(b"".join(second))
    report = verify_journal(tmp_path)
    assert (report.error_segment, report.error_line, report.error_seq) == (paths[1].name, 2, seq)
    assert report.records == seq - 1
    with pytest.raises(JournalCorrupt) as caught:
        list(read_journal(tmp_path))
    assert (caught.value.segment, caught.value.line, caught.value.seq) == (paths[1].name, 2, seq)
    with pytest.raises(JournalCorrupt):
        JournalWriter(tmp_path, fsync=False, check_all=True)
    # a repair never touches corruption
    assert verify_journal(tmp_path, repair=True).repaired is False
    assert paths[1].read_bytes() == b"".join(second)


def test_a_missing_or_emptied_segment_is_corruption(tmp_path: Path) -> None:
    write(tmp_path, [order(i) for i in range(20)], rotate_bytes=1500)
    paths = segment_paths(tmp_path)
    paths[1].write_bytes(b"")
    assert verify_journal(tmp_path).error_segment == paths[1].name
    with pytest.raises(JournalCorrupt, match="empty"):
        list(read_journal(tmp_path))
    with pytest.raises(JournalCorrupt, match="empty"):
        JournalWriter(tmp_path, fsync=False, check_all=True)
    paths[1].unlink()
    with pytest.raises(JournalCorrupt, match="segment missing"):
        verify_journal(tmp_path)


def test_no_journal_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal at"):
        verify_journal(tmp_path / "nowhere")
    with pytest.raises(JournalError, match="no journal-"):
        list(read_journal(tmp_path))
