"""``tradingd ctl``: talk to a running daemon through its control API.

    tradingd ctl status                         the daemon, its trading state, equity
    tradingd ctl positions | orders | pnl | risk
    tradingd ctl halt --reason "news"           stop new risk; resume undoes it
    tradingd ctl flatten [INSTRUMENT]           cancel working orders, close positions
    tradingd ctl cancel ID|all
    tradingd ctl strategy list | start NAME | stop NAME | set NAME fast=12 slow=40
    tradingd ctl limits show | set security.max_position_fraction=0.04 [--reason TEXT]
    tradingd ctl journal tail [-n 50]
    tradingd ctl health                         exit 0 healthy, 1 unhealthy

The daemon is reached on its Unix socket (``--socket``, default
``$STATE_DIRECTORY/control.sock``, else ``./state/control.sock``) or over TCP (``--url``
with a token from ``--token-file`` or ``$TRADINGD_TOKEN``). ``--json`` prints the daemon's
reply as it is, for scripts. Exit codes: see :data:`EXIT_CODES_HELP`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_DAEMON_ERROR",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAUTHORIZED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CtlError",
    "register",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 4
EXIT_DAEMON_ERROR = 5

EXIT_CODES_HELP = """\
exit codes:
  0  done (for health: the daemon is healthy)
  1  the daemon refused the command (the reason is printed on stderr);
     for health: the daemon is unhealthy
  2  usage error (a wrong command or argument)
  3  the daemon is unreachable (no socket, connection refused, no answer)
  4  unauthorized (no token or a wrong one; or no permission on the socket)
  5  the daemon failed on the request (an internal error: see its log)
"""

API_PREFIX = "/api/v1"
"""As ``adapters.control_api.API_PREFIX`` (a test keeps them equal); not imported from
there, so that the client does not load the HTTP server (aiohttp) on every call."""
TOKEN_ENV = "TRADINGD_TOKEN"
SOCKET_NAME = "control.sock"


class CtlError(Exception):
    """The request did not give an answer to print; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- talking to the daemon --------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def default_socket() -> Path:
    """``$STATE_DIRECTORY/control.sock`` (the first directory, as systemd may list several),
    else ``./state/control.sock``."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state or "state") / SOCKET_NAME


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any


@dataclass(slots=True)
class Daemon:
    """Where the daemon is and how to ask it."""

    socket_path: Path | None
    url: str | None
    token: str | None
    timeout: float

    def where(self) -> str:
        return str(self.url) if self.url is not None else f"the socket {self.socket_path}"

    def _connection(self) -> tuple[http.client.HTTPConnection, str]:
        if self.url is None:
            assert self.socket_path is not None
            return _UnixConnection(str(self.socket_path), self.timeout), ""
        parts = urlsplit(self.url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.netloc, timeout=self.timeout
            )
        else:
            conn = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
        return conn, parts.path.rstrip("/")

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        conn, prefix = self._connection()
        headers = {"Accept": "application/json"}
        if self.url is not None and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except FileNotFoundError as exc:
            raise CtlError(
                f"the daemon is not running: no control socket at {self.socket_path} "
                "(give --socket PATH, or set $STATE_DIRECTORY to the daemon's state directory)",
                EXIT_UNREACHABLE,
            ) from exc
        except ConnectionRefusedError as exc:
            what = (
                f"nothing is listening on {self.socket_path} (a daemon that stopped "
                "without cleaning up?)"
                if self.url is None
                else f"the connection to {self.url} was refused: is the daemon running "
                "with its control API on TCP?"
            )
            raise CtlError(what, EXIT_UNREACHABLE) from exc
        except PermissionError as exc:
            raise CtlError(
                f"no permission to connect to {self.socket_path}: the control socket is "
                "for the daemon's user only (run as that user)",
                EXIT_UNAUTHORIZED,
            ) from exc
        except TimeoutError as exc:
            raise CtlError(
                f"the daemon at {self.where()} did not answer within {self.timeout:g} s",
                EXIT_UNREACHABLE,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise CtlError(
                f"cannot reach the daemon at {self.where()}: {exc}", EXIT_UNREACHABLE
            ) from exc
        finally:
            conn.close()
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = raw.decode(errors="replace")
        return Reply(response.status, parsed)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The reply's body, or :class:`CtlError` with the exit code for its status."""
        reply = self.request(method, path, body)
        if reply.status < 400:
            return reply.body
        message = reply.body.get("error") if isinstance(reply.body, dict) else None
        message = message or str(reply.body or f"HTTP {reply.status}")
        if reply.status == 401:
            hint = f" (give --token-file FILE or set ${TOKEN_ENV})" if not self.token else ""
            raise CtlError(f"unauthorized: {message}{hint}", EXIT_UNAUTHORIZED)
        if reply.status >= 500:
            raise CtlError(f"the daemon failed: {message}", EXIT_DAEMON_ERROR)
        raise CtlError(f"refused: {message}", EXIT_REFUSED)

    def query(self, name: str, args: dict[str, Any] | None = None) -> Any:
        qs = f"?{urlencode(args)}" if args else ""
        return self.call("GET", f"{API_PREFIX}/{name}{qs}")

    def command(self, name: str, args: dict[str, Any]) -> Any:
        return self.call("POST", f"{API_PREFIX}/{name}", args)


# --- formatting -------------------------------------------------------------------------------


def money(x: Any) -> str:
    """``1,234,567.89``; ``-`` for a missing or unmeasurable figure."""
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return "-"
    return f"{x:,.2f}"


def number(x: Any) -> str:
    """A quantity or a price: thousands separators, no trailing zeros."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "-" if x is None else str(x)
    if not math.isfinite(x):
        return "-"
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.6f}".rstrip("0").rstrip(".")


def figure(x: Any) -> str:
    """A risk figure in its own unit (a fraction of NAV, leverage, days): 4 decimals."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "-" if x is None else str(x)
    if not math.isfinite(x):
        return "-"
    return f"{x:,.4f}".rstrip("0").rstrip(".")


def percent(x: Any) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return "-"
    return f"{x * 100:.1f}%"


def timestamp(ns: Any) -> str:
    if not isinstance(ns, int) or isinstance(ns, bool):
        return "-" if ns is None else str(ns)
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{s:02d}"


def _text(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, list) and all(isinstance(v, str | int | float) for v in x):
        return ", ".join(str(v) for v in x) or "none"
    if isinstance(x, dict | list):
        return orjson.dumps(x).decode()
    return str(x)


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    key: str
    fmt: Callable[[Any], str] = _text
    right: bool = False


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Aligned columns: text on the left, numbers on the right."""
    cells = [[c.fmt(row.get(c.key)) for c in columns] for row in rows]
    widths = [max([len(c.title), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if c.right else v.ljust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line([c.title for c in columns]), *(line(r) for r in cells)])


def pairs(items: Sequence[tuple[str, str]]) -> str:
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in items)


def flatten_dict(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"security": {"max_adv_days": 2}}`` -> ``[("security.max_adv_days", 2)]``."""
    if isinstance(data, dict) and data:
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out.extend(flatten_dict(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, data)]


def show_status(r: dict[str, Any]) -> str:
    state = str(r.get("trading_state", "-"))
    if r.get("trading_reason"):
        state += f" ({r['trading_reason']})"
    currency = r.get("currency", "")
    return pairs(
        [
            ("mode", _text(r.get("mode"))),
            ("daemon", _text(r.get("state"))),
            ("trading", state),
            ("uptime", duration(r.get("uptime_s"))),
            ("equity", f"{money(r.get('equity'))} {currency}".rstrip()),
            ("ticks", number(r.get("ticks"))),
            ("orders", number(r.get("orders"))),
            ("fills", number(r.get("fills"))),
            ("working orders", number(r.get("working_orders"))),
            ("summary", _text(r.get("summary"))),
        ]
    )


def show_positions(r: dict[str, Any]) -> str:
    rows = r.get("positions") or []
    if not rows:
        return "no positions"
    cols = [
        Column("instrument", "instrument"),
        Column("quantity", "quantity", number, right=True),
        Column("avg price", "avg_price", number, right=True),
        Column("mark", "mark", number, right=True),
        Column("market value", "market_value", money, right=True),
        Column("unrealized", "unrealized_pnl", money, right=True),
        Column("realized", "realized_pnl", money, right=True),
        Column("region", "region"),
        Column("class", "asset_class"),
        Column("sector", "sector"),
    ]
    total = {
        **{c.key: "" for c in cols},
        "instrument": "total",
        **{
            k: sum(float(p.get(k) or 0.0) for p in rows)
            for k in ("market_value", "unrealized_pnl", "realized_pnl")
        },
    }
    out = table([*rows, total], cols)
    return f"positions ({r.get('currency', '')})\n{out}"


def show_orders(r: dict[str, Any]) -> str:
    working = r.get("working") or []
    fills = r.get("fills") or []
    parts = []
    if working:
        parts.append(
            "working orders\n"
            + table(
                working,
                [
                    Column("id", "client_order_id"),
                    Column("strategy", "strategy"),
                    Column("instrument", "instrument"),
                    Column("side", "side"),
                    Column("quantity", "quantity", number, right=True),
                    Column("filled", "filled", number, right=True),
                    Column("price", "price", number, right=True),
                    Column("type", "order_type"),
                    Column("status", "status"),
                    Column("since", "ts", timestamp),
                ],
            )
        )
    else:
        parts.append("no working orders")
    if fills:
        parts.append(
            "last fills\n"
            + table(
                fills,
                [
                    Column("time", "ts", timestamp),
                    Column("id", "client_order_id"),
                    Column("strategy", "strategy"),
                    Column("instrument", "instrument"),
                    Column("side", "side"),
                    Column("quantity", "quantity", number, right=True),
                    Column("price", "price", number, right=True),
                    Column("commission", "commission", money, right=True),
                ],
            )
        )
    return "\n\n".join(parts)


def show_pnl(r: dict[str, Any]) -> str:
    c = r.get("currency", "")
    keys = ("equity", "balance", "realized", "unrealized", "commissions")
    figures = [money(r.get(k)) for k in keys]
    width = max(len(f) for f in figures)
    parts = [pairs([(k, f"{f:>{width}} {c}") for k, f in zip(keys, figures, strict=True)])]
    for key, title in (
        ("by_strategy", "strategy"),
        ("by_region", "region"),
        ("by_asset_class", "asset class"),
        ("by_instrument", "instrument"),
    ):
        groups = r.get(key) or {}
        if groups:
            rows = [{"name": k, "pnl": v} for k, v in groups.items()]
            parts.append(
                table(rows, [Column(title, "name"), Column(f"P&L ({c})", "pnl", money, True)])
            )
    return "\n\n".join(parts)


def _flag(x: Any) -> str:
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "UNMEASURED"
    return "BREACH" if x >= 1.0 else ("near" if x >= 0.8 else "")


def show_risk(r: dict[str, Any]) -> str:
    head = pairs(
        [
            ("trading", _text(r.get("trading_state"))),
            ("NAV", money(r.get("nav"))),
            ("high water", money(r.get("high_water"))),
            ("drawdown", percent(r.get("drawdown"))),
            ("VaR (1 day)", money(r.get("var"))),
        ]
    )
    limits = r.get("limits") or []
    if not limits:
        return head + "\n\nno limits in force"
    rows = [{**row, "flag": _flag(row.get("utilisation"))} for row in limits]
    return (
        head
        + "\n\n"
        + table(
            rows,
            [
                Column("level", "level"),
                Column("group", "group"),
                Column("measure", "measure"),
                Column("value", "value", figure, right=True),
                Column("limit", "limit", figure, right=True),
                Column("used", "utilisation", percent, right=True),
                Column("", "flag"),
            ],
        )
    )


def show_limits(r: dict[str, Any]) -> str:
    items = [
        (k, number(v) if isinstance(v, int | float) and not isinstance(v, bool) else _text(v))
        for k, v in flatten_dict(r)
        if v not in (None, [], {})
    ]
    return pairs(items) if items else "no limits"


def show_strategies(r: dict[str, Any]) -> str:
    rows = [
        {**s, "params": " ".join(f"{k}={_text(v)}" for k, v in (s.get("params") or {}).items())}
        for s in r.get("strategies") or []
    ]
    if not rows:
        return "no strategies"
    return table(
        rows,
        [
            Column("name", "name"),
            Column("kind", "kind"),
            Column("running", "running"),
            Column("params", "params"),
        ],
    )


def show_actors(r: dict[str, Any]) -> str:
    return table(
        r.get("actors") or [],
        [
            Column("actor", "name"),
            Column("state", "state"),
            Column("processed", "processed", number, right=True),
            Column("errors", "errors", number, right=True),
            Column("restarts", "restarts", number, right=True),
            Column("inbox", "inbox_depth", number, right=True),
            Column("high water", "inbox_high_water", number, right=True),
            Column("capacity", "inbox_capacity", number, right=True),
            Column("conflated", "conflated", number, right=True),
            Column("dropped", "dropped", number, right=True),
        ],
    )


def show_alerts(r: dict[str, Any]) -> str:
    rows = r.get("alerts") or []
    if not rows:
        return "no alerts"
    return table(
        rows,
        [
            Column("time", "ts", timestamp),
            Column("level", "level"),
            Column("source", "source"),
            Column("rule", "rule"),
            Column("message", "message"),
        ],
    )


def show_journal(r: dict[str, Any]) -> str:
    records = r.get("records") or []
    if not records:
        return "the journal is empty"
    return "\n".join(orjson.dumps(rec).decode() for rec in records)


def show_health(r: dict[str, Any]) -> str:
    lines = ["healthy" if r.get("healthy") is True else "UNHEALTHY"]
    lines += [f"  - {reason}" for reason in r.get("reasons") or []]
    checks = r.get("checks") or {}
    if checks:
        rows = [{"check": name, **value} for name, value in checks.items()]
        lines.append(
            table(
                rows,
                [
                    Column("check", "check"),
                    Column("ok", "ok"),
                    Column("age (s)", "age_s", number, right=True),
                    Column("detail", "detail"),
                ],
            )
        )
    return "\n".join(lines)


def show_done(r: Any) -> str:
    if not isinstance(r, dict):
        return _text(r)
    rest = [(k, _text(v)) for k, v in r.items() if k != "ok"]
    return pairs(rest) if rest else "ok"


# --- commands ---------------------------------------------------------------------------------


def parse_assignments(items: Sequence[str], *, dotted: bool) -> dict[str, Any]:
    """``key=value`` words into a dict; a value is JSON when it parses, else the text.
    With ``dotted``, ``a.b=1`` nests: ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CtlError(f"expected key=value, got {item!r}", EXIT_USAGE)
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw
        path = key.split(".") if dotted else [key]
        if any(not p for p in path):
            raise CtlError(f"{key!r} is not a dotted key like section.name", EXIT_USAGE)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CtlError(f"{key!r} is set both as a value and as a section", EXIT_USAGE)
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise CtlError(f"{key!r} is set both as a value and as a section", EXIT_USAGE)
        node[path[-1]] = value
    return out


Action = tuple[Callable[[Daemon], Any], Callable[[Any], str]]


def _action(args: argparse.Namespace) -> Action:
    """What to ask the daemon, and how to show its reply."""
    cmd = args.ctl_command
    simple = {
        "status": show_status,
        "positions": show_positions,
        "orders": show_orders,
        "pnl": show_pnl,
        "risk": show_risk,
        "actors": show_actors,
        "alerts": show_alerts,
    }
    if cmd in simple:
        return (lambda d: d.query(cmd)), simple[cmd]
    if cmd == "halt":
        body = {"reason": args.reason} if args.reason else {}
        return (lambda d: d.command("halt", body)), show_done
    if cmd == "resume":
        return (lambda d: d.command("resume", {})), show_done
    if cmd == "flatten":
        body = {"instrument": args.instrument} if args.instrument else {}
        return (lambda d: d.command("flatten", body)), show_done
    if cmd == "cancel":
        return (lambda d: d.command("cancel", {"id": args.id})), show_done
    if cmd == "strategy":
        sc = args.strategy_command
        if sc == "list":
            return (lambda d: d.query("strategies")), show_strategies
        if sc in ("start", "stop"):
            return (lambda d: d.command(f"strategy.{sc}", {"name": args.name})), show_done
        params = parse_assignments(args.params, dotted=False)
        body = {"name": args.name, "params": params}
        return (lambda d: d.command("strategy.set", body)), show_done
    if cmd == "limits":
        if args.limits_command == "show":
            return (lambda d: d.query("limits")), show_limits
        body = {"limits": parse_assignments(args.assignments, dotted=True)}
        if args.reason:
            body["reason"] = args.reason
        return (lambda d: d.command("limits.set", body)), show_done
    if cmd == "journal":
        return (lambda d: d.query("journal", {"n": args.n})), show_journal
    raise AssertionError(f"unhandled ctl command {cmd!r}")  # argparse only lets known ones by


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _read_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise CtlError(f"cannot read the token file: {exc}", EXIT_USAGE) from exc
        if not token:
            raise CtlError(f"the token file {args.token_file} is empty", EXIT_USAGE)
        return token
    return os.environ.get(TOKEN_ENV) or None


def _daemon(args: argparse.Namespace) -> Daemon:
    if args.url is not None:
        parts = urlsplit(args.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CtlError(f"--url must be like http://HOST:PORT, got {args.url!r}", EXIT_USAGE)
        return Daemon(None, args.url, _read_token(args), args.timeout)
    if args.token_file:
        raise CtlError("--token-file goes with --url (the socket needs no token)", EXIT_USAGE)
    path = (Path(args.socket) if args.socket else default_socket()).absolute()
    return Daemon(path, None, None, args.timeout)


def _cmd_ctl(args: argparse.Namespace) -> int:
    try:
        daemon = _daemon(args)
        if args.ctl_command == "health":
            reply = daemon.request("GET", "/health")
            if reply.status not in (200, 503) or not isinstance(reply.body, dict):
                daemon.call("GET", "/health")  # raises with the exit code of the status
                raise CtlError(f"unexpected health reply: {reply.body!r}", EXIT_DAEMON_ERROR)
            _print(_dump(reply.body) if args.json else show_health(reply.body))
            return EXIT_OK if reply.status == 200 else EXIT_REFUSED
        ask, show = _action(args)
        result = ask(daemon)
    except CtlError as exc:
        print(f"tradingd ctl: {exc}", file=sys.stderr)
        return exc.code
    _print(_dump(result) if args.json else show(result))
    return EXIT_OK


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode()


# --- the command line ---------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return value


def register(sub: Any) -> None:
    """Add the ``ctl`` command to the ``tradingd`` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given after the command it sets --json; not given, it leaves ctl's own.
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the reply as JSON"
    )
    ctl = sub.add_parser(
        "ctl",
        help="control a running daemon (status, positions, halt, flatten, limits...)",
        description="Control a running tradingd through its control API: on its Unix "
        "socket, or over TCP with a token.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = ctl.add_mutually_exclusive_group()
    where.add_argument(
        "--socket",
        metavar="PATH",
        help="the daemon's control socket (default: $STATE_DIRECTORY/control.sock, "
        "else ./state/control.sock)",
    )
    where.add_argument("--url", metavar="URL", help="the control API over TCP: http://HOST:PORT")
    ctl.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"with --url: a file holding the token (default: ${TOKEN_ENV})",
    )
    ctl.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds to wait (default 30)"
    )
    ctl.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
    ctl.set_defaults(func=_cmd_ctl)
    cmds = ctl.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=help_, parents=[common])
        return p

    add("status", "the daemon's state, trading state, equity and counts")
    add("positions", "open positions with marks and P&L")
    add("orders", "working orders and the last fills")
    add("pnl", "P&L: total, by strategy, region, asset class, instrument")
    add("risk", "the risk limits and how much of each is used")
    add("actors", "the actors' counters (processed, inbox, drops)")
    add("alerts", "the last alerts")
    halt = add("halt", "stop trading: no new order leaves the daemon until resume")
    halt.add_argument("--reason", default=None, help="why, for the journal")
    add("resume", "trade again after a halt")
    flatten = add("flatten", "cancel working orders, then close positions")
    flatten.add_argument("instrument", nargs="?", default=None, help="only this instrument")
    cancel = add("cancel", "cancel a working order, or all of them")
    cancel.add_argument("id", metavar="ID|all", help="a client order id, or 'all'")

    strategy = add("strategy", "list, start, stop or tune strategies")
    scmds = strategy.add_subparsers(dest="strategy_command", required=True, metavar="ACTION")
    scmds.add_parser("list", help="the strategies and their parameters", parents=[common])
    for verb in ("start", "stop"):
        p = scmds.add_parser(verb, help=f"{verb} a strategy", parents=[common])
        p.add_argument("name")
    sset = scmds.add_parser(
        "set", help="change parameters: NAME key=value ... (values as JSON)", parents=[common]
    )
    sset.add_argument("name")
    sset.add_argument("params", nargs="+", metavar="key=value")

    limits = add("limits", "show or change the risk limits")
    lcmds = limits.add_subparsers(dest="limits_command", required=True, metavar="ACTION")
    lcmds.add_parser("show", help="the limits in force, as dotted keys", parents=[common])
    lset = lcmds.add_parser(
        "set",
        help="change limits: section.key=value ... (e.g. security.max_position_fraction=0.04)",
        parents=[common],
    )
    lset.add_argument("assignments", nargs="+", metavar="key=value")
    lset.add_argument("--reason", default=None, help="why, for the journal")

    journal = add("journal", "the journal's last records")
    jcmds = journal.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    tail = jcmds.add_parser("tail", help="the last records", parents=[common])
    tail.add_argument("-n", type=_positive_int, default=20, help="how many (default 20)")

    add("health", "exit 0 when the daemon is healthy, 1 when not, with the reasons")
