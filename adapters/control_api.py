"""The control API: the :class:`~adapters.control.Controller` over HTTP, on a Unix socket and,
optionally, on TCP with a token.

Routes (every reply is JSON unless said otherwise)::

    GET  /api/v1/{query}     a query of adapters.control.QUERIES; the query string gives the
                             arguments (each value parsed as JSON when it parses: ?n=50 -> 50)
    POST /api/v1/{command}   a command of adapters.control.COMMANDS; the JSON body (an object,
                             or nothing) gives the arguments
    GET  /health             200 {"healthy": true, ...} or 503 with the reasons
    GET  /metrics            the metrics exposition (404 when the daemon has none)

``/`` and ``/ws`` are left to the dashboard (``add_dashboard_routes(app, controller)``); the
authentication middleware covers them like everything else.

**Who.** Every request gets ``request["origin"]``, which every command is passed as the
``origin`` the controller journals:

- on the Unix socket, the peer's credentials from the kernel (``SO_PEERCRED``):
  ``unix:uid=1000,pid=4242``. No token: the socket file's mode (0600, the daemon's user
  only) is the protection.
- on TCP, a token is required, as ``Authorization: Bearer <secret>`` or as the cookie
  ``tradingd_token`` that ``GET /?token=<secret>`` sets for a browser (then redirects to
  ``/``, so the secret leaves the address bar). ``origin`` is ``token:<name>``. A missing or
  wrong token gets 401 and a log line (remote address and path, never the token).

Errors: a :class:`~adapters.control.ControlError` is ``{"error": message}`` with its status;
an unknown query or command 404 with the valid names; a body that is not a JSON object 400;
anything unexpected 500, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
import stat
import struct
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import web

from adapters.control import COMMANDS, QUERIES, ControlError, Controller
from engine.errors import ConfigError, TradingdError

__all__ = [
    "API_PREFIX",
    "CONTROLLER_KEY",
    "TOKEN_COOKIE",
    "ControlServer",
    "ControlServerError",
    "PeerCredentials",
    "build_app",
    "peer_credentials",
    "start_control_server",
]

API_PREFIX = "/api/v1"
TOKEN_COOKIE = "tradingd_token"
_SUN_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path) on Linux, the terminating NUL included
SOCKET_MODE = 0o600
"""Read and write for the daemon's user only: connecting to a Unix socket needs write
permission on its file, so no other user can talk to the daemon."""

Metrics = Callable[[], tuple[bytes, str]]

CONTROLLER_KEY: web.AppKey[Controller] = web.AppKey("controller")
"""Where the app keeps its controller (``request.app[CONTROLLER_KEY]``)."""
_TOKENS_KEY: web.AppKey[dict[str, str]] = web.AppKey("tokens")
_METRICS_KEY: web.AppKey[Metrics | None] = web.AppKey("metrics")


def _log() -> Any:
    # Looked up on each use rather than bound at import, so that logging configured later
    # (or captured by a test) applies.
    return structlog.get_logger("tradingd").bind(component="control_api")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlServerError(TradingdError):
    """The control server cannot start (its socket is in use, or cannot be made)."""

    code = "CONTROL_SERVER"


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The process at the other end of a Unix socket connection, as the kernel saw it when
    it connected (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int

    @property
    def origin(self) -> str:
        return f"unix:uid={self.uid},pid={self.pid}"


# --- replies ----------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # orjson writes NaN and infinities as null: a utilisation that cannot be measured is
    # NaN in the risk model, and must still give valid JSON.
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(
    message: str, status: int, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    return _json({"error": message, **extra}, status=status, headers=headers)


def _parse_value(text: str) -> Any:
    """A query-string or ``key=value`` value: JSON when it parses (``50``, ``true``,
    ``[1,2]``), else the text itself (``IBM.US``)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


# --- authentication ---------------------------------------------------------------------------


def peer_credentials(request: web.Request) -> PeerCredentials | None:
    """The peer's credentials when ``request`` came over a Unix socket, else None."""
    transport = request.transport
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def _token_name(tokens: Mapping[str, str], secret: str) -> str | None:
    """The name of the token whose secret is ``secret``. Every token is compared, in
    constant time, so neither the time taken nor which one matched tells anything."""
    given = secret.encode()
    found: str | None = None
    for name, expected in tokens.items():
        if hmac.compare_digest(given, expected.encode()) and found is None:
            found = name
    return found


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _unauthorized(request: web.Request, reason: str, message: str) -> web.Response:
    # The path without the query string: /?token=... must not put the secret in the log.
    _log().warning(
        "control.unauthorized",
        remote=request.remote,
        method=request.method,
        path=request.path,
        reason=reason,
    )
    challenge = 'Bearer realm="tradingd"'
    if reason == "wrong token":
        challenge += ', error="invalid_token"'
    return _json({"error": message}, status=401, headers={"WWW-Authenticate": challenge})


def _same_origin(request: web.Request) -> bool:
    """A browser request carrying the cookie comes from our own pages: an ``Origin`` header,
    when there is one, names this host. SameSite=Strict already keeps the cookie off
    cross-site requests; this also covers a WebSocket handshake from another site."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


_origin_key_seen = False


def _set_origin(request: web.Request, origin: str) -> None:
    """``request["origin"]``: a plain key, as the dashboard's handlers read it. Recent
    aiohttp warns, once per process, on the first plain key set on a request."""
    global _origin_key_seen  # noqa: PLW0603 - one flag for the process, like aiohttp's own
    if _origin_key_seen:
        request["origin"] = origin
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        request["origin"] = origin
    _origin_key_seen = True


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    peer = peer_credentials(request)
    if peer is not None:
        _set_origin(request, peer.origin)
        return await handler(request)

    tokens: dict[str, str] = request.app[_TOKENS_KEY]
    login = request.query.get("token") if request.path == "/" else None
    if login is not None:
        name = _token_name(tokens, login)
        if name is None:
            return _unauthorized(request, "wrong token", "wrong token")
        _log().info("control.login", remote=request.remote, token=name)
        # Redirect to / without the query, so the secret leaves the address bar and the
        # history. The cookie is HttpOnly (no script reads it) and SameSite=Strict (no
        # other site's page makes the browser send it). Not Secure: the TCP listener speaks
        # plain HTTP, where a Secure cookie would never be sent back.
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(TOKEN_COOKIE, login, httponly=True, samesite="Strict", path="/")
        return response

    secret = _bearer(request)
    by_cookie = False
    if secret is None:
        secret = request.cookies.get(TOKEN_COOKIE)
        by_cookie = secret is not None
    if secret is None:
        return _unauthorized(
            request,
            "no token",
            "a token is required over TCP: send 'Authorization: Bearer <secret>'",
        )
    name = _token_name(tokens, secret)
    if name is None:
        return _unauthorized(request, "wrong token", "wrong token")
    if by_cookie and not _same_origin(request):
        _log().warning(
            "control.cross_site",
            remote=request.remote,
            path=request.path,
            origin=request.headers.get("Origin"),
        )
        return _error("cross-site request refused", 403)
    _set_origin(request, f"token:{name}")
    return await handler(request)


# --- handlers ---------------------------------------------------------------------------------


def _unknown(name: str) -> web.Response:
    return _error(
        f"unknown query or command {name!r}: queries (GET) are {', '.join(QUERIES)}; "
        f"commands (POST) are {', '.join(COMMANDS)}",
        404,
        queries=list(QUERIES),
        commands=list(COMMANDS),
    )


async def _call(what: str, name: str, call: Awaitable[dict[str, Any]]) -> web.Response:
    try:
        reply = await call
    except ControlError as exc:
        status = exc.status if 400 <= exc.status <= 599 else 400
        return _error(str(exc), status)
    except Exception as exc:
        _log().exception("control.failed", kind=what, name=name)
        return _error(
            f"the daemon failed on {what} {name!r}: {type(exc).__name__}: {exc} "
            "(the daemon's log has the details)",
            500,
        )
    return _json(reply)


async def _api(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    controller = request.app[CONTROLLER_KEY]
    if request.method in ("GET", "HEAD"):
        if name in COMMANDS:
            return _error(f"{name!r} is a command: POST it", 405, {"Allow": "POST"})
        if name not in QUERIES:
            return _unknown(name)
        args = {key: _parse_value(value) for key, value in request.query.items()}
        return await _call("query", name, controller.query(name, args))
    if name in QUERIES:
        return _error(f"{name!r} is a query: GET it", 405, {"Allow": "GET, HEAD"})
    if name not in COMMANDS:
        return _unknown(name)
    raw = await request.read()
    body: Any = {}
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(f"the body of {name!r} is not valid JSON: {exc}", 400)
    if not isinstance(body, dict):
        return _error(
            f"the body of {name!r} must be a JSON object of arguments, got {type(body).__name__}",
            400,
        )
    _log().info("control.command", name=name, origin=request["origin"])
    return await _call("command", name, controller.command(name, body, request["origin"]))


async def _wrong_method(request: web.Request) -> web.StreamResponse:
    return _error(
        f"{request.method} is not allowed here: GET a query, POST a command",
        405,
        {"Allow": "GET, HEAD, POST"},
    )


async def _health(request: web.Request) -> web.StreamResponse:
    try:
        reply = await request.app[CONTROLLER_KEY].query("health", {})
    except Exception as exc:
        _log().exception("control.failed", kind="query", name="health")
        reply = {"healthy": False, "reasons": [f"the health check failed: {exc}"], "checks": {}}
    return _json(reply, status=200 if reply.get("healthy") is True else 503)


async def _metrics(request: web.Request) -> web.StreamResponse:
    metrics = request.app[_METRICS_KEY]
    if metrics is None:
        return _error("this daemon exposes no metrics", 404)
    body, content_type = metrics()
    # Set as a header: the Prometheus type carries parameters (version, charset) that
    # aiohttp's content_type argument refuses.
    return web.Response(body=body, headers={"Content-Type": content_type})


def _check_tokens(tokens: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, secret in tokens.items():
        if not name or not isinstance(secret, str) or not secret.strip():
            raise ConfigError(f"the control token {name!r} has an empty secret", path="tokens")
        if secret != secret.strip():
            raise ConfigError(
                f"the control token {name!r} starts or ends with whitespace", path="tokens"
            )
        checked[name] = secret
    return checked


def build_app(
    controller: Controller,
    *,
    tokens: Mapping[str, str] | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """The control API over ``controller``. ``tokens`` maps a token's name to its secret
    (required on TCP only); ``metrics`` returns the metrics body and its content type."""
    app = web.Application(middlewares=[_authenticate])
    app[CONTROLLER_KEY] = controller
    app[_TOKENS_KEY] = _check_tokens(tokens or {})
    app[_METRICS_KEY] = metrics
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("GET", API_PREFIX + "/{name}", _api)
    app.router.add_route("POST", API_PREFIX + "/{name}", _api)
    app.router.add_route("*", API_PREFIX + "/{name}", _wrong_method)
    return app


# --- the server -------------------------------------------------------------------------------


@dataclass(slots=True)
class ControlServer:
    """The running control API. ``tcp_port`` is the bound TCP port (None without TCP)."""

    runner: web.AppRunner
    unix_path: Path
    tcp_port: int | None
    inode: tuple[int, int] = field(default=(0, 0), repr=False)

    async def close(self) -> None:
        """Stop serving and remove the socket file (if it is still ours)."""
        await self.runner.cleanup()
        _remove_if_ours(self.unix_path, self.inode)


def _remove_if_ours(path: Path, inode: tuple[int, int]) -> None:
    """Remove the socket file we bound, and not one another daemon has bound since."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if (st.st_dev, st.st_ino) == inode:
            path.unlink()


def _existing_socket(path: Path) -> bool:
    """Whether a socket file is at ``path``; an error if something else is."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlServerError(
            f"{path} exists and is not a socket; move it away or choose another state directory"
        )
    return True


async def _check_stale_socket(path: Path) -> None:
    """Remove a socket file left by a daemon that died; refuse if a live one answers."""
    if not _existing_socket(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(probe, str(path)), 2.0)
    except ConnectionRefusedError:
        _log().warning("control.stale_socket_removed", path=str(path))
        os.unlink(path)
        return
    except TimeoutError as exc:
        # A listener whose backlog is full is alive, just busy.
        raise ControlServerError(
            f"another process is listening on {path} (it did not accept within 2 s); "
            "is another tradingd running with this state directory?"
        ) from exc
    except PermissionError as exc:
        raise ControlServerError(f"cannot check {path}: {exc}") from exc
    else:
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _, _ = struct.unpack("3i", raw)
        raise ControlServerError(
            f"another daemon (pid {pid}) is answering on {path}; stop it first, or give this "
            "one another state directory"
        )
    finally:
        probe.close()


def _bind_unix(path: Path) -> socket.socket:
    """A Unix socket bound at ``path`` with mode 0600, not yet listening.

    The mode is set with chmod between bind() and listen(): until listen() every connect()
    is refused, so no one can connect while the file still has the umask's mode. Setting the
    umask instead would change it for the whole process (every thread, and every task that
    runs while the server starts) for that moment; chmod after a listening start would leave
    a window open.
    """
    if len(os.fsencode(path)) >= _SUN_PATH_MAX:
        raise ControlServerError(
            f"the control socket path {path} is too long for a Unix socket "
            f"(at most {_SUN_PATH_MAX - 1} bytes); use a shorter state directory"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_control_server(
    app: web.Application,
    *,
    unix_path: Path,
    tcp: tuple[str, int] | None = None,
    tokens: Mapping[str, str] | None = None,
) -> ControlServer:
    """Serve ``app`` on the Unix socket ``unix_path`` and, when ``tcp`` = (host, port) is
    given, on TCP (port 0: any free port; see ``ControlServer.tcp_port``).

    ``tokens`` replaces the tokens given to :func:`build_app` when not None. TCP is refused
    without at least one token (``ConfigError``). A socket file left by a daemon that died is
    removed; one on which a live daemon answers is a ``ControlServerError``.
    """
    if tokens is not None:
        app[_TOKENS_KEY] = _check_tokens(tokens)
    if tcp is not None and not app[_TOKENS_KEY]:
        raise ConfigError(
            f"refusing to serve the control API on TCP {tcp[0]}:{tcp[1]} without a token: "
            "anyone who can reach the port could trade; configure at least one token, or "
            "use the Unix socket only",
            path="tokens",
        )
    unix_path = Path(unix_path)
    unix_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    await _check_stale_socket(unix_path)

    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    inode = (0, 0)
    try:
        sock = _bind_unix(unix_path)
        st = unix_path.lstat()
        inode = (st.st_dev, st.st_ino)
        await web.SockSite(runner, sock).start()
        tcp_port: int | None = None
        if tcp is not None:
            await web.TCPSite(runner, tcp[0], tcp[1]).start()
            # The port bound: the one asked for, or the one the system chose for port 0.
            tcp_port = next(int(a[1]) for a in runner.addresses if isinstance(a, tuple))
    except BaseException:
        await runner.cleanup()
        _remove_if_ours(unix_path, inode)
        raise
    _log().info(
        "control.listening",
        unix=str(unix_path),
        tcp=None if tcp is None else f"{tcp[0]}:{tcp_port}",
        tokens=sorted(app[_TOKENS_KEY].keys()),
    )
    return ControlServer(runner=runner, unix_path=unix_path, tcp_port=tcp_port, inode=inode)
