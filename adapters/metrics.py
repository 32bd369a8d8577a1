"""Prometheus metrics of a running daemon: what ``GET /metrics`` answers.

:class:`DaemonMetrics` owns a registry with three kinds of metrics:

- **read at scrape time** from callables the daemon binds (:meth:`DaemonMetrics.bind`),
  so nothing is copied between scrapes and a scrape sees one consistent snapshot of each:

  ``actors()``: a list of :meth:`engine.actor.Actor.snapshot` dicts ->
  ``tradingd_actor_messages_total``, ``_errors_total``, ``_restarts_total``,
  ``_dropped_total``, ``_conflated_total``, ``_blocked_total`` (counters),
  ``tradingd_actor_inbox_depth``, ``_inbox_high_water``, ``_inbox_capacity`` (gauges),
  ``tradingd_actor_state{actor,state}`` (1 for its state), all labelled ``actor``, and
  ``tradingd_actor_handle_seconds`` (a histogram), for actors whose handling times are
  tracked (``ActorStats.track_handle_times``);

  ``portfolio()``: ``{"equity", "balance", "realized", "unrealized", "positions"}``, money
  in the account currency, ``positions`` a mapping of instrument to signed quantity (or
  the control API's list of ``{"instrument", "quantity"}``) -> ``tradingd_equity``,
  ``tradingd_balance``, ``tradingd_pnl_realized``, ``tradingd_pnl_unrealized``,
  ``tradingd_positions`` (how many are open), ``tradingd_position{instrument}``;

  ``risk()``: ``{"var", "drawdown", "nav", "trading_state", "limits"}`` (the control API's
  ``risk`` query; ``utilisation`` is accepted for ``limits``), each limit row with
  ``level``, ``group``, ``measure``, ``utilisation`` -> ``tradingd_var``,
  ``tradingd_drawdown``, ``tradingd_nav``, ``tradingd_limit_utilisation{level,group,
  measure}``, ``tradingd_trading_state{state}`` (1 for the current state, 0 for the others).

  A figure that is None (not known yet, such as NAV before every position has a mark) is
  left out; an infinite one (a VaR that cannot be measured) is exported as ``+Inf``. A
  callable that raises, or returns something of the wrong shape, costs its own metrics
  only: the error is logged and counted in ``tradingd_metrics_source_errors_total{source}``,
  and the rest of the scrape goes on.

- **counted by the daemon** through methods: :meth:`~DaemonMetrics.order_sent`,
  :meth:`~DaemonMetrics.fill`, :meth:`~DaemonMetrics.denied`,
  :meth:`~DaemonMetrics.alert` -> ``tradingd_orders_total``, ``tradingd_fills_total``
  (with ``tradingd_fill_notional_total`` and ``tradingd_commission_total``),
  ``tradingd_orders_denied_total{rule}``, ``tradingd_alerts_total{level}``;

- **set by the daemon**: ``tradingd_event_loop_lag_seconds``
  (:meth:`~DaemonMetrics.set_event_loop_lag`).

:meth:`DaemonMetrics.render` gives the body and content type for the HTTP handler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from engine.actor import ActorState, HandleTimes
from engine.messages import AlertLevel, TradingState

__all__ = ["HANDLE_BUCKETS", "DaemonMetrics"]

ActorsSource = Callable[[], list[dict[str, Any]]]
FiguresSource = Callable[[], Mapping[str, Any]]

HANDLE_BUCKETS = range(8, 35)
"""The :class:`~engine.actor.HandleTimes` buckets exported as histogram bounds: ``le`` of
2**8 ns (256 ns) to 2**34 ns (17 s), then ``+Inf``. The buckets are cumulative, so the
finer ones below are counted in the first bound; a bound per power of two is a resolution
of a factor 2, enough to see a handler go from microseconds to milliseconds."""

# actor snapshot key -> (metric name, help, kind)
_ACTOR_COUNTERS = (
    ("processed", "tradingd_actor_messages", "Messages the actor has handled."),
    ("errors", "tradingd_actor_errors", "Messages whose handling raised."),
    ("restarts", "tradingd_actor_restarts", "Restarts after a crash."),
    ("dropped", "tradingd_actor_dropped", "Messages dropped by drop-oldest edges."),
    ("conflated", "tradingd_actor_conflated", "Messages replaced by a newer one (conflation)."),
    ("blocked", "tradingd_actor_blocked", "Sends that waited on the full inbox."),
)
_ACTOR_GAUGES = (
    ("inbox_depth", "tradingd_actor_inbox_depth", "Messages waiting in the inbox."),
    ("inbox_high_water", "tradingd_actor_inbox_high_water", "Most messages ever waiting."),
    ("inbox_capacity", "tradingd_actor_inbox_capacity", "Size of the inbox."),
)
_PORTFOLIO_GAUGES = (
    ("equity", "tradingd_equity", "Account equity: balance plus open positions at their marks."),
    ("balance", "tradingd_balance", "Account cash balance."),
    ("realized", "tradingd_pnl_realized", "Realised profit and loss."),
    ("unrealized", "tradingd_pnl_unrealized", "Unrealised profit and loss at the marks."),
)
_RISK_GAUGES = (
    ("var", "tradingd_var", "Value at risk of the book, one interval, account currency."),
    ("drawdown", "tradingd_drawdown", "Drawdown of NAV from its high-water mark."),
    ("nav", "tradingd_nav", "Net asset value: cash plus positions at their marks."),
)


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number or None, got {value!r}")
    return float(value)


def _positions(value: Any) -> list[tuple[str, float]]:
    """``{instrument: quantity}`` or ``[{"instrument", "quantity"}, ...]``."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):
        try:
            pairs = [(row["instrument"], row["quantity"]) for row in value]
        except (KeyError, TypeError):
            raise TypeError(
                'positions as a list must hold {"instrument", "quantity"} rows'
            ) from None
    else:
        raise TypeError(f"positions must be a mapping or a list, got {type(value).__name__}")
    out = []
    for instrument, quantity in pairs:
        number = _number(quantity, f"the position in {instrument}")
        out.append((str(instrument), 0.0 if number is None else number))
    return out


class _Scrape(Collector):
    """Reads the daemon's callables at scrape time."""

    def __init__(self, owner: DaemonMetrics) -> None:
        self.owner = owner
        self.log = structlog.get_logger("tradingd").bind(component="metrics")

    def collect(self) -> Iterator[Metric]:
        owner = self.owner
        actors, portfolio, risk = owner.actors, owner.portfolio, owner.risk
        if actors is not None:
            yield from self._guarded("actors", lambda: list(self._actors(actors())))
        if portfolio is not None:
            yield from self._guarded("portfolio", lambda: list(self._portfolio(portfolio())))
        if risk is not None:
            yield from self._guarded("risk", lambda: list(self._risk(risk())))

    def _guarded(self, source: str, build: Callable[[], list[Metric]]) -> list[Metric]:
        try:
            return build()
        except Exception as exc:
            # one broken source costs its own metrics, not the scrape
            self.owner.source_errors.labels(source=source).inc()
            self.log.error("metrics source failed", source=source, error=repr(exc))
            return []

    def _actors(self, snapshots: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
        counters = {
            key: CounterMetricFamily(name, doc, labels=["actor"])
            for key, name, doc in _ACTOR_COUNTERS
        }
        gauges = {
            key: GaugeMetricFamily(name, doc, labels=["actor"]) for key, name, doc in _ACTOR_GAUGES
        }
        states = GaugeMetricFamily(
            "tradingd_actor_state", "1 for the state the actor is in.", labels=["actor", "state"]
        )
        handle = HistogramMetricFamily(
            "tradingd_actor_handle_seconds",
            "Time to handle one message (while handling times are tracked).",
            labels=["actor"],
        )
        for snap in snapshots:
            name = str(snap["name"])
            for key, family in counters.items():
                family.add_metric([name], float(snap[key]))
            for key, gauge in gauges.items():
                gauge.add_metric([name], float(snap[key]))
            for state in ActorState:
                states.add_metric([name, state.value], 1.0 if snap["state"] == state.value else 0.0)
            times = snap.get("handle_times")
            if times is not None:
                buckets = _histogram_buckets(times["counts"])
                handle.add_metric([name], buckets, sum_value=times["sum_ns"] / 1e9)
        yield from counters.values()
        yield from gauges.values()
        yield states
        yield handle

    def _portfolio(self, figures: Mapping[str, Any]) -> Iterator[Metric]:
        for key, name, doc in _PORTFOLIO_GAUGES:
            value = _number(figures.get(key), key)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        positions = _positions(figures.get("positions"))
        yield GaugeMetricFamily(
            "tradingd_positions",
            "Open positions (instruments held, long or short).",
            value=float(sum(1 for _, q in positions if q != 0.0)),
        )
        family = GaugeMetricFamily(
            "tradingd_position",
            "Signed position in instrument units (+ long, - short).",
            labels=["instrument"],
        )
        for instrument, quantity in positions:
            family.add_metric([instrument], quantity)
        yield family

    def _risk(self, figures: Mapping[str, Any]) -> Iterator[Metric]:
        for key, name, doc in _RISK_GAUGES:
            value = _number(figures.get(key), key)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)
        current = figures.get("trading_state")
        if current is not None:
            if current not in {state.value for state in TradingState}:
                raise ValueError(f"unknown trading_state {current!r}")
            family = GaugeMetricFamily(
                "tradingd_trading_state", "1 for the current trading state.", labels=["state"]
            )
            for state in TradingState:
                family.add_metric([state.value], 1.0 if current == state.value else 0.0)
            yield family
        rows = figures.get("limits", figures.get("utilisation")) or []
        utilisation = GaugeMetricFamily(
            "tradingd_limit_utilisation",
            "How much of each limit is used (1 is at the limit).",
            labels=["level", "group", "measure"],
        )
        for row in rows:
            value = _number(row.get("utilisation"), "a limit's utilisation")
            if value is not None:
                labels = [str(row.get(k, "")) for k in ("level", "group", "measure")]
                utilisation.add_metric(labels, value)
        yield utilisation


def _histogram_buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets from :class:`~engine.actor.HandleTimes` counts:
    bucket ``i`` holds times below ``2**i`` ns, so it is within ``le = 2**i`` ns."""
    if len(counts) != HandleTimes.BUCKETS:
        raise ValueError(f"handle_times has {len(counts)} buckets, not {HandleTimes.BUCKETS}")
    out: list[tuple[str, float]] = []
    running = 0
    for i, n in enumerate(counts):
        running += n
        if i in HANDLE_BUCKETS:
            out.append((repr((1 << i) / 1e9), float(running)))
    out.append(("+Inf", float(running)))
    return out


class DaemonMetrics:
    """The daemon's Prometheus metrics (see the module docstring for every name).

    ``registry``: where to register; by default a registry of its own, which also gets
    the client library's process, platform and garbage-collector metrics.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        actors: ActorsSource | None = None,
        portfolio: FiguresSource | None = None,
        risk: FiguresSource | None = None,
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self.actors = actors
        self.portfolio = portfolio
        self.risk = risk
        # registered before the counters, so that a scrape shows the source errors of
        # that very scrape (a registry collects in the order of registration)
        registry.register(_Scrape(self))
        self.orders = Counter("tradingd_orders", "Orders sent to a venue.", registry=registry)
        self.fills = Counter("tradingd_fills", "Fills, partial ones included.", registry=registry)
        self.fill_notional = Counter(
            "tradingd_fill_notional",
            "Traded value of the fills (price x quantity), account currency.",
            registry=registry,
        )
        self.commission = Counter(
            "tradingd_commission", "Commission paid on the fills.", registry=registry
        )
        self.denials = Counter(
            "tradingd_orders_denied",
            "Orders the risk gate denied, by the rule that denied them.",
            ["rule"],
            registry=registry,
        )
        self.alerts = Counter(
            "tradingd_alerts", "Alerts raised, by level.", ["level"], registry=registry
        )
        for level in AlertLevel:
            self.alerts.labels(level=level.name)  # present at 0, so rate() works at once
        self.event_loop_lag = Gauge(
            "tradingd_event_loop_lag_seconds",
            "How late the event loop ran a callback that was due (the daemon measures it).",
            registry=registry,
        )
        self.source_errors = Counter(
            "tradingd_metrics_source_errors",
            "Scrapes in which a metrics source failed (its metrics were left out).",
            ["source"],
            registry=registry,
        )

    def bind(
        self,
        *,
        actors: ActorsSource | None = None,
        portfolio: FiguresSource | None = None,
        risk: FiguresSource | None = None,
    ) -> None:
        """Set the callables read at scrape time (those given; the others are kept)."""
        if actors is not None:
            self.actors = actors
        if portfolio is not None:
            self.portfolio = portfolio
        if risk is not None:
            self.risk = risk

    # --- what the daemon counts ----------------------------------------------------------

    def order_sent(self) -> None:
        self.orders.inc()

    def fill(self, notional: float = 0.0, commission: float = 0.0) -> None:
        """A fill (partial or not): its traded value and commission in the account
        currency, both unsigned."""
        self.fills.inc()
        if notional:
            self.fill_notional.inc(abs(notional))
        if commission:
            self.commission.inc(abs(commission))

    def denied(self, rule: str) -> None:
        self.denials.labels(rule=rule).inc()

    def alert(self, level: AlertLevel | str) -> None:
        if isinstance(level, AlertLevel):
            name = level.name
        else:
            name = str(level).upper()
            if name not in AlertLevel.__members__:
                names = ", ".join(AlertLevel.__members__)
                raise ValueError(f"unknown alert level {level!r} (one of {names})")
        self.alerts.labels(level=name).inc()

    def set_event_loop_lag(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"event loop lag must be a finite number of seconds >= 0: {seconds}")
        self.event_loop_lag.set(seconds)

    # --- exposition ------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape: ``(body, content type)``. The Prometheus text format, or OpenMetrics
        when ``accept`` (the request's Accept header) asks for it."""
        if accept is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
