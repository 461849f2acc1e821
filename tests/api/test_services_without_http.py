"""The per-feature services run without FastAPI (the console and the CLI call them so): a session, a
principal, a clock and typed inputs. Effects outside the database happen only once the unit of work has
committed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM, Principal
from fleet.errors import NotFound, PermissionDenied
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import AuditEntry
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.services import alerts, claim_tokens, commands, credentials, enrollment
from tests.conftest import Api
from tests.factories import build_world


class RecordingPlane:
    """A DevicePlanePort that records what it was told, and what the database showed at that moment."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.calls: list[tuple[str, object]] = []
        self.rotated: list[str | None] = []  # rotations told to end the live session

    async def credentials_changed(
        self, username: str | None = None, *, revoked: bool = False, rotated: bool = False
    ) -> None:
        if rotated:
            self.rotated.append(username)
        # The broker reads the credential from the database: it must already be committed.
        async with self.api.sessions() as s:
            revoked_at = await s.scalar(
                select(DeviceCredential.revoked_at).where(DeviceCredential.username == username)
            )
        self.calls.append(("credentials", (username, revoked, revoked_at is not None)))

    def wake_dispatcher(self) -> None:
        self.calls.append(("wake", None))

    async def reference_changed(self) -> None:
        self.calls.append(("reference", None))


class Boom(Exception):
    pass


async def test_services_run_without_http_and_tell_the_plane_only_after_the_commit(api: Api) -> None:
    w = await build_world(api)
    plane = RecordingPlane(api)
    spec = claim_tokens.ClaimTokenSpec(max_uses=1, ttl=timedelta(days=1), allow_unknown=False, label="bench")
    async with unit_of_work(api.sessions) as s:
        issued = await claim_tokens.create(s, SYSTEM, api.clock, w.school_a, spec)
    request = enrollment.EnrollRequest(issued.token, "SN-a-1", None, None, source="127.0.0.1")
    async with unit_of_work(api.sessions) as s:
        done = await enrollment.register(s, api.clock, request, plane=plane)
        assert plane.calls == []  # not committed yet: the broker is not told
    assert plane.calls == [("credentials", ("SN-a-1", False, False))]

    reboot = commands.CommandSpec("device", done.device_id, "reboot", {}, timedelta(hours=1), 60)
    async with unit_of_work(api.sessions) as s:
        progress = await commands.send(s, SYSTEM, api.clock, reboot, plane)
        assert plane.calls[-1][0] == "credentials"  # the dispatcher is woken after the commit only
    assert plane.calls[-1] == ("wake", None)
    assert (progress["total"], progress["by_status"]) == (1, {"queued": 1})

    # A rotation tells the plane to end the session opened with the old password.
    async with unit_of_work(api.sessions) as s:
        await credentials.rotate(s, SYSTEM, api.clock, done.device_id, plane)
    assert plane.rotated == ["SN-a-1"]
    plane.calls.pop()

    # A revocation that rolls back never reaches the broker.
    with pytest.raises(Boom):
        async with unit_of_work(api.sessions) as s:
            await credentials.revoke(s, SYSTEM, api.clock, done.device_id, plane)
            raise Boom
    assert len(plane.calls) == 2
    async with unit_of_work(api.sessions) as s:
        await credentials.revoke(s, SYSTEM, api.clock, done.device_id, plane)
    assert plane.calls[-1] == ("credentials", ("SN-a-1", True, True))

    async with api.sessions() as s:
        actions = (await s.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars().all()
    assert [
        a for a in actions if a.startswith(("claim_token", "device.enroll", "command", "credentials"))
    ] == [
        "claim_token.create",
        "device.enroll",
        "command.send",
        "credentials.rotate",
        "credentials.revoke",
    ]


async def test_services_check_role_and_scope_themselves(api: Api) -> None:
    w = await build_world(api)
    it_b = Principal(
        name="tech-b", role=Role.TECHNICIAN, district_wide=False, school_ids=frozenset({w.school_b})
    )
    auditor = Principal(name="aud", role=Role.AUDITOR, district_wide=True, school_ids=frozenset())
    spec = claim_tokens.ClaimTokenSpec(max_uses=1, ttl=timedelta(days=1), allow_unknown=False, label="")
    async with api.sessions() as s:
        with pytest.raises(NotFound):  # outside its schools looks like missing
            await claim_tokens.create(s, it_b, api.clock, w.school_a, spec)
        with pytest.raises(PermissionDenied):
            await claim_tokens.create(s, auditor, api.clock, w.school_a, spec)
        with pytest.raises(NotFound):
            await commands.batch_progress(s, it_b, "no-such-batch")
        assert await alerts.list_alerts(s, it_b) == []
