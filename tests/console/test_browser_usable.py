"""Usable in a real browser: every page fits a 1366x768 laptop and a 768x1024 tablet without sideways
scrolling of the page (wide tables scroll inside their frame), with a screenshot of each; and the keyboard
alone reaches every control of a form page, with a visible focus ring, starting from the skip link."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fleet.domain.enums import Role
from tests.console.conftest import LiveServer, Tab
from tests.console.helpers import PASSWORD
from tests.console.test_browser_pages import sign_in, world_with_user

SIZES = {"laptop": (1366, 768), "tablet": (768, 1024)}


def pages(w: Any) -> list[str]:
    return [
        "/",
        "/devices",
        f"/devices/{w.device_a}",
        "/deliveries",
        f"/provisioning?school={w.school_a}",
        "/alerts",
        "/rollouts",
        "/reports?name=inventory",
        "/admin",
        "/admin/audit",
        f"/admin/timetables?school={w.school_a}",
        f"/admin/update-policies?school={w.school_a}",
        "/no/such/page",
    ]


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_page_fits_a_laptop_and_a_tablet(live_server: LiveServer, tab: Tab, size: str) -> None:
    tab.base = live_server.url
    w = world_with_user(live_server, "root", Role.ADMIN, school=None)
    width, height = SIZES[size]
    tab.page.set_viewport_size({"width": width, "height": height})
    sign_in(tab, "root")
    too_wide = {}
    for path in pages(w):
        tab.go(path)
        tab.page.wait_for_load_state()
        scroll = tab.page.evaluate("() => document.documentElement.scrollWidth")
        if scroll > width:
            too_wide[path] = scroll
        tab.shot(path.strip("/").split("?")[0].replace("/", "-") or "cockpit", full_page=False)
    assert not too_wide, f"pages wider than {width}px: {too_wide}"


def test_the_keyboard_reaches_every_control_with_a_visible_focus(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    w = world_with_user(live_server, "it-a", Role.IT_STAFF)
    sign_in(tab, "it-a")
    tab.go(f"/admin/timetables?school={w.school_a}")
    tab.page.keyboard.press("Tab")
    first = tab.page.evaluate("() => document.activeElement.className")
    assert first == "skip"  # the first stop skips the menu
    tab.page.keyboard.press("Enter")
    # A fragment navigation lands after the key press returns: wait for it rather than read the URL at once.
    tab.page.wait_for_url(lambda url: url.endswith("#main"), timeout=5000)
    controls = tab.page.evaluate(
        """() => Array.from(document.querySelectorAll(
            'main a[href], main button, main input:not([type=hidden]), main select'))
          .filter(e => e.offsetParent !== null)
          .map(e => e.id || e.getAttribute('aria-label') || e.textContent.trim())"""
    )
    reached: list[str] = []
    unringed: list[str] = []
    for _ in range(len(controls) + 10):
        tab.page.keyboard.press("Tab")
        info = tab.page.evaluate(
            """() => { const e = document.activeElement; const s = getComputedStyle(e);
            return {name: e.id || e.getAttribute('aria-label') || e.textContent.trim(),
                    inMain: !!e.closest('main'),
                    ring: s.outlineStyle !== 'none' && s.outlineWidth !== '0px'}; }"""
        )
        if info["inMain"]:
            reached.append(info["name"])
            if not info["ring"]:
                unringed.append(info["name"])
    missing = [c for c in controls if c not in reached]
    assert not missing, f"not reachable by keyboard: {missing}"
    assert not unringed, f"focused without a visible ring: {unringed}"
    tab.page.keyboard.press("Shift+Tab")
    tab.shot("keyboard-focus", full_page=False)


def test_a_live_page_whose_session_ended_goes_to_sign_in_and_back(live_server: LiveServer, tab: Tab) -> None:
    """The alerts list refreshes itself (htmx, every 5 s): once the session is gone, the next refresh sends
    the browser to sign-in (HX-Redirect), and signing in returns to the alerts page."""
    tab.base = live_server.url
    world_with_user(live_server, "it-a", Role.IT_STAFF)
    sign_in(tab, "it-a")
    tab.go("/alerts?status=active")
    assert tab.page.locator("#alert-rows").is_visible()
    tab.page.context.clear_cookies()  # the session ends (signed out elsewhere, or expired)
    tab.page.wait_for_url(re.compile(r"/signin\?next="), timeout=30_000)
    assert "next=%2Falerts%3Fstatus%3Dactive" in tab.page.url
    tab.page.get_by_label("Username").fill("it-a")
    tab.page.get_by_label("Password").fill(PASSWORD)
    tab.page.locator("form[action='/signin'] button[type=submit]").click()
    tab.page.wait_for_url(re.compile(r"/alerts\?status=active$"))
    tab.shot("back-on-alerts", full_page=False)


def test_a_refresh_answered_by_an_error_page_shows_it_in_place(live_server: LiveServer, tab: Tab) -> None:
    """A partial update that meets the error page (here the real 404 page, served for the list's refresh)
    shows it in the main area instead of silently keeping a stale list."""
    import httpx

    tab.base = live_server.url
    world_with_user(live_server, "it-a", Role.IT_STAFF)
    sign_in(tab, "it-a")
    tab.go("/alerts?status=active")
    not_found = httpx.get(live_server.url + "/no/such/page", headers={"Accept": "text/html"})
    assert not_found.status_code == 404
    tab.page.route(
        re.compile(r".*/alerts\?.*"),
        lambda route: route.fulfill(status=404, body=not_found.text, content_type="text/html"),
    )
    tab.page.locator("main .error-code").wait_for(timeout=30_000)
    assert tab.page.locator("main .error-code").inner_text() == "404"
    assert tab.page.url.endswith("/alerts?status=active")
