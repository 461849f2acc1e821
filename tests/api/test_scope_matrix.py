"""Every route, as every role, inside and outside its schools: the status is pinned here.

A new route that is not in MATRIX fails test_every_route_is_in_the_matrix.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from fleet.domain.enums import Role
from tests.conftest import Api
from tests.factories import World, build_world, post

ALL = frozenset(Role)
A = Role.ADMIN
T = Role.TECHNICIAN
I = Role.IT_STAFF
P = Role.PROCUREMENT
U = Role.AUDITOR

_counter = itertools.count(1)

Build = Callable[[Api, World, bool], Awaitable[tuple[str, dict[str, Any]]]]


@dataclass(frozen=True)
class Spec:
    roles: frozenset[Role]  # roles allowed to call it
    ok: int  # status for an allowed role inside its scope
    build: Build  # (api, world, inside) -> (path, request kwargs)
    out: int | None = None  # status for an allowed, school-scoped role outside its schools (None: same as ok)
    public: bool = False  # no token needed


def n() -> int:
    return next(_counter)


def school(w: World, inside: bool) -> int:
    return w.school_a if inside else w.school_b


def room(w: World, inside: bool) -> int:
    return w.room_a if inside else w.room_b


def device(w: World, inside: bool) -> int:
    return w.device_a if inside else w.device_b


def fixed(path: str, **kw: Any) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return path, kw

    return build


def on(fmt: str, pick: Callable[[World, bool], int], **kw: Any) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return fmt.format(pick(w, inside)), kw

    return build


def body(path: str, make: Callable[[World, bool], dict[str, Any]]) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return path, {"json": make(w, inside)}

    return build


def fresh(fmt: str, create: Callable[[Api, World, bool], Awaitable[int]], **kw: Any) -> Build:
    """Target an object created just for this call (for deletes and transitions)."""

    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return fmt.format(await create(api, w, inside)), kw

    return build


async def new_district(api: Api, w: World, inside: bool) -> int:
    return (await post(api, "/api/v1/districts", {"name": f"Spare {n()}"}))["id"]


async def new_school(api: Api, w: World, inside: bool) -> int:
    return (
        await post(
            api,
            "/api/v1/schools",
            {"district_id": w.district, "code": f"spare-{n()}", "name": "Spare", "uplink_mbps": 10},
        )
    )["id"]


async def new_room(api: Api, w: World, inside: bool) -> int:
    return (
        await post(
            api,
            "/api/v1/rooms",
            {"school_id": school(w, inside), "name": f"Spare {n()}", "kind": "digital_lab"},
        )
    )["id"]


async def new_model(api: Api, w: World, inside: bool) -> int:
    return (
        await post(
            api,
            "/api/v1/device-models",
            {
                "vendor": "Spare",
                "model_number": f"M-{n()}",
                "kind": "sensor",
                "transport": "mqtt",
                "unit_price": "1.00",
                "warranty_months": 12,
                "supplier": "S",
            },
        )
    )["id"]


async def new_device(api: Api, w: World, inside: bool) -> int:
    i = n()
    return (
        await post(
            api,
            "/api/v1/devices",
            {
                "serial_number": f"SP-{i}",
                "asset_tag": f"SP-{i}",
                "model_id": w.model,
                "school_id": school(w, inside),
            },
        )
    )["id"]


def free_slot() -> tuple[str, str]:
    """A minute of its own on Wednesday evening: two periods of one schedule may not overlap."""
    i = n() % 600
    start = f"{12 + i // 60:02d}:{i % 60:02d}"
    return start, f"{start}:30"


async def new_period(api: Api, w: World, inside: bool) -> int:
    start, end = free_slot()
    return (
        await post(
            api,
            "/api/v1/bell-periods",
            {
                "school_id": school(w, inside),
                "weekday": 2,
                "name": f"X{n()}",
                "start_time": start,
                "end_time": end,
            },
        )
    )["id"]


async def new_calendar(api: Api, w: World, inside: bool) -> int:
    return (
        await post(
            api,
            "/api/v1/calendar-entries",
            {
                "school_id": school(w, inside),
                "kind": "holiday",
                "start_date": "2026-12-24",
                "end_date": "2026-12-26",
            },
        )
    )["id"]


async def new_token(api: Api, w: World, inside: bool) -> int:
    r = await api.client.post(
        "/api/v1/tokens",
        json={"name": f"t{n()}", "role": "auditor", "district_wide": True},
        headers=await api.admin(),
    )
    return r.json()["id"]


def device_csv(w: World, inside: bool) -> dict[str, Any]:
    i = n()
    code = "school-a" if inside else "school-b"
    csv = f"serial_number,asset_tag,vendor,model_number,school_code\nCSV-{i},CSV-{i},EduTech,LT-100,{code}\n"
    return {"files": {"file": ("d.csv", csv, "text/csv")}}


def room_csv(w: World, inside: bool) -> dict[str, Any]:
    code = "school-a" if inside else "school-b"
    return {
        "files": {
            "file": ("r.csv", f"school_code,name,kind\n{code},CSV Room {n()},smart_classroom\n", "text/csv")
        }
    }


def upload(make: Callable[[World, bool], dict[str, Any]], path: str) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return path, make(w, inside)

    return build


# --- rollouts --------------------------------------------------------------------------------------------


async def _import_artifacts(api: Api) -> None:
    r = await api.client.post(
        f"{V1}/artifacts/import", json={"source": "profiles"}, headers=await api.admin()
    )
    assert r.status_code == 201, r.text


def rollout_body(w: World, inside: bool) -> dict[str, Any]:
    return {
        "name": f"r{n()}",
        "model_id": w.model,
        "target_version": "1.2.0",
        "school_ids": [school(w, inside)],
        "start": False,
    }


def rollout_create() -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        await _import_artifacts(api)
        return f"{V1}/rollouts", {"json": rollout_body(w, inside)}

    return build


async def _rollout(api: Api, w: World, inside: bool, *, start: bool) -> tuple[int, int]:
    """A rollout of a fresh model (so started rollouts never clash) with one in-service device."""
    await _import_artifacts(api)
    model = await post(
        api,
        f"{V1}/device-models",
        {
            "vendor": "EduTech",
            "model_number": f"LT-R{n()}",
            "kind": "terminal",
            "transport": "mqtt",
            "unit_price": "329.00",
            "warranty_months": 36,
            "supplier": "S",
            "profile_key": "terminal-lt100",
        },
    )
    i = n()
    dev = await post(
        api,
        f"{V1}/devices",
        {
            "serial_number": f"RO-{i}",
            "asset_tag": f"RO-{i}",
            "model_id": model["id"],
            "school_id": school(w, inside),
            "status": "in_service",
        },
    )
    r = await post(
        api,
        f"{V1}/rollouts",
        {
            "name": f"r{i}",
            "model_id": model["id"],
            "target_version": "1.2.0",
            "school_ids": [school(w, inside)],
            "start": start,
        },
    )
    return r["id"], dev["id"]


def rollout_action(fmt: str, *, start: bool, paused: bool = False, with_device: bool = False) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        rid, dev = await _rollout(api, w, inside, start=start)
        if paused:
            r = await api.client.post(f"{V1}/rollouts/{rid}/pause", headers=await api.admin())
            assert r.status_code == 200, r.text
        return (fmt.format(rid, dev) if with_device else fmt.format(rid)), {}

    return build


def artifact_sha() -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        await _import_artifacts(api)
        items = (await api.client.get(f"{V1}/artifacts", headers=await api.admin())).json()["items"]
        return f"{V1}/artifacts/{items[0]['sha256']}", {}

    return build


def signed_download() -> Build:
    """A terminal's signed link from an update command: no API token, whoever calls it."""

    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        from fleet.services.artifacts import DownloadGrant, download_path
        from fleet.settings import Settings

        rid, dev = await _rollout(api, w, inside, start=True)
        got = (await api.client.get(f"{V1}/rollouts/{rid}", headers=await api.admin())).json()
        grant = DownloadGrant(
            got["artifact_sha256"], dev, school(w, inside), int(api.clock.now().timestamp()) + 600
        )
        return download_path(Settings().rollouts.url_key, grant), {}

    return build


ROLLOUT_MANAGERS = frozenset({A, I})


# --- device plane (claim tokens, enrollment, credentials, state, alerts, commands) ----------------------
async def new_claim_token(api: Api, w: World, inside: bool) -> int:
    return (await post(api, f"{V1}/schools/{school(w, inside)}/claim-tokens", {"max_uses": 3}))["id"]


async def enrolled_device(api: Api, w: World, inside: bool) -> int:
    """Enroll the world's device (again) so it has fresh, unrevoked credentials."""
    dev = device(w, inside)
    tok = (await post(api, f"{V1}/schools/{school(w, inside)}/claim-tokens", {"max_uses": 1}))["token"]
    r = await api.client.post(
        f"{V1}/enroll",
        json={"claim_token": tok, "serial_number": f"SN-{'a' if inside else 'b'}-1", "vendor": "EduTech"},
    )
    assert r.status_code == 201, r.text
    return dev


async def _enroll_build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
    tok = (await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 1}))["token"]
    return f"{V1}/enroll", {"json": {"claim_token": tok, "serial_number": "SN-a-1", "vendor": "EduTech"}}


async def new_alert(api: Api, w: World, inside: bool) -> int:
    from fleet.persistence.models_mqtt import Alert

    async with api.sessions() as s:
        a = Alert(
            device_id=device(w, inside),
            school_id=school(w, inside),
            room_id=room(w, inside),
            rule="battery_low",
            severity="warning",
            status="open",
            dedup_key=None,
            detail="battery 9%",
            occurrences=1,
            opened_at=api.clock.now(),
            last_seen_at=api.clock.now(),
        )
        s.add(a)
        await s.commit()
        return a.id


async def _command_build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
    dev = await enrolled_device(api, w, inside)
    return f"{V1}/commands", {"json": {"target": {"kind": "device", "id": dev}, "name": "reboot"}}


async def new_batch(api: Api, w: World, inside: bool) -> str:
    path, kw = await _command_build(api, w, inside)
    r = await api.client.post(path, headers=await api.admin(), **kw)
    assert r.status_code == 202, r.text
    return r.json()["batch_id"]


def on_batch(fmt: str) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return fmt.format(await new_batch(api, w, inside)), {}

    return build


def on_enrolled(fmt: str) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return fmt.format(await enrolled_device(api, w, inside)), {}

    return build


async def new_stocktake(api: Api, w: World, inside: bool) -> int:
    """An open count of the room, by hand (no network pre-marks): its device is missing."""
    r = await api.client.post(
        f"{V1}/stocktakes", json={"room_id": room(w, inside), "window": "none"}, headers=await api.admin()
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def stocktake_loss(fmt: str) -> Build:
    """A fresh device in the room and a fresh count that misses it, to mark lost."""

    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        dev = await new_device(api, w, inside)
        r = await api.client.patch(
            f"{V1}/devices/{dev}", json={"room_id": room(w, inside)}, headers=await api.admin()
        )
        assert r.status_code == 200, r.text
        st = await new_stocktake(api, w, inside)
        return fmt.format(st, dev), {"json": {"action": "marked_lost", "reason": "not in the room"}}

    return build


ENROLLERS = frozenset({A, T})
COMMANDERS = frozenset({A, T, I})


ROOM_WRITERS = frozenset({A, T, I})
REPORT_READERS = frozenset({A, I, P, U})
V1 = "/api/v1"

MATRIX: dict[tuple[str, str], Spec] = {
    ("GET", "/healthz"): Spec(ALL, 200, fixed("/healthz"), public=True),
    ("GET", "/readyz"): Spec(ALL, 200, fixed("/readyz"), public=True),
    # districts: district-level data, written by admins only
    ("GET", f"{V1}/districts"): Spec(ALL, 200, fixed(f"{V1}/districts")),
    ("POST", f"{V1}/districts"): Spec(
        frozenset({A}), 201, body(f"{V1}/districts", lambda w, i: {"name": f"D{n()}"})
    ),
    ("GET", f"{V1}/districts/{{obj_id}}"): Spec(ALL, 200, on(V1 + "/districts/{}", lambda w, i: w.district)),
    ("PATCH", f"{V1}/districts/{{obj_id}}"): Spec(
        frozenset({A}), 200, on(V1 + "/districts/{}", lambda w, i: w.district, json={"name": "Renamed"})
    ),
    ("DELETE", f"{V1}/districts/{{obj_id}}"): Spec(
        frozenset({A}), 204, fresh(V1 + "/districts/{}", new_district)
    ),
    # schools
    ("GET", f"{V1}/schools"): Spec(ALL, 200, fixed(f"{V1}/schools")),
    ("POST", f"{V1}/schools"): Spec(
        frozenset({A}),
        201,
        body(
            f"{V1}/schools",
            lambda w, i: {"district_id": w.district, "code": f"s-{n()}", "name": "S", "uplink_mbps": 50},
        ),
    ),
    ("GET", f"{V1}/schools/{{obj_id}}"): Spec(ALL, 200, on(V1 + "/schools/{}", school), out=404),
    ("PATCH", f"{V1}/schools/{{obj_id}}"): Spec(
        frozenset({A}), 200, on(V1 + "/schools/{}", school, json={"uplink_mbps": 300})
    ),
    ("DELETE", f"{V1}/schools/{{obj_id}}"): Spec(frozenset({A}), 204, fresh(V1 + "/schools/{}", new_school)),
    # rooms
    ("GET", f"{V1}/rooms"): Spec(ALL, 200, fixed(f"{V1}/rooms")),
    ("POST", f"{V1}/rooms"): Spec(
        ROOM_WRITERS,
        201,
        body(
            f"{V1}/rooms",
            lambda w, i: {
                "school_id": school(w, i),
                "name": f"R{n()}",
                "kind": "ai_lab",
                "tier": "basic_experience",
            },
        ),
        out=404,
    ),
    ("GET", f"{V1}/rooms/{{obj_id}}"): Spec(ALL, 200, on(V1 + "/rooms/{}", room), out=404),
    ("PATCH", f"{V1}/rooms/{{obj_id}}"): Spec(
        ROOM_WRITERS, 200, on(V1 + "/rooms/{}", room, json={"capacity": 32}), out=404
    ),
    ("DELETE", f"{V1}/rooms/{{obj_id}}"): Spec(ROOM_WRITERS, 204, fresh(V1 + "/rooms/{}", new_room), out=404),
    ("GET", f"{V1}/rooms/{{obj_id}}/lesson"): Spec(ALL, 200, on(V1 + "/rooms/{}/lesson", room), out=404),
    # device models: district-wide catalogue, written by admins and procurement
    ("GET", f"{V1}/device-models"): Spec(ALL, 200, fixed(f"{V1}/device-models")),
    ("POST", f"{V1}/device-models"): Spec(
        frozenset({A, P}),
        201,
        body(
            f"{V1}/device-models",
            lambda w, i: {
                "vendor": "V",
                "model_number": f"N{n()}",
                "kind": "robot",
                "transport": "serial",
                "unit_price": "10.50",
                "warranty_months": 24,
                "supplier": "S",
            },
        ),
    ),
    ("GET", f"{V1}/device-models/{{obj_id}}"): Spec(
        ALL, 200, on(V1 + "/device-models/{}", lambda w, i: w.model)
    ),
    ("PATCH", f"{V1}/device-models/{{obj_id}}"): Spec(
        frozenset({A, P}),
        200,
        on(V1 + "/device-models/{}", lambda w, i: w.model, json={"unit_price": "300.00"}),
    ),
    ("DELETE", f"{V1}/device-models/{{obj_id}}"): Spec(
        frozenset({A, P}), 204, fresh(V1 + "/device-models/{}", new_model)
    ),
    # devices
    ("GET", f"{V1}/devices"): Spec(ALL, 200, fixed(f"{V1}/devices")),
    ("POST", f"{V1}/devices"): Spec(
        frozenset({A, T}),
        201,
        body(
            f"{V1}/devices",
            lambda w, i: {
                "serial_number": f"N-{n()}",
                "asset_tag": f"N-{n()}",
                "model_id": w.model,
                "school_id": school(w, i),
            },
        ),
        out=404,
    ),
    ("GET", f"{V1}/devices/{{obj_id}}"): Spec(ALL, 200, on(V1 + "/devices/{}", device), out=404),
    ("PATCH", f"{V1}/devices/{{obj_id}}"): Spec(
        frozenset({A, T}), 200, on(V1 + "/devices/{}", device, json={"order_number": "PO-9"}), out=404
    ),
    ("DELETE", f"{V1}/devices/{{obj_id}}"): Spec(
        frozenset({A, T}), 204, fresh(V1 + "/devices/{}", new_device), out=404
    ),
    ("POST", f"{V1}/devices/{{obj_id}}/transitions"): Spec(
        frozenset({A, T}),
        200,
        fresh(V1 + "/devices/{}/transitions", new_device, json={"to": "provisioned", "reason": "bench"}),
        out=404,
    ),
    ("GET", f"{V1}/devices/{{obj_id}}/history"): Spec(
        ALL, 200, on(V1 + "/devices/{}/history", device), out=404
    ),
    # timetables
    ("GET", f"{V1}/bell-periods"): Spec(ALL, 200, fixed(f"{V1}/bell-periods")),
    ("POST", f"{V1}/bell-periods"): Spec(
        ROOM_WRITERS,
        201,
        body(
            f"{V1}/bell-periods",
            lambda w, i: {
                "school_id": school(w, i),
                "weekday": 2,
                "name": "P2",
                **dict(zip(("start_time", "end_time"), free_slot(), strict=True)),
            },
        ),
        out=404,
    ),
    ("GET", f"{V1}/bell-periods/{{obj_id}}"): Spec(
        ALL, 200, on(V1 + "/bell-periods/{}", lambda w, i: w.period_a if i else w.period_b), out=404
    ),
    ("PATCH", f"{V1}/bell-periods/{{obj_id}}"): Spec(
        ROOM_WRITERS,
        200,
        on(V1 + "/bell-periods/{}", lambda w, i: w.period_a if i else w.period_b, json={"name": "First"}),
        out=404,
    ),
    ("DELETE", f"{V1}/bell-periods/{{obj_id}}"): Spec(
        ROOM_WRITERS, 204, fresh(V1 + "/bell-periods/{}", new_period), out=404
    ),
    ("GET", f"{V1}/calendar-entries"): Spec(ALL, 200, fixed(f"{V1}/calendar-entries")),
    ("POST", f"{V1}/calendar-entries"): Spec(
        ROOM_WRITERS,
        201,
        body(
            f"{V1}/calendar-entries",
            lambda w, i: {
                "school_id": school(w, i),
                "kind": "exam_day",
                "start_date": "2026-11-12",
                "end_date": "2026-11-12",
            },
        ),
        out=404,
    ),
    ("GET", f"{V1}/calendar-entries/{{obj_id}}"): Spec(
        ALL, 200, on(V1 + "/calendar-entries/{}", lambda w, i: w.calendar_a if i else w.calendar_b), out=404
    ),
    ("PATCH", f"{V1}/calendar-entries/{{obj_id}}"): Spec(
        ROOM_WRITERS,
        200,
        on(
            V1 + "/calendar-entries/{}",
            lambda w, i: w.calendar_a if i else w.calendar_b,
            json={"name": "Term 1"},
        ),
        out=404,
    ),
    ("DELETE", f"{V1}/calendar-entries/{{obj_id}}"): Spec(
        ROOM_WRITERS, 204, fresh(V1 + "/calendar-entries/{}", new_calendar), out=404
    ),
    # tokens: admins only
    ("GET", f"{V1}/tokens"): Spec(frozenset({A}), 200, fixed(f"{V1}/tokens")),
    ("POST", f"{V1}/tokens"): Spec(
        frozenset({A}),
        201,
        body(f"{V1}/tokens", lambda w, i: {"name": "x", "role": "technician", "school_ids": [school(w, i)]}),
    ),
    ("DELETE", f"{V1}/tokens/{{obj_id}}"): Spec(frozenset({A}), 200, fresh(V1 + "/tokens/{}", new_token)),
    # audit: admins and auditors
    ("GET", f"{V1}/audit"): Spec(frozenset({A, U}), 200, fixed(f"{V1}/audit")),
    ("GET", f"{V1}/audit/export"): Spec(frozenset({A, U}), 200, fixed(f"{V1}/audit/export")),
    # verifying the chain reads every record: admins and district-wide auditors
    # (the matrix's auditors are school-scoped)
    ("GET", f"{V1}/audit/verify"): Spec(frozenset({A}), 200, fixed(f"{V1}/audit/verify")),
    # imports and exports; a row for a school outside the caller's scope is an unknown school (422)
    ("POST", f"{V1}/imports/devices"): Spec(
        frozenset({A, T}), 201, upload(device_csv, f"{V1}/imports/devices"), out=422
    ),
    ("POST", f"{V1}/imports/rooms"): Spec(
        ROOM_WRITERS, 201, upload(room_csv, f"{V1}/imports/rooms"), out=422
    ),
    ("GET", f"{V1}/exports/devices"): Spec(ALL, 200, fixed(f"{V1}/exports/devices")),
    ("GET", f"{V1}/exports/rooms"): Spec(ALL, 200, fixed(f"{V1}/exports/rooms")),
    # asset labels: printed by those who manage devices, for a room (or school) of their own
    ("POST", f"{V1}/labels"): Spec(
        ENROLLERS,
        200,
        body(f"{V1}/labels", lambda w, inside: {"room": room(w, inside), "content": "tag"}),
        out=404,
    ),
    # rollouts: read with operations access, managed by admins and IT staff within their schools
    ("GET", f"{V1}/rollouts"): Spec(ALL, 200, fixed(f"{V1}/rollouts")),
    ("POST", f"{V1}/rollouts"): Spec(ROLLOUT_MANAGERS, 201, rollout_create(), out=404),
    ("GET", f"{V1}/rollouts/{{obj_id}}"): Spec(
        ALL, 200, rollout_action(V1 + "/rollouts/{}", start=True), out=404
    ),
    ("GET", f"{V1}/rollouts/{{obj_id}}/devices/{{device_id}}/timeline"): Spec(
        ALL,
        200,
        rollout_action(V1 + "/rollouts/{}/devices/{}/timeline", start=True, with_device=True),
        out=404,
    ),
    ("POST", f"{V1}/rollouts/{{obj_id}}/start"): Spec(
        ROLLOUT_MANAGERS, 200, rollout_action(V1 + "/rollouts/{}/start", start=False), out=404
    ),
    ("POST", f"{V1}/rollouts/{{obj_id}}/pause"): Spec(
        ROLLOUT_MANAGERS, 200, rollout_action(V1 + "/rollouts/{}/pause", start=True), out=404
    ),
    ("POST", f"{V1}/rollouts/{{obj_id}}/resume"): Spec(
        ROLLOUT_MANAGERS, 200, rollout_action(V1 + "/rollouts/{}/resume", start=True, paused=True), out=404
    ),
    ("POST", f"{V1}/rollouts/{{obj_id}}/abort"): Spec(
        ROLLOUT_MANAGERS, 200, rollout_action(V1 + "/rollouts/{}/abort", start=True), out=404
    ),
    ("GET", f"{V1}/schools/{{obj_id}}/update-policy"): Spec(
        ALL, 200, on(V1 + "/schools/{}/update-policy", school), out=404
    ),
    ("PUT", f"{V1}/schools/{{obj_id}}/update-policy"): Spec(
        ROLLOUT_MANAGERS,
        200,
        on(
            V1 + "/schools/{}/update-policy",
            school,
            json={
                "windows": [{"weekday": 0, "start": "16:30", "end": "22:00"}],
                "max_concurrent_downloads": 10,
            },
        ),
        out=404,
    ),
    ("GET", f"{V1}/artifacts"): Spec(ALL, 200, fixed(f"{V1}/artifacts")),
    ("GET", f"{V1}/artifacts/{{sha256}}"): Spec(ALL, 200, artifact_sha()),
    ("POST", f"{V1}/artifacts/import"): Spec(
        ROLLOUT_MANAGERS, 201, body(f"{V1}/artifacts/import", lambda w, i: {"source": "profiles"})
    ),
    ("GET", f"{V1}/artifacts/{{sha256}}/download"): Spec(ALL, 200, signed_download(), public=True),
    # device plane
    ("POST", f"{V1}/schools/{{obj_id}}/claim-tokens"): Spec(
        ENROLLERS, 201, on(V1 + "/schools/{}/claim-tokens", school, json={"max_uses": 2}), out=404
    ),
    ("GET", f"{V1}/schools/{{obj_id}}/claim-tokens"): Spec(
        ENROLLERS, 200, on(V1 + "/schools/{}/claim-tokens", school), out=404
    ),
    ("POST", f"{V1}/claim-tokens/{{obj_id}}/revoke"): Spec(
        ENROLLERS, 200, fresh(V1 + "/claim-tokens/{}/revoke", new_claim_token), out=404
    ),
    ("POST", f"{V1}/enroll"): Spec(ALL, 201, _enroll_build, public=True),
    ("POST", f"{V1}/devices/{{obj_id}}/credentials/rotate"): Spec(
        ENROLLERS, 200, on_enrolled(V1 + "/devices/{}/credentials/rotate"), out=404
    ),
    ("POST", f"{V1}/devices/{{obj_id}}/credentials/revoke"): Spec(
        ENROLLERS, 200, on_enrolled(V1 + "/devices/{}/credentials/revoke"), out=404
    ),
    ("POST", f"{V1}/credential-rotations"): Spec(
        ENROLLERS,
        202,
        body(f"{V1}/credential-rotations", lambda w, i: {"school_id": school(w, i), "grace_hours": 2}),
        out=404,
    ),
    ("GET", f"{V1}/devices/{{obj_id}}/state"): Spec(ALL, 200, on(V1 + "/devices/{}/state", device), out=404),
    ("GET", f"{V1}/devices/{{obj_id}}/presence"): Spec(
        ALL, 200, on(V1 + "/devices/{}/presence", device), out=404
    ),
    ("GET", f"{V1}/alerts"): Spec(ALL, 200, fixed(f"{V1}/alerts")),
    ("POST", f"{V1}/alerts/{{obj_id}}/ack"): Spec(
        COMMANDERS, 200, fresh(V1 + "/alerts/{}/ack", new_alert), out=404
    ),
    ("POST", f"{V1}/alerts/{{obj_id}}/resolve"): Spec(
        COMMANDERS, 200, fresh(V1 + "/alerts/{}/resolve", new_alert), out=404
    ),
    ("POST", f"{V1}/commands"): Spec(COMMANDERS, 202, _command_build, out=404),
    ("GET", f"{V1}/commands/{{obj_id}}"): Spec(ALL, 200, on_batch(V1 + "/commands/{}"), out=404),
    ("POST", f"{V1}/commands/{{obj_id}}/cancel"): Spec(
        COMMANDERS, 200, on_batch(V1 + "/commands/{}/cancel"), out=404
    ),
    ("GET", f"{V1}/dead-letters"): Spec(frozenset({A}), 200, fixed(f"{V1}/dead-letters")),
    # peak-load stats: every role reads operations; a school outside the caller's scope is missing
    ("GET", f"{V1}/stats/peaks"): Spec(
        ALL, 200, on(V1 + "/stats/peaks?school={}&date=2026-09-07", school), out=404
    ),
    ("GET", f"{V1}/stats/live"): Spec(ALL, 200, fixed(f"{V1}/stats/live")),
    # reports: admins, IT staff, procurement and auditors; a school filter outside the caller's scope is
    # missing
    ("GET", f"{V1}/reports"): Spec(REPORT_READERS, 200, fixed(f"{V1}/reports")),
    ("GET", f"{V1}/reports/{{name}}"): Spec(
        REPORT_READERS, 200, on(V1 + "/reports/inventory?format=csv&school={}", school), out=404
    ),
    # room stocktake: everyone reads their schools' counts; technicians and admins count
    ("GET", f"{V1}/stocktakes"): Spec(ALL, 200, fixed(f"{V1}/stocktakes")),
    ("POST", f"{V1}/stocktakes"): Spec(
        ENROLLERS, 201, body(f"{V1}/stocktakes", lambda w, i: {"room_id": room(w, i)}), out=404
    ),
    ("GET", f"{V1}/stocktakes/{{obj_id}}"): Spec(
        ALL, 200, fresh(V1 + "/stocktakes/{}", new_stocktake), out=404
    ),
    ("POST", f"{V1}/stocktakes/{{obj_id}}/scans"): Spec(
        ENROLLERS,
        200,
        fresh(V1 + "/stocktakes/{}/scans", new_stocktake, json={"code": "AT-a-1"}),
        out=404,
    ),
    ("POST", f"{V1}/stocktakes/{{obj_id}}/devices/{{device_id}}/resolve"): Spec(
        ENROLLERS, 200, stocktake_loss(V1 + "/stocktakes/{}/devices/{}/resolve"), out=404
    ),
    ("POST", f"{V1}/stocktakes/{{obj_id}}/finish"): Spec(
        ENROLLERS, 200, fresh(V1 + "/stocktakes/{}/finish", new_stocktake), out=404
    ),
}


INSPECTORS = frozenset({A, U})
# A route whose rules depend on a path value gets extra rows here: the same route with another value.
VARIANTS: dict[tuple[str, str, str], Spec] = {
    # the security inspection: administrators and auditors only, within their schools
    ("GET", f"{V1}/reports/{{name}}", "inspection"): Spec(
        INSPECTORS, 200, on(V1 + "/reports/inspection?format=csv&school={}", school), out=404
    ),
    # labels listed by serial: another school's device reads as an unknown serial (422), never as "not yours"
    ("POST", f"{V1}/labels", "serials"): Spec(
        ENROLLERS,
        200,
        body(
            f"{V1}/labels",
            lambda w, inside: {"serials": [f"SN-{'a' if inside else 'b'}-1"], "layout": "roll50x30"},
        ),
        out=422,
    ),
}
CASES: dict[tuple[str, str, str], Spec] = {**{(m, p, ""): s for (m, p), s in MATRIX.items()}, **VARIANTS}


def app_routes(api: Api) -> set[tuple[str, str]]:
    schema = api.client._transport.app.openapi()
    return {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}


async def test_every_route_is_in_the_matrix(api: Api) -> None:
    routes = app_routes(api)
    missing = sorted(routes - MATRIX.keys())
    stale = sorted(MATRIX.keys() - routes)
    assert not missing, f"routes without a scope-matrix entry: {missing}"
    assert not stale, f"matrix entries for routes that no longer exist: {stale}"
    assert {(m, p) for m, p, _v in VARIANTS} <= routes, "variants of routes that no longer exist"


def expected(spec: Spec, role: Role | None, inside: bool) -> int:
    if spec.public:
        return spec.ok
    if role is None:
        return 401
    if role not in spec.roles:
        return 403
    if role is Role.ADMIN or inside:
        return spec.ok
    return spec.out if spec.out is not None else spec.ok


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]} {r[2]}".rstrip())
async def test_scope_matrix(api: Api, route: tuple[str, str, str]) -> None:
    spec = CASES[route]
    w = await build_world(api)
    failures = []
    for role, inside in itertools.product([None, *Role], [True, False]):
        path, kwargs = await spec.build(api, w, inside)
        headers = {} if role is None else await api.as_(role, None if role is Role.ADMIN else (w.school_a,))
        r = await api.client.request(route[0], path, headers=headers, **kwargs)
        want = expected(spec, role, inside)
        if r.status_code != want:
            failures.append(
                f"{role or 'anonymous'} {'inside' if inside else 'outside'}: {r.status_code} != {want} "
                f"({r.text[:160]})"
            )
        assert r.status_code != 500
    assert not failures, "\n".join(failures)


async def test_bad_token_is_401_everywhere(api: Api) -> None:
    await build_world(api)
    for (method, path), entry in MATRIX.items():
        if entry.public:
            continue
        concrete = path.replace("{obj_id}", "1").replace("{sha256}", "0" * 64)
        for auth in ("Bearer lf_00000000_nope", "Bearer garbage", "Basic Zm9vOmJhcg=="):
            r = await api.client.request(method, concrete, headers={"Authorization": auth})
            assert r.status_code == 401, (method, path, auth, r.status_code)


async def test_lists_hide_other_schools(api: Api) -> None:
    w = await build_world(api)
    for role in Role:
        if role is Role.ADMIN:
            continue
        headers = await api.as_(role, (w.school_a,))
        for path, key in (
            (f"{V1}/schools", "id"),
            (f"{V1}/rooms", "school_id"),
            (f"{V1}/devices", "school_id"),
            (f"{V1}/bell-periods", "school_id"),
            (f"{V1}/calendar-entries", "school_id"),
        ):
            r = await api.client.get(path, headers=headers)
            body = r.json()
            assert {item[key] for item in body["items"]} == {w.school_a}, (role, path)
            assert body["total"] == len(body["items"])
        csv = (await api.client.get(f"{V1}/exports/devices", headers=headers)).text
        assert "school-a" in csv and "school-b" not in csv
