"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The page is served by ``add_dashboard_routes`` on 127.0.0.1 from the dashboard's test
double (``tests/dashboard_double.py``), whose state the test moves while the page is open:
equity changes, a fill arrives, an alert, trading goes HALTED, the update stream ends and
the page reconnects. Every request the page makes is recorded, and any that is not for
127.0.0.1 is blocked; the test asserts there was none, and that the console stayed clean.

Skipped, with the reason, when Chromium is not installed or Playwright cannot start it.
Playwright's own browser downloads are never used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.dashboard_double import DashboardDouble, serve_dashboard
from tests.helpers import eventually

CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = "127.0.0.1"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (it is in the dev extra)"
)
expect = playwright_api.expect


class PageWatch:
    """What the page asked for and complained about."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.sockets: list[str] = []
        self.console_errors: list[str] = []

    async def route(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == LOOPBACK:
            await route.continue_()
        else:
            self.blocked.append(url)
            await route.abort("blockedbyclient")

    def attach(self, page: Any) -> None:
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on(
            "console",
            lambda msg: (
                self.console_errors.append(f"console: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: self.console_errors.append(f"page error: {exc}"))


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        try:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        except playwright_api.Error as exc:
            first_line = str(exc).strip().splitlines()[0]
            pytest.skip(f"playwright could not start {CHROMIUM}: {first_line}")
        try:
            yield browser
        finally:
            await browser.close()


def field(page: Any, name: str) -> Any:
    return page.locator(f'[data-field="{name}"]')


async def test_live_values_reach_the_page_and_nothing_leaves_the_machine(
    browser: Any, tmp_path: Path
) -> None:
    double = DashboardDouble(interval=0.1)
    watch = PageWatch()
    async with serve_dashboard(double) as base:
        context = await browser.new_context(viewport={"width": 1600, "height": 1200})
        await context.route("**/*", watch.route)
        page = await context.new_page()
        watch.attach(page)

        await page.goto(base + "/?token=s3cret")
        await expect(field(page, "connection")).to_have_attribute("data-value", "live")
        # The token is kept out of the address bar once the page has it.
        assert "s3cret" not in page.url

        # What was there when the page connected.
        await expect(field(page, "equity")).to_have_text("1,000,000.00")
        await expect(field(page, "trading-state")).to_have_text("ACTIVE")
        await expect(field(page, "mode")).to_have_text("paper")
        await expect(field(page, "data-time")).to_have_text("2024-03-01 14:30:00 UTC")
        await expect(field(page, "realized")).to_have_text("+4,210.50")
        await expect(field(page, "unrealized")).to_have_text("-1,830.75")
        await expect(field(page, "var")).to_have_text("18,250.00")
        await expect(field(page, "drawdown")).to_have_text("1.25%")
        positions = field(page, "positions")
        await expect(positions.locator("tr[data-instrument]")).to_have_count(3)
        aapl = positions.locator('tr[data-instrument="AAPL"]')
        await expect(aapl.locator('[data-field="quantity"]')).to_have_text("1,200")
        await expect(aapl.locator('[data-field="market-value"]')).to_have_text("207,540.00")
        # Utilisation over 100% is red, over 80% amber, and the worst comes first.
        limits = field(page, "limits").locator("[data-limit]")
        await expect(limits.first).to_have_attribute(
            "data-limit", "security/AAPL/position_fraction"
        )
        aapl_limit = field(page, "limits").locator(
            '[data-limit="security/AAPL/position_fraction"] .num'
        )
        await expect(aapl_limit).to_have_text("103.8%")
        await expect(aapl_limit).to_have_class("num u-breach")
        us_limit = field(page, "limits").locator('[data-limit="region/US/gross_fraction"] .num')
        await expect(us_limit).to_have_class("num u-warn")
        heat = field(page, "heatmap").locator(
            'tr[data-group="security · AAPL"] td[data-measure="position_fraction"]'
        )
        await expect(heat).to_have_class("heat-4")
        # Handle latency is handle_ns / processed: 60 microseconds for the risk gate.
        gate = field(page, "actors").locator('tr[data-actor="risk_gate"]')
        await expect(gate.locator('[data-field="latency-mean-us"]')).to_have_text("60.0")
        await expect(gate.locator('[data-field="latency-max-us"]')).to_have_text("310.0")
        await expect(field(page, "health-checks").locator("tr[data-check]")).to_have_count(3)

        # Equity moves, and the page follows each value.
        for equity, shown in ((1_002_345.67, "1,002,345.67"), (999_876.5, "999,876.50")):
            double.set_equity(equity)
            await expect(field(page, "equity")).to_have_text(shown)
            await expect(field(page, "nav")).to_have_text(shown)

        # A fill arrives: it is the newest row of the blotter.
        fill = double.add_fill("MSFT", "BUY", 50.0, 410.25)
        newest = field(page, "fills").locator("tr").first
        await expect(newest).to_have_attribute("data-instrument", "MSFT")
        await expect(newest).to_have_attribute("data-order-id", fill["client_order_id"])
        await expect(newest.locator('[data-field="price"]')).to_have_text("410.25")
        await expect(field(page, "fills").locator("tr[data-instrument]")).to_have_count(3)

        # An alert, then a halt (which raises a critical alert): latest first.
        double.raise_alert(40, "gross_leverage", "gross leverage 2.1 over its limit 2.0")
        alerts = field(page, "alerts").locator("li[data-rule]")
        await expect(alerts.first).to_have_attribute("data-rule", "gross_leverage")
        await expect(alerts.first).to_have_attribute("data-level", "ERROR")
        await double.command("halt", {"reason": "drawdown 6% over the 5% halt"}, "test")
        await expect(field(page, "trading-state")).to_have_text("HALTED")
        await expect(field(page, "trading-state")).to_have_class("trading-state state-halted")
        await expect(field(page, "trading-reason")).to_have_text("drawdown 6% over the 5% halt")
        await expect(alerts.first).to_have_attribute("data-level", "CRITICAL")
        await expect(alerts.first.locator('[data-field="message"]')).to_have_text(
            "trading halted: drawdown 6% over the 5% halt"
        )
        await expect(alerts).to_have_count(3)
        await expect(page).to_have_title("HALTED · tradingd")

        # The daemon ends the stream: the page shows it is disconnected, comes back by
        # itself, and what it shows is live again.
        await page.evaluate(
            """() => {
                const node = document.querySelector('[data-field="connection"]');
                window.seenStates = [];
                new MutationObserver(() => window.seenStates.push(
                    [node.dataset.value, document.body.className, node.textContent].join("|"))
                ).observe(node, {attributes: true, childList: true, subtree: true});
            }"""
        )
        double.end_streams()
        await page.wait_for_function(
            "window.seenStates.some(s => s.startsWith("
            "'offline|offline|disconnected: daemon going away, retry in'))"
        )
        await expect(field(page, "connection")).to_have_attribute("data-value", "live")
        await eventually(lambda: double.subscriptions == 2, message="the page reconnected")
        double.set_equity(1_010_000.0)
        await expect(field(page, "equity")).to_have_text("1,010,000.00")
        await expect(alerts).to_have_count(3)  # the same alerts, not doubled

        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        await context.close()

    assert watch.blocked == [], "the page asked another host for something"
    hosts = {urlsplit(url).hostname for url in watch.requests + watch.sockets}
    assert hosts == {LOOPBACK}
    assert len(watch.sockets) == 2
    assert watch.console_errors == []


async def test_the_page_says_when_the_daemon_is_gone(browser: Any) -> None:
    double = DashboardDouble(interval=0.1)
    watch = PageWatch()
    context = await browser.new_context()
    await context.route("**/*", watch.route)
    page = await context.new_page()
    watch.attach(page)
    async with serve_dashboard(double) as base:
        await page.goto(base + "/")
        await expect(field(page, "connection")).to_have_attribute("data-value", "live")
        await expect(field(page, "equity")).to_have_text("1,000,000.00")
    # The server is gone: the last figures stay, dimmed, and the page keeps retrying.
    await expect(field(page, "connection")).to_have_attribute("data-value", "offline")
    await expect(field(page, "connection")).to_contain_text("disconnected: no connection, retry in")
    await expect(page.locator("body")).to_have_class("offline")
    await expect(field(page, "equity")).to_have_text("1,000,000.00")
    await context.close()
    assert watch.blocked == []


async def test_a_request_for_another_host_is_stopped_twice(browser: Any) -> None:
    # The control for the assertions above. From the page, the Content Security Policy
    # refuses it (and says so on the console); a navigation, which that policy does not
    # cover, is caught by the test's own block. Neither reaches the network.
    double = DashboardDouble(interval=0.1)
    watch = PageWatch()
    context = await browser.new_context()
    await context.route("**/*", watch.route)
    page = await context.new_page()
    watch.attach(page)
    async with serve_dashboard(double) as base:
        await page.goto(base + "/")
        outcome = await page.evaluate(
            "fetch('https://cdn.example.invalid/lib.js').then(() => 'fetched', () => 'failed')"
        )
        assert outcome == "failed"
        assert any("Content Security Policy" in e for e in watch.console_errors), (
            watch.console_errors
        )
        assert watch.blocked == []
        with pytest.raises(playwright_api.Error, match="ERR_BLOCKED_BY_CLIENT"):
            await page.goto("https://cdn.example.invalid/")
    await context.close()
    assert watch.blocked == ["https://cdn.example.invalid/"]


async def test_figures_that_stop_coming_are_shown_as_stale(browser: Any) -> None:
    # One frame on connect, then nothing for longer than the page's 5 s patience.
    double = DashboardDouble(interval=60.0)
    context = await browser.new_context()
    page = await context.new_page()
    async with serve_dashboard(double) as base:
        await page.goto(base + "/")
        await expect(field(page, "equity")).to_have_text("1,000,000.00")
        await expect(field(page, "connection")).to_have_attribute("data-value", "live")
        await expect(field(page, "connection")).to_have_attribute(
            "data-value", "stale", timeout=10_000
        )
        await expect(field(page, "connection")).to_contain_text("no data for")
        await expect(page.locator("body")).to_have_class("stale")
        # A frame brings it back.
        double.raise_alert(20, "note", "still here")
        await expect(field(page, "connection")).to_have_attribute("data-value", "live")
        await expect(page.locator("body")).to_have_class("")
    await context.close()
