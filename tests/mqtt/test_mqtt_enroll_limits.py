"""Failed enrollments are rate limited per claim token and per client address: 429 with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from tests.conftest import Api, make_settings
from tests.factories import build_world, post

V1 = "/api/v1"
PER_SOURCE, PER_TOKEN = 6, 3


@pytest.fixture
async def limited(sqlite_url: str, clock: FakeClock) -> AsyncIterator[tuple[Api, httpx.AsyncClient]]:
    settings = make_settings(
        sqlite_url,
        api={
            "enroll_failures_per_minute_per_source": PER_SOURCE,
            "enroll_failures_per_minute_per_token": PER_TOKEN,
        },
    )
    app = create_app(settings, clock=clock, migrate=False)
    async with app.router.lifespan_context(app):
        here = httpx.ASGITransport(app=app, client=("10.1.0.7", 40000))
        elsewhere = httpx.ASGITransport(app=app, client=("10.2.0.9", 40000))
        async with (
            httpx.AsyncClient(transport=here, base_url="http://test") as client,
            httpx.AsyncClient(transport=elsewhere, base_url="http://test") as other,
        ):
            yield Api(client=client, sessions=app.state.fleet.sessions, clock=clock), other


async def test_failures_against_one_token_get_429_with_retry_after(
    limited: tuple[Api, httpx.AsyncClient],
) -> None:
    api, other = limited
    w = await build_world(api)
    tok = (await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 5}))["token"]
    for i in range(PER_TOKEN):  # serials not in the inventory, and the token does not allow unknown ones
        r = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": f"NOPE-{i}"})
        assert r.status_code in (401, 403, 404, 409, 422), r.text
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": "SN-a-1"})
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    assert r.json()["details"] == {"reason": "rate_limited", "scope": "token"}
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # The token is held for everyone, from any address, until its window frees.
    assert (
        await other.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": "SN-a-1"})
    ).status_code == 429
    # Another token from the same address still works: this address has failures left.
    fresh = (await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 1}))["token"]
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": fresh, "serial_number": "SN-a-1"})
    assert r.status_code == 201, r.text


async def test_failures_from_one_address_get_429_other_addresses_unaffected(
    limited: tuple[Api, httpx.AsyncClient],
) -> None:
    api, other = limited
    w = await build_world(api)
    for i in range(PER_SOURCE):  # guessing tokens
        r = await api.client.post(
            f"{V1}/enroll", json={"claim_token": f"guess-{i}-" + "x" * 20, "serial_number": "SN-a-1"}
        )
        assert r.status_code == 401, r.text
    good = (await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 1}))["token"]
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": good, "serial_number": "SN-a-1"})
    assert r.status_code == 429 and r.json()["details"]["scope"] == "source"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    r = await other.post(f"{V1}/enroll", json={"claim_token": good, "serial_number": "SN-a-1"})
    assert r.status_code == 201, r.text


async def test_successful_enrollments_are_not_limited(limited: tuple[Api, httpx.AsyncClient]) -> None:
    """At the 08:00 bell a whole school enrolls through one NAT address: only failures count."""
    api, _ = limited
    w = await build_world(api)
    tok = (
        await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 20, "allow_unknown": True})
    )["token"]
    for i in range(PER_SOURCE * 2):
        r = await api.client.post(
            f"{V1}/enroll",
            json={
                "claim_token": tok,
                "serial_number": f"NEW-{i}",
                "vendor": "EduTech",
                "model_number": "LT-100",
            },
        )
        assert r.status_code == 201, r.text
