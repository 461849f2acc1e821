"""Through the HTTP API with the device plane running in the app's lifespan (embedded broker): enroll,
connect with the issued credentials, see state and alerts per school and room, acknowledge, command a room."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from fleet.domain.clock import FakeClock
from fleet.runtime.brokers import free_port
from tests.conftest import Api, make_settings
from tests.factories import build_world, plane_api, post
from tests.mqtt.mqtt_plane import TS0, terminal, wait_until

V1 = "/api/v1"


@pytest.fixture
async def live_api(sqlite_url: str, clock: FakeClock) -> AsyncIterator[Api]:
    settings = make_settings(
        sqlite_url, mqtt={"broker": "embedded", "listen_port": free_port(), "ingest_batch_ms": 20}
    )
    async with plane_api(settings, clock) as api:
        yield api


async def test_enroll_then_telemetry_alerts_and_commands_through_the_api(live_api: Api) -> None:
    api = live_api
    w = await build_world(api)
    tech = await api.as_("technician", (w.school_a,))
    tok = (await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 1}))["token"]
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": "SN-a-1"})
    assert r.status_code == 201, r.text
    creds = r.json()
    assert creds["topics"]["telemetry"] == "labfleet/v1/school-a/SN-a-1/telemetry"
    again = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": "SN-a-1"})
    assert again.status_code == 401 and again.json()["details"]["reason"] == "exhausted_token"

    port = api.port
    async with terminal(port, "school-a", "SN-a-1", creds["password"]) as c:
        await c.subscribe(creds["topics"]["cmd"], qos=1)
        await c.publish(
            creds["topics"]["telemetry"],
            json.dumps({"v": 1, "seq": 1, "ts": TS0, "battery": 3, "charging": False, "fw": "1.2.0"}),
            qos=1,
        )

        async def alerted() -> bool:
            got = await api.client.get(
                f"{V1}/alerts", params={"school": w.school_a, "room": w.room_a}, headers=tech
            )
            return bool(got.json())

        await wait_until(alerted)
        # The metrics snapshot (scrape-time state) sees the device online, faulty, on its firmware.
        snap = await api.client._transport.app.state.fleet.plane.build_snapshot()
        cells = {(p.school, p.device_kind): p.online for p in snap.presence}
        assert cells[("school-a", "terminal")] == 1  # school B's device never enrolled: not in the plane
        assert ("LT-100", "fault", 1) in {(h.model, h.state, h.count) for h in snap.health}
        assert ("LT-100", "1.2.0", 1) in {(f.model, f.version, f.count) for f in snap.firmware}
        state = (await api.client.get(f"{V1}/devices/{w.device_a}/state", headers=tech)).json()
        assert (state["online"], state["battery_pct"], state["health"]) == (True, 3, "fault")
        alerts = (await api.client.get(f"{V1}/alerts", params={"school": w.school_a}, headers=tech)).json()
        assert [(a["rule"], a["severity"], a["status"]) for a in alerts] == [
            ("battery_low", "critical", "open")
        ]
        other = await api.as_("technician", (w.school_b,))
        assert (await api.client.get(f"{V1}/alerts", headers=other)).json() == []
        assert (await api.client.post(f"{V1}/alerts/{alerts[0]['id']}/ack", headers=other)).status_code == 404
        acked = (await api.client.post(f"{V1}/alerts/{alerts[0]['id']}/ack", headers=tech)).json()
        assert acked["status"] == "acknowledged" and acked["acknowledged_by"].startswith("token:")
        done = (await api.client.post(f"{V1}/alerts/{alerts[0]['id']}/resolve", headers=tech)).json()
        assert done["status"] == "resolved"

        sent = await api.client.post(
            f"{V1}/commands",
            headers=tech,
            json={
                "target": {"kind": "room", "id": w.room_a},
                "name": "lock",
                "args": {"message": "Eyes rest"},
            },
        )
        assert sent.status_code == 202, sent.text
        batch = sent.json()
        async with asyncio.timeout(10):
            async for msg in c.messages:
                body = json.loads(msg.payload)
                if body.get("type") == "command":
                    break
        assert body["cmd"] == "lock" and body["args"] == {"message": "Eyes rest"}
        await c.publish(
            creds["topics"]["ack"], json.dumps({"v": 1, "id": body["id"], "ts": TS0, "accepted": True}), qos=1
        )
        await c.publish(
            creds["topics"]["result"], json.dumps({"v": 1, "id": body["id"], "ts": TS0, "ok": True}), qos=1
        )

        async def succeeded() -> bool:
            got = (await api.client.get(f"{V1}/commands/{batch['batch_id']}", headers=tech)).json()
            return got["by_status"] == {"succeeded": 1}

        await wait_until(succeeded)

    # Revocation through the API: the issued password stops working.
    assert (
        await api.client.post(f"{V1}/devices/{w.device_a}/credentials/revoke", headers=tech)
    ).status_code == 200
    import aiomqtt

    with pytest.raises(aiomqtt.MqttError):
        async with terminal(port, "school-a", "SN-a-1", creds["password"], timeout=3):
            pass
