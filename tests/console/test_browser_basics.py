"""The console in a real browser (system Chromium): first-admin setup and sign-in, CSRF, languages, and
offline rendering of every page and of /docs and /redoc."""

from __future__ import annotations

import re
from typing import Any

from fleet.persistence.db import unit_of_work
from fleet.services.users import create_setup_token
from tests.console.conftest import LiveServer, Tab
from tests.console.helpers import PASSWORD, add_user


def sign_in(tab: Tab, username: str, password: str = PASSWORD) -> None:
    tab.go("/signin")
    tab.page.get_by_label(re.compile("Username|用户名")).fill(username)
    tab.page.get_by_label(re.compile("^(Password|密码)$")).fill(password)
    tab.page.locator("form[action='/signin'] button[type=submit]").click()
    tab.page.wait_for_load_state()


def test_first_admin_setup_then_sign_out_and_in(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url

    async def token(api: Any) -> str:
        async with unit_of_work(api.sessions) as session:
            t = await create_setup_token(session, live_server.settings.console, api.clock.now())
        assert t
        return t

    link = live_server.run(token)
    tab.go(f"/setup?token={link}")
    tab.shot("setup-form")
    tab.page.get_by_label("Username").fill("root")
    tab.page.get_by_label("Password", exact=True).fill("short")
    tab.page.get_by_label("Password again").fill("short")
    tab.page.get_by_role("button", name="Create and sign in").click()
    # The reason shows beside the field, in the user's language.
    assert tab.page.locator("#e-password").inner_text() == "At least 10 characters."
    tab.shot("setup-bad-password")
    tab.page.get_by_label("Password", exact=True).fill(PASSWORD)
    tab.page.get_by_label("Password again").fill(PASSWORD)
    tab.page.get_by_role("button", name="Create and sign in").click()
    tab.page.wait_for_url(live_server.url + "/")
    assert tab.page.locator(".who").inner_text().startswith("root")
    tab.shot("cockpit-after-setup")
    # The link was single use.
    tab.go(f"/setup?token={link}")
    assert tab.page.locator(".error-code").inner_text() == "404"
    tab.go("/")
    tab.page.get_by_role("button", name="Sign out").click()
    tab.page.wait_for_url(re.compile(r"/signin"))
    tab.shot("signed-out")
    sign_in(tab, "root", "not the password")
    assert "Wrong username or password." in tab.page.locator("[role=alert]").inner_text()
    sign_in(tab, "root")
    assert tab.page.locator(".who").is_visible()


def test_an_expired_session_returns_to_the_page_after_sign_in(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    live_server.run(lambda api: add_user(api.sessions, api.clock, "ada"))
    tab.go("/?school=1")
    assert "/signin?next=" in tab.page.url
    tab.page.get_by_label("Username").fill("ada")
    tab.page.get_by_label("Password").fill(PASSWORD)
    tab.page.locator("form[action='/signin'] button[type=submit]").click()
    tab.page.wait_for_url(live_server.url + "/?school=1")


def test_a_form_post_without_the_csrf_token_is_refused(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    live_server.run(lambda api: add_user(api.sessions, api.clock, "ada"))
    sign_in(tab, "ada")
    # A page on this origin posting the sign-out form without its token (what a forged form would do).
    tab.page.evaluate(
        """() => { const f = document.createElement('form'); f.method = 'post'; f.action = '/signout';
        document.body.appendChild(f); f.submit(); }"""
    )
    tab.page.wait_for_load_state()
    assert tab.page.locator(".error-code").inner_text() == "403"
    assert "security token" in tab.page.content()
    tab.shot("csrf-refused")
    tab.go("/")
    assert tab.page.locator(".who").is_visible()  # the forged post did not sign the user out


def test_switching_to_chinese_shows_chinese_on_the_page(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    live_server.run(lambda api: add_user(api.sessions, api.clock, "ada"))
    sign_in(tab, "ada")
    tab.page.get_by_role("button", name="中文").click()
    tab.page.wait_for_load_state()
    assert tab.page.locator("html").get_attribute("lang") == "zh-CN"
    nav = tab.page.locator("header nav").inner_text()
    assert "驾驶舱" in nav and "设备" in nav and "告警" in nav
    assert "Cockpit" not in tab.page.locator("main").inner_text()
    tab.shot("cockpit-zh")
    # The choice is the user's setting: it follows them to a new browser.
    tab.page.get_by_role("button", name="退出登录").click()
    tab.page.context.clear_cookies()
    sign_in(tab, "ada")
    assert "驾驶舱" in tab.page.locator("header nav").inner_text()


def test_api_docs_render_offline(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    tab.go("/docs")
    tab.page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "LabFleet" in tab.page.locator(".swagger-ui .info .title").inner_text()
    tab.shot("docs", full_page=False)
    tab.go("/redoc")
    tab.page.wait_for_selector("h1", timeout=30_000)
    assert "LabFleet" in tab.page.locator("h1").first.inner_text()
    tab.shot("redoc", full_page=False)


EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//(?!127\.0\.0\.1|localhost)""", re.IGNORECASE
)
CSS_EXTERNAL = re.compile(r"""url\(\s*["']?(?:https?:)?//|@import\s+["']?(?:https?:)?//""", re.IGNORECASE)


def test_no_served_page_or_stylesheet_references_an_external_url(live_server: LiveServer) -> None:
    import httpx

    live_server.run(lambda api: add_user(api.sessions, api.clock, "ada"))
    with httpx.Client(base_url=live_server.url) as c:
        form = c.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        c.post("/signin", data={"csrf": csrf, "username": "ada", "password": PASSWORD, "next": "/"})
        pages = ["/", "/signin", "/docs", "/redoc", "/no-such-page"]
        assets: set[str] = set()
        for path in pages:
            r = c.get(path, headers={"Accept": "text/html"})
            assert not EXTERNAL.search(r.text), (path, EXTERNAL.search(r.text))
            assets.update(re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", r.text))
        assert "/static/console.css" in assets and "/static/vendor/htmx/htmx.min.js" in assets
        for asset in sorted(assets):
            r = c.get(asset)
            assert r.status_code == 200, asset
            if asset.endswith(".css"):
                assert not CSS_EXTERNAL.search(r.text), asset
