"""A token's last use is recorded for the security inspection, to the minute: at most one write a minute."""

from __future__ import annotations

from sqlalchemy import select

from fleet.persistence.models import ApiToken
from tests.conftest import Api


async def _last_used(api: Api, name: str) -> object:
    async with api.sessions() as s:
        return (await s.execute(select(ApiToken.last_used_at).where(ApiToken.name == name))).scalar_one()


async def test_last_use_is_kept_to_the_minute(api: Api) -> None:
    h = await api.as_("auditor")
    name = "auditor-()"
    assert await _last_used(api, name) is None
    first = api.clock.now()
    assert (await api.client.get("/api/v1/schools", headers=h)).status_code == 200
    assert await _last_used(api, name) == first
    api.clock.advance(59)
    await api.client.get("/api/v1/schools", headers=h)
    assert await _last_used(api, name) == first  # within the minute: not written again
    api.clock.advance(1)
    await api.client.get("/api/v1/schools", headers=h)
    assert await _last_used(api, name) == api.clock.now()
    listed = await api.client.get("/api/v1/tokens", headers=await api.admin())
    mine = next(t for t in listed.json()["items"] if t["name"] == name)
    assert mine["last_used_at"] == "2026-09-07T07:56:00+00:00"
