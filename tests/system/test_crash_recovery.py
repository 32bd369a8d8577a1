"""The daemon killed with SIGKILL at random moments while orders flow, 20 times; after each
restart nothing acknowledged is lost, no order is sent twice, and the positions equal the
broker's (the paper broker's ledger, which outlives the daemon as a real broker does)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from adapters.cli import main
from engine.journal import read_journal, verify_journal
from engine.messages import OrderAccepted, OrderPartiallyFilled, OrderRejected, OrderRequest
from tests.helpers import wait_until
from tests.system.daemon_process import own_config, start_daemon

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
SEED = 20261124

pytestmark = pytest.mark.slow


def _status(state: Path, capsys: pytest.CaptureFixture[str]) -> dict | None:
    code = main(
        ["ctl", "--socket", str(state / "control.sock"), "--timeout", "5", "--json", "status"]
    )
    out = capsys.readouterr().out
    return json.loads(out) if code == 0 and out.strip() else None


def _ready(
    proc: subprocess.Popen[bytes], state: Path, capsys: pytest.CaptureFixture[str], log: Path
) -> dict:
    def ready() -> dict | None:
        assert proc.poll() is None, log.read_text()[-3000:]
        if not (state / "control.sock").exists():
            return None
        status = _status(state, capsys)
        return status if status is not None and status["state"] == "ready" else None

    return wait_until(ready, 120, interval=0.1, message="the daemon to be ready")


def _ledger(state: Path) -> list:
    return [r.msg for r in read_journal(state / "broker")]


def _no_order_taken_twice(ledger: list) -> None:
    accepted = Counter(m.client_order_id for m in ledger if isinstance(m, OrderAccepted))
    assert all(n == 1 for n in accepted.values()), [c for c, n in accepted.items() if n > 1]
    duplicates = [m for m in ledger if isinstance(m, OrderRejected) and "duplicate" in m.reason]
    assert not duplicates, duplicates[:3]


def test_twenty_sigkills_lose_nothing_acknowledged_and_send_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    config = own_config(
        tmp_path,
        replace={"fast = 200\nslow = 1000\nwarmup = 1000": "fast = 10\nslow = 40\nwarmup = 40"},
    )
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    kept: list[tuple[int, str]] = []  # (seq, hash) of the journal as verified before
    reported_again = 0
    for kill in range(KILLS):
        proc = start_daemon(config, state, log)
        status = _ready(proc, state, capsys, log)
        recovery = status["recovery"]
        if kill:
            # after a restart: the positions rebuilt from the journal equal the broker's
            assert recovery["positions_match"], (kill, recovery)
            reported_again += recovery["executions_reported"]
        # the journal is whole and chained, and holds everything it held before the kill
        records = list(read_journal(state / "journal"))
        assert [(r.seq, r.hash) for r in records[: len(kept)]] == kept, f"kill {kill}"
        # every execution the broker reported is in the journal
        fills = {r.msg.trade_id for r in records if isinstance(r.msg, OrderPartiallyFilled)}
        ledger = _ledger(state)
        executed = {m.trade_id for m in ledger if isinstance(m, OrderPartiallyFilled)}
        assert executed <= fills, f"kill {kill}: {sorted(executed - fills)[:5]} lost"
        _no_order_taken_twice(ledger)
        # once orders flow again (however slow the machine), kill at a random moment
        before = status["fills"]
        wait_until(
            lambda before=before: (_status(state, capsys) or {}).get("fills", 0) > before,
            120,
            message="a fill after the restart",
        )
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kept = [(r.seq, r.hash) for r in read_journal(state / "journal")]

    # a last start, then an orderly stop: the books agree exactly
    proc = start_daemon(config, state, log)
    status = _ready(proc, state, capsys, log)
    assert status["recovery"]["positions_match"]
    assert main(["ctl", "--socket", str(state / "control.sock"), "halt"]) == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    report = verify_journal(state / "journal")
    assert report.ok and report.first_seq == 1, report
    records = [r.msg for r in read_journal(state / "journal")]
    ledger = _ledger(state)
    _no_order_taken_twice(ledger)
    ours = {m.trade_id: m for m in records if isinstance(m, OrderPartiallyFilled)}
    theirs = {m.trade_id: m for m in ledger if isinstance(m, OrderPartiallyFilled)}
    assert ours.keys() == theirs.keys() and len(theirs) > 20, (len(ours), len(theirs))
    position: Counter[str] = Counter()
    for fill in theirs.values():
        position[fill.instrument_id] += fill.side.sign * fill.last_qty
    journal_position: Counter[str] = Counter()
    for fill in ours.values():
        journal_position[fill.instrument_id] += fill.side.sign * fill.last_qty
    for inst in position.keys() | journal_position.keys():
        assert journal_position[inst] == pytest.approx(position[inst], abs=1e-9)
    print(f"{KILLS} kills (seed {SEED}); {len(theirs)} executions; {reported_again} reported again")


def _lines(directory: Path) -> tuple[Path, list[bytes]]:
    (segment,) = sorted(directory.glob("journal-*.jsonl"))
    return segment, segment.read_bytes().splitlines(keepends=True)


def test_reconciliation_reports_what_the_journal_missed_and_rejects_what_never_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two windows a crash can hit, made on purpose by cutting whole records off the
    end of the journal (and of the broker's books) of a stopped daemon: executions the
    broker made that the journal never got are reported again on restart; an order the
    journal approved that never reached the broker is reported rejected and not sent."""
    often = {"fast = 200\nslow = 1000\nwarmup = 1000": "fast = 10\nslow = 40\nwarmup = 40"}
    config = own_config(tmp_path, replace=often)
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"

    def run_until_fills(n: int) -> dict:
        proc = start_daemon(config, state, log)
        status = _ready(proc, state, capsys, log)
        wait_until(lambda: (_status(state, capsys) or {}).get("fills", 0) >= n, 60)
        assert main(["ctl", "--socket", str(state / "control.sock"), "halt"]) == 0
        capsys.readouterr()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        return status

    run_until_fills(5)
    # 1. the journal lost its last fills (the daemon died after the broker's write)
    segment, lines = _lines(state / "journal")
    records = list(read_journal(state / "journal"))
    last_fill = max(i for i, r in enumerate(records) if isinstance(r.msg, OrderPartiallyFilled))
    segment.write_bytes(b"".join(lines[:last_fill]))
    status = run_until_fills(0)
    recovery = status["recovery"]
    assert recovery["executions_reported"] >= 1 and recovery["positions_match"], recovery
    fills = {
        r.msg.trade_id
        for r in read_journal(state / "journal")
        if isinstance(r.msg, OrderPartiallyFilled)
    }
    assert {m.trade_id for m in _ledger(state) if isinstance(m, OrderPartiallyFilled)} <= fills

    # 2. an approved order that never reached the broker (the daemon died after the
    # journal's write, before the router sent it): cut both books back to before it
    records = list(read_journal(state / "journal"))
    i, order = next(
        (i, r.msg) for i, r in reversed(list(enumerate(records))) if isinstance(r.msg, OrderRequest)
    )
    segment, lines = _lines(state / "journal")
    segment.write_bytes(b"".join(lines[: i + 1]))
    ledger_segment, ledger_lines = _lines(state / "broker")
    ledger = _ledger(state)
    first = next(
        k
        for k, m in enumerate(ledger)
        if getattr(m, "client_order_id", None) == order.client_order_id
    )
    ledger_segment.write_bytes(b"".join(ledger_lines[:first]))
    status = run_until_fills(0)
    recovery = status["recovery"]
    assert recovery["lost_orders"] == 1 and recovery["positions_match"], recovery
    rejected = [
        r.msg
        for r in read_journal(state / "journal")
        if isinstance(r.msg, OrderRejected) and r.msg.client_order_id == order.client_order_id
    ]
    assert len(rejected) == 1 and "never reached the broker" in rejected[0].reason
    # and it was not sent: the broker has still not seen it
    assert all(getattr(m, "client_order_id", None) != order.client_order_id for m in _ledger(state))
