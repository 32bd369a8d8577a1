"""``tradingd ctl`` against the real control server (on its own event loop thread) in front
of the API's test double: what a person reads, what a script parses, and every exit code."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from adapters.cli import main
from adapters.ctl import parse_assignments
from tests.control_double import ServedDouble, serve_double

SECRET = "correct-horse-battery-staple"
ME = f"unix:uid={os.getuid()},pid={os.getpid()}"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedDouble]:
    # The server runs in this process: its log lines are captured, so that stdout holds
    # only what ctl prints.
    with (
        structlog.testing.capture_logs(),
        serve_double(tmp_path / "control.sock", tokens={"ops": SECRET}) as s,
    ):
        yield s


def ctl(
    served: ServedDouble, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["ctl", "--socket", str(served.socket), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_is_a_table_a_person_reads(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(served, capsys, "status")
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines() if " " in line)
    assert out.splitlines()[2].split() == ["trading", "ACTIVE"]
    assert "equity          1,008,500.00 USD" in out  # aligned, thousands separated
    assert "uptime          01:02:05" in out
    assert lines["ticks"].strip() == "1,234,567"


def test_positions_are_aligned_columns_with_money(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(served, capsys, "positions")
    assert code == 0
    header, eur, ibm, total = out.splitlines()[1:]
    assert ibm.split()[:6] == ["IBM.US", "1,500", "180.25", "185.5", "278,250.00", "7,875.00"]
    assert eur.split()[:5] == ["EURUSD.FX", "-250,000", "1.085", "1.0825", "-270,625.00"]
    assert total.split() == ["total", "7,625.00", "8,500.00", "0.00"]
    # Numbers are right-aligned under their heading.
    end = header.index("market value") + len("market value")
    assert {len(line[:end]) for line in (eur, ibm, total)} == {end}
    assert ibm[:end].endswith("278,250.00") and eur[:end].endswith("-270,625.00")


def test_risk_shows_utilisation_as_percent(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(served, capsys, "risk")
    assert code == 0
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines() if "security" in line}
    # IBM: 278,250 of a NAV of 1,008,500 is 27.59% against a limit of 25%.
    assert rows["IBM.US"] == ["position_fraction", "0.2759", "0.25", "110.4%", "BREACH"]
    assert "gross_leverage     0.5442      2   27.2%" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["positions"],
        ["orders"],
        ["pnl"],
        ["risk"],
        ["limits", "show"],
        ["strategy", "list"],
        ["actors"],
        ["alerts"],
        ["health"],
    ],
)
def test_json_prints_the_reply_as_it_is(
    served: ServedDouble, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, _ = ctl(served, capsys, "--json", *argv)
    assert code == 0
    name = {"limits": "limits", "strategy": "strategies"}.get(argv[0], argv[0])
    expected = orjson.loads(orjson.dumps(_query(served, name)))
    assert orjson.loads(out) == expected
    # --json may also come after the command.
    code, again, _ = ctl(served, capsys, *argv, "--json")
    assert (code, orjson.loads(again)) == (0, expected)


def _query(served: ServedDouble, name: str) -> Any:
    return asyncio.run(served.controller.query(name, {}))


def test_commands_change_the_daemon_and_carry_who_asked(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    double = served.controller
    assert ctl(served, capsys, "halt", "--reason", "fed at 14:00")[:2] == (
        0,
        "trading_state  HALTED\n",
    )
    assert (double.trading_state, double.trading_reason) == ("HALTED", "fed at 14:00")
    assert ctl(served, capsys, "resume")[0] == 0
    assert ctl(served, capsys, "cancel", "ema-1-7")[1] == "cancelled  ema-1-7\n"
    assert ctl(served, capsys, "strategy", "stop", "ema")[0] == 0
    assert ctl(served, capsys, "strategy", "start", "trend")[0] == 0
    assert ctl(served, capsys, "strategy", "set", "ema", "fast=10", "slow=40")[0] == 0
    assert double.strategies["ema"] == {
        "kind": "ema_cross",
        "running": False,
        "params": {"fast": 10, "slow": 40},
    }
    code, _, _ = ctl(
        served, capsys, "limits", "set", "security.max_position_fraction=0.04", "--reason", "vol"
    )
    assert code == 0
    assert double.limits.security.max_position_fraction == 0.04
    shown = ctl(served, capsys, "limits", "show")[1]
    assert re.search(r"^security\.max_position_fraction +0\.04$", shown, re.MULTILINE), shown
    code, out, _ = ctl(served, capsys, "flatten", "IBM.US")
    assert code == 0 and "closed     IBM.US" in out
    assert set(double.positions) == {"EURUSD.FX"}
    assert ctl(served, capsys, "cancel", "all")[0] == 0

    code, out, _ = ctl(served, capsys, "journal", "tail", "-n", "2")
    records = [orjson.loads(line) for line in out.splitlines()]
    assert [r["name"] for r in records] == ["flatten", "cancel"]
    assert {r["origin"] for r in double.journal} == {ME}
    assert double.journal[6]["args"] == {
        "limits": {"security": {"max_position_fraction": 0.04}},
        "reason": "vol",
    }


def test_exit_1_when_the_daemon_refuses(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = ctl(served, capsys, "resume")
    assert (code, out) == (1, "")
    assert err == "tradingd ctl: refused: trading is ACTIVE, not HALTED: nothing to resume\n"
    code, _, err = ctl(served, capsys, "cancel", "nope")
    assert code == 1 and "no working order 'nope'; working: ema-1-7, ema-1-8" in err
    code, _, err = ctl(served, capsys, "limits", "set", "security.max_positon_fraction=0.04")
    assert code == 1 and "max_positon_fraction" in err


def test_exit_2_for_usage_errors_naming_what_is_valid(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ctl", "--socket", str(served.socket), "hlat"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'hlat'" in err and "'halt'" in err and "'flatten'" in err
    with pytest.raises(SystemExit) as exc:
        main(["ctl", "strategy", "pause", "ema"])
    assert exc.value.code == 2
    assert "choose from 'list', 'start', 'stop', 'set'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["ctl", "journal", "tail", "-n", "0"])
    assert exc.value.code == 2
    assert "expected a whole number of 1 or more, got '0'" in capsys.readouterr().err
    code, _, err = ctl(served, capsys, "strategy", "set", "ema", "fast")
    assert code == 2 and "expected key=value, got 'fast'" in err
    assert served.controller.journal == []  # nothing reached the daemon


def test_exit_3_when_no_daemon_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "control.sock"
    assert main(["ctl", "--socket", str(missing), "status"]) == 3
    err = capsys.readouterr().err
    assert f"the daemon is not running: no control socket at {missing}" in err

    # No --socket: $STATE_DIRECTORY/control.sock, and the message says where it looked.
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert main(["ctl", "status"]) == 3
    assert str(tmp_path / "state" / "control.sock") in capsys.readouterr().err

    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(missing))  # left by a daemon that was killed
    dead.close()
    assert main(["ctl", "--socket", str(missing), "health"]) == 3
    assert f"nothing is listening on {missing}" in capsys.readouterr().err

    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["ctl", "--url", f"http://127.0.0.1:{port}", "status"]) == 3
    assert "was refused" in capsys.readouterr().err


def test_exit_4_without_the_right_token_over_tcp(
    served: ServedDouble,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRADINGD_TOKEN", raising=False)
    bad = tmp_path / "bad.token"
    bad.write_text("not-the-secret\n")
    assert main(["ctl", "--url", served.url, "--token-file", str(bad), "halt"]) == 4
    assert "unauthorized: wrong token" in capsys.readouterr().err
    assert main(["ctl", "--url", served.url, "status"]) == 4
    assert "give --token-file FILE or set $TRADINGD_TOKEN" in capsys.readouterr().err
    assert served.controller.trading_state == "ACTIVE"

    good = tmp_path / "good.token"
    good.write_text(SECRET + "\n")  # the trailing newline of an editor is not part of it
    assert main(["ctl", "--url", served.url, "--token-file", str(good), "halt"]) == 0
    monkeypatch.setenv("TRADINGD_TOKEN", SECRET)
    assert main(["ctl", "--url", served.url, "resume"]) == 0
    assert [r["origin"] for r in served.controller.journal] == ["token:ops", "token:ops"]


def test_exit_5_when_the_daemon_fails(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    served.controller.fail_on = "pnl"
    code, _, err = ctl(served, capsys, "pnl")
    assert code == 5
    assert "the daemon failed: the daemon failed on query 'pnl': RuntimeError" in err


def test_health_exits_0_healthy_and_1_unhealthy(
    served: ServedDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(served, capsys, "health")
    assert code == 0 and out.startswith("healthy\n")
    served.controller.healthy = False
    code, out, _ = ctl(served, capsys, "health")
    assert code == 1
    assert out.startswith("UNHEALTHY\n  - feed IBM.US silent for 42 s\n")


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ctl", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for line in (
        "0  done",
        "1  the daemon refused",
        "2  usage error",
        "3  the daemon is unreachable",
        "4  unauthorized",
        "5  the daemon failed",
    ):
        assert line in out


def test_assignments_parse_values_as_json_else_text() -> None:
    assert parse_assignments(["fast=12", "on=true", "name=ema x", "w=[1,2]"], dotted=False) == {
        "fast": 12,
        "on": True,
        "name": "ema x",
        "w": [1, 2],
    }
    assert parse_assignments(
        ["security.max_adv_days=2", "security.max_position_fraction=0.04", "region.US=0.5"],
        dotted=True,
    ) == {"security": {"max_adv_days": 2, "max_position_fraction": 0.04}, "region": {"US": 0.5}}
