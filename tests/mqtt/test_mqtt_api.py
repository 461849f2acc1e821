"""Through the HTTP API with the device plane running in the app's lifespan: enroll, connect with the issued
credentials, see state and alerts per school and room, acknowledge, command a room. The doc's example terminal
flow, on plain MQTT (embedded) and over TLS with the plain listener off on both managed brokers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet.domain.clock import FakeClock
from fleet.runtime.brokers import free_port
from fleet.services import tls
from fleet.settings import TlsSettings
from tests.conftest import Api, make_settings
from tests.factories import build_world, plane_api, post
from tests.mqtt.mqtt_plane import TS0, need_mosquitto, terminal, wait_until

V1 = "/api/v1"


# The doc's terminal flow on every transport a managed broker offers: plain MQTT (`make run`), and MQTT over
# TLS with the plain listener off (the documented production settings) on both brokers.
TRANSPORTS = [("embedded", False), ("embedded", True), ("mosquitto", True)]


@pytest.fixture(params=TRANSPORTS, ids=[f"{b}-{'tls' if t else 'plain'}" for b, t in TRANSPORTS])
async def live_api(
    request: pytest.FixtureRequest, sqlite_url: str, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Api]:
    kind, on_tls = request.param
    if kind == "mosquitto":
        need_mosquitto()
    mqtt: dict[str, object] = {"broker": kind, "listen_port": free_port(), "ingest_batch_ms": 20}
    extra: dict[str, object] = {}
    if on_tls:
        tls_dir = tmp_path / "tls"
        tls.init(TlsSettings(dir=str(tls_dir)), ["localhost", "127.0.0.1"], datetime.now(UTC))
        mqtt |= {
            "tls": True,
            "tls_port": free_port(),
            "plain_listener": False,
            "data_dir": str(tmp_path / "mq"),
        }
        extra["tls"] = {"dir": str(tls_dir)}
    elif kind == "mosquitto":
        mqtt["data_dir"] = str(tmp_path / "mq")
    settings = make_settings(sqlite_url, mqtt=mqtt, **extra)
    async with plane_api(settings, clock) as api:
        api.tls_port = settings.mqtt.tls_port if on_tls else None
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

    # The terminal connects where enrollment says, and over TLS trusts only the CA it was handed
    # (docs/protocol-mqtt.md 1.1).
    if api.tls_port is not None:
        assert creds["broker_url"] == f"mqtts://127.0.0.1:{api.tls_port}"
        port, ctx = api.tls_port, tls.client_context(creds["ca_pem"])
    else:
        assert creds["broker_url"] == f"mqtt://127.0.0.1:{api.port}" and creds["ca_pem"] is None
        port, ctx = api.port, None
    async with terminal(port, "school-a", "SN-a-1", creds["password"], tls_context=ctx) as c:
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
        async with terminal(port, "school-a", "SN-a-1", creds["password"], timeout=3, tls_context=ctx):
            pass
