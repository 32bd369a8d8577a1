"""The inline executor (replays) and the task executor (live) run the same actors the same
way: the same journal hash, fills and balance, batched and one tick at a time."""

from __future__ import annotations

import pytest

from adapters.reference_workload import reference_quotes
from engine.backtest import BacktestResult, load_backtest, run_backtest

N = 30_000


async def _run(executor: str, per_tick: bool) -> BacktestResult:
    system, _ = load_backtest("config/reference.toml", executor=executor, per_tick=per_tick)
    return await run_backtest(system, reference_quotes(N, chunk_rows=4_096))


@pytest.mark.parametrize(
    ("executor", "per_tick"), [("tasks", False), ("inline", True), ("tasks", True)]
)
async def test_every_executor_and_delivery_gives_the_same_run(
    executor: str, per_tick: bool
) -> None:
    reference = await _run("inline", per_tick=False)
    other = await _run(executor, per_tick=per_tick)
    assert reference.fills > 1_000
    assert other.events_sha256 == reference.events_sha256
    assert other.fills == reference.fills
    assert other.final_balance == reference.final_balance
    assert other.max_drawdown == reference.max_drawdown
    assert other.positions == reference.positions


async def test_inline_executor_counts_messages_like_the_task_executor() -> None:
    inline = await _run("inline", per_tick=False)
    tasks = await _run("tasks", per_tick=False)
    processed = {a["name"]: a["processed"] for a in inline.actors}
    assert processed == {a["name"]: a["processed"] for a in tasks.actors}
    # every order went through risk, router, venue; the event log saw request, ack and fill
    assert processed["router"] == inline.orders
    assert processed["events"] == 3 * inline.orders
