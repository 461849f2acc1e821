"""The console's new-rollout form, in process: the preview lists the devices per group that the rollout then
starts with, and writes nothing; bad input is refused with the reason beside its field, in the user's
language; a school's IT staff sees and targets only its schools; the audit log names the user; a device's
rollout timeline is a page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from fleet.domain.enums import Role
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import AuditEntry, Device
from fleet.persistence.models_rollouts import Rollout, RolloutDevice
from tests.conftest import Api
from tests.console.helpers import add_user, csrf_of, sign_in
from tests.factories import World, build_world, post

V1 = "/api/v1"


async def in_service(api: Api, *device_ids: int, version: str = "1.1.0") -> None:
    from fleet.persistence.models_mqtt import DeviceState

    async with unit_of_work(api.sessions) as s:
        await s.execute(update(Device).where(Device.id.in_(device_ids)).values(status="in_service"))
        for i in device_ids:
            s.add(DeviceState(device_id=i, firmware_version=version))


async def more_devices(api: Api, w: World, school_id: int, room_id: int, count: int) -> list[int]:
    ids = []
    for i in range(count):
        d = await post(
            api,
            f"{V1}/devices",
            {
                "serial_number": f"SN-{school_id}-x{i}",
                "asset_tag": f"AT-{school_id}-x{i}",
                "model_id": w.model,
                "school_id": school_id,
                "room_id": room_id,
            },
        )
        ids.append(d["id"])
    return ids


@pytest.fixture
async def world(api: Api) -> World:
    w = await build_world(api)
    r = await api.client.post(
        f"{V1}/artifacts/import", json={"source": "profiles"}, headers=await api.admin()
    )
    assert r.status_code == 201, r.text
    extra = await more_devices(api, w, w.school_a, w.room_a, 4) + await more_devices(
        api, w, w.school_b, w.room_b, 2
    )
    await in_service(api, w.device_a, w.device_b, *extra)
    return w


@pytest.fixture
async def browser(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    transport = api.client._transport  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def signed_in(
    api: Api, c: httpx.AsyncClient, name: str, schools: tuple[int, ...] | None, locale: str | None = None
) -> str:
    await add_user(api.sessions, api.clock, name, Role.IT_STAFF, schools, locale=locale)
    r = await sign_in(c, name)
    assert r.status_code == 303, r.text[:300]
    return csrf_of((await c.get("/rollouts/new")).text)


def form(w: World, csrf: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "csrf": csrf,
        "name": "LT-100 to 1.2.0",
        "model_id": str(w.model),
        "target_version": "1.2.0",
        "school_ids": [],
        "room_ids": [],
        "canary_size": "2",
        "canary_percent": "",
        "strategy": "per_school",
        "percents": "25, 50, 100",
        "success_pct": "90",
        "error_pct": "20",
        "download_window": "outside_lessons",
        "install_window": "after_school",
        "max_mbps": "8",
        "start": "on",
    }
    return {**base, **over}


def groups_of(html: str) -> list[tuple[str, int]]:
    table = html.split('id="preview-groups"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td>\s*<td class=\"num\">([\d,]+)</td>", table, re.DOTALL)
    return [(re.sub(r"<[^>]+>", "", a).strip(), int(b.replace(",", ""))) for a, b in rows]


async def rollout_count(api: Api) -> int:
    async with api.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(Rollout))).scalar_one())


async def test_the_preview_shows_the_groups_the_rollout_then_starts_with_and_writes_nothing(
    api: Api, world: World, browser: httpx.AsyncClient
) -> None:
    w = world
    csrf = await signed_in(api, browser, "it-district", None)
    r = await browser.post("/rollouts/preview", data=form(w, csrf))
    assert r.status_code == 200, r.text[:500]
    shown = groups_of(r.text)
    # 8 devices: a canary of 2 spread over both schools, then each school's rest.
    assert shown == [("Canary", 2), ("School A", 4), ("School B", 2)]
    assert "8 devices in 3 groups" in r.text
    assert await rollout_count(api) == 0

    r = await browser.post("/rollouts/new", data=form(w, csrf))
    assert r.status_code == 303, r.text[:500]
    rid = int(r.headers["location"].rsplit("/", 1)[1])
    async with api.sessions() as s:
        ro = await s.get(Rollout, rid)
        assert ro is not None and ro.state == "running"
        assert (
            ro.policy["install_window"] == "after_school" and ro.policy["max_bytes_per_second"] == 1_000_000
        )
        per_group = (
            await s.execute(
                select(RolloutDevice.group_id, func.count())
                .where(RolloutDevice.rollout_id == rid)
                .group_by(RolloutDevice.group_id)
                .order_by(RolloutDevice.group_id)
            )
        ).all()
        actor = (
            await s.execute(select(AuditEntry.actor).where(AuditEntry.action == "rollout.create"))
        ).scalar_one()
    assert [n for _, n in per_group] == [t for _, t in shown]
    assert actor.startswith("user:") and actor.endswith(":it-district")
    page = await browser.get(f"/rollouts/{rid}")
    assert "8.0 Mbit/s" in page.text and "After school" in page.text
    device = re.search(rf'href="/rollouts/{rid}/devices/(\d+)"', page.text)
    assert device is not None
    timeline = await browser.get(device.group(0)[6:-1])
    assert (
        timeline.status_code == 200 and 'id="device-timeline"' in timeline.text and "Pending" in timeline.text
    )


async def test_bad_input_is_refused_beside_its_field_in_the_users_language(
    api: Api, world: World, browser: httpx.AsyncClient
) -> None:
    w = world
    csrf = await signed_in(api, browser, "it-zh", None, locale="zh_CN")
    r = await browser.post("/rollouts/preview", data=form(w, csrf, percents="50, 25", error_pct="120"))
    assert r.status_code == 422
    percents = r.text.split('id="e-percents"', 1)[1].split("</p>", 1)[0]
    assert "逐步增大" in percents, percents
    assert 'id="e-error_pct"' in r.text and 'id="e-success_pct"' not in r.text
    assert 'value="50, 25"' in r.text  # what was typed is shown again
    # A version without an imported image is the service's refusal, placed beside the version.
    r = await browser.post("/rollouts/new", data=form(w, csrf, target_version="9.9.9"))
    assert r.status_code == 422
    version = r.text.split('id="e-target_version"', 1)[1].split("</p>", 1)[0]
    assert "固件" in version and "9.9.9" not in version
    assert await rollout_count(api) == 0


async def test_a_school_it_user_sees_and_targets_only_its_schools(
    api: Api, world: World, browser: httpx.AsyncClient
) -> None:
    w = world
    csrf = await signed_in(api, browser, "it-a", (w.school_a,))
    page = await browser.get("/rollouts/new")
    assert "School A" in page.text and "School B" not in page.text
    r = await browser.post("/rollouts/preview", data=form(w, csrf))
    assert groups_of(r.text) == [("Canary", 2), ("School A", 3)]  # none chosen: all of its schools
    r = await browser.post("/rollouts/new", data=form(w, csrf, school_ids=[str(w.school_b)]))
    assert r.status_code == 422 and 'id="e-school_ids"' in r.text
    r = await browser.post("/rollouts/new", data=form(w, csrf, room_ids=[str(w.room_b)]))
    assert r.status_code == 422 and 'id="e-room_ids"' in r.text
    assert await rollout_count(api) == 0


async def test_the_form_is_not_for_roles_that_may_not_manage_rollouts(
    api: Api, world: World, browser: httpx.AsyncClient
) -> None:
    await add_user(api.sessions, api.clock, "tech", Role.TECHNICIAN, (world.school_a,))
    await sign_in(browser, "tech")
    assert (await browser.get("/rollouts/new")).status_code == 403
    assert "/rollouts/new" not in (await browser.get("/rollouts")).text
