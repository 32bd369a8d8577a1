"""The reference workload (issue 2) through the whole engine, against a plain Python loop.

The oracle below implements the issue's rules from scratch (data, EMA cross, fills at the
touch, commission, netting margin account) with no import from ``engine``, ``actors`` or
``adapters``. The engine runs ``config/reference.toml`` with one extra actor, a recorder of
fills wired from the exchange, and must agree with the oracle fill by fill and to the last
bit of the final balance. Then batched and per-tick replay, and every batch size, must give
the same run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import re
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pytest

from adapters.reference_workload import reference_quotes
from engine.actor import Actor, ActorConfig
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.messages import OrderFilled, OrderPartiallyFilled

REPO_ROOT = Path(__file__).resolve().parents[2]
N = 100_000

# --- the oracle: issue 2's rules, written out plainly ---------------------------------------

START_NS = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
STEP_NS = 100_000_000  # 100 ms
QUANTITY = 100_000.0
COMMISSION_RATE = 0.00002
STARTING_BALANCE = 1_000_000.0


class Fill(NamedTuple):
    ts: int
    side: str
    price: float
    quantity: float
    commission: float


class Oracle(NamedTuple):
    fills: list[Fill]
    balance: float
    realized_pnl: float
    commissions: float
    position: float
    unrealized_pnl: float
    max_drawdown: float
    max_drawdown_fraction: float


def oracle(n: int) -> Oracle:
    rng = np.random.default_rng(42)
    steps = rng.integers(-1, 2, size=n)
    bid_i = (110_000 + np.cumsum(steps)).tolist()

    fills: list[Fill] = []
    balance = STARTING_BALANCE
    realized_total = 0.0
    commissions = 0.0
    position = 0.0
    entry = 0.0
    fast = slow = 0.0
    sign = 0
    seen = 0
    peak, max_dd, max_frac = STARTING_BALANCE, 0.0, 0.0
    unrealized = 0.0

    def equity_point(equity: float) -> None:
        nonlocal peak, max_dd, max_frac
        peak = max(peak, equity)
        max_dd = max(max_dd, peak - equity)
        max_frac = max(max_frac, (peak - equity) / peak)

    for t, b in enumerate(bid_i):
        a = b + 2
        bid, ask = b / 1e5, a / 1e5
        mid = (bid + ask) * 0.5
        # the book is marked at every tick
        unrealized = position * (mid - entry)
        equity_point(balance + unrealized)

        mid2 = float(b + a)
        seen += 1
        if seen == 1:
            fast = slow = mid2
        else:
            fast += (2 / 11) * (mid2 - fast)
            slow += (2 / 21) * (mid2 - slow)
        previous = sign
        if fast > slow:
            sign = 1
        elif fast < slow:
            sign = -1
        crossed = previous != 0 and sign != previous  # noqa: PLR1714 - as the issue words it
        if not (seen > 20 and crossed):
            continue

        side = "BUY" if sign == 1 else "SELL"
        price = ask if side == "BUY" else bid
        commission = round(price * QUANTITY * COMMISSION_RATE, 2)
        signed = QUANTITY if side == "BUY" else -QUANTITY
        fills.append(Fill(START_NS + t * STEP_NS, side, price, QUANTITY, commission))
        realized = 0.0
        if position == 0.0:
            position, entry = signed, price
        else:
            assert position == -signed, "the rules alternate: a cross only ever closes"
            realized = (price - entry) * position
            position, entry = 0.0, 0.0
        realized_total += realized
        commissions += commission
        balance += realized - commission
        unrealized = position * (mid - entry)
        equity_point(balance + unrealized)

    return Oracle(
        fills, balance, realized_total, commissions, position, unrealized, max_dd, max_frac
    )


@functools.cache
def expected() -> Oracle:
    return oracle(N)


# --- the engine, with a recorder of fills ---------------------------------------------------


class FillRecorder(Actor[ActorConfig]):
    """Keeps every fill it is sent, in order."""

    Config = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ()

    def on_start(self) -> None:
        if getattr(self, "fills", None) is None:
            self.fills: list[OrderFilled | OrderPartiallyFilled] = []

    def on_message(self, msg: Any) -> None:
        if isinstance(msg, OrderFilled | OrderPartiallyFilled):
            self.fills.append(msg)


RECORDER = f"""

[actors.fills]
kind = "{__name__}:FillRecorder"

[[edges]]
from = "exchange.events"
to = "fills"
only = ["OrderFilled", "OrderPartiallyFilled"]
"""


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (REPO_ROOT / "config" / "reference.toml").read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("reference") / "reference.toml"
    path.write_text(text + RECORDER, encoding="utf-8")
    return path


class Run(NamedTuple):
    result: BacktestResult
    fills: list[Fill]


def run_engine(config: Path, **replay: Any) -> Run:
    system, _ = load_backtest(config, **replay)
    result = asyncio.run(run_backtest(system, reference_quotes(N)))
    recorder = system.actors["fills"]
    assert isinstance(recorder, FillRecorder)
    fills = [
        Fill(f.ts_event, f.side.value, f.last_px, f.last_qty, f.commission) for f in recorder.fills
    ]
    assert all(isinstance(f, OrderFilled) for f in recorder.fills)  # no partial fills here
    return Run(result, fills)


@pytest.fixture(scope="module")
def runs(config_path: Path) -> dict[str, Run]:
    """Engine runs, made once per module and shared by the tests that compare them."""
    return {
        "batched": run_engine(config_path),
        "batched again": run_engine(config_path),
        "per tick": run_engine(config_path, per_tick=True),
    }


# --- the tests ---------------------------------------------------------------------------


def test_oracle_trades_as_the_rules_say() -> None:
    """Sanity of the oracle itself, so that agreeing with it means something."""
    o = expected()
    assert len(o.fills) > 1_000
    sides = [f.side for f in o.fills]
    assert all(a != b for a, b in itertools.pairwise(sides))  # buy, sell, buy, ...
    assert all(f.commission == 2.2 for f in o.fills[:10])  # 0.2 bp of about 110,000 USD
    assert o.balance == pytest.approx(STARTING_BALANCE + o.realized_pnl - o.commissions, abs=1e-6)


def test_engine_fills_match_the_oracle_one_by_one(runs: dict[str, Run]) -> None:
    o = expected()
    got = runs["batched"]
    assert got.result.ticks == N
    assert (got.result.orders, got.result.fills, got.result.denied, got.result.rejected) == (
        len(o.fills),
        len(o.fills),
        0,
        0,
    )
    assert len(got.fills) == len(o.fills)
    for i, (mine, theirs) in enumerate(zip(got.fills, o.fills, strict=True)):
        assert mine == theirs, f"fill {i}: engine {mine} != oracle {theirs}"


def test_engine_account_matches_the_oracle_exactly(runs: dict[str, Run]) -> None:
    o = expected()
    r = runs["batched"].result
    assert r.final_balance == o.balance  # exactly: the same operations in the same order
    assert r.realized_pnl == o.realized_pnl
    assert r.commissions == o.commissions
    assert r.positions == {"EURUSD.SIM": o.position}
    assert r.unrealized_pnl == o.unrealized_pnl
    assert r.final_equity == o.balance + o.unrealized_pnl
    assert r.max_drawdown == o.max_drawdown
    assert r.max_drawdown_pct == pytest.approx(100.0 * o.max_drawdown_fraction, rel=1e-12)


def test_per_tick_and_batched_replay_give_the_same_run(runs: dict[str, Run]) -> None:
    batched, per_tick = runs["batched"], runs["per tick"]
    assert per_tick.result.per_tick and not batched.result.per_tick
    assert per_tick.result.batches == N  # it really was one tick at a time
    assert batched.result.batches < N // 10  # and this really was batched
    assert per_tick.result.events_sha256 == batched.result.events_sha256
    assert per_tick.fills == batched.fills
    assert per_tick.result.final_balance == batched.result.final_balance
    assert per_tick.result.final_equity == batched.result.final_equity
    assert per_tick.result.max_drawdown == batched.result.max_drawdown


def test_the_same_run_twice_gives_the_same_digest(runs: dict[str, Run]) -> None:
    first, second = runs["batched"], runs["batched again"]
    assert re.fullmatch(r"[0-9a-f]{64}", first.result.events_sha256)
    assert second.result.events_sha256 == first.result.events_sha256
    assert second.fills == first.fills


@pytest.mark.parametrize("batch_size", [1, 7, 1000, 65_536])
def test_batch_size_does_not_change_the_run(
    batch_size: int, config_path: Path, runs: dict[str, Run]
) -> None:
    reference = runs["per tick"]
    got = run_engine(config_path, batch_size=batch_size)
    assert got.result.ticks == N
    assert got.result.batches >= N / batch_size
    assert got.result.events_sha256 == reference.result.events_sha256
    assert got.fills == reference.fills
    assert got.result.final_balance == reference.result.final_balance


@pytest.mark.parametrize("per_tick", [False, True], ids=["batched", "per tick"])
def test_task_executor_gives_the_same_run_as_inline(
    per_tick: bool, config_path: Path, runs: dict[str, Run]
) -> None:
    """``replay.executor = "tasks"`` (one asyncio task per actor, as live) against the default."""
    inline = runs["per tick" if per_tick else "batched"]
    tasks = run_engine(config_path, per_tick=per_tick, executor="tasks")
    assert tasks.result.per_tick is per_tick
    assert tasks.result.events_sha256 == inline.result.events_sha256
    assert tasks.fills == inline.fills
    assert tasks.result.final_balance == inline.result.final_balance
