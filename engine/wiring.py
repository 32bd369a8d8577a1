"""Building a running system from configuration: actors, edges, start order.

An actor section names its ``kind``: one of the built-in kinds below, or a
``package.module:Class`` path to an actor of your own. Kinds are resolved by name when
the configuration is loaded, so ``engine`` does not depend on any actor module.

Start order is sinks first: actors are ordered by their distance from the sources
(actors nothing sends to), farthest first, after the observers (``Actor.observer``: a
mirror that only follows the others), which start first. Stop order is the reverse.
"""

from __future__ import annotations

import importlib
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine import messages
from engine.actor import Actor, ActorConfig, RunContext
from engine.clock import Clock
from engine.config import SystemConfig, config_error, convert_section
from engine.errors import WiringError
from engine.instruments import InstrumentTable
from engine.mailbox import Edge, Quiescence

__all__ = ["BUILTIN_KINDS", "System", "resolve_kind"]

BUILTIN_KINDS: dict[str, str] = {
    "replay_feed": "actors.feed:ReplayFeed",
    "validator": "actors.validator:Validator",
    "bar_builder": "actors.bar_builder:BarBuilder",
    "ema_cross": "actors.strategies.ema_cross:EmaCrossStrategy",
    "trend": "actors.strategies.trend:TrendStrategy",
    "risk_gate": "actors.risk_gate:RiskGate",
    "risk_monitor": "actors.risk_monitor:RiskMonitor",
    "router": "actors.router:Router",
    "portfolio": "actors.portfolio:PortfolioActor",
    "event_log": "actors.event_log:EventLog",
    "journal": "actors.journal:Journal",
    "sim_exchange": "adapters.sim_exchange:SimExchange",
    "redis_mirror": "adapters.redis_mirror:RedisMirror",
    "alert_webhook": "adapters.webhook:AlertWebhook",
}


def resolve_kind(kind: str, *, path: str = "$", file: str | None = None) -> type[Actor[Any]]:
    """The actor class for a kind name or ``module:Class`` path."""
    target = BUILTIN_KINDS.get(kind, kind)
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN_KINDS))
        raise WiringError(
            f"unknown actor kind {kind!r} (built-in kinds: {known}; or module:Class)",
            path=path,
            file=file,
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise WiringError(f"cannot load actor kind {kind!r}: {exc}", path=path, file=file) from None
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise WiringError(f"{target} is not an Actor", path=path, file=file)
    return cls


class System:
    """The actors and edges of one run, built from a :class:`SystemConfig`."""

    def __init__(
        self,
        config: SystemConfig,
        clock: Clock,
        *,
        file: str | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.file = file
        self.base_dir = base_dir or Path.cwd()
        self.instruments = InstrumentTable(config.instruments)
        self.quiescence = Quiescence()
        self.ctx = RunContext(
            clock, self.instruments, config.account, self.quiescence, base_dir=self.base_dir
        )
        self.clock = clock
        self.actors: dict[str, Actor[Any]] = {}
        for name, section in config.actors.items():
            prefix = f".actors.{name}"
            cls = resolve_kind(str(section["kind"]), path=f"${prefix}.kind", file=file)
            actor_config = convert_section(section, cls.Config, prefix=prefix, file=file)
            actor = cls(name, actor_config, self.ctx)
            try:
                actor.check_config()
            except ValueError as exc:
                raise config_error(exc, prefix=prefix, file=file) from None
            self.actors[name] = actor
        self.edges: list[Edge] = []
        self.inbound: dict[str, list[str]] = {name: [] for name in self.actors}
        self.outbound: dict[str, list[str]] = {name: [] for name in self.actors}
        for i, edge in enumerate(config.edges):
            self._connect(i, edge.from_, edge.to, edge.overflow, edge.only)
        self.start_order = self._start_order()

    def _connect(self, i: int, source: str, target: str, overflow: Any, only: list[str]) -> None:
        where = f"$.edges[{i}]"
        types: frozenset[type] | None = None
        if only:
            found = []
            for j, type_name in enumerate(only):
                cls = getattr(messages, type_name, None)
                if not (isinstance(cls, type) and issubclass(cls, messages.Message)):
                    raise WiringError(
                        f"no message type named {type_name!r}",
                        path=f"{where}.only[{j}]",
                        file=self.file,
                    )
                found.append(cls)
            types = frozenset(found)
        actor_name, dot, port = source.partition(".")
        if not dot:
            raise WiringError(
                f"`from` must be ACTOR.PORT, got {source!r}", path=f"{where}.from", file=self.file
            )
        sender = self.actors.get(actor_name)
        if sender is None:
            raise WiringError(
                f"no actor named {actor_name!r}", path=f"{where}.from", file=self.file
            )
        if port not in sender.ports:
            ports = ", ".join(sender.outputs) or "none"
            raise WiringError(
                f"actor {actor_name!r} has no output port {port!r} (its ports: {ports})",
                path=f"{where}.from",
                file=self.file,
            )
        receiver = self.actors.get(target)
        if receiver is None:
            raise WiringError(f"no actor named {target!r}", path=f"{where}.to", file=self.file)
        market_data = port in getattr(sender, "market_data_ports", ())
        edge = Edge(source, receiver.inbox, overflow, types=types, market_data=market_data)
        sender.ports[port].append(edge)
        self.edges.append(edge)
        self.inbound[target].append(actor_name)
        self.outbound[actor_name].append(target)

    def _start_order(self) -> list[Actor[Any]]:
        names = list(self.actors)
        sources = [n for n in names if not self.inbound[n]]
        depth: dict[str, int] = {n: 0 for n in sources}
        queue = deque(sources)
        while queue:
            n = queue.popleft()
            for m in self.outbound[n]:
                if m not in depth:
                    depth[m] = depth[n] + 1
                    queue.append(m)
        unreached = max(depth.values(), default=0) + 1
        # observers (Actor.observer) first, so that they stop last
        ordered = sorted(
            names,
            key=lambda n: (
                not self.actors[n].observer,
                -depth.get(n, unreached),
                names.index(n),
            ),
        )
        return [self.actors[n] for n in ordered]

    @property
    def sources(self) -> list[Actor[Any]]:
        return [a for a in self.actors.values() if not self.inbound[a.name]]

    def of_kind(self, cls: type[Actor[Any]] | str) -> list[Actor[Any]]:
        if isinstance(cls, str):
            cls = resolve_kind(cls)
        return [a for a in self.actors.values() if isinstance(a, cls)]

    def first_of_kind(self, cls: type[Actor[Any]] | str) -> Actor[Any] | None:
        """The first actor of that kind, or None when the configuration has none."""
        found = self.of_kind(cls)
        return found[0] if found else None

    def downstream(self, name: str) -> list[Actor[Any]]:
        return [self.actors[m] for m in self.outbound[name]]

    def trading_state_owner(self) -> Actor[Any] | None:
        owners = [a for a in self.actors.values() if getattr(a, "owns_trading_state", False)]
        return owners[0] if owners else None

    def build_config(self, name: str, section: dict[str, Any]) -> ActorConfig:
        """Actor ``name``'s configuration from a new ``section`` (a reload), checked as at
        start; errors name the key."""
        actor = self.actors[name]
        prefix = f".actors.{name}"
        config: ActorConfig = convert_section(
            section, type(actor.config), prefix=prefix, file=self.file
        )
        return config

    def alert_sinks(self) -> list[Actor[Any]]:
        """The actors the supervisor sends its alerts to (``receives_system_alerts``)."""
        return [a for a in self.start_order if getattr(a, "receives_system_alerts", False)]

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)

    def snapshot(self) -> list[dict[str, Any]]:
        return [a.snapshot() for a in self.start_order]

    def config_of(self, names: Iterable[str]) -> dict[str, ActorConfig]:
        return {n: self.actors[n].config for n in names}
