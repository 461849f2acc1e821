"""The provisioning page in a real browser: a real edge agent (fleet/runtime/edge_agent.py) bridges two
simulated USB kits into the running service, and the page lists the agent with its kits, online, with the
firmware they reported; a technician of another school does not see it."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from drivers.discovery import PortWatcher
from drivers.edge import EdgeSupervisor
from fleet.domain.enums import Role
from fleet.runtime.edge_agent import EdgeAgent
from simulators.serial.bench import SimBench
from simulators.serial.robot import RobotSim
from tests.console.conftest import LiveServer, Tab
from tests.console.helpers import add_user
from tests.console.test_browser_pages import sign_in
from tests.factories import World, build_world, post
from tests.mqtt.mqtt_plane import wait_until

V1 = "/api/v1"


async def _robot_model(api: Any) -> None:
    await post(
        api,
        f"{V1}/device-models",
        {
            "vendor": "RoboLearn",
            "model_number": "EduBot-R2",
            "kind": "robot",
            "transport": "serial",
            "unit_price": "1290.00",
            "warranty_months": 24,
            "supplier": "RoboLearn",
            "profile_key": "robot-edubot-r2",
        },
    )


def start_agent(live: LiveServer, w: World, stack: contextlib.AsyncExitStack) -> None:
    """An edge agent for school A's room with two simulated robots plugged in, on the server's loop."""

    async def start(api: Any) -> None:
        headers = await api.as_("technician", (w.school_a,))
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=live.url, headers=headers, timeout=30)
        )
        agent = EdgeAgent(
            http,
            school_id=w.school_a,
            room_id=w.room_a,
            broker=f"mqtt://127.0.0.1:{live.settings.mqtt.listen_port}",
        )
        stack.push_async_callback(agent.aclose)
        bench = await stack.enter_async_context(SimBench())
        for uid in ("cafe42", "beef07"):
            bench.add(RobotSim(uid=uid, usb_serial=f"EB-{uid.upper()}"))
        await bench.start()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
        agent.supervisor = supervisor
        stack.push_async_callback(supervisor.aclose)
        await supervisor.poll_once()  # plugged in: identified, enrolled, bridged
        assert len(agent.kits) == 2

        async def both_online() -> bool:
            r = await api.client.get(
                f"{V1}/devices", params={"school": w.school_a, "limit": 50}, headers=headers
            )
            ids = [d["id"] for d in r.json()["items"] if d["serial_number"].startswith("robot-")]
            states = [(await api.client.get(f"{V1}/devices/{i}/state", headers=headers)).json() for i in ids]
            return len(states) == 2 and all(s["online"] and s["firmware_version"] for s in states)

        await wait_until(both_online, timeout=20)

    live.run(start)


def test_the_provisioning_page_shows_an_edge_agent_and_its_kits(live_plane: LiveServer, tab: Tab) -> None:
    tab.base = live_plane.url

    async def world(api: Any) -> World:
        w = await build_world(api)
        await _robot_model(api)
        await add_user(api.sessions, api.clock, "tech-a", Role.TECHNICIAN, (w.school_a,))
        await add_user(api.sessions, api.clock, "tech-b", Role.TECHNICIAN, (w.school_b,))
        return w

    w = live_plane.run(world)
    holder: dict[str, contextlib.AsyncExitStack] = {}

    async def new_stack(api: Any) -> None:
        holder["stack"] = contextlib.AsyncExitStack()

    live_plane.run(new_stack)
    try:
        start_agent(live_plane, w, holder["stack"])
        sign_in(tab, "tech-a")
        tab.go(f"/provisioning?school={w.school_a}")
        agents = tab.page.locator("#edge-agents .edge-agent")
        assert agents.count() == 1
        agent = agents.first
        assert "Online" in agent.locator("h3").inner_text()
        assert "2 of 2 kits online" in agent.inner_text() and "Room 1" in agent.inner_text()
        rows = agent.locator("table.kits tbody tr")
        assert sorted(rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())) == [
            "robot-beef07",
            "robot-cafe42",
        ]
        for i in range(rows.count()):
            cells = rows.nth(i).locator("td").all_inner_texts()
            assert cells[2] == "Online" and cells[3] not in ("", "—"), cells  # presence, reported firmware
        assert "2 of 3 devices enrolled" in tab.page.locator("#enrollment-progress").inner_text()
        tab.shot("edge-agent")
        tab.page.get_by_role("button", name="中文").click()
        tab.page.wait_for_load_state()
        assert "实验室边缘代理" in tab.page.locator("main").inner_text()
        assert "2 套套件中 2 套在线" in tab.page.locator("#edge-agents").inner_text()
        tab.shot("edge-agent-zh")
    finally:

        async def stop(api: Any) -> None:
            await holder["stack"].aclose()

        live_plane.run(stop)

    # The agent stopped: its kits say so on their retained status, and the page shows it offline.
    tab.go(f"/provisioning?school={w.school_a}")
    tab.page.wait_for_load_state()

    async def offline(api: Any) -> None:
        async def gone() -> bool:
            from sqlalchemy import func, select

            from fleet.persistence.models_mqtt import DeviceState

            async with api.sessions() as s:
                n = (
                    await s.execute(
                        select(func.count()).select_from(DeviceState).where(DeviceState.online.is_(True))
                    )
                ).scalar_one()
            return int(n) == 0

        await wait_until(gone, timeout=20)

    live_plane.run(offline)
    tab.go(f"/provisioning?school={w.school_a}")
    assert "离线" in tab.page.locator("#edge-agents h3").inner_text()
    tab.shot("edge-agent-stopped")


def test_another_schools_technician_does_not_see_the_agent(live_server: LiveServer, tab: Tab) -> None:
    """Without a broker: the agent's enrollment alone (claim token and credential) is what the page reads."""
    tab.base = live_server.url

    async def world(api: Any) -> World:
        from fleet.domain.credentials import EDGE_AGENT_LABEL

        w = await build_world(api)
        await _robot_model(api)
        tech = await api.as_("technician", (w.school_a,))
        r = await api.client.post(
            f"{V1}/schools/{w.school_a}/claim-tokens",
            json={"max_uses": 1, "allow_unknown": True, "label": f"{EDGE_AGENT_LABEL}usb-1a86-7523-X1"},
            headers=tech,
        )
        assert r.status_code == 201, r.text
        r = await api.client.post(
            f"{V1}/enroll",
            json={
                "claim_token": r.json()["token"],
                "serial_number": "robot-0a0b0c",
                "vendor": "RoboLearn",
                "model_number": "EduBot-R2",
            },
        )
        assert r.status_code == 201, r.text
        await add_user(api.sessions, api.clock, "tech-a", Role.TECHNICIAN, (w.school_a,))
        await add_user(api.sessions, api.clock, "tech-b", Role.TECHNICIAN, (w.school_b,))
        return w

    w = live_server.run(world)
    sign_in(tab, "tech-a")
    tab.go(f"/provisioning?school={w.school_a}")
    assert "robot-0a0b0c" in tab.page.locator("#edge-agents").inner_text()
    assert "Offline" in tab.page.locator("#edge-agents h3").inner_text()  # never connected
    tab.page.context.clear_cookies()
    sign_in(tab, "tech-b")
    assert tab.go(f"/provisioning?school={w.school_a}").status == 404
    tab.go("/provisioning")
    assert "robot-0a0b0c" not in tab.page.content()
    assert "No edge agent" in tab.page.locator("main").inner_text()
    tab.shot("other-school")
