"""Console-wide behaviour, in process: error pages in the console's style (a 500 with its incident number and
no trace, a 405 as a page, never raw JSON), an expired session sending the user to sign-in and back (htmx
requests too), and a label on every input of every console page."""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import APIRouter

from fleet.console.app import ConsoleRoute, UserPage
from fleet.domain.enums import Role
from tests.api.test_console_scope_matrix import CONSOLE
from tests.conftest import Api
from tests.console.helpers import add_user, sign_in
from tests.factories import build_world

HTML = {"Accept": "text/html"}


async def test_an_unexpected_failure_shows_the_500_page_with_its_incident_and_no_trace(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    boom = APIRouter(route_class=ConsoleRoute)

    @boom.get("/boom")
    async def explode(page: UserPage) -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app = api.client._transport.app  # type: ignore[attr-defined]
    app.include_router(boom)
    await add_user(api.sessions, api.clock, "ada", locale="zh_CN")
    await sign_in(api.client, "ada")
    with caplog.at_level(logging.ERROR, logger="fleet.console.app"):
        r = await api.client.get("/boom", headers=HTML)
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    incident = r.headers["x-incident-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", incident)
    assert f'<code class="incident">{incident}</code>' in r.text
    assert "出错了" in r.text  # in the user's language
    assert "Traceback" not in r.text and "hunter2" not in r.text and "RuntimeError" not in r.text
    logged = [rec for rec in caplog.records if incident in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the trace is in the log, under the same number


async def test_a_visit_to_a_form_only_address_is_a_page_not_json(api: Api) -> None:
    await add_user(api.sessions, api.clock, "ada")
    await sign_in(api.client, "ada")
    r = await api.client.get("/admin/users", headers=HTML)  # reloading after a refused post
    assert r.status_code == 405 and r.headers["content-type"].startswith("text/html")
    assert 'class="error-code">405' in r.text and '"detail"' not in r.text
    r = await api.client.get("/no/such/page", headers=HTML)
    assert r.status_code == 404 and "error-code" in r.text
    # API clients keep the API's JSON answers.
    r = await api.client.get("/api/v1/no-such", headers=HTML)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_an_idle_session_expires_and_sign_in_returns_to_the_page(api: Api) -> None:
    await add_user(api.sessions, api.clock, "ada")
    await sign_in(api.client, "ada")
    assert (await api.client.get("/devices?q=SN")).status_code == 200
    api.clock.advance(61 * 60)  # past session_idle_minutes (60)
    r = await api.client.get("/devices?q=SN")
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=%2Fdevices%3Fq%3DSN"
    r = await sign_in(api.client, "ada", next="/devices?q=SN")
    assert r.status_code == 303 and r.headers["location"] == "/devices?q=SN"


async def test_an_htmx_request_after_expiry_is_sent_to_sign_in_for_the_page_it_came_from(api: Api) -> None:
    """A poll (alerts every 5 s) or a partial form post with an expired session: HX-Redirect to sign-in,
    returning to the page, not to the fragment's URL."""
    await add_user(api.sessions, api.clock, "ada")
    await sign_in(api.client, "ada")
    api.clock.advance(61 * 60)
    hx = {"HX-Request": "true", "HX-Current-URL": "http://test/alerts?status=active&school=3"}
    r = await api.client.get("/alerts?status=active&school=3", headers={**hx, "HX-Target": "alert-rows"})
    assert r.status_code == 204
    assert r.headers["hx-redirect"] == "/signin?next=%2Falerts%3Fstatus%3Dactive%26school%3D3"
    hx["HX-Current-URL"] = "http://test/devices/7"
    r = await api.client.post("/devices/7/commands", data={"name": "reboot"}, headers=hx)
    assert r.status_code == 204 and r.headers["hx-redirect"] == "/signin?next=%2Fdevices%2F7"
    # Another site's address in HX-Current-URL is never a place to return to.
    hx["HX-Current-URL"] = "https://evil.example//evil.example/x"
    r = await api.client.get("/alerts", headers=hx)
    assert r.headers["hx-redirect"] == "/signin?next=%2F"


class _Controls(HTMLParser):
    """Form controls of a page and what labels them."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str]] = []
        self.label_for: set[str] = set()
        self.label_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "label":
            self.label_depth += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and a.get("type", "text") in ("hidden", "submit", "button", "reset", "image"):
                return
            self.controls.append({**a, "_tag": tag, "_wrapped": "1" if self.label_depth else ""})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self.label_depth:
            self.label_depth -= 1


def unlabelled(html: str) -> list[str]:
    p = _Controls()
    p.feed(html)
    bad = []
    for c in p.controls:
        named = c.get("aria-label") or c.get("aria-labelledby") or c["_wrapped"]
        if not named and c.get("id", "") not in p.label_for:
            bad.append(f"<{c['_tag']} name={c.get('name')!r} id={c.get('id')!r}>")
    return bad


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
async def test_every_input_of_every_console_page_has_a_label(api: Api, locale: str) -> None:
    """Walks every console page (each GET route of the scope matrix, as an admin who sees everything), plus
    the edit forms, sign-in and the error page: an input, select or textarea without a label fails."""
    w = await build_world(api)
    await add_user(api.sessions, api.clock, "root", Role.ADMIN, locale=locale)
    anonymous = httpx.AsyncClient(transport=api.client._transport, base_url="http://test")  # type: ignore[attr-defined]
    try:
        signin = await anonymous.get("/signin")
    finally:
        await anonymous.aclose()
    pages: dict[str, str] = {"/signin": signin.text}
    await sign_in(api.client, "root")
    paths = [
        f"/admin/timetables?school={w.school_a}&edit=period-{w.period_a}",
        f"/admin/timetables?school={w.school_a}&edit=calendar-{w.calendar_a}",
        "/no/such/page",
    ]
    for (method, route), spec in sorted(CONSOLE.items()):
        if method == "GET" and not spec.stream:
            path, _kw = await spec.build(api, w, True)
            paths.append(path)
    for path in paths:
        r = await api.client.get(path, headers=HTML)
        assert r.status_code in (200, 404), (path, r.status_code)
        if r.headers["content-type"].startswith("text/html"):
            pages[path] = r.text
    assert len(pages) >= 15
    found = {path: bad for path, html in pages.items() if (bad := unlabelled(html))}
    assert not found, f"inputs without a label: {found}"
    # The walk does look at forms: the admin pages alone hold dozens of labelled controls.
    admin_controls = _Controls()
    admin_controls.feed(pages["/admin"])
    assert len(admin_controls.controls) >= 8


def test_the_label_check_fails_on_an_unlabelled_input() -> None:
    assert (
        unlabelled('<label for="a">A</label><input id="a"><label>B <select name="b"></select></label>') == []
    )
    assert unlabelled('<input name="q" placeholder="Search">') == ["<input name='q' id=None>"]
    assert unlabelled('<label for="x">X</label><textarea id="y" name="t"></textarea>') == [
        "<textarea name='t' id='y'>"
    ]
