"""The journal on the order path of the bundled sample's backtest, and ``tradingd journal``
on what it wrote.

config/backtest.toml's system with a journal actor put between the risk gate and the router
(``risk.approved -> journal -> router``) and between the venue and those it reports to
(``exchange.events -> journal -> portfolio, risk, ema``) trades exactly as without it, and
two runs write byte-identical journals. Then the journal actor alone: nothing goes on before
its record is committed, one fsync per group, and after a failed write it comes back with
what reached the journal and nothing else.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from actors.journal import Journal
from adapters.cli import main
from engine.backtest import BacktestResult, run_backtest
from engine.clock import ReplayClock
from engine.config import SystemConfig, convert_section, parse_config
from engine.errors import ConfigError
from engine.journal import JournalError, read_journal, segment_paths
from engine.messages import (
    Alert,
    AlertLevel,
    CancelOrder,
    OrderAccepted,
    OrderFilled,
    OrderRequest,
    QuoteTick,
    RiskDecision,
    SetTradingState,
    Side,
    TimerFired,
    TradingState,
)
from engine.wiring import System

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_QUOTES = REPO_ROOT / "data" / "sample" / "binance-btcusdt" / "quotes.npy"
ON_THE_ORDER_PATH = ("portfolio", "risk", "ema")


def sample_config(*, journal: dict[str, Any] | None, executor: str = "inline") -> dict[str, Any]:
    """config/backtest.toml as plain data; with ``journal`` (its section), the journal
    actor put on the order path."""
    raw: dict[str, Any] = tomllib.loads((REPO_ROOT / "config" / "backtest.toml").read_text())
    raw["replay"]["quotes"][0]["path"] = str(SAMPLE_QUOTES)
    raw["replay"]["executor"] = executor
    raw["actors"]["feed"]["per_tick"] = False
    if journal is None:
        return raw
    raw["actors"]["journal"] = {"kind": "journal", **journal}
    edges = []
    for edge in raw["edges"]:
        if edge["from"] == "risk.approved":
            edges.append({**edge, "to": "journal"})
            edges.append({"from": "journal.orders", "to": edge["to"]})
        elif edge["from"] == "exchange.events" and edge["to"] in ON_THE_ORDER_PATH:
            edges.append({**edge, "from": "journal.events"})
        else:
            edges.append(edge)
    edges.append({"from": "exchange.events", "to": "journal"})
    raw["edges"] = edges
    return raw


def backtest(raw: dict[str, Any], base_dir: Path) -> tuple[BacktestResult, System]:
    config = convert_section(copy.deepcopy(raw), SystemConfig)
    system = System(config, ReplayClock(), base_dir=base_dir)
    return asyncio.run(run_backtest(system)), system


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[BacktestResult, Path]]:
    """The sample without a journal, twice with one (relative ``dir``: under the run's
    base directory), and once with the task executor."""
    out = {}
    plain, _ = backtest(sample_config(journal=None), REPO_ROOT / "config")
    out["plain"] = (plain, Path())
    for name, executor in (("first", "inline"), ("second", "inline"), ("tasks", "tasks")):
        base = tmp_path_factory.mktemp(name)
        raw = sample_config(journal={"dir": "run/journal", "fsync": False}, executor=executor)
        result, system = backtest(raw, base)
        assert system.actors["journal"].state.value == "STOPPED"
        out[name] = (result, base / "run" / "journal")
    return out


def journal_bytes(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in segment_paths(directory)]


def test_the_journal_on_the_order_path_changes_nothing_in_the_trading(
    runs: dict[str, tuple[BacktestResult, Path]],
) -> None:
    plain, _ = runs["plain"]
    journaled, _ = runs["first"]
    assert plain.fills > 0
    assert journaled.events_sha256 == plain.events_sha256
    for key in ("orders", "fills", "orders_filled", "final_balance", "realized_pnl", "commissions"):
        assert getattr(journaled, key) == getattr(plain, key), key


def test_two_runs_write_byte_identical_journals(
    runs: dict[str, tuple[BacktestResult, Path]],
) -> None:
    first, second, tasks = (journal_bytes(runs[name][1]) for name in ("first", "second", "tasks"))
    assert len(first) == 1
    assert first[0]
    assert second == first
    assert tasks == first  # the same with every actor a task (commits grouped differently)


def test_the_journal_holds_every_order_and_fill_written_ahead(
    runs: dict[str, tuple[BacktestResult, Path]],
) -> None:
    result, directory = runs["first"]
    records = list(read_journal(directory, strict=True))
    kinds: dict[str, int] = {}
    for r in records:
        kinds[type(r.msg).__name__] = kinds.get(type(r.msg).__name__, 0) + 1
    assert kinds["OrderRequest"] == result.orders
    assert kinds["OrderFilled"] == result.orders_filled
    assert kinds["OrderFilled"] + kinds["OrderPartiallyFilled"] == result.fills
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(records))
    # write-ahead: the venue saw an order only after its record was committed, so every
    # acknowledgement comes after the request in the journal
    requested: set[str] = set()
    for r in records:
        if isinstance(r.msg, OrderRequest):
            requested.add(r.msg.client_order_id)
        elif isinstance(r.msg, OrderAccepted):
            assert r.msg.client_order_id in requested
    summary = next(a for a in result.actors if a["name"] == "journal")
    assert summary["records"] == len(records)
    assert summary["last_seq"] == len(records)
    assert summary["fsyncs"] == 0  # fsync = false, as for a backtest
    assert 0 < summary["commits"] <= len(records)
    assert summary["bytes"] == sum(len(b) for b in journal_bytes(directory))
    assert summary["skipped"] == 0  # no market data was wired into it


# --- tradingd journal ------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["journal", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_show_and_export_the_backtest_journal(
    runs: dict[str, tuple[BacktestResult, Path]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    result, directory = runs["first"]
    records = list(read_journal(directory))
    d = str(directory)

    code, out, _ = cli(capsys, "verify", "--dir", d)
    assert code == 0
    assert f"records    {len(records):,} (seq 1 .. {len(records)})" in out
    assert f"OrderRequest {result.orders}" in out
    assert out.rstrip().endswith("OK")

    code, out, _ = cli(capsys, "verify", "--dir", d, "--json")
    report = orjson.loads(out)
    assert (code, report["ok"], report["records"]) == (0, True, len(records))
    assert report["last_hash"] == records[-1].hash

    code, out, _ = cli(capsys, "show", "--dir", d, "--tail", "3", "--type", "OrderFilled")
    fills = [r for r in records if isinstance(r.msg, OrderFilled)][-3:]
    rows = out.splitlines()
    assert code == 0
    assert rows[0].split() == ["seq", "time", "(UTC)", "type", "details"]
    assert [int(row.split()[0]) for row in rows[1:]] == [r.seq for r in fills]
    last = fills[-1].msg
    assert f"{last.client_order_id} {last.side.value} {last.last_qty:g}" in rows[-1]
    assert f"@ {last.last_px:g}" in rows[-1]

    code, out, _ = cli(capsys, "show", "--dir", d, "--from-seq", "5", "--json")
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [x["seq"] for x in lines] == list(range(5, len(records) + 1))
    assert lines[0]["msg"] == msgspec.to_builtins(records[4].msg)
    assert lines[0]["type"] == type(records[4].msg).__name__

    code, _, err = cli(capsys, "show", "--dir", d, "--type", "OrderFiled")
    assert code == 2
    assert "no journaled message type OrderFiled" in err

    jsonl = tmp_path / "journal.jsonl"
    code, _, err = cli(capsys, "export", "--dir", d, "--format", "jsonl", "--out", str(jsonl))
    assert code == 0
    assert f"{len(records):,} records written" in err
    exported = [orjson.loads(line) for line in jsonl.read_bytes().splitlines()]
    assert [x["hash"] for x in exported] == [r.hash for r in records]

    import pyarrow.parquet as pq  # noqa: PLC0415 - only here

    parquet = tmp_path / "journal.parquet"
    code, _, _ = cli(capsys, "export", "--dir", d, "--format", "parquet", "--out", str(parquet))
    assert code == 0
    table = pq.read_table(parquet).to_pylist()
    assert [row["seq"] for row in table] == [r.seq for r in records]
    for row, record in zip(table, records, strict=True):
        msg = record.msg
        assert row["type"] == type(msg).__name__
        assert row["hash"] == record.hash
        assert orjson.loads(row["msg"]) == msgspec.to_builtins(msg)
        assert row["client_order_id"] == msg.client_order_id  # type: ignore[attr-defined]
        if isinstance(msg, OrderFilled):
            assert (row["side"], row["qty"], row["price"]) == (
                msg.side.value,
                msg.last_qty,
                msg.last_px,
            )
        if isinstance(msg, OrderRequest):
            assert (row["qty"], row["price"]) == (msg.quantity, msg.limit_price)
    assert sum(row["type"] == "OrderFilled" for row in table) == result.orders_filled


def test_verify_reports_a_torn_tail_and_an_edited_record(
    runs: dict[str, tuple[BacktestResult, Path]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    (source,) = segment_paths(runs["first"][1])
    whole = source.read_bytes()
    lines = whole.splitlines(True)

    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / source.name).write_bytes(whole + lines[-1][:50])  # a record cut short
    code, out, _ = cli(capsys, "verify", "--dir", str(torn))
    assert code == 1
    assert f"50 bytes at the end of {source.name} (seq {len(lines) + 1}): not cut" in out
    code, out, _ = cli(capsys, "verify", "--dir", str(torn), "--repair")
    assert code == 0
    assert "cut" in out
    assert (torn / source.name).read_bytes() == whole
    assert cli(capsys, "verify", "--dir", str(torn))[0] == 0

    edited = tmp_path / "edited"
    edited.mkdir()
    changed = lines[99].replace(b'"side":"BUY"', b'"side":"SELL"')
    if changed == lines[99]:
        changed = lines[99].replace(b'"side":"SELL"', b'"side":"BUY"')
    assert changed != lines[99]
    (edited / source.name).write_bytes(b"".join([*lines[:99], changed, *lines[100:]]))
    code, out, _ = cli(capsys, "verify", "--dir", str(edited), "--repair")
    assert code == 2
    assert f"CORRUPT: {source.name} line 100 (seq 100): hash does not match" in out
    assert "records    99 (seq 1 .. 99), whole before the corrupt one" in out
    code, _, err = cli(capsys, "show", "--dir", str(edited))
    assert code == 2
    assert f"{source.name} line 100 (seq 100)" in err
    out_file = tmp_path / "x.jsonl"
    code, _, err = cli(
        capsys, "export", "--dir", str(edited), "--format", "jsonl", "--out", str(out_file)
    )
    assert code == 2
    assert not out_file.exists()
    assert list(tmp_path.glob("x.jsonl*")) == []

    code, _, err = cli(capsys, "verify", "--dir", str(tmp_path / "nothing"))
    assert code == 66
    assert "no journal at" in err


# --- the actor alone -------------------------------------------------------------------------

SMALL = """
mode = "backtest"
[account]
currency = "USDT"
starting_balance = 1000.0
[[instruments]]
id = "BTCUSDT.BINANCE"
asset_class = "crypto"
base_currency = "BTC"
quote_currency = "USDT"
price_increment = 0.01
size_increment = 0.00001
[actors.journal]
kind = "journal"
dir = "j"
fsync = {fsync}
group_records = 4
[actors.router]
kind = "event_log"
[actors.venue_events]
kind = "event_log"
[actors.control]
kind = "event_log"
[[edges]]
from = "journal.orders"
to = "router"
[[edges]]
from = "journal.events"
to = "venue_events"
[[edges]]
from = "journal.control"
to = "control"
"""


def small_system(base: Path, *, fsync: bool = False) -> tuple[System, Journal]:
    config = parse_config(SMALL.replace("{fsync}", str(fsync).lower()))
    system = System(config, ReplayClock(), base_dir=base)
    journal = system.actors["journal"]
    assert isinstance(journal, Journal)
    return system, journal


def at(i: int) -> dict[str, int]:
    return {"ts_event": i, "ts_init": i}


def order(i: int) -> OrderRequest:
    return OrderRequest(
        client_order_id=f"o{i}",
        strategy_id="s",
        instrument_id="BTCUSDT.BINANCE",
        side=Side.BUY,
        quantity=0.5,
        **at(i),
    )


def feed(journal: Journal, msgs: list[Any]) -> None:
    """Put ``msgs`` in the journal's inbox and have it take them one by one."""
    for msg in msgs:
        journal.inbox.put_nowait(msg)
    while journal.inbox.size:
        journal.on_message(journal.inbox.get_nowait())


def waiting(system: System, name: str) -> list[Any]:
    return list(system.actors[name].inbox.items)


def test_messages_go_on_only_once_committed_in_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, journal = small_system(tmp_path, fsync=True)
    journal.on_start()
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    quote = QuoteTick(
        instrument_id="BTCUSDT.BINANCE", bid=1.0, ask=2.0, bid_size=1.0, ask_size=1.0, **at(0)
    )
    burst: list[Any] = [
        order(1),
        quote,  # skipped: market data
        Alert(level=AlertLevel.WARNING, source="m", rule="r", message="x", **at(2)),
        CancelOrder(
            client_order_id="o1", strategy_id="s", instrument_id="BTCUSDT.BINANCE", **at(3)
        ),
        TimerFired(name="t", **at(4)),  # skipped
        OrderAccepted(
            client_order_id="o1",
            venue_order_id="v1",
            strategy_id="s",
            instrument_id="BTCUSDT.BINANCE",
            **at(5),
        ),
        SetTradingState(state=TradingState.HALTED, reason="test", origin="ctl", **at(6)),
        RiskDecision(
            source="m", rule="r", level=AlertLevel.INFO, action="none", reason="", **at(7)
        ),
        order(8),
    ]
    for msg in burst:
        journal.inbox.put_nowait(msg)
    seen_on_disk: list[int] = []
    while journal.inbox.size:
        journal.on_message(journal.inbox.get_nowait())
        on_disk = sum(1 for _ in read_journal(tmp_path / "j"))
        sent = (
            waiting(system, "router") + waiting(system, "venue_events") + waiting(system, "control")
        )
        # nothing is sent on before its record is in the file
        assert all(m in [r.msg for r in read_journal(tmp_path / "j")] for m in sent)
        seen_on_disk.append(on_disk)
    # groups of 4 records (Alert, orders, events, control; not the quote or timer), then
    # the rest when the inbox ran dry
    assert seen_on_disk == [0, 0, 0, 0, 0, 4, 4, 4, 7]
    assert len(synced) == 2
    assert waiting(system, "router") == [burst[0], burst[3], burst[8]]
    assert waiting(system, "venue_events") == [burst[5]]
    assert waiting(system, "control") == [burst[6]]
    snap = journal.snapshot()
    assert (snap["records"], snap["commits"], snap["fsyncs"], snap["skipped"]) == (7, 2, 2, 2)
    assert snap["bytes"] == (tmp_path / "j" / "journal-000001.jsonl").stat().st_size
    journal.on_stop()
    assert journal.writer.closed


def test_after_a_failed_write_only_what_reached_the_journal_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, journal = small_system(tmp_path)
    journal.on_start()
    feed(journal, [order(1)])
    assert waiting(system, "router") == [order(1)]
    real_write = os.write

    def half_then_full_disk(fd: int, data: Any) -> int:
        # the first record and part of the second reach the file, then the disk is full
        first = bytes(data).index(b"\n") + 1
        real_write(fd, bytes(data)[: first + 40])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full_disk)
    for i in (2, 3):
        journal.inbox.put_nowait(order(i))
    journal.on_message(journal.inbox.get_nowait())  # order 2: held, more in the inbox
    with pytest.raises(JournalError, match="No space left on device"):
        journal.on_message(journal.inbox.get_nowait())  # order 3: the commit fails
    assert waiting(system, "router") == [order(1)]  # neither went on
    with pytest.raises(JournalError, match="failed"):
        journal.writer.append(order(4), 4)
    monkeypatch.setattr(os, "write", real_write)

    # what the supervisor does on a crash: on_stop (its error logged), then on_start
    with pytest.raises(JournalError):
        journal.on_stop()
    journal.on_start()
    assert journal.writer.torn_bytes == 40
    assert journal.writer.last_seq == 2
    assert waiting(system, "router") == [order(1), order(2)]  # journaled whole: it goes on
    feed(journal, [order(5)])
    assert waiting(system, "router") == [order(1), order(2), order(5)]
    assert [r.msg for r in read_journal(tmp_path / "j", strict=True)] == [
        order(1),
        order(2),
        order(5),
    ]
    assert journal.snapshot()["torn_bytes_cut_at_open"] == 40
    journal.on_stop()


def test_a_bad_journal_section_names_its_key(tmp_path: Path) -> None:
    for bad, key in (
        ("group_records = 4", "group_records = 0"),
        ('dir = "j"', 'dir = ""'),
        ("fsync = false", "fsync = 1"),
    ):
        config = parse_config(SMALL.replace("{fsync}", "false").replace(bad, key))
        with pytest.raises(ConfigError, match=r"\$\.actors\.journal\."):
            System(config, ReplayClock(), base_dir=tmp_path)
    config = parse_config(SMALL.replace("{fsync}", "false").replace('dir = "j"', 'dir = "f/j"'))
    (tmp_path / "f").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="is not a directory"):
        System(config, ReplayClock(), base_dir=tmp_path)


def test_tradingd_backtest_writes_the_journal_and_refuses_a_corrupt_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO_ROOT / "config" / "backtest.toml").read_text()
    text = text.replace("../data/sample/binance-btcusdt/quotes.npy", str(SAMPLE_QUOTES))
    text += (
        '\n[actors.journal]\nkind = "journal"\ndir = "journal"\nfsync = false\n'
        '\n[[edges]]\nfrom = "exchange.events"\nto = "journal"\n'
    )
    config = tmp_path / "backtest.toml"
    config.write_text(text)
    assert main(["backtest", "--config", str(config), "--json"]) == 0
    result = orjson.loads(capsys.readouterr().out)
    records = list(read_journal(tmp_path / "journal", strict=True))
    assert len(records) == result["fills"] + result["orders"]  # an acceptance for each order
    assert all(not isinstance(r.msg, OrderRequest) for r in records)  # only events wired in

    (segment,) = segment_paths(tmp_path / "journal")
    lines = segment.read_bytes().splitlines(True)
    lines[0] = lines[0].replace(b'"seq":1,', b'"seq":1 ,')
    segment.write_bytes(b"".join(lines))
    assert main(["backtest", "--config", str(config), "--json"]) == 65
    err = capsys.readouterr().err
    assert f"journal error: {segment.name} line 1 (seq 1): hash does not match" in err
