// tradingd dashboard: renders the daemon's snapshots and events as they arrive on the
// WebSocket at ./ws. Plain script, no framework, no build step, nothing from another
// host. Every value element carries a stable data-field (rows: data-instrument,
// data-order-id, data-actor, data-check, data-limit, data-key) and, for numbers, the raw
// figure in data-value, so tests and scripts can read the page.
"use strict";

(() => {
  const MAX_FILLS = 100;
  const MAX_ALERTS = 200;
  const MAX_ROWS = 50; // positions and working orders shown; the rest are counted
  const MAX_LIMITS = 14; // limit bars shown, highest utilisation first
  const MAX_HEAT_ROWS = 20;
  const EQUITY_POINTS = 900; // 15 minutes at one snapshot a second
  const STALE_MS = 5000; // no frame for this long: figures are dimmed
  const DEAD_MS = 15000; // no frame for this long: the socket is dropped and reopened
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
  const WARN_AT = 0.8;
  const LEVELS = { 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL" };

  const view = {
    status: null,
    pnl: null,
    risk: null,
    positions: null,
    orders: null,
    actors: null,
    health: null,
    fills: new Map(), // key -> fill, merged from snapshots and fill events
    alerts: new Map(), // key -> alert
    equity: [], // [ms since page load, equity]
    lastActors: new Map(), // name -> {t, processed, errors, dropped}
    rates: new Map(), // name -> {msg, err, drop} per second
  };
  const conn = { ws: null, attempt: 0, retryAt: 0, lastFrame: 0, timer: 0 };

  // ---- small helpers ------------------------------------------------------------------

  const byField = (name, root = document) => root.querySelector(`[data-field="${name}"]`);
  const finite = (v) => typeof v === "number" && Number.isFinite(v);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null) continue;
        if (k.startsWith("data-")) node.setAttribute(k, String(v));
        else if (v === false) continue;
        else if (k === "class") node.className = v;
        else if (k === "title") node.title = String(v);
        else throw new Error(`el(): unsupported attribute ${k}`);
      }
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function setField(name, text, value, cls) {
    const node = byField(name);
    if (!node) return;
    if (node.textContent !== text) node.textContent = text;
    if (value !== undefined) node.dataset.value = value === null ? "" : String(value);
    if (cls !== undefined) node.className = cls;
  }

  const NUM2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const NUM0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const NUMQ = new Intl.NumberFormat("en-US", { maximumFractionDigits: 8 });

  const money = (v) => (finite(v) ? NUM2.format(v) : "—");
  const signed = (v) => (finite(v) ? (v > 0 ? "+" : "") + NUM2.format(v) : "—");
  const qty = (v) => (finite(v) ? NUMQ.format(v) : "—");
  const count = (v) => (finite(v) ? NUM0.format(v) : "—");
  const pct = (f, digits = 1) => (finite(f) ? (f * 100).toFixed(digits) + "%" : "n/a");
  const signClass = (v) => (finite(v) && v < 0 ? "neg" : finite(v) && v > 0 ? "pos" : "");
  const utilClass = (u) => (!finite(u) ? "" : u > 1 ? "u-breach" : u > WARN_AT ? "u-warn" : "u-ok");

  function duration(seconds) {
    if (!finite(seconds)) return "—";
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400);
    s -= d * 86400;
    const hms = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60]
      .map((x) => String(x).padStart(2, "0"))
      .join(":");
    return d > 0 ? `${d}d ${hms}` : hms;
  }

  // Timestamps from the daemon are integer nanoseconds (UTC); seconds and milliseconds
  // are accepted too, told apart by size, and ISO strings as they are.
  function toDate(ts) {
    if (typeof ts === "string") {
      const d = new Date(ts);
      return Number.isNaN(d.getTime()) ? null : d;
    }
    if (!finite(ts)) return null;
    const ms = ts > 1e14 ? ts / 1e6 : ts > 1e11 ? ts : ts * 1000;
    return new Date(ms);
  }
  const isoUtc = (d) => d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  const clockUtc = (d) => d.toISOString().slice(11, 23);
  function tsText(ts, full = false) {
    const d = toDate(ts);
    return d ? (full ? isoUtc(d) : clockUtc(d)) : "—";
  }
  const tsNumber = (ts) => {
    const d = toDate(ts);
    return d ? d.getTime() : 0;
  };

  function levelName(level) {
    if (typeof level === "number") return LEVELS[level] || String(level);
    return String(level || "INFO").toUpperCase();
  }

  // ---- header -------------------------------------------------------------------------

  function renderStatus(st) {
    if (!st) return;
    setField("mode", String(st.mode || "—"));
    const state = String(st.trading_state || "—").toUpperCase();
    setField("trading-state", state, state, `trading-state state-${state.toLowerCase()}`);
    setField("trading-reason", st.trading_reason ? String(st.trading_reason) : "");
    setField("uptime", duration(st.uptime_s), st.uptime_s);
    const dataTime = st.data_time_ns ?? st.data_time;
    setField("data-time", dataTime === undefined ? "—" : tsText(dataTime, true), dataTime);
    document.title = `${state} · tradingd`;
  }

  function renderHealthBadge(h) {
    if (!h) return;
    const ok = h.healthy === true;
    const reasons = Array.isArray(h.reasons) ? h.reasons : [];
    setField("healthy", ok ? "healthy" : "UNHEALTHY", ok, `health-badge ${ok ? "healthy" : "unhealthy"}`);
    const badge = byField("healthy");
    if (badge) badge.title = reasons.join("\n");
  }

  // ---- P&L ----------------------------------------------------------------------------

  function barRows(container, entries) {
    // entries: [[name, value]]; bars grow from the middle, scaled to the largest in size.
    const box = byField(container);
    if (!box) return;
    const rows = entries.filter(([, v]) => finite(v)).sort((a, b) => b[1] - a[1]);
    const scale = Math.max(1e-12, ...rows.map(([, v]) => Math.abs(v)));
    if (rows.length === 0) {
      box.replaceChildren(el("div", { class: "more" }, "nothing yet"));
      return;
    }
    box.replaceChildren(
      ...rows.map(([name, v]) => {
        const fill = el("span", { class: `fill ${v < 0 ? "neg" : "pos"}` });
        const half = (Math.abs(v) / scale) * 50;
        fill.style.width = `${half}%`;
        fill.style.left = v < 0 ? `${50 - half}%` : "50%";
        return el(
          "div",
          { class: "bar-row", "data-key": name, "data-value": v },
          el("span", { class: "label", title: name }, name),
          el("span", { class: "track" }, el("span", { class: "mid" }), fill),
          el("span", { class: `num ${signClass(v)}` }, signed(v)),
        );
      }),
    );
  }

  function renderPnl(p) {
    if (!p) return;
    setField("currency", p.currency ? String(p.currency) : "");
    setField("equity", money(p.equity), p.equity);
    setField("balance", money(p.balance), p.balance);
    setField("realized", signed(p.realized), p.realized, `value ${signClass(p.realized)}`);
    setField("unrealized", signed(p.unrealized), p.unrealized, `value ${signClass(p.unrealized)}`);
    setField("commissions", money(p.commissions), p.commissions);
    barRows("pnl-by-strategy", Object.entries(p.by_strategy || {}));
    barRows("pnl-by-region", Object.entries(p.by_region || {}));
    barRows("pnl-by-asset-class", Object.entries(p.by_asset_class || {}));
    if (finite(p.equity)) {
      view.equity.push([performance.now(), p.equity]);
      if (view.equity.length > EQUITY_POINTS) view.equity.splice(0, view.equity.length - EQUITY_POINTS);
    }
    drawEquity();
  }

  function drawEquity() {
    const canvas = byField("equity-chart");
    if (!canvas) return;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const pts = view.equity;
    ctx.font = `${12 * ratio}px system-ui, sans-serif`;
    ctx.fillStyle = "#8c96a5";
    if (pts.length < 2) {
      ctx.fillText("equity since this page opened", 8 * ratio, 18 * ratio);
      return;
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, v] of pts) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    const span = hi - lo || Math.max(1, Math.abs(hi) * 1e-6);
    const pad = 6 * ratio;
    const t0 = pts[0][0];
    const tspan = Math.max(1, pts[pts.length - 1][0] - t0);
    const x = (t) => pad + ((t - t0) / tspan) * (w - 2 * pad);
    const y = (v) => h - pad - ((v - lo) / span) * (h - 2 * pad);
    ctx.strokeStyle = pts[pts.length - 1][1] >= pts[0][1] ? "#3fb950" : "#ff5a4e";
    ctx.lineWidth = 2 * ratio;
    ctx.beginPath();
    pts.forEach(([t, v], i) => (i === 0 ? ctx.moveTo(x(t), y(v)) : ctx.lineTo(x(t), y(v))));
    ctx.stroke();
    ctx.fillText(`high ${money(hi)}`, 8 * ratio, 16 * ratio);
    ctx.fillText(`low ${money(lo)}`, 8 * ratio, h - 8 * ratio);
  }

  // ---- risk ---------------------------------------------------------------------------

  function meter(fraction, extraClass = "") {
    const fill = el("span", { class: `fill ${utilClass(fraction)} ${extraClass}` });
    fill.style.width = `${finite(fraction) ? Math.min(100, Math.max(0, fraction * 100)) : 0}%`;
    return el("span", { class: "meter" }, fill);
  }

  function renderRisk(r) {
    if (!r) return;
    setField("var", money(r.var), r.var);
    setField("drawdown", pct(r.drawdown, 2), r.drawdown);
    setField("nav", money(r.nav), r.nav);
    setField("high-water", money(r.high_water), r.high_water);
    const ratio = finite(r.nav) && finite(r.high_water) && r.high_water > 0 ? r.nav / r.high_water : null;
    setField("nav-vs-high-water", pct(ratio, 2), ratio);
    const bar = byField("nav-vs-high-water-bar");
    if (bar) bar.style.width = `${ratio === null ? 0 : Math.min(100, Math.max(0, ratio * 100))}%`;

    const limits = Array.isArray(r.limits) ? r.limits : [];
    const box = byField("limits");
    if (!box) return;
    if (limits.length === 0) {
      box.replaceChildren(el("div", { class: "more" }, "no limits reported"));
    } else {
      // The highest utilisation first, whatever the level; unmeasurable (NaN) ones last.
      const sorted = [...limits].sort(
        (a, b) => (finite(b.utilisation) ? b.utilisation : -1) - (finite(a.utilisation) ? a.utilisation : -1),
      );
      const shown = sorted.slice(0, MAX_LIMITS);
      const levels = [];
      for (const l of shown) if (!levels.includes(l.level)) levels.push(l.level);
      const nodes = [];
      for (const level of levels) {
        nodes.push(el("div", { class: "level" }, level));
        for (const l of shown.filter((x) => x.level === level)) {
          const name = l.group && l.group !== l.measure ? `${l.group} · ${l.measure}` : String(l.measure);
          nodes.push(
            el(
              "div",
              {
                class: "meter-row",
                "data-limit": `${l.level}/${l.group}/${l.measure}`,
                "data-value": finite(l.utilisation) ? l.utilisation : "",
                title: `value ${l.value} of limit ${l.limit}`,
              },
              el("span", { class: "label", title: name }, name),
              meter(l.utilisation),
              el("span", { class: `num ${utilClass(l.utilisation)}` }, pct(l.utilisation)),
            ),
          );
        }
      }
      const rest = sorted.length - shown.length;
      if (rest > 0) {
        const top = sorted[shown.length].utilisation;
        nodes.push(el("div", { class: "more" }, `${rest} more, each at or under ${pct(top)}`));
      }
      box.replaceChildren(...nodes);
    }
    renderHeatmap(limits);
  }

  function heatClass(u) {
    if (!finite(u)) return "heat-nan";
    if (u > 1) return "heat-4";
    if (u > WARN_AT) return "heat-3";
    if (u > 0.5) return "heat-2";
    if (u > 0.25) return "heat-1";
    return "heat-0";
  }

  function renderHeatmap(limits) {
    const table = byField("heatmap");
    if (!table) return;
    const measures = [];
    const groups = new Map(); // "level · group" -> {measure -> utilisation}
    for (const l of limits) {
      if (!measures.includes(l.measure)) measures.push(l.measure);
      const key = l.level === l.group || !l.group ? String(l.level) : `${l.level} · ${l.group}`;
      if (!groups.has(key)) groups.set(key, new Map());
      groups.get(key).set(l.measure, l.utilisation);
    }
    if (groups.size === 0) {
      table.replaceChildren(el("tbody", null, el("tr", { class: "empty" }, el("td", null, "no limits reported"))));
      return;
    }
    const worst = (m) => Math.max(-1, ...[...m.values()].map((u) => (finite(u) ? u : -1)));
    const rows = [...groups.entries()].sort((a, b) => worst(b[1]) - worst(a[1]));
    const shown = rows.slice(0, MAX_HEAT_ROWS);
    const head = el("thead", null, el("tr", null, el("th", null, ""), ...measures.map((m) => el("th", { title: m }, m.replaceAll("_", " ")))));
    const body = el(
      "tbody",
      null,
      ...shown.map(([group, cells]) =>
        el(
          "tr",
          { "data-group": group },
          el("th", null, group),
          ...measures.map((m) => {
            if (!cells.has(m)) return el("td", { class: "heat-none" }, "");
            const u = cells.get(m);
            return el(
              "td",
              { class: heatClass(u), "data-measure": m, "data-value": finite(u) ? u : "" },
              pct(u, 0),
            );
          }),
        ),
      ),
    );
    const nodes = [head, body];
    if (rows.length > shown.length) {
      nodes.push(
        el("tfoot", null, el("tr", null, el("td", { class: "heat-none" }, `${rows.length - shown.length} more groups`))),
      );
    }
    table.replaceChildren(...nodes);
  }

  // ---- exposure -----------------------------------------------------------------------

  function emptyRow(columns, text) {
    const td = el("td", null, text);
    td.colSpan = columns;
    return el("tr", { class: "empty" }, td);
  }

  function renderPositions(p) {
    if (!p) return;
    const body = byField("positions");
    if (!body) return;
    const rows = (Array.isArray(p.positions) ? p.positions : []).filter((x) => finite(x.quantity) && x.quantity !== 0);
    if (rows.length === 0) {
      body.replaceChildren(emptyRow(7, "flat"));
      return;
    }
    const gross = rows.reduce((s, x) => s + (finite(x.market_value) ? Math.abs(x.market_value) : 0), 0);
    rows.sort((a, b) => Math.abs(b.market_value || 0) - Math.abs(a.market_value || 0));
    const shown = rows.slice(0, MAX_ROWS).map((x) => {
      const share = gross > 0 && finite(x.market_value) ? Math.abs(x.market_value) / gross : null;
      const bar = el("span", { class: "meter" }, el("span", { class: `fill ${x.quantity < 0 ? "neg" : "pos"}` }));
      bar.firstChild.style.width = `${share === null ? 0 : share * 100}%`;
      return el(
        "tr",
        { "data-instrument": x.instrument },
        el("td", { "data-field": "instrument" }, x.instrument),
        el("td", { class: `n ${signClass(x.quantity)}`, "data-field": "quantity", "data-value": x.quantity }, qty(x.quantity)),
        el("td", { class: "n", "data-field": "avg-price" }, qty(x.avg_price)),
        el("td", { class: "n", "data-field": "mark" }, qty(x.mark)),
        el("td", { class: "n", "data-field": "market-value", "data-value": x.market_value }, money(x.market_value)),
        el(
          "td",
          { class: `n ${signClass(x.unrealized_pnl)}`, "data-field": "unrealized-pnl", "data-value": x.unrealized_pnl },
          signed(x.unrealized_pnl),
        ),
        el("td", { class: "share", "data-field": "share", "data-value": share, title: pct(share) }, bar),
      );
    });
    if (rows.length > MAX_ROWS) shown.push(emptyRow(7, `${rows.length - MAX_ROWS} more positions`));
    body.replaceChildren(...shown);
  }

  // ---- blotter ------------------------------------------------------------------------

  const fillKey = (f) => `${f.client_order_id}|${f.ts}|${f.quantity}|${f.price}`;

  function addFill(f) {
    if (!f || typeof f !== "object") return;
    view.fills.set(fillKey(f), f);
    if (view.fills.size > MAX_FILLS * 2) trimNewest(view.fills, MAX_FILLS);
  }

  function trimNewest(map, keep) {
    const newest = [...map.entries()].sort((a, b) => tsNumber(b[1].ts) - tsNumber(a[1].ts)).slice(0, keep);
    map.clear();
    for (const [k, v] of newest) map.set(k, v);
  }

  const sideClass = (side) => {
    const s = String(side || "").toLowerCase();
    return s.startsWith("b") ? "side-buy" : s.startsWith("s") ? "side-sell" : "";
  };

  function renderOrders() {
    const orders = view.orders;
    const working = orders && Array.isArray(orders.working) ? [...orders.working] : [];
    working.sort((a, b) => tsNumber(b.ts) - tsNumber(a.ts));
    setField("working-count", String(working.length), working.length);
    const wbody = byField("working-orders");
    if (wbody) {
      const rows = working.slice(0, MAX_ROWS).map((o) =>
        el(
          "tr",
          { "data-instrument": o.instrument, "data-order-id": o.client_order_id },
          el("td", { "data-field": "time" }, tsText(o.ts)),
          el("td", { "data-field": "order-id" }, o.client_order_id),
          el("td", { "data-field": "strategy" }, o.strategy),
          el("td", { "data-field": "instrument" }, o.instrument),
          el("td", { class: sideClass(o.side), "data-field": "side" }, o.side),
          el("td", { class: "n", "data-field": "quantity", "data-value": o.quantity }, qty(o.quantity)),
          el("td", { class: "n", "data-field": "filled", "data-value": o.filled }, qty(o.filled)),
          el("td", { class: "n", "data-field": "price", "data-value": o.price }, o.price === null || o.price === undefined ? "mkt" : qty(o.price)),
          el("td", { "data-field": "order-type" }, o.order_type),
          el("td", { "data-field": "status" }, o.status),
        ),
      );
      if (working.length > MAX_ROWS) rows.push(emptyRow(10, `${working.length - MAX_ROWS} more working orders`));
      wbody.replaceChildren(...(rows.length ? rows : [emptyRow(10, "no working orders")]));
    }
    const fbody = byField("fills");
    if (fbody) {
      const fills = [...view.fills.values()].sort((a, b) => tsNumber(b.ts) - tsNumber(a.ts)).slice(0, MAX_FILLS);
      const rows = fills.map((f) =>
        el(
          "tr",
          { "data-instrument": f.instrument, "data-order-id": f.client_order_id },
          el("td", { "data-field": "time" }, tsText(f.ts)),
          el("td", { "data-field": "order-id" }, f.client_order_id),
          el("td", { "data-field": "strategy" }, f.strategy),
          el("td", { "data-field": "instrument" }, f.instrument),
          el("td", { class: sideClass(f.side), "data-field": "side" }, f.side),
          el("td", { class: "n", "data-field": "quantity", "data-value": f.quantity }, qty(f.quantity)),
          el("td", { class: "n", "data-field": "price", "data-value": f.price }, qty(f.price)),
          el("td", { class: "n", "data-field": "commission", "data-value": f.commission }, money(f.commission)),
        ),
      );
      fbody.replaceChildren(...(rows.length ? rows : [emptyRow(8, "no fills yet")]));
    }
  }

  // ---- alerts -------------------------------------------------------------------------

  const alertKey = (a) => `${a.ts}|${a.source}|${a.rule}|${a.message}`;

  function addAlert(a) {
    if (!a || typeof a !== "object") return;
    view.alerts.set(alertKey(a), a);
    if (view.alerts.size > MAX_ALERTS * 2) trimNewest(view.alerts, MAX_ALERTS);
  }

  function renderAlerts() {
    const list = byField("alerts");
    if (!list) return;
    const alerts = [...view.alerts.values()].sort((a, b) => tsNumber(b.ts) - tsNumber(a.ts)).slice(0, MAX_ALERTS);
    setField("alert-count", String(alerts.length), alerts.length);
    if (alerts.length === 0) {
      list.replaceChildren(el("li", { class: "level-info" }, el("span", null, ""), el("span", null, ""), el("span", { class: "what muted" }, "no alerts")));
      return;
    }
    list.replaceChildren(
      ...alerts.map((a) => {
        const level = levelName(a.level);
        const figures =
          a.figures && typeof a.figures === "object"
            ? Object.entries(a.figures)
                .map(([k, v]) => `${k} ${finite(v) ? Number(v.toPrecision(6)) : v}`)
                .join(", ")
            : "";
        const meta = [a.source, a.rule, a.action ? `action: ${a.action}` : "", figures].filter(Boolean).join(" · ");
        return el(
          "li",
          { class: `level-${level.toLowerCase()}`, "data-level": level, "data-rule": a.rule, "data-source": a.source },
          el("span", { class: "time", title: tsText(a.ts, true) }, tsText(a.ts)),
          el("span", { class: "level" }, level),
          el("span", { class: "what", "data-field": "message" }, a.message),
          el("span", { class: "meta" }, meta),
        );
      }),
    );
  }

  // ---- health -------------------------------------------------------------------------

  function renderHealth(h) {
    if (!h) return;
    renderHealthBadge(h);
    const reasons = byField("health-reasons");
    if (reasons) {
      const list = Array.isArray(h.reasons) ? h.reasons : [];
      reasons.replaceChildren(...list.map((r) => el("li", null, r)));
    }
    const body = byField("health-checks");
    if (!body) return;
    const checks = Object.entries(h.checks || {});
    body.replaceChildren(
      ...(checks.length
        ? checks.map(([name, c]) =>
            el(
              "tr",
              { "data-check": name, class: c.ok ? "" : "row-bad" },
              el("td", null, name),
              el("td", { class: c.ok ? "ok-yes" : "ok-no", "data-field": "ok", "data-value": Boolean(c.ok) }, c.ok ? "ok" : "FAIL"),
              el("td", { class: "n", "data-field": "age", "data-value": c.age_s }, finite(c.age_s) ? `${c.age_s.toFixed(1)} s` : "—"),
              el("td", { "data-field": "detail" }, c.detail ?? ""),
            ),
          )
        : [emptyRow(4, "no checks reported")]),
    );
  }

  function renderActors(a) {
    if (!a) return;
    const actors = Array.isArray(a.actors) ? a.actors : [];
    const now = performance.now();
    for (const x of actors) {
      const prev = view.lastActors.get(x.name);
      if (prev && now > prev.t) {
        const dt = (now - prev.t) / 1000;
        view.rates.set(x.name, {
          msg: Math.max(0, (x.processed - prev.processed) / dt),
          err: Math.max(0, (x.errors - prev.errors) / dt),
          drop: Math.max(0, (x.dropped - prev.dropped) / dt),
        });
      }
      view.lastActors.set(x.name, { t: now, processed: x.processed, errors: x.errors, dropped: x.dropped });
    }
    const body = byField("actors");
    if (!body) return;
    const rate = (v) => (finite(v) ? v.toFixed(v < 10 ? 1 : 0) : "—");
    const micro = (ns) => (finite(ns) ? (ns / 1000).toFixed(1) : "—");
    body.replaceChildren(
      ...(actors.length
        ? actors.map((x) => {
            const r = view.rates.get(x.name) || {};
            const fill = finite(x.inbox_capacity) && x.inbox_capacity > 0 ? x.inbox_depth / x.inbox_capacity : null;
            const mean = finite(x.processed) && x.processed > 0 ? x.handle_ns / x.processed : null;
            const bad = x.state === "failed" || x.state === "stopped" || (r.err || 0) > 0;
            const warn = x.state !== "running" || (r.drop || 0) > 0 || (fill !== null && fill > WARN_AT);
            return el(
              "tr",
              { "data-actor": x.name, class: bad ? "row-bad" : warn ? "row-warn" : "" },
              el("td", null, x.name),
              el("td", { "data-field": "state" }, x.state),
              el(
                "td",
                { class: "inbox", "data-field": "inbox-depth", "data-value": x.inbox_depth, title: `capacity ${x.inbox_capacity}` },
                meter(fill),
                `${count(x.inbox_depth)}/${count(x.inbox_capacity)}`,
              ),
              el("td", { class: "n", "data-field": "inbox-high-water" }, count(x.inbox_high_water)),
              el("td", { class: "n", "data-field": "processed", "data-value": x.processed }, count(x.processed)),
              el("td", { class: "n", "data-field": "msg-rate" }, rate(r.msg)),
              el("td", { class: "n", "data-field": "latency-mean-us", "data-value": mean }, micro(mean)),
              el("td", { class: "n", "data-field": "latency-max-us", "data-value": x.max_handle_ns }, micro(x.max_handle_ns)),
              el("td", { class: `n ${x.errors > 0 ? "bad" : ""}`, "data-field": "errors", "data-value": x.errors }, count(x.errors)),
              el("td", { class: `n ${(r.err || 0) > 0 ? "bad" : ""}`, "data-field": "error-rate" }, rate(r.err)),
              el("td", { class: `n ${x.dropped > 0 ? "warn" : ""}`, "data-field": "dropped", "data-value": x.dropped }, count(x.dropped)),
              el("td", { class: `n ${(r.drop || 0) > 0 ? "warn" : ""}`, "data-field": "drop-rate" }, rate(r.drop)),
              el("td", { class: "n", "data-field": "conflated" }, count(x.conflated)),
              el("td", { class: `n ${x.restarts > 0 ? "warn" : ""}`, "data-field": "restarts" }, count(x.restarts)),
            );
          })
        : [emptyRow(14, "no actors reported")]),
    );
  }

  // ---- frames -------------------------------------------------------------------------

  function applySnapshot(s) {
    for (const key of ["status", "pnl", "risk", "positions", "orders", "actors", "health"]) {
      if (s[key] !== undefined) view[key] = s[key];
    }
    if (s.orders && Array.isArray(s.orders.fills)) s.orders.fills.forEach(addFill);
    if (Array.isArray(s.alerts)) s.alerts.forEach(addAlert);
    renderStatus(view.status);
    renderPnl(view.pnl);
    renderRisk(view.risk);
    renderPositions(view.positions);
    renderOrders();
    renderHealth(view.health);
    renderActors(view.actors);
    renderAlerts();
  }

  function handleFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      console.warn("tradingd: a frame that is not JSON was ignored", err);
      return;
    }
    switch (msg && msg.type) {
      case "snapshot":
        applySnapshot(msg);
        break;
      case "fill":
        addFill(msg.fill ?? msg);
        renderOrders();
        break;
      case "alert":
        addAlert(msg.alert ?? msg);
        renderAlerts();
        break;
      default:
        // Newer daemons may send more kinds; this page shows what it knows.
        break;
    }
  }

  // ---- connection ---------------------------------------------------------------------

  function showConnection(kind, text) {
    setField("connection", text, kind, `connection conn-${kind}`);
    document.body.classList.toggle("offline", kind === "offline");
    document.body.classList.toggle("stale", kind === "stale");
  }

  function socketUrl() {
    const url = new URL("ws", window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function connect() {
    conn.retryAt = 0;
    showConnection("offline", "connecting");
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      console.warn("tradingd: cannot open the socket", err);
      scheduleReconnect();
      return;
    }
    conn.ws = ws;
    ws.onopen = () => {
      conn.lastFrame = Date.now();
      showConnection("live", "live");
    };
    ws.onmessage = (ev) => {
      conn.attempt = 0;
      conn.lastFrame = Date.now();
      if (conn.ws === ws) showConnection("live", "live");
      handleFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (conn.ws !== ws) return;
      conn.ws = null;
      const why =
        ev.code === 1001
          ? "daemon going away"
          : ev.code === 1011
            ? "daemon error"
            : ev.code === 1006
              ? "no connection"
              : `closed (${ev.code})`;
      scheduleReconnect(why);
    };
    // An error is always followed by close, which handles it.
    ws.onerror = () => {};
  }

  function scheduleReconnect(why = "") {
    const base = BACKOFF_MS[Math.min(conn.attempt, BACKOFF_MS.length - 1)];
    conn.attempt += 1;
    // Jitter, so that many pages do not all come back at the same instant.
    conn.retryAt = Date.now() + base * (0.8 + 0.4 * Math.random());
    conn.why = why;
    updateRetryText();
  }

  function updateRetryText() {
    const secs = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
    showConnection("offline", `disconnected${conn.why ? ": " + conn.why : ""}, retry in ${secs} s`);
  }

  function tick() {
    const now = Date.now();
    if (conn.retryAt) {
      if (now >= conn.retryAt) connect();
      else updateRetryText();
      return;
    }
    if (conn.ws && conn.ws.readyState === WebSocket.OPEN) {
      const quiet = now - conn.lastFrame;
      if (quiet > DEAD_MS) {
        const ws = conn.ws;
        conn.ws = null;
        ws.close();
        scheduleReconnect("no data");
      } else if (quiet > STALE_MS) {
        showConnection("stale", `no data for ${Math.floor(quiet / 1000)} s`);
      }
    }
  }

  function start() {
    // Opened as /?token=...: the cookie now carries it, so keep it out of the address
    // bar, the history and any bookmark.
    const url = new URL(window.location.href);
    if (url.searchParams.has("token")) {
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    renderOrders();
    renderAlerts();
    drawEquity();
    window.addEventListener("resize", drawEquity);
    conn.timer = window.setInterval(tick, 250);
    connect();
  }

  start();
})();
