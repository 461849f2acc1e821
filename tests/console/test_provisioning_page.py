"""The provisioning page refuses a claim token beside the field, in the user's language: ranges it checks
itself, and the service's own refusal (a school code that cannot be a device topic), not an error page."""

from __future__ import annotations

from sqlalchemy import func, select, update

from fleet.domain.enums import Role
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import School
from fleet.persistence.models_mqtt import ClaimToken
from tests.conftest import Api
from tests.console.helpers import add_user, csrf_of, sign_in
from tests.console.test_admin_pages import field_error
from tests.factories import build_world


async def tokens(api: Api) -> int:
    async with unit_of_work(api.sessions) as s:
        return int((await s.execute(select(func.count()).select_from(ClaimToken))).scalar_one())


async def test_claim_token_fields_are_refused_beside_the_field_in_chinese(api: Api) -> None:
    w = await build_world(api)
    await add_user(api.sessions, api.clock, "tech", Role.TECHNICIAN, (w.school_a,), "zh_CN")
    assert (await sign_in(api.client, "tech")).status_code == 303
    page = await api.client.get(f"/provisioning?school={w.school_a}")
    csrf = csrf_of(page.text)
    path = f"/provisioning/{w.school_a}/claim-tokens"
    r = await api.client.post(path, data={"csrf": csrf, "max_uses": "0", "days": "99"})
    assert r.status_code == 200
    assert field_error(r.text, "max_uses") == "1 到 5000 之间的整数。"
    assert field_error(r.text, "days") == "1 到 30 之间的整数。"
    assert 'aria-describedby="days-error"' in r.text
    # The service refuses a school whose code cannot be a topic level: a reason in Chinese, not an error page.
    async with unit_of_work(api.sessions) as s:
        await s.execute(update(School).where(School.id == w.school_a).values(code="校区 A"))
    r = await api.client.post(path, data={"csrf": csrf, "max_uses": "5", "days": "7"})
    assert r.status_code == 200
    assert field_error(r.text, "school").startswith("该学校的代码不能用于设备主题")
    assert "MQTT" not in r.text and await tokens(api) == 0
