"""The edge agent bridges a simulated kit (real pty) into a running fleet service (embedded broker, HTTP API):
the kit is enrolled with its own credentials, shows online, its telemetry updates, and a reboot sent through
the API reaches the simulator and is acknowledged and resulted."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator

import httpx
import pytest

from drivers.discovery import PortWatcher
from drivers.edge import EdgeSupervisor
from fleet.domain.clock import FakeClock
from fleet.runtime.brokers import free_port
from fleet.runtime.edge_agent import EdgeAgent
from simulators.serial.bench import SimBench
from simulators.serial.robot import RobotSim
from tests.conftest import Api, make_settings
from tests.factories import build_world, plane_api, post
from tests.mqtt.mqtt_plane import wait_until

V1 = "/api/v1"


@pytest.fixture
async def live_api(sqlite_url: str, clock: FakeClock) -> AsyncIterator[Api]:
    settings = make_settings(
        sqlite_url, mqtt={"broker": "embedded", "listen_port": free_port(), "ingest_batch_ms": 20}
    )
    async with plane_api(settings, clock) as api:
        yield api


async def test_edge_agent_bridges_a_simulated_kit_online_telemetry_and_reboot(
    live_api: Api, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet.runtime.edge_agent")
    api = live_api
    w = await build_world(api)
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
    tech = await api.as_("technician", (w.school_a,))
    agent_http = httpx.AsyncClient(transport=api.client._transport, base_url="http://test", headers=tech)
    agent = EdgeAgent(
        agent_http,
        school_id=w.school_a,
        room_id=w.room_a,
        broker=f"mqtt://127.0.0.1:{api.port}",
        clock_ms=lambda: int(clock.now().timestamp() * 1000),
    )
    robot = RobotSim(uid="cafe42", usb_serial="EB-CAFE42")
    async with SimBench() as bench:
        runner = bench.add(robot)
        await bench.start()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
        agent.supervisor = supervisor
        try:
            await supervisor.poll_once()  # the kit is "plugged in": identified, enrolled, bridged
            [link] = agent.kits.values()
            assert link.identity == "robot-cafe42"
            device = (await api.client.get(f"{V1}/devices/{link.device_id}", headers=tech)).json()
            assert (device["status"], device["serial_number"], device["school_id"]) == (
                "received",
                "robot-cafe42",
                w.school_a,
            )
            assert device["room_id"] == w.room_a  # registered just now: placed in the agent's room

            async def state() -> dict[str, object]:
                r = await api.client.get(f"{V1}/devices/{link.device_id}/state", headers=tech)
                return r.json()

            async def online() -> bool:
                return (await state())["online"] is True

            await wait_until(online)

            robot.battery_pct = 64
            await supervisor.sample_once()

            async def battery_is_64() -> bool:
                return (await state())["battery_pct"] == 64

            await wait_until(battery_is_64)
            robot.battery_pct = 41
            await supervisor.sample_once()

            async def battery_is_41() -> bool:
                return (await state())["battery_pct"] == 41

            await wait_until(battery_is_41)

            boots = robot.boots
            sent = await api.client.post(
                f"{V1}/commands",
                headers=tech,
                json={"target": {"kind": "device", "id": link.device_id}, "name": "reboot"},
            )
            assert sent.status_code == 202, sent.text
            batch = sent.json()["batch_id"]

            async def succeeded() -> bool:
                got = (await api.client.get(f"{V1}/commands/{batch}", headers=tech)).json()
                return bool(got["by_status"] == {"succeeded": 1})

            await wait_until(succeeded)
            assert robot.boots == boots + 1
            # The technician can read what the agent did: one line per command, with the kit and the result.
            ran = [r.getMessage() for r in caplog.records if r.getMessage().startswith("command reboot")]
            assert len(ran) == 1 and ran[0].startswith("command reboot on robot-cafe42 (")
            assert ran[0].endswith("): done")

            # Unplugged and plugged back (maybe on another /dev path): offline, then matched to the same
            # record.
            await runner.unplug()
            await supervisor.poll_once()

            async def offline() -> bool:
                return (await state())["online"] is False

            await wait_until(offline)
            await runner.plug()
            await supervisor.poll_once()
            [again] = agent.kits.values()
            assert again.device_id == link.device_id
            await wait_until(online)
        finally:
            await supervisor.aclose()
            await agent.aclose()
            await agent_http.aclose()
    await wait_until(offline)  # the agent stopping says so on the kit's retained status


async def _fleet_verifies(api: Api, identity: str, password: str) -> bool:
    from sqlalchemy import select

    from fleet.domain import credentials
    from fleet.persistence.models_mqtt import DeviceCredential

    async with api.sessions() as s:
        cred = (
            await s.execute(select(DeviceCredential).where(DeviceCredential.username == identity))
        ).scalar_one_or_none()
    return (
        cred is not None
        and cred.revoked_at is None
        and credentials.verify_password(password, cred.password_hash)
    )


async def test_provisioned_kit_is_bridged_with_one_credential_shared_by_kit_fleet_and_agent(
    live_api: Api, clock: FakeClock
) -> None:
    """`labfleet provision` writes a password to the kit and records its hash; the agent then bridges the same
    kit and whatever it logs in with is also what the kit stores and the fleet verifies. The same after the
    kit goes back to the provisioning bench (a new password) and is plugged into the agent again."""
    from drivers.provisioning import Provisioner
    from firmware_profiles import DEFAULT_PROFILE_DIR
    from fleet.cli.provision import BenchRun, load_catalogue, make_planner, record, resolve_place
    from fleet.persistence.db import unit_of_work

    api = live_api
    w = await build_world(api)
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
    tech = await api.as_("technician", (w.school_a,))
    async with unit_of_work(api.sessions) as s:
        place, lab = await resolve_place(s, str(w.school_a), str(w.room_a))
        catalogue = await load_catalogue(s, DEFAULT_PROFILE_DIR)
        s.expunge_all()
    run = BenchRun(place, lab, catalogue)
    robot = RobotSim(uid="beef01", usb_serial="EB-BEEF01")

    async def provision_at_the_bench() -> str:
        [dev] = bench.attached()
        result = await Provisioner(locate=bench.locate).provision(dev, make_planner(run, "mqtt://edge.local"))
        assert result.outcome.value == "provisioned", result
        async with unit_of_work(api.sessions) as s:
            await record(s, clock, run, dev, result)
        password = robot.config["mqtt_password"]
        assert await _fleet_verifies(api, "robot-beef01", password)
        return password

    agent_http = httpx.AsyncClient(transport=api.client._transport, base_url="http://test", headers=tech)
    agent = EdgeAgent(
        agent_http,
        school_id=w.school_a,
        room_id=w.room_a,
        broker=f"mqtt://127.0.0.1:{api.port}",
        clock_ms=lambda: int(clock.now().timestamp() * 1000),
    )
    async with SimBench() as bench:
        runner = bench.add(robot)
        await bench.start()
        first = await provision_at_the_bench()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
        agent.supervisor = supervisor
        try:
            await supervisor.poll_once()  # plugged into the agent's hub
            [link] = agent.kits.values()

            async def online() -> bool:
                r = await api.client.get(f"{V1}/devices/{link.device_id}/state", headers=tech)
                return r.json()["online"] is True

            await wait_until(online)  # the broker took the agent's login for the kit
            bridged = robot.config["mqtt_password"]
            assert await _fleet_verifies(api, "robot-beef01", bridged)  # the kit holds the password in use
            # The agent enrolled the kit (a claim token, a fresh credential): the provisioning password is
            # replaced on the kit and no longer accepted by the fleet; one password per kit at a time.
            assert bridged != first
            assert not await _fleet_verifies(api, "robot-beef01", first)
            assert robot.config["school"] == place.code  # provisioning's school settings are kept

            # Back to the provisioning bench (a new password), then into the agent's hub again.
            await runner.unplug()
            await supervisor.poll_once()

            async def offline() -> bool:
                return not await online()

            await wait_until(offline)
            await runner.plug()
            second = await provision_at_the_bench()
            await supervisor.poll_once()
            [again] = agent.kits.values()
            assert again.device_id == link.device_id

            async def online_again() -> bool:
                r = await api.client.get(f"{V1}/devices/{again.device_id}/state", headers=tech)
                return r.json()["online"] is True

            await wait_until(online_again)
            final = robot.config["mqtt_password"]
            assert await _fleet_verifies(api, "robot-beef01", final)
            assert final != second  # plugged in again: the agent enrolls it again, a fresh password...
            assert not await _fleet_verifies(api, "robot-beef01", second)  # ...and the bench's one is dead
        finally:
            await supervisor.aclose()
            await agent.aclose()
            await agent_http.aclose()


async def test_a_kit_the_broker_will_not_take_is_left_unbridged_and_the_supervisor_keeps_going(
    live_api: Api, clock: FakeClock
) -> None:
    api = live_api
    w = await build_world(api)
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
    tech = await api.as_("technician", (w.school_a,))
    agent_http = httpx.AsyncClient(transport=api.client._transport, base_url="http://test", headers=tech)
    # Nothing listens here: the kit enrolls over HTTP, but its MQTT connect is refused.
    agent = EdgeAgent(
        agent_http,
        school_id=w.school_a,
        room_id=w.room_a,
        broker=f"mqtt://127.0.0.1:{free_port()}",
        clock_ms=lambda: int(clock.now().timestamp() * 1000),
    )
    async with SimBench() as bench:
        runner = bench.add(RobotSim(uid="beef01", usb_serial="EB-BEEF01"))
        await bench.start()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
        agent.supervisor = supervisor
        try:
            await supervisor.poll_once()  # must return, not raise out of the supervisor
            assert agent.kits == {}
            await runner.unplug()
            await supervisor.poll_once()  # an unplug of the unbridged kit is not an error either
            assert agent.kits == {}
        finally:
            await supervisor.aclose()
            await agent.aclose()
            await agent_http.aclose()


async def test_a_kit_the_broker_refused_is_retried_with_backoff_and_bridged_when_the_broker_is_back(
    live_api: Api, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet.runtime.edge_agent")
    api = live_api
    w = await build_world(api)
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
    tech = await api.as_("technician", (w.school_a,))
    agent_http = httpx.AsyncClient(transport=api.client._transport, base_url="http://test", headers=tech)
    dead = f"mqtt://127.0.0.1:{free_port()}"  # the broker is down: nothing listens here yet
    agent = EdgeAgent(
        agent_http,
        school_id=w.school_a,
        room_id=w.room_a,
        broker=dead,
        clock_ms=lambda: int(clock.now().timestamp() * 1000),
        retry_base=0.05,
        rng=random.Random(3),
    )
    # Backoff doubles per attempt, jittered into [half, full], and is capped at a minute.
    delays = [agent.retry_delay(n) for n in (1, 2, 3, 12)]
    assert 0.025 <= delays[0] <= 0.05 and 0.05 <= delays[1] <= 0.1 and 0.1 <= delays[2] <= 0.2
    assert 30.0 <= delays[3] <= 60.0
    async with SimBench() as bench:
        bench.add(RobotSim(uid="beef03", usb_serial="EB-BEEF03"))
        await bench.start()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
        agent.supervisor = supervisor
        try:
            await supervisor.poll_once()
            assert agent.kits == {}

            async def refused_twice() -> bool:
                return max(agent.refused.values(), default=0) >= 2

            await wait_until(refused_twice)  # retried on its own, no replug
            agent.broker = f"mqtt://127.0.0.1:{api.port}"  # the broker is back

            async def bridged() -> bool:
                return [link.identity for link in agent.kits.values()] == ["robot-beef03"]

            await wait_until(bridged)
            assert agent.refused == {}
        finally:
            await supervisor.aclose()
            await agent.aclose()
            await agent_http.aclose()
    lines = [r.getMessage() for r in caplog.records]
    # The first refusal names the broker; the retries stay quiet; the recovery is said once.
    assert sum("did not accept the kit" in m for m in lines) == 1
    assert any(f"broker {dead} did not accept the kit" in m for m in lines)
    assert sum("accepted the kit after refusing it" in m for m in lines) == 1


async def test_unplugging_a_refused_kit_stops_its_retries(live_api: Api, clock: FakeClock) -> None:
    api = live_api
    w = await build_world(api)
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
    tech = await api.as_("technician", (w.school_a,))
    agent_http = httpx.AsyncClient(transport=api.client._transport, base_url="http://test", headers=tech)
    agent = EdgeAgent(
        agent_http,
        school_id=w.school_a,
        broker=f"mqtt://127.0.0.1:{free_port()}",
        clock_ms=lambda: int(clock.now().timestamp() * 1000),
        retry_base=0.2,
    )
    async with SimBench() as bench:
        runner = bench.add(RobotSim(uid="beef04", usb_serial="EB-BEEF04"))
        await bench.start()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
        agent.supervisor = supervisor
        try:
            await supervisor.poll_once()
            assert list(agent.refused.values()) == [1]
            await runner.unplug()
            await supervisor.poll_once()
            assert agent.refused == {}
            await asyncio.sleep(0.5)  # past the first retry's delay: it stood down
            assert agent.refused == {} and agent.kits == {}
        finally:
            await supervisor.aclose()
            await agent.aclose()
            await agent_http.aclose()
