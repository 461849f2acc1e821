"""The console's pages in a real browser, as technicians and IT staff use them: scope (404 for another
school's device), a delivery with bad rows, a rollout paused from its page, a command to a simulated terminal,
and the cockpit's online count rising live as simulated terminals connect."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from sqlalchemy import func, select

from fleet.domain.enums import Role
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device
from fleet.persistence.models_rollouts import Rollout, RolloutGroup
from tests.console.conftest import LiveServer, Tab
from tests.console.helpers import PASSWORD, add_user
from tests.factories import World, build_world, post
from tests.mqtt.mqtt_plane import TS0, terminal

V1 = "/api/v1"
# The simulated terminals' tasks (on the server's loop), held so none is collected while it runs.
_TERMINALS: set[asyncio.Task[None]] = set()


def sign_in(tab: Tab, username: str) -> None:
    tab.go("/signin")
    tab.page.get_by_label("Username").fill(username)
    tab.page.get_by_label("Password").fill(PASSWORD)
    tab.page.locator("form[action='/signin'] button[type=submit]").click()
    tab.page.wait_for_url(re.compile(r"^(?!.*signin).*$"))


def world_with_user(live: LiveServer, username: str, role: Role, school: str | None = "a") -> World:
    async def build(api: Any) -> World:
        w = await build_world(api)
        schools = None if school is None else ((w.school_a,) if school == "a" else (w.school_b,))
        await add_user(api.sessions, api.clock, username, role, schools)
        return w

    return live.run(build)


def test_a_school_a_technician_gets_the_404_page_for_a_school_b_device(
    live_server: LiveServer, tab: Tab
) -> None:
    tab.base = live_server.url
    w = world_with_user(live_server, "tech-a", Role.TECHNICIAN)
    sign_in(tab, "tech-a")
    tab.go("/devices")
    rows = tab.page.locator("#devices-table tbody tr")
    assert rows.count() == 1 and "AT-a-1" in rows.first.inner_text()
    tab.shot("devices")
    tab.go(f"/devices/{w.device_a}")
    assert tab.page.locator("h1").inner_text().startswith("AT-a-1")
    tab.shot("device-a")
    response = tab.go(f"/devices/{w.device_b}")
    assert response.status == 404
    assert tab.page.locator(".error-code").inner_text() == "404"
    assert "AT-b-1" not in tab.page.content()
    tab.shot("device-b-404")


def test_a_lifecycle_transition_from_the_device_page(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    w = world_with_user(live_server, "tech-a", Role.TECHNICIAN)
    sign_in(tab, "tech-a")
    tab.go(f"/devices/{w.device_a}")
    tab.page.get_by_role("button", name="Move to Provisioned").click()
    tab.page.wait_for_url(re.compile(r"done=transition"))
    assert "Provisioned" in tab.page.locator(".badge").first.inner_text()
    history = tab.page.locator("h3:has-text('History') + ul").inner_text()
    assert "user:" in history and "tech-a" in history  # the lifecycle history names the user


HEADER = (
    "serial_number,asset_tag,vendor,model_number,school_code,room,status,order_number,purchase_date,"
    "unit_cost,funding_source,ownership"
)
_DELIVERY_ROWS = (
    HEADER,
    "SN-new-1,AT-new-1,EduTech,LT-100,school-a,Room 1,received,PO-1,2026-09-01,329.00,city,owned",
    "SN-new-2,AT-new-2,EduTech,NO-SUCH-MODEL,school-a,Room 1,received,PO-1,2026-09-01,329.00,city,owned",
    "SN-new-3,AT-new-3,EduTech,LT-100,school-a,Room 1,received,PO-1,not-a-date,329.00,city,owned",
    "SN-new-4,AT-new-4,EduTech,LT-100,school-a,Room 1,received,PO-1,2026-09-01,329.00,city,owned",
    ",AT-new-5,EduTech,LT-100,school-a,Room 1,received,PO-1,2026-09-01,329.00,city,owned",
)
# Rows 3 (unknown model), 4 (bad date) and 6 (no serial) are bad; 2 and 5 are good.
BAD_DELIVERY = "\n".join(_DELIVERY_ROWS)


def test_a_delivery_with_3_bad_rows_shows_all_3_and_commits_nothing(
    live_server: LiveServer, tab: Tab
) -> None:
    tab.base = live_server.url
    world_with_user(live_server, "tech-a", Role.TECHNICIAN)

    async def count(api: Any) -> int:
        async with unit_of_work(api.sessions) as session:
            return int((await session.execute(select(func.count()).select_from(Device))).scalar_one())

    before = live_server.run(count)
    sign_in(tab, "tech-a")
    tab.go("/deliveries")
    tab.page.get_by_label("File").set_input_files(
        {"name": "delivery.csv", "mimeType": "text/csv", "buffer": BAD_DELIVERY.encode()}
    )
    tab.page.get_by_role("button", name="Check the file").click()
    tab.page.wait_for_selector("#bad-rows")
    rows = tab.page.locator("#bad-rows tbody tr")
    assert sorted({rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())}) == [
        "3",
        "4",
        "6",
    ]
    assert "3 bad rows" in tab.page.locator("[role=alert]").inner_text()
    tab.shot("bad-rows")
    assert live_server.run(count) == before
    # The good rows alone pass, and commit after the preview.
    good = "\n".join(line for i, line in enumerate(BAD_DELIVERY.splitlines()) if i in (0, 1, 4))
    tab.page.get_by_label("File").set_input_files(
        {"name": "delivery.csv", "mimeType": "text/csv", "buffer": good.encode()}
    )
    tab.page.get_by_role("button", name="Check the file").click()
    tab.page.get_by_role("button", name="Import now").click()
    tab.page.wait_for_selector("text=Imported")
    tab.shot("imported")
    assert live_server.run(count) == before + 2


def test_a_rollout_is_paused_from_its_page(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    w = world_with_user(live_server, "it", Role.IT_STAFF, school=None)

    async def running(api: Any) -> int:
        now = api.clock.now()
        async with unit_of_work(api.sessions) as session:
            r = Rollout(
                name="LT-100 to 1.3.0",
                model_id=w.model,
                profile_key="terminal-lt100",
                target_version="1.3.0",
                artifact_sha256="0" * 64,
                school_ids=[],
                room_ids=[],
                from_versions=[],
                group_plan={},
                success_threshold=0.95,
                error_threshold=0.1,
                max_attempts=3,
                policy={},
                state="running",
                current_group=0,
                created_by="test",
                created_at=now,
                updated_at=now,
                started_at=now,
            )
            session.add(r)
            await session.flush()
            session.add(
                RolloutGroup(rollout_id=r.id, position=0, name="canary", kind="canary", state="running")
            )
            return int(r.id)

    rid = live_server.run(running)
    sign_in(tab, "it")
    tab.go("/rollouts")
    tab.page.get_by_role("link", name="LT-100 to 1.3.0").click()
    assert "Running" in tab.page.locator("#rollout-state").inner_text()
    tab.shot("running")
    tab.page.get_by_role("button", name="Pause").click()
    tab.page.wait_for_load_state()
    assert "Paused" in tab.page.locator("#rollout-state").inner_text()
    tab.shot("paused")

    async def state(api: Any) -> tuple[str, str | None]:
        async with unit_of_work(api.sessions) as session:
            r = await session.get(Rollout, rid)
            from fleet.persistence.models import AuditEntry

            actor = (
                await session.execute(select(AuditEntry.actor).where(AuditEntry.action == "rollout.pause"))
            ).scalar_one_or_none()
            return r.state, actor  # type: ignore[union-attr]

    st, actor = live_server.run(state)
    assert st == "paused" and actor is not None and actor.endswith(":it") and actor.startswith("user:")


async def _enroll(api: Any, w: World, school_id: int, serial: str) -> str:
    tok = (await post(api, f"{V1}/schools/{school_id}/claim-tokens", {"max_uses": 1}))["token"]
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": serial})
    assert r.status_code == 201, r.text
    return str(r.json()["password"])


def _start_terminal(live: LiveServer, school: str, serial: str, password: str, stop: asyncio.Event) -> None:
    """A simulated terminal on the server's loop: says it is online, answers commands, stays until stop."""
    from fleet.domain import wire

    t = wire.Topics("labfleet")
    port = live.settings.mqtt.listen_port
    ready = asyncio.Event()

    async def run() -> None:
        async with terminal(port, school, serial, password) as c:
            await c.subscribe(t.topic(school, serial, "cmd"), qos=1)
            await c.publish(
                t.topic(school, serial, "status"), json.dumps({"v": 1, "state": "online"}), qos=1, retain=True
            )
            await c.publish(
                t.topic(school, serial, "telemetry"),
                json.dumps({"v": 1, "seq": 1, "ts": TS0, "battery": 80, "fw": "1.2.0"}),
                qos=1,
            )
            ready.set()
            stopper = asyncio.ensure_future(stop.wait())
            messages = c.messages.__aiter__()
            while not stop.is_set():
                nxt = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    break
                body = json.loads(nxt.result().payload)
                if body.get("type") != "command":
                    continue
                await c.publish(
                    t.topic(school, serial, "ack"),
                    json.dumps({"v": 1, "id": body["id"], "ts": TS0, "accepted": True}),
                    qos=1,
                )
                await c.publish(
                    t.topic(school, serial, "result"),
                    json.dumps({"v": 1, "id": body["id"], "ts": TS0, "ok": True, "detail": {"uptime_s": 42}}),
                    qos=1,
                )

    async def start(api: Any) -> None:
        _TERMINALS.add(asyncio.create_task(run(), name=f"sim-terminal-{serial}"))
        async with asyncio.timeout(15):
            await ready.wait()

    live.run(start)


def test_a_command_sent_to_a_simulated_terminal_shows_its_result(live_plane: LiveServer, tab: Tab) -> None:
    tab.base = live_plane.url
    w = world_with_user(live_plane, "tech-a", Role.TECHNICIAN)

    async def enroll(api: Any) -> str:
        return await _enroll(api, w, w.school_a, "SN-a-1")

    password = live_plane.run(enroll)
    stop = live_plane.run(lambda api: _event())
    _start_terminal(live_plane, "school-a", "SN-a-1", password, stop)
    try:
        sign_in(tab, "tech-a")
        tab.go(f"/devices/{w.device_a}")
        tab.page.get_by_label("Command", exact=True).select_option("diagnostics")
        tab.page.get_by_role("button", name="Send command").click()
        tab.page.wait_for_selector("#command-result .command-status:has-text('Succeeded')", timeout=20_000)
        assert "uptime_s: 42" in tab.page.locator("#command-result").inner_text()
        tab.shot("command-result")
    finally:
        live_plane.run(lambda api: _set(stop))


async def _event() -> asyncio.Event:
    return asyncio.Event()


async def _set(ev: asyncio.Event) -> None:
    ev.set()
    await asyncio.sleep(0.2)


def test_the_cockpit_online_count_rises_live_as_terminals_connect(live_plane: LiveServer, tab: Tab) -> None:
    tab.base = live_plane.url
    w = world_with_user(live_plane, "it", Role.IT_STAFF, school=None)

    async def enroll(api: Any) -> tuple[str, str]:
        return await _enroll(api, w, w.school_a, "SN-a-1"), await _enroll(api, w, w.school_b, "SN-b-1")

    pa, pb = live_plane.run(enroll)
    sign_in(tab, "it")
    tab.go("/")
    total = tab.page.locator("#total-online")
    assert total.inner_text() == "0"
    tab.page.evaluate("() => { window.__notReloaded = true; }")
    tab.shot("before")
    stop = live_plane.run(lambda api: _event())
    try:
        _start_terminal(live_plane, "school-a", "SN-a-1", pa, stop)
        tab.page.wait_for_function(
            "() => document.querySelector('#total-online').textContent === '1'", timeout=15_000
        )
        _start_terminal(live_plane, "school-b", "SN-b-1", pb, stop)
        tab.page.wait_for_function(
            "() => document.querySelector('#total-online').textContent === '2'", timeout=15_000
        )
        assert tab.page.evaluate("() => window.__notReloaded") is True  # live, without a reload
        assert tab.page.locator(f"#school-{w.school_b} .school-online").inner_text() == "1"
        tab.shot("after")
        tab.page.get_by_role("button", name="中文").click()
        tab.page.wait_for_load_state()
        tab.page.wait_for_function(
            "() => document.querySelector('#total-online').textContent === '2'", timeout=15_000
        )
        assert "当前在线" in tab.page.locator("main").inner_text()
        tab.shot("after-zh")
    finally:
        live_plane.run(lambda api: _set(stop))
