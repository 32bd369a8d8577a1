"""engine.mirror.MirrorState: what the Redis mirror holds in memory and marks for writing,
with no Redis (the adapter's tests run it against real servers)."""

from __future__ import annotations

import msgspec
import numpy as np

from engine.messages import (
    Alert,
    AlertLevel,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRequest,
    PortfolioSnapshot,
    PositionRow,
    Side,
)
from engine.mirror import MirrorState, StreamGap
from engine.ticks import empty_quotes

IDS = {"strategy_id": "s", "instrument_id": "EURUSD.SIM"}


def _request(coid: str, ts: int = 1) -> OrderRequest:
    return OrderRequest(
        client_order_id=coid, side=Side.BUY, quantity=3.0, ts_event=ts, ts_init=ts, **IDS
    )


def _fill(coid: str, qty: float, px: float, leaves: float) -> OrderPartiallyFilled:
    cls = OrderFilled if leaves == 0.0 else OrderPartiallyFilled
    return cls(
        client_order_id=coid,
        venue_order_id="v",
        trade_id=f"t{qty}",
        side=Side.BUY,
        last_qty=qty,
        last_px=px,
        leaves_qty=leaves,
        commission=0.0,
        commission_currency="USD",
        liquidity="TAKER",
        ts_event=2,
        ts_init=2,
        **IDS,
    )


def _alert(ts: int) -> Alert:
    return Alert(level=AlertLevel.INFO, source="x", rule="r", message="m", ts_event=ts, ts_init=ts)


def test_an_order_lives_from_its_request_to_its_last_fill() -> None:
    state = MirrorState(queue_limit=100)
    state.order_request(_request("a"))
    assert state.orders["a"]["status"] == "PENDING" and state.dirty_orders == {"a"}
    state.order_event(
        OrderAccepted(client_order_id="a", venue_order_id="v", ts_event=2, ts_init=2, **IDS)
    )
    state.order_event(_fill("a", 1.0, 10.0, 2.0))
    state.order_event(_fill("a", 1.0, 13.0, 1.0))
    order = state.orders["a"]
    assert (order["status"], order["filled_qty"], order["leaves_qty"]) == (
        "PARTIALLY_FILLED",
        2.0,
        1.0,
    )
    assert order["avg_px"] == 11.5
    state.dirty_orders.clear()
    state.order_event(_fill("a", 1.0, 11.0, 0.0))
    assert "a" not in state.orders and state.dirty_orders == {"a"}  # to be deleted
    assert [e[0] for e in state.events] == [  # type: ignore[index]
        "OrderRequest",
        "OrderAccepted",
        "OrderPartiallyFilled",
        "OrderPartiallyFilled",
        "OrderFilled",
    ]


def test_a_request_arriving_after_its_order_ended_does_not_reopen_it() -> None:
    state = MirrorState(queue_limit=100)
    state.order_event(OrderCancelled(client_order_id="b", ts_event=2, ts_init=2, **IDS))
    state.order_request(_request("b"))
    assert state.orders == {}


def test_past_the_queue_limit_events_are_dropped_and_a_gap_marks_where() -> None:
    state = MirrorState(queue_limit=2)
    for ts in range(1, 6):
        state.event(_alert(ts))
    assert state.queued == 2 and state.events_dropped == 3
    gap = state.events[-1]
    assert isinstance(gap, StreamGap)
    assert (gap.count, gap.first_ts, gap.last_ts) == (3, 3, 5)
    assert msgspec.json.decode(gap.body()) == {"dropped": 3, "first_ts": 3, "last_ts": 5}
    # written: room again; a gap being written is closed, later drops make a new one
    gap.closed = True
    assert state.written(1) == 1
    state.event(_alert(6))
    state.event(_alert(7))
    assert state.events_dropped == 4
    assert isinstance(state.events[-1], StreamGap) and state.events[-1] is not gap
    assert state.written(len(state.events)) == 2
    assert state.queued == 0 and not state.events


def test_a_batch_leaves_the_last_quote_of_each_instrument() -> None:
    state = MirrorState(queue_limit=1)
    batch = empty_quotes(4)
    batch["instrument"] = [0, 1, 0, 1]
    batch["bid"] = [1.0, 2.0, 3.0, 4.0]
    batch["ask"] = batch["bid"] + 0.5
    batch["ts_event"] = np.arange(4)
    state.quote_batch(batch, ("A", "B"))
    assert state.quotes["A"]["bid"] == 3.0 and state.quotes["A"]["ts"] == 2
    assert state.quotes["B"]["ask"] == 4.5 and state.quotes["B"]["ts"] == 3
    assert state.dirty_quotes == {"A", "B"}


def test_a_snapshot_marks_only_the_positions_that_changed() -> None:
    def snap(qty_b: float) -> PortfolioSnapshot:
        rows = [
            PositionRow(
                instrument_id=i,
                quantity=q,
                avg_price=1.0,
                mark=None,
                unrealized_pnl=0.0,
                realized_pnl=0.0,
            )
            for i, q in (("A", 1.0), ("B", qty_b))
        ]
        return PortfolioSnapshot(
            currency="USD",
            balance=1.0,
            equity=1.0,
            realized_pnl=0.0,
            unrealized_pnl=0.0,
            commissions=0.0,
            max_drawdown=0.0,
            fills=0,
            positions=rows,
            ts_event=1,
            ts_init=1,
        )

    state = MirrorState(queue_limit=1)
    state.snapshot(snap(2.0))
    assert state.dirty_positions == {"A", "B"} and state.dirty_pnl
    state.clean()
    state.snapshot(snap(3.0))
    assert state.dirty_positions == {"B"}
    assert msgspec.json.decode(state.positions["B"], type=PositionRow).quantity == 3.0
