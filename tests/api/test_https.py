"""HTTPS for the API and console (issue 19): HSTS on every HTTPS answer (direct or behind a proxy that says
X-Forwarded-Proto: https) and never on plain HTTP; certificate expiry as a warning in /readyz and a translated
banner on the console's administration page, 30 days ahead (an injected clock, no waiting)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.services import tls
from fleet.settings import TlsSettings
from tests.conftest import Api, make_settings
from tests.console.helpers import add_user, sign_in

HSTS = "strict-transport-security"


@pytest.fixture
async def tls_api(sqlite_url: str, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Api]:
    """The app configured to serve HTTPS, with a server certificate issued at the clock's now."""
    tls.init(TlsSettings(dir=str(tmp_path / "tls")), ["lab.example"], clock.now())
    settings = make_settings(
        sqlite_url, http={"tls": True}, tls={"dir": str(tmp_path / "tls")}, mqtt={"broker": "none"}
    )
    app = create_app(settings, clock=clock, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://lab.example") as client:
            yield Api(client=client, sessions=app.state.fleet.sessions, clock=clock)


async def test_hsts_is_sent_over_https_only(api: Api) -> None:
    plain = await api.client.get("/healthz")
    assert HSTS not in plain.headers
    proxied = await api.client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert proxied.headers[HSTS] == "max-age=31536000"
    # A proxy chain names the client's hop first.
    assert HSTS in (await api.client.get("/", headers={"X-Forwarded-Proto": "https, http"})).headers
    assert HSTS not in (await api.client.get("/healthz", headers={"X-Forwarded-Proto": "http"})).headers


async def test_hsts_is_sent_when_serving_https_directly(tls_api: Api) -> None:
    r = await tls_api.client.get("/readyz")
    assert r.status_code == 200 and r.headers[HSTS] == "max-age=31536000"


async def test_readyz_warns_30_days_before_the_server_certificate_expires(tls_api: Api) -> None:
    body = (await tls_api.client.get("/readyz")).json()
    assert body == {"status": "ok", "database": "ok", "warnings": []}
    tls_api.clock.advance(timedelta(days=tls.SERVER_DAYS - 31).total_seconds())
    assert (await tls_api.client.get("/readyz")).json()["warnings"] == []
    tls_api.clock.advance(timedelta(days=2).total_seconds())
    r = await tls_api.client.get("/readyz")
    assert r.status_code == 200  # still ready: a warning, until the day itself
    (warn,) = r.json()["warnings"]
    assert (warn["code"], warn["certificate"], warn["days_left"], warn["action"]) == (
        "certificate_expiring",
        "server",
        29,
        "labfleet tls renew",
    )


async def test_readyz_has_no_certificate_warnings_when_nothing_serves_tls(api: Api) -> None:
    assert (await api.client.get("/readyz")).json()["warnings"] == []


@pytest.mark.parametrize(
    ("locale", "soon", "expired"),
    [("en", "in 29 days", "expired on"), ("zh-CN", "还剩 29 天", "已于")],
)
async def test_the_admin_page_shows_the_expiry_translated(
    tls_api: Api, locale: str, soon: str, expired: str
) -> None:
    await add_user(tls_api.sessions, tls_api.clock, "ada", locale=locale)
    await sign_in(tls_api.client, "ada")
    page = await tls_api.client.get("/admin")
    assert 'data-cert="server"' not in page.text
    tls_api.clock.advance(timedelta(days=tls.SERVER_DAYS - 29).total_seconds())
    await sign_in(tls_api.client, "ada")  # a fresh session at the new time
    page = await tls_api.client.get("/admin")
    assert page.status_code == 200 and 'data-cert="server"' in page.text and soon in page.text
    assert "labfleet tls renew" in page.text
    tls_api.clock.advance(timedelta(days=30).total_seconds())
    await sign_in(tls_api.client, "ada")
    page = await tls_api.client.get("/admin")
    assert expired in page.text
