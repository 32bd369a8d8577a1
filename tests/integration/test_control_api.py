"""The control API over a real Unix socket and real TCP on loopback, in front of the API's
test double (tests/control_double.py): every query and command, who asked, the socket's
mode, errors, tokens and the browser's cookie."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web

from adapters import ctl
from adapters.control import COMMANDS, QUERIES
from adapters.control_api import (
    API_PREFIX,
    TOKEN_COOKIE,
    ControlServer,
    ControlServerError,
    build_app,
    start_control_server,
)
from engine.errors import ConfigError
from tests.control_double import ControllerDouble

SECRET = "correct-horse-battery-staple"
TOKENS = {"ops": SECRET}
ME = f"unix:uid={os.getuid()},pid={os.getpid()}"


class Served:
    def __init__(
        self, controller: ControllerDouble, server: ControlServer, unix: aiohttp.ClientSession
    ) -> None:
        self.controller = controller
        self.server = server
        self.unix = unix

    @property
    def tcp(self) -> str:
        return f"http://127.0.0.1:{self.server.tcp_port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.unix.get(f"http://localhost{path}") as r:
            return r.status, orjson.loads(await r.read())

    async def post(self, name: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        async with self.unix.post(f"http://localhost{API_PREFIX}/{name}", data=data) as r:
            return r.status, orjson.loads(await r.read())


def _dashboard(app: web.Application) -> None:
    """What the dashboard adds: routes at / and /ws, behind the same middleware."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"dashboard for {request['origin']}")

    app.router.add_get("/", page)
    app.router.add_get("/ws", page)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    controller = ControllerDouble()
    app = build_app(
        controller,
        tokens=TOKENS,
        metrics=lambda: (b"tradingd_up 1\n", "text/plain; version=0.0.4; charset=utf-8"),
    )
    _dashboard(app)
    # A permissive umask: the socket must come out 0600 whatever the umask is.
    old = os.umask(0)
    try:
        server = await start_control_server(
            app, unix_path=tmp_path / "control.sock", tcp=("127.0.0.1", 0)
        )
    finally:
        os.umask(old)
    connector = aiohttp.UnixConnector(path=str(server.unix_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Served(controller, server, session)
    await server.close()


@pytest.mark.parametrize("name", QUERIES)
async def test_every_query_round_trips(served: Served, name: str) -> None:
    status, body = await served.get(f"{API_PREFIX}/{name}")
    assert status == 200, body
    expected = orjson.loads(orjson.dumps(await served.controller.query(name, {})))
    assert body == expected


async def test_queries_take_their_arguments_from_the_query_string(served: Served) -> None:
    for _ in range(3):
        await served.post("halt", {"reason": "test"})
    status, body = await served.get(f"{API_PREFIX}/journal?n=2")
    assert status == 200
    assert len(body["records"]) == 2  # "2" arrived as the number 2
    status, body = await served.get(f"{API_PREFIX}/journal?n=zero")
    assert status == 400
    assert body == {"error": "n must be a whole number from 1 to 10000, got 'zero'"}


async def test_every_command_takes_effect_and_is_journaled_with_the_peer(served: Served) -> None:
    done: list[str] = []

    async def command(name: str, body: dict[str, Any]) -> Any:
        status, reply = await served.post(name, body)
        assert status == 200, reply
        assert reply["ok"] is True
        done.append(name)
        return reply

    async def query(name: str) -> Any:
        return (await served.get(f"{API_PREFIX}/{name}"))[1]

    await command("halt", {"reason": "news at 14:00"})
    status = await query("status")
    assert (status["trading_state"], status["trading_reason"]) == ("HALTED", "news at 14:00")
    await command("resume", {})
    assert (await query("status"))["trading_state"] == "ACTIVE"

    assert (await command("cancel", {"id": "ema-1-7"}))["cancelled"] == ["ema-1-7"]
    assert [o["client_order_id"] for o in (await query("orders"))["working"]] == ["ema-1-8"]

    await command("strategy.stop", {"name": "ema"})
    await command("strategy.start", {"name": "trend"})
    await command("strategy.set", {"name": "ema", "params": {"fast": 10}})
    running = {
        s["name"]: (s["running"], s["params"]) for s in (await query("strategies"))["strategies"]
    }
    assert running == {"ema": (False, {"fast": 10, "slow": 26}), "trend": (True, {"lookback": 50})}

    await command("limits.set", {"limits": {"security": {"max_position_fraction": 0.04}}})
    assert (await query("limits"))["security"]["max_position_fraction"] == 0.04

    reply = await command("flatten", {"instrument": "IBM.US"})
    assert reply["closed"] == ["IBM.US"]
    assert reply["cancelled"] == ["ema-1-8"]  # the instrument's working orders first
    assert [p["instrument"] for p in (await query("positions"))["positions"]] == ["EURUSD.FX"]
    await command("cancel", {"id": "all"})

    assert sorted(set(done)) == sorted(COMMANDS), "a command was left out"
    journal = served.controller.journal
    assert [r["name"] for r in journal] == done
    # Who: this process, as the kernel saw it connect over the socket.
    assert {r["origin"] for r in journal} == {ME}


async def test_the_socket_is_for_the_daemons_user_only(served: Served) -> None:
    st = served.server.unix_path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


@pytest.mark.parametrize(
    ("method", "name", "raw", "status", "words"),
    [
        ("POST", "hatl", b"{}", 404, "unknown query or command 'hatl'"),
        ("GET", "stauts", None, 404, "queries (GET) are status, positions"),
        ("GET", "halt", None, 405, "'halt' is a command: POST it"),
        ("POST", "status", b"{}", 405, "'status' is a query: GET it"),
        ("POST", "halt", b'{"reason": "x"', 400, "the body of 'halt' is not valid JSON"),
        ("POST", "halt", b"[1, 2]", 400, "must be a JSON object of arguments, got list"),
        ("POST", "halt", b'{"reasn": "x"}', 400, "halt does not take reasn; it takes reason"),
        ("POST", "resume", b"", 409, "trading is ACTIVE, not HALTED: nothing to resume"),
        ("POST", "cancel", b'{"id": "nope"}', 404, "no working order 'nope'; working: ema-1-7"),
        ("POST", "strategy.start", b'{"name": "x"}', 404, "the strategies are ema, trend"),
        (
            "POST",
            "strategy.set",
            b'{"name": "ema", "params": {"fast": "x"}}',
            400,
            "fast must be int",
        ),
        (
            "POST",
            "limits.set",
            b'{"limits": {"security": {"max_position_fraction": -1}}}',
            400,
            "max_position_fraction must be positive",
        ),
    ],
)
async def test_a_bad_request_gets_a_readable_error_and_its_status(
    served: Served, method: str, name: str, raw: bytes | None, status: int, words: str
) -> None:
    async with served.unix.request(method, f"http://localhost{API_PREFIX}/{name}", data=raw) as r:
        body = orjson.loads(await r.read())
        assert r.status == status, body
        allow = r.headers.get("Allow")
    assert words in body["error"]
    if status == 405:
        assert allow == ("POST" if name == "halt" else "GET, HEAD")
    if status == 404 and "unknown" in body["error"]:
        assert body["queries"] == list(QUERIES)
        assert body["commands"] == list(COMMANDS)


async def test_a_method_that_is_neither_get_nor_post_gets_405(served: Served) -> None:
    async with served.unix.delete(f"http://localhost{API_PREFIX}/halt") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "GET, HEAD, POST"
        assert "GET a query, POST a command" in (await r.json())["error"]
    assert served.controller.journal == []


async def test_a_bug_in_the_daemon_is_a_500_and_logged(served: Served) -> None:
    served.controller.fail_on = "pnl"
    with structlog.testing.capture_logs() as logs:
        status, body = await served.get(f"{API_PREFIX}/pnl")
    assert status == 500
    assert "RuntimeError: the double was told to fail on pnl" in body["error"]
    failed = [e for e in logs if e["event"] == "control.failed"]
    assert failed and failed[0]["name"] == "pnl" and failed[0]["log_level"] == "error"
    # The daemon is still serving.
    assert (await served.get(f"{API_PREFIX}/status"))[0] == 200


async def test_health_is_200_when_healthy_and_503_with_the_reasons(served: Served) -> None:
    status, body = await served.get("/health")
    assert (status, body["healthy"]) == (200, True)
    served.controller.healthy = False
    status, body = await served.get("/health")
    assert status == 503
    assert body["reasons"] == ["feed IBM.US silent for 42 s"]


async def test_metrics_carry_their_own_content_type(served: Served, tmp_path: Path) -> None:
    async with served.unix.get("http://localhost/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert await r.read() == b"tradingd_up 1\n"
    server = await start_control_server(
        build_app(ControllerDouble()), unix_path=tmp_path / "bare.sock"
    )
    try:
        connector = aiohttp.UnixConnector(path=str(server.unix_path))
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.get("http://localhost/metrics") as r,
        ):
            assert r.status == 404
    finally:
        await server.close()


# --- TCP and tokens ---------------------------------------------------------------------------


async def test_tcp_needs_a_token(served: Served) -> None:
    url = f"{served.tcp}{API_PREFIX}/status"
    async with aiohttp.ClientSession() as s:
        with structlog.testing.capture_logs() as logs:
            async with s.get(url) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert "a token is required" in (await r.json())["error"]
            async with s.get(url, headers={"Authorization": "Bearer wrong-secret"}) as r:
                assert r.status == 401
                assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
            async with s.post(
                f"{served.tcp}{API_PREFIX}/halt", headers={"Authorization": "Bearer nope"}
            ) as r:
                assert r.status == 401
        refused = [e for e in logs if e["event"] == "control.unauthorized"]
        assert [(e["path"], e["reason"], e["remote"]) for e in refused] == [
            (f"{API_PREFIX}/status", "no token", "127.0.0.1"),
            (f"{API_PREFIX}/status", "wrong token", "127.0.0.1"),
            (f"{API_PREFIX}/halt", "wrong token", "127.0.0.1"),
        ]
        assert "wrong-secret" not in repr(logs)
        assert served.controller.trading_state == "ACTIVE"  # the refused halt did nothing

        auth = {"Authorization": f"Bearer {SECRET}"}
        async with s.get(url, headers=auth) as r:
            assert r.status == 200
            assert (await r.json())["trading_state"] == "ACTIVE"
        async with s.post(f"{served.tcp}{API_PREFIX}/halt", headers=auth, json={}) as r:
            assert r.status == 200
    assert served.controller.journal[-1]["origin"] == "token:ops"
    assert served.controller.trading_state == "HALTED"


async def test_the_browser_logs_in_with_a_cookie(served: Served) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{served.tcp}/") as r:
            assert r.status == 401  # the dashboard is behind the token too
        with structlog.testing.capture_logs() as logs:
            async with s.get(f"{served.tcp}/?token=guess", allow_redirects=False) as r:
                assert r.status == 401
        assert "guess" not in repr(logs)
        async with s.get(f"{served.tcp}/?token={SECRET}", allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/"
            set_cookie = r.headers["Set-Cookie"]
        attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")}
        assert set_cookie.startswith(f"{TOKEN_COOKIE}={SECRET};")
        assert {"httponly", "samesite", "path"} <= attributes
        assert "SameSite=Strict" in set_cookie

        cookie = {"Cookie": f"{TOKEN_COOKIE}={SECRET}"}
        async with s.get(f"{served.tcp}/", headers=cookie) as r:
            assert (r.status, await r.text()) == (200, "dashboard for token:ops")
        async with s.get(f"{served.tcp}{API_PREFIX}/positions", headers=cookie) as r:
            assert r.status == 200
        # Another site's page cannot use the cookie (a WebSocket handshake included).
        cross = {**cookie, "Origin": "http://evil.example"}
        async with s.get(f"{served.tcp}/ws", headers=cross) as r:
            assert r.status == 403
        same = {**cookie, "Origin": served.tcp}
        async with s.get(f"{served.tcp}/ws", headers=same) as r:
            assert r.status == 200
        async with s.get(f"{served.tcp}/", headers={"Cookie": f"{TOKEN_COOKIE}=stale"}) as r:
            assert r.status == 401


async def test_the_socket_needs_no_token_and_the_dashboard_sees_the_peer(served: Served) -> None:
    async with served.unix.get("http://localhost/") as r:
        assert (r.status, await r.text()) == (200, f"dashboard for {ME}")


async def test_tcp_without_a_token_is_refused(tmp_path: Path) -> None:
    app = build_app(ControllerDouble())
    with pytest.raises(ConfigError, match="refusing to serve the control API on TCP"):
        await start_control_server(app, unix_path=tmp_path / "c.sock", tcp=("127.0.0.1", 0))
    assert not (tmp_path / "c.sock").exists()
    with pytest.raises(ConfigError, match="empty secret"):
        build_app(ControllerDouble(), tokens={"ops": ""})


# --- the socket file --------------------------------------------------------------------------


async def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # what a daemon killed with SIGKILL leaves behind
    dead.close()
    assert path.exists()
    server = await start_control_server(build_app(ControllerDouble()), unix_path=path)
    try:
        with pytest.raises(ControlServerError, match=rf"another daemon \(pid {os.getpid()}\)"):
            await start_control_server(build_app(ControllerDouble()), unix_path=path)
        # The refused start left the live daemon's socket alone.
        connector = aiohttp.UnixConnector(path=str(path))
        async with (
            aiohttp.ClientSession(connector=connector) as s,
            s.get(f"http://localhost{API_PREFIX}/status") as r,
        ):
            assert r.status == 200
    finally:
        await server.close()
    assert not path.exists()  # closing removes it

    path.write_text("not a socket")
    with pytest.raises(ControlServerError, match="exists and is not a socket"):
        await start_control_server(build_app(ControllerDouble()), unix_path=path)
    assert path.read_text() == "not a socket"


async def test_a_socket_path_too_long_is_named(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(ControlServerError, match="too long for a Unix socket"):
        await start_control_server(build_app(ControllerDouble()), unix_path=path)


def test_the_client_and_the_server_agree_on_the_prefix() -> None:
    assert ctl.API_PREFIX == API_PREFIX
