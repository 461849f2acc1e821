"""Kits of all three families log in to a managed mosquitto (`labfleet serve --broker mosquitto`) through the
edge agent and come online: their identities (`robot-<uid>`, `mpy-<hex>`, the Firmata board's USB port id)
hold no ':', which mosquitto's `username:hash` password file could not hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from drivers.discovery import PortWatcher
from drivers.edge import EdgeSupervisor
from fleet.domain.clock import FakeClock
from fleet.runtime.brokers import free_port
from fleet.runtime.edge_agent import EdgeAgent
from fleet.services import tls
from fleet.settings import TlsSettings
from simulators.serial.bench import SimBench
from simulators.serial.firmata import FirmataSim
from simulators.serial.micropython import MicroPythonSim
from simulators.serial.robot import RobotSim
from tests.conftest import Api, make_settings
from tests.factories import build_world, plane_api, post
from tests.mqtt.mqtt_plane import need_mosquitto, wait_until

V1 = "/api/v1"
MODELS = [
    ("RoboLearn", "EduBot-R2", "robot", "robot-edubot-r2"),
    ("Maker", "ESP32-Kit", "mcu_kit", "kit-esp32-mpy"),
    ("Arduino", "Uno-R3", "mcu_kit", "kit-uno-firmata"),
]


@pytest.fixture(params=["plain", "tls"])
async def mosquitto_api(
    request: pytest.FixtureRequest, sqlite_url: str, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Api]:
    """Plain MQTT (the agent told the broker URL), or MQTT over TLS only (the production settings): the agent
    connects where enrollment says and verifies the broker against the CA enrollment answered."""
    need_mosquitto()
    mqtt: dict[str, object] = {
        "broker": "mosquitto",
        "listen_port": free_port(),
        "data_dir": str(tmp_path / "mq"),
        "ingest_batch_ms": 20,
    }
    extra: dict[str, object] = {}
    if request.param == "tls":
        tls.init(TlsSettings(dir=str(tmp_path / "tls")), ["127.0.0.1"], datetime.now(UTC))
        mqtt |= {"tls": True, "tls_port": free_port(), "plain_listener": False}
        extra["tls"] = {"dir": str(tmp_path / "tls")}
    settings = make_settings(sqlite_url, mqtt=mqtt, **extra)
    async with plane_api(settings, clock) as api:
        api.broker_url = None if request.param == "tls" else f"mqtt://127.0.0.1:{api.port}"
        yield api


async def test_kits_of_every_family_log_in_to_managed_mosquitto_and_come_online(
    mosquitto_api: Api, clock: FakeClock
) -> None:
    api = mosquitto_api
    w = await build_world(api)
    for vendor, model_number, kind, profile_key in MODELS:
        await post(
            api,
            f"{V1}/device-models",
            {
                "vendor": vendor,
                "model_number": model_number,
                "kind": kind,
                "transport": "serial",
                "unit_price": "100.00",
                "warranty_months": 24,
                "supplier": vendor,
                "profile_key": profile_key,
            },
        )
    tech = await api.as_("technician", (w.school_a,))
    agent_http = httpx.AsyncClient(transport=api.client._transport, base_url="http://test", headers=tech)
    agent = EdgeAgent(
        agent_http,
        school_id=w.school_a,
        room_id=w.room_a,
        broker=api.broker_url,
        clock_ms=lambda: int(clock.now().timestamp() * 1000),
    )
    async with SimBench() as bench:
        bench.add(RobotSim(uid="cafe42", usb_serial="EB-CAFE42"))
        bench.add(MicroPythonSim(unique_id=bytes.fromhex("30aea4c0ffee")))
        bench.add(FirmataSim(usb_serial="UNO0001"))
        await bench.start()
        supervisor = EdgeSupervisor(PortWatcher(bench.lister), agent, reset_for=bench.reset_for)
        agent.supervisor = supervisor
        try:
            await supervisor.poll_once()  # plugged in: identified, enrolled, logged in to mosquitto
            identities = sorted(link.identity for link in agent.kits.values())
            assert identities == ["mpy-30aea4c0ffee", "robot-cafe42", "usb-2341-0043-UNO0001"]
            assert all(link.client.is_connected() for link in agent.kits.values())

            async def all_online() -> bool:
                for link in agent.kits.values():
                    r = await api.client.get(f"{V1}/devices/{link.device_id}/state", headers=tech)
                    if r.json().get("online") is not True:
                        return False
                return True

            await wait_until(all_online)
        finally:
            await supervisor.aclose()
            await agent.aclose()
            await agent_http.aclose()
