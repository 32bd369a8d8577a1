"""``tradingd risk stress`` on a given portfolio: P&L by group under hypothetical shocks and
the limits the book after the move would break; and the historical windows on the Lean
daily files when they are there."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from adapters.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "daily_equities.toml"

PORTFOLIO = """
cash = -50_000.0          # on margin: NAV 50,000 for 100,000 of stock, gross leverage 2
[[positions]]
instrument = "AAPL.US"
quantity = 600
price = 100.0
[[positions]]
instrument = "SPY.US"
quantity = 400
price = 100.0
"""

SCENARIOS = """
historical = []
[[hypothetical]]
name = "Equities -20%"
asset_class = { equity = -0.20, etf = -0.20 }
[[hypothetical]]
name = "Apple -30%"
instrument = { "AAPL.US" = -0.30 }
"""

LIMITS = """
[portfolio]
max_gross_leverage = 2.5
"""


def _stress(tmp_path: Path) -> dict:
    (tmp_path / "book.toml").write_text(PORTFOLIO)
    (tmp_path / "scenarios.toml").write_text(SCENARIOS)
    (tmp_path / "limits.toml").write_text(LIMITS)
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(
            [
                "risk",
                "stress",
                "--config",
                str(CONFIG),
                "--store",
                str(tmp_path / "none"),
                "--portfolio",
                str(tmp_path / "book.toml"),
                "--scenarios",
                str(tmp_path / "scenarios.toml"),
                "--limits",
                str(tmp_path / "limits.toml"),
                "--json",
            ]
        )
    assert code == 0
    return json.loads(out.getvalue())


def test_shocks_give_pnl_by_group_and_the_limits_they_would_break(tmp_path: Path) -> None:
    report = _stress(tmp_path)
    assert report["book"]["nav"] == pytest.approx(50_000.0)
    equities, apple = report["results"]
    assert equities["pnl"] == pytest.approx(-20_000.0)
    assert equities["by_asset_class"] == pytest.approx({"equity": -12_000.0, "etf": -8_000.0})
    assert equities["by_instrument"]["AAPL.US"] == pytest.approx(-12_000.0)
    # 80,000 of stock on 30,000 of NAV: 2.67 times, over the 2.5 limit
    (broken,) = equities["limits_broken"]
    assert broken["level"] == "portfolio" and broken["used"] == pytest.approx(80 / 30)
    assert apple["by_instrument"] == pytest.approx({"AAPL.US": -18_000.0, "SPY.US": 0.0})
    assert apple["pnl_fraction"] == pytest.approx(-0.36)
    # 82,000 on 32,000: 2.56 times
    assert [b["rule"] for b in apple["limits_broken"]] == [broken["rule"]]


@pytest.mark.shared_data
def test_historical_windows_replay_the_daily_files(tmp_path: Path) -> None:
    from tests.shared_data import shared_data_dir  # noqa: PLC0415 - skips without the data

    usa = shared_data_dir() / "lean/Data/equity/usa"
    store = tmp_path / "store"
    args = ["data", "import", "--store", str(store), "--format", "lean-daily"]
    assert main([*args, "--path", str(usa)]) == 0
    (tmp_path / "book.toml").write_text(
        'as_of = 2008-09-12\n[[positions]]\ninstrument = "SPY.US"\nquantity = 1000\n'
        '[[positions]]\ninstrument = "IWM.US"\nquantity = 1000\n'
    )
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(
            [
                "risk",
                "stress",
                "--config",
                str(CONFIG),
                "--store",
                str(store),
                "--portfolio",
                str(tmp_path / "book.toml"),
                "--json",
            ]
        )
    assert code == 0
    results = {r["scenario"].split(" (")[0]: r for r in json.loads(out.getvalue())["results"]}
    lehman = results["Lehman, Sep-Oct 2008"]
    # SPY closed 125.xx on 2008-09-12 and about 91 on 2008-10-15: a fall of more than 20%
    assert lehman["returns"]["SPY.US"] < -0.20 and lehman["pnl"] < -40_000
    assert results["Dot-com, Mar-Apr 2000"]["uncovered"] == ["IWM.US"]  # listed in May 2000
