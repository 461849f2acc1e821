"""Starting a credential rotation over HTTP (docs/protocol-mqtt.md 8.1): what it queues, who may, and what it
refuses. The MQTT side (delivery, ack, grace) is tests/mqtt/test_credential_rotation.py."""

from __future__ import annotations

from sqlalchemy import select

from fleet.domain import credentials
from fleet.domain.enums import Role
from fleet.persistence.models import AuditEntry
from fleet.persistence.models_mqtt import DeviceCommand, DeviceCredential
from fleet.services import credential_rotation
from tests.conftest import Api
from tests.factories import build_world, post

V1 = "/api/v1"
ROTATIONS = f"{V1}/credential-rotations"


async def _enroll(api: Api, school: int, serial: str) -> None:
    tok = (await post(api, f"{V1}/schools/{school}/claim-tokens", {"max_uses": 1}))["token"]
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": serial})
    assert r.status_code == 201, r.text


async def test_a_school_rotation_queues_one_command_per_enrolled_device_and_is_audited(api: Api) -> None:
    w = await build_world(api)
    await _enroll(api, w.school_a, "SN-a-1")
    await _enroll(api, w.school_b, "SN-b-1")
    tech = await api.as_(Role.TECHNICIAN, (w.school_a,))
    r = await api.client.post(ROTATIONS, json={"school_id": w.school_a, "grace_hours": 2}, headers=tech)
    assert r.status_code == 202, r.text
    assert r.json()["devices"] == 1 and r.json()["skipped"] == 0 and r.json()["grace_hours"] == 2
    batch = r.json()["batch_id"]
    # A second start skips the device whose rotation is under way.
    again = await api.client.post(ROTATIONS, json={"school_id": w.school_a}, headers=tech)
    assert again.json() | {"batch_id": ""} == {"batch_id": "", "devices": 0, "skipped": 1, "grace_hours": 24}
    progress = (await api.client.get(f"{V1}/commands/{batch}", headers=tech)).json()
    assert progress["name"] == "rotate_credentials" and progress["by_status"] == {"queued": 1}
    async with api.sessions() as s:
        cmd = (await s.execute(select(DeviceCommand))).scalar_one()
        cred = (
            await s.execute(select(DeviceCredential).where(DeviceCredential.username == "SN-a-1"))
        ).scalar_one()
        audit = (
            (await s.execute(select(AuditEntry).where(AuditEntry.action == "credentials.rotation_start")))
            .scalars()
            .all()
        )
    assert cmd.args == {} and cmd.device_id == w.device_a
    assert cred.rotation_command_id == cmd.id and cred.rotation_grace_s == 7200 and cred.pending_hash is None
    assert [a.after for a in audit] == [
        {"devices": 1, "skipped": 0, "grace_s": 7200},
        {"devices": 0, "skipped": 1, "grace_s": 86400},
    ]


async def test_district_wide_needs_a_district_wide_role_and_bad_input_is_refused(api: Api) -> None:
    w = await build_world(api)
    await _enroll(api, w.school_a, "SN-a-1")
    tech = await api.as_(Role.TECHNICIAN, (w.school_a,))
    r = await api.client.post(ROTATIONS, json={}, headers=tech)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await api.client.post(ROTATIONS, json={"school_id": w.school_a, "grace_hours": 0.001}, headers=tech)
    assert r.status_code == 422
    r = await api.client.post(ROTATIONS, json={"school_id": w.school_a, "password": "x"}, headers=tech)
    assert r.status_code == 422
    r = await api.client.post(ROTATIONS, json={}, headers=await api.admin())
    assert r.status_code == 202 and r.json()["devices"] == 1
    # The command carries a password made when it is sent: nobody queues it by hand.
    r = await api.client.post(
        f"{V1}/commands",
        json={"target": {"kind": "device", "id": w.device_a}, "name": "rotate_credentials"},
        headers=await api.admin(),
    )
    assert r.status_code == 422


async def test_an_immediate_rotation_withdraws_a_rotation_under_way(api: Api) -> None:
    w = await build_world(api)
    await _enroll(api, w.school_a, "SN-a-1")
    admin = await api.admin()
    assert (
        await api.client.post(ROTATIONS, json={"school_id": w.school_a}, headers=admin)
    ).status_code == 202
    async with api.sessions() as s:  # the dispatcher sends it: the device now holds a second password
        cmd = (await s.execute(select(DeviceCommand))).scalar_one()
        sent = await credential_rotation.issue(s, cmd, api.clock.now())
        await s.commit()
    assert sent is not None
    r = await api.client.post(f"{V1}/devices/{w.device_a}/credentials/rotate", headers=admin)
    assert r.status_code == 200
    async with api.sessions() as s:
        cred = (await s.execute(select(DeviceCredential))).scalar_one()
    # Only the password just answered opens a session; the one sent over MQTT does not.
    assert credentials.verify_password(r.json()["password"], cred.password_hash)
    assert cred.pending_hash is None and cred.rotation_command_id is None
