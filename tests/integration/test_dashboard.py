"""The dashboard's routes on a real loopback socket, driven by aiohttp's client: the page
and its files, the WebSocket's first frame and the updates after it, and how sockets end
(the page leaves, the daemon's stream ends, a query fails, the application shuts down)
without leaving a task or an update stream behind."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSCloseCode, WSMsgType

from adapters.dashboard import ASSETS, SNAPSHOT_QUERIES, load_asset
from tests.dashboard_double import DashboardDouble, serve_dashboard
from tests.helpers import eventually


async def _frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5.0)
    assert msg.type == WSMsgType.TEXT, f"expected a text frame, got {msg.type!r} {msg.data!r}"
    frame: dict[str, Any] = orjson.loads(msg.data)
    return frame


async def _frame_of_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(5.0):
        while True:
            frame = await _frame(ws)
            if frame["type"] == kind:
                return frame


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server's close; return its code."""
    async with asyncio.timeout(5.0):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return ws.close_code


def _other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_the_page_and_its_files_are_served_with_a_same_origin_policy() -> None:
    double = DashboardDouble()
    async with serve_dashboard(double) as base, aiohttp.ClientSession() as http:
        for path, (name, content_type) in ASSETS.items():
            async with http.get(base + path) as response:
                assert response.status == 200, path
                assert response.content_type == content_type
                assert response.charset == "utf-8"
                assert await response.read() == load_asset(name)
                csp = response.headers["Content-Security-Policy"]
                assert "default-src 'none'" in csp
                assert "connect-src 'self'" in csp
                assert response.headers["Referrer-Policy"] == "no-referrer"
                etag = response.headers["ETag"]
            async with http.get(base + path, headers={"If-None-Match": etag}) as again:
                assert again.status == 304
                assert await again.read() == b""
        async with http.get(base + "/dashboard/nothing.js") as missing:
            assert missing.status == 404


async def test_a_new_socket_gets_every_query_first_then_the_updates_in_order() -> None:
    double = DashboardDouble(interval=0.05)
    async with (
        serve_dashboard(double) as base,
        aiohttp.ClientSession() as http,
        http.ws_connect(base + "/ws") as ws,
    ):
        first = await _frame(ws)
        assert first["type"] == "snapshot"
        assert first["full"] is True
        for name in SNAPSHOT_QUERIES:
            expected = await double.query(name, {})
            assert first[name] == (expected["alerts"] if name == "alerts" else expected)
        assert first["alerts"][0]["rule"] == "var_limit"

        # Periodic snapshots follow, and they carry what the controller holds now.
        double.set_equity(1_234_567.89)
        snap = await _frame_of_type(ws, "snapshot")
        for _ in range(5):
            if snap["pnl"]["equity"] == 1_234_567.89:
                break
            snap = await _frame_of_type(ws, "snapshot")
        assert snap["pnl"]["equity"] == 1_234_567.89
        assert snap["status"]["equity"] == 1_234_567.89
        assert "full" not in snap

        # Events come as they happen, in the order they happened.
        fill = double.add_fill("MSFT", "BUY", 50.0, 410.25)
        double.raise_alert(40, "gross_leverage", "gross leverage over its limit")
        got_fill = await _frame_of_type(ws, "fill")
        assert got_fill == {"type": "fill", **fill}
        got_alert = await _frame_of_type(ws, "alert")
        assert got_alert["message"] == "gross leverage over its limit"
        assert got_alert["level"] == 40


async def test_a_page_that_leaves_ends_its_update_stream_and_leaves_no_task() -> None:
    double = DashboardDouble(interval=0.05)
    async with serve_dashboard(double) as base, aiohttp.ClientSession() as http:
        before = _other_tasks()
        async with http.ws_connect(base + "/ws") as ws:
            await _frame(ws)
            await _frame_of_type(ws, "snapshot")
            assert double.open_streams == 1
        await eventually(lambda: double.open_streams == 0, message="update stream closed")
        await eventually(
            lambda: not (_other_tasks() - before), message="no task left after the socket"
        )
    assert double.subscriptions == 1


async def test_shutdown_closes_every_socket_with_going_away() -> None:
    double = DashboardDouble(interval=0.05)
    async with aiohttp.ClientSession() as http:
        async with serve_dashboard(double) as base:
            sockets = [await http.ws_connect(base + "/ws") for _ in range(3)]
            for ws in sockets:
                await _frame(ws)
            await eventually(lambda: double.open_streams == 3)
            closes = [asyncio.ensure_future(_closed_with(ws)) for ws in sockets]
        # Leaving serve_dashboard ran the application's shutdown and cleanup.
        assert await asyncio.gather(*closes) == [WSCloseCode.GOING_AWAY] * 3
        assert double.open_streams == 0
        for ws in sockets:
            await ws.close()


async def test_when_the_daemon_ends_the_stream_the_socket_closes_going_away() -> None:
    double = DashboardDouble(interval=0.05)
    async with serve_dashboard(double) as base, aiohttp.ClientSession() as http:
        async with http.ws_connect(base + "/ws") as ws:
            await _frame(ws)
            await eventually(lambda: double.open_streams == 1)
            double.end_streams()
            assert await _closed_with(ws) == WSCloseCode.GOING_AWAY
        # A new socket starts a new stream.
        async with http.ws_connect(base + "/ws") as ws:
            assert (await _frame(ws))["full"] is True
        assert double.subscriptions == 2


async def test_a_failing_query_closes_the_socket_with_internal_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    double = DashboardDouble(interval=0.05)
    double.failing_query = "risk"
    async with serve_dashboard(double) as base, aiohttp.ClientSession() as http:
        async with http.ws_connect(base + "/ws") as ws:
            assert await _closed_with(ws) == WSCloseCode.INTERNAL_ERROR
        await eventually(lambda: double.open_streams == 0)
        # It recovers as soon as the query does: the page's reconnect gets a snapshot.
        double.failing_query = None
        async with http.ws_connect(base + "/ws") as ws:
            assert (await _frame(ws))["risk"]["var"] == 18_250.0
    captured = capsys.readouterr()
    assert "the risk query failed in the test double" in captured.out + captured.err


async def test_a_frame_that_is_not_json_is_skipped_and_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    double = DashboardDouble(interval=10.0)
    async with (
        serve_dashboard(double) as base,
        aiohttp.ClientSession() as http,
        http.ws_connect(base + "/ws") as ws,
    ):
        await _frame(ws)
        await eventually(lambda: double.open_streams == 1)
        double.publish({"type": "alert", "figures": {"bad": object()}})
        double.raise_alert(30, "after", "the next alert still arrives")
        frame = await _frame(ws)
        assert frame["rule"] == "after"
    captured = capsys.readouterr()
    assert "dashboard_update_not_json" in captured.out + captured.err
