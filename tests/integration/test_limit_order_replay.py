"""Limit orders through the whole pipeline: resting orders make the simulated venue a
look-ahead scanner, so batched replay must cut where a resting order fills and still give
exactly what one tick at a time gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from adapters.reference_workload import reference_quotes
from engine.actor import Actor, ActorConfig
from engine.backtest import BacktestResult, load_backtest, run_backtest
from engine.messages import OrderFilled, OrderPartiallyFilled, OrderRequest, Side

ROOT = Path(__file__).resolve().parents[2]
N = 40_000


def _config(tmp_path: Path, latency_ms: float) -> Path:
    text = (ROOT / "config" / "reference.toml").read_text()
    text = text.replace(
        "quantity = 100_000.0",
        'quantity = 100_000.0\norder_type = "LIMIT"\nlimit_offset_ticks = 1',
    )
    text = text.replace('venue = "SIM"', f'venue = "SIM"\nlatency_ms = {latency_ms}')
    text = text.replace(
        "costs = { taker_rate = 0.00002 }", "costs = { taker_rate = 0.00002, maker_rate = 0.00001 }"
    )
    path = tmp_path / "limit.toml"
    path.write_text(text)
    return path


async def _run(config: Path, per_tick: bool, batch_size: int | None = None) -> BacktestResult:
    system, _ = load_backtest(config, per_tick=per_tick, batch_size=batch_size)
    return await run_backtest(system, reference_quotes(N, chunk_rows=5_000))


@pytest.mark.parametrize("latency_ms", [0.0, 250.0])
async def test_resting_limit_orders_replay_the_same_batched_and_per_tick(
    tmp_path: Path, latency_ms: float
) -> None:
    config = _config(tmp_path, latency_ms)
    batched = await _run(config, per_tick=False)
    per_tick = await _run(config, per_tick=True)
    small = await _run(config, per_tick=False, batch_size=37)
    # limit orders one increment away from the touch: most rest, then fill as makers
    assert batched.orders > 500
    assert 0 < batched.fills <= batched.orders
    maker_commission = batched.commissions
    assert maker_commission > 0
    for other in (per_tick, small):
        assert other.events_sha256 == batched.events_sha256
        assert other.fills == batched.fills
        assert other.final_balance == batched.final_balance
        assert other.positions == batched.positions


class Tape(Actor[ActorConfig]):
    """Records every order request and fill it is sent."""

    Config = ActorConfig
    outputs: ClassVar[tuple[str, ...]] = ()
    seen: ClassVar[list[Any]] = []

    def on_message(self, msg: Any) -> None:
        Tape.seen.append(msg)


async def test_limit_orders_fill_at_their_limit_price_or_better_never_worse(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, 0.0)
    config.write_text(
        config.read_text()
        + '\n[actors.tape]\nkind = "tests.integration.test_limit_order_replay:Tape"\n'
        '\n[[edges]]\nfrom = "ema.orders"\nto = "tape"\n'
        '\n[[edges]]\nfrom = "exchange.events"\nto = "tape"\n'
        'only = ["OrderFilled", "OrderPartiallyFilled"]\n'
    )
    Tape.seen = []
    await _run(config, per_tick=False)
    limits = {m.client_order_id: m.limit_price for m in Tape.seen if isinstance(m, OrderRequest)}
    fills = [m for m in Tape.seen if isinstance(m, OrderFilled | OrderPartiallyFilled)]
    assert len(fills) > 100
    makers = 0
    for fill in fills:
        limit = limits[fill.client_order_id]
        assert limit is not None
        if fill.side is Side.BUY:
            assert fill.last_px <= limit
        else:
            assert fill.last_px >= limit
        if fill.liquidity == "MAKER":
            makers += 1
            assert fill.last_px == limit  # a resting order trades at its own price
    assert makers > len(fills) // 2  # one tick away from the touch: most of them rest first
