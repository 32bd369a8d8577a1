"""The dashboard: one web page served by the daemon, kept live over a WebSocket.

:func:`add_dashboard_routes` adds to an aiohttp application (the control API's, which
brings the authentication):

``GET /``
    the page (``adapters/dashboard/index.html``).
``GET /dashboard/app.js``, ``GET /dashboard/app.css``
    its script and style sheet.
``GET /ws``
    the WebSocket. On connect it sends one full snapshot, taken from
    :meth:`Controller.query` (``{"type": "snapshot", "full": true, "status", "pnl",
    "risk", "positions", "orders", "actors", "health", "alerts"}``), then forwards every
    value :meth:`Controller.updates` yields, each as one JSON text frame.

The page needs nothing from another host: no CDN, no web font, no build step. The files
are package data, read once when the routes are added, and served with a Content Security
Policy that lets the page talk to its own origin only.

Each socket is owned by its request handler: one task forwards updates while the handler
reads the socket until it closes, both inside one :class:`asyncio.TaskGroup`, so when the
handler returns nothing of it is left running and the controller's update stream has been
closed. Protocol pings (every :data:`HEARTBEAT_S`) drop a peer that stopped answering;
on application shutdown every open socket is closed with 1001 (going away), which the page
takes as its cue to reconnect with back-off.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from adapters.control import Controller

__all__ = [
    "ASSETS",
    "CLOSE_TIMEOUT_S",
    "HEARTBEAT_S",
    "SNAPSHOT_QUERIES",
    "DashboardAssetError",
    "add_dashboard_routes",
    "full_snapshot",
    "load_asset",
]

log = structlog.get_logger("tradingd.dashboard")

HEARTBEAT_S = 10.0
"""Seconds between protocol pings; a peer that has not answered within half of it is
dropped (aiohttp's heartbeat)."""

CLOSE_TIMEOUT_S = 2.0
"""Seconds a closing socket waits for the peer's close frame before dropping the
connection."""

SNAPSHOT_QUERIES = ("status", "pnl", "risk", "positions", "orders", "actors", "health", "alerts")
"""The queries the first frame on a new socket is built from, each under its own key."""

ASSETS = {
    "/": ("index.html", "text/html"),
    "/dashboard/app.js": ("app.js", "text/javascript"),
    "/dashboard/app.css": ("app.css", "text/css"),
}
"""URL path -> (file in ``adapters/dashboard/``, content type)."""

# The page may load its own script, style and (data:) favicon and open a socket to its own
# origin; nothing else. A stray external reference then fails loudly in the browser rather
# than quietly needing the internet at 3 a.m.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    # The page may have been opened as /?token=...: never pass that on.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class DashboardAssetError(RuntimeError):
    """A file of the page is missing from the installed package."""


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def load_asset(name: str) -> bytes:
    """The bytes of ``adapters/dashboard/<name>`` as installed."""
    try:
        return resources.files("adapters").joinpath("dashboard", name).read_bytes()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DashboardAssetError(
            f"the dashboard file adapters/dashboard/{name} is missing from the installed "
            "tradingd package; reinstall it (pip install .) so its package data is included"
        ) from exc


def _load_assets() -> dict[str, _Asset]:
    assets = {}
    for path, (name, content_type) in ASSETS.items():
        body = load_asset(name)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[path] = _Asset(body, content_type, etag)
    return assets


def _asset_handler(asset: _Asset) -> _Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        headers = {**_SECURITY_HEADERS, "ETag": asset.etag}
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
        )

    return serve


async def full_snapshot(controller: Controller) -> dict[str, Any]:
    """The first frame a new socket gets: every query in :data:`SNAPSHOT_QUERIES`.

    ``alerts`` is the list itself (the ``alerts`` query's ``"alerts"`` value), so the page
    treats it like a run of ``alert`` frames.
    """
    frame: dict[str, Any] = {"type": "snapshot", "full": True}
    for name in SNAPSHOT_QUERIES:
        answer = await controller.query(name, {})
        frame[name] = answer.get("alerts", []) if name == "alerts" else answer
    return frame


def _encode(value: dict[str, Any]) -> str | None:
    try:
        return orjson.dumps(value, option=_JSON_OPTIONS).decode()
    except TypeError as exc:
        # A controller bug; one bad frame should not cost the operator the whole page.
        log.error("dashboard_update_not_json", error=str(exc), update_type=value.get("type", "?"))
        return None


async def _forward_updates(ws: web.WebSocketResponse, controller: Controller) -> None:
    """Send the full snapshot, then every update, until the stream ends (return) or the
    socket closes (return, or cancelled by the handler)."""
    updates = controller.updates()
    try:
        first = _encode(await full_snapshot(controller))
        if first is not None:
            await ws.send_str(first)
        async for update in updates:
            if ws.closed:
                return
            text = _encode(update)
            if text is not None:
                # Waits while the peer's buffer is full: a slow page slows its own stream
                # (which the controller bounds per subscriber), never the daemon.
                await ws.send_str(text)
    except ConnectionResetError:
        # The peer went away between the check and the write; the reader sees it too.
        return
    finally:
        await _close_stream(updates)


async def _close_stream(updates: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(updates, "aclose", None)
    if aclose is not None:
        await aclose()


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the page sends, so pings, pongs and the close handshake are
    processed; return when the socket is closing."""
    async for msg in ws:
        if msg.type == WSMsgType.ERROR:
            log.info("dashboard_socket_error", error=str(ws.exception()))
            return


def _socket_handler(controller: Controller, sockets: set[web.WebSocketResponse]) -> _Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S, max_msg_size=64 * 1024
        )
        await ws.prepare(request)
        sockets.add(ws)
        log.info("dashboard_connected", peer=request.remote, open=len(sockets))
        code, reason = WSCloseCode.GOING_AWAY, b"update stream ended"
        try:
            async with asyncio.TaskGroup() as tasks:
                sender = tasks.create_task(_forward_updates(ws, controller))
                reader = tasks.create_task(_read_until_closed(ws))
                # Whichever ends first ends the socket: the page left (reader) or the
                # daemon's stream ended (sender). The other is not needed any more.
                await asyncio.wait((sender, reader), return_when=asyncio.FIRST_COMPLETED)
                sender.cancel()
                reader.cancel()
        except* Exception as group:
            # A failing query or update stream: tell the page (1011); it reconnects.
            log.error("dashboard_socket_failed", error="; ".join(repr(e) for e in group.exceptions))
            code, reason = WSCloseCode.INTERNAL_ERROR, b"dashboard error"
        finally:
            sockets.discard(ws)
            if not ws.closed:
                await ws.close(code=code, message=reason)
            log.info("dashboard_disconnected", peer=request.remote, open=len(sockets))
        return ws

    return serve


def _socket_closer(
    sockets: set[web.WebSocketResponse],
) -> Callable[[web.Application], Awaitable[None]]:
    async def close_all(app: web.Application) -> None:
        # Together, so one peer slow to answer the close does not hold up the others.
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"daemon shutting down")
                for ws in list(sockets)
            )
        )

    return close_all


def add_dashboard_routes(app: web.Application, controller: Controller) -> None:
    """Serve the dashboard from ``app``: the page at ``/``, its files under
    ``/dashboard/``, and its live feed at ``/ws``.

    Raises :class:`DashboardAssetError` at once when a file of the page is not installed,
    rather than when the first browser asks for it.
    """
    assets = _load_assets()
    sockets: set[web.WebSocketResponse] = set()
    for path, asset in assets.items():
        app.router.add_get(path, _asset_handler(asset))
    app.router.add_get("/ws", _socket_handler(controller, sockets))
    app.on_shutdown.append(_socket_closer(sockets))
