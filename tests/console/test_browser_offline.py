"""Offline (issue 14, "What it must show" 3): with the browser allowed nowhere but loopback, every console
page, /docs and /redoc render completely: no request leaves the machine (the `tab` fixture fails the test on
any), no local asset fails, no script error. The page list comes from the console's routes, so a page that is
not visited here (or skipped for a stated reason) fails the test. And the cockpit drill-down, school -> room
-> device, as IT staff use it."""

from __future__ import annotations

import re
from typing import Any

from fleet.domain.enums import Role
from tests.api.test_console_scope_matrix import console_routes, rollout_with_device
from tests.api.test_scope_matrix import new_stocktake
from tests.console.conftest import LiveServer, Tab
from tests.console.test_browser_pages import sign_in, world_with_user
from tests.factories import World

# GET routes that are not pages a person opens: what they are is why they are skipped.
NOT_PAGES = {
    "/cockpit/stream": "the cockpit's event stream (opened by the cockpit pages visited here)",
    "/commands/{batch_id}": "a fragment the device page polls for a command's result",
    "/rollouts/{rollout_id}/progress": "a fragment the rollout page polls",
    "/deliveries/export.{fmt}": "a file download",
    "/reports/{name}/file": "a file download",
    "/setup": "answers only while no user exists (tests/console/test_browser_basics.py)",
}


def pages(w: World, rollout: int, rollout_device: int, stocktake: int) -> dict[str, str]:
    """Each console page route, and the address of one of its pages in the test world."""
    return {
        "/": "/",
        "/cockpit/schools/{school_id}": f"/cockpit/schools/{w.school_a}",
        "/cockpit/rooms/{room_id}": f"/cockpit/rooms/{w.room_a}",
        "/devices": "/devices",
        "/devices/{device_id}": f"/devices/{w.device_a}",
        "/deliveries": "/deliveries",
        "/provisioning": f"/provisioning?school={w.school_a}",
        "/alerts": "/alerts",
        "/rollouts": "/rollouts",
        "/rollouts/{rollout_id}": f"/rollouts/{rollout}",
        "/rollouts/new": "/rollouts/new",
        "/rollouts/{rollout_id}/devices/{device_id}": f"/rollouts/{rollout}/devices/{rollout_device}",
        "/reports": "/reports?name=inventory",
        "/admin": "/admin",
        "/admin/audit": "/admin/audit",
        "/admin/timetables": f"/admin/timetables?school={w.school_a}",
        "/admin/update-policies": "/admin/update-policies",
        "/labels": f"/labels?room={w.room_a}",
        "/stocktake": "/stocktake",
        "/stocktake/{stocktake_id}": f"/stocktake/{stocktake}",
        "/signin": "/signin",
    }


def test_every_page_and_the_api_docs_render_with_no_network(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    w = world_with_user(live_server, "root", Role.ADMIN, school=None)

    async def rollout(api: Any) -> tuple[int, int, int]:
        return (*await rollout_with_device(api, w, True), await new_stocktake(api, w, True))

    to_visit = pages(w, *live_server.run(rollout))
    routes = {path for method, path in console_routes() if method == "GET"}
    assert not sorted(routes - to_visit.keys() - NOT_PAGES.keys()), "console pages this test does not visit"
    assert not sorted((to_visit.keys() | NOT_PAGES.keys()) - routes), "visited routes that no longer exist"

    failed: list[str] = []
    errors: list[str] = []

    def request_failed(r: Any) -> None:
        # Leaving a live page aborts its open event stream, and a quick navigation may abort the tab's favicon
        # fetch: that is the browser cancelling, not a failure (a missing file answers 404, checked below).
        cancelled = "ERR_ABORTED" in str(r.failure)
        if not (cancelled and ("/cockpit/stream" in r.url or r.url.endswith("/static/favicon.svg"))):
            failed.append(f"{r.url} {r.failure}")

    tab.page.on("requestfailed", request_failed)
    tab.page.on(
        "response",
        lambda r: failed.append(f"{r.url} {r.status}") if "/static/" in r.url and r.status >= 400 else None,
    )
    tab.page.on("pageerror", lambda e: errors.append(str(e)))
    tab.go("/signin")
    tab.page.wait_for_load_state("networkidle")
    sign_in(tab, "root")
    for route, path in to_visit.items():
        if route == "/signin":
            continue
        response = tab.go(path)
        assert response is not None and response.status == 200, (path, response and response.status)
        # networkidle never comes on a page with a live stream open: wait for the page's own load instead.
        tab.page.wait_for_load_state("load")
        assert tab.page.locator("main h1").count() >= 1, path
        tab.shot(re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "cockpit", full_page=False)
    tab.go("/")
    tab.page.wait_for_selector(".chart svg", timeout=30_000)  # ECharts, shipped in the package, drew
    for path, ready in (("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")):
        tab.go(path)
        tab.page.wait_for_selector(ready, timeout=30_000)
        assert "LabFleet" in tab.page.locator(ready).first.inner_text()
    assert not failed, failed
    assert not errors, errors
    # and the tab fixture fails the test on any request that tried to leave loopback


def test_the_cockpit_drills_down_from_school_to_room_to_device(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    w = world_with_user(live_server, "it-a", Role.IT_STAFF)
    sign_in(tab, "it-a")
    tab.go("/")
    assert tab.page.locator(".school").count() == 1  # only school A
    tab.page.locator(f"#school-{w.school_a} h2 a").click()
    tab.page.wait_for_url(f"**/cockpit/schools/{w.school_a}")
    rows = tab.page.locator("#rooms-table tbody tr")
    assert rows.count() == 1
    tab.page.wait_for_function("() => document.querySelector('#live').hasAttribute('data-updated')")
    tab.shot("school")
    rows.first.locator("a").click()
    tab.page.wait_for_url(f"**/cockpit/rooms/{w.room_a}")
    devices = tab.page.locator("#room-devices tbody tr")
    assert devices.count() == 1 and "AT-a-1" in devices.first.inner_text()
    tab.shot("room")
    devices.first.get_by_role("link", name="AT-a-1").click()
    tab.page.wait_for_url(f"**/devices/{w.device_a}")
    assert tab.page.locator("h1").inner_text().startswith("AT-a-1")
    # Another school's school and room pages are the 404 page.
    for path in (f"/cockpit/schools/{w.school_b}", f"/cockpit/rooms/{w.room_b}"):
        response = tab.go(path)
        assert response is not None and response.status == 404
        assert tab.page.locator(".error-code").inner_text() == "404"
    tab.go(f"/cockpit/schools/{w.school_a}")
    tab.page.get_by_role("button", name="中文").click()
    tab.page.wait_for_load_state()
    assert "教室" in tab.page.locator("#rooms-table thead").inner_text()
    tab.shot("school-zh")
