"""Every console route, as every role, inside and outside its schools: the status is pinned here, as
tests/api/test_scope_matrix.py pins the API's. A console user is the same Principal a token is, so the answers
match the API's: 403 for a role that may not, 404 for another school's object, and a signed-out browser is
sent to sign-in (303). A new console route that is not in CONSOLE fails
test_every_console_route_is_in_the_matrix.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fleet.console.app import ConsoleRoute
from fleet.domain.enums import Role
from fleet.persistence.models_rollouts import Rollout, RolloutDevice, RolloutGroup
from tests.api.test_scope_matrix import (
    ALL,
    COMMANDERS,
    ENROLLERS,
    INSPECTORS,
    REPORT_READERS,
    A,
    Build,
    I,
    T,
    U,
    _import_artifacts,
    device,
    fixed,
    free_slot,
    fresh,
    n,
    new_alert,
    new_calendar,
    new_claim_token,
    new_device,
    new_period,
    new_stocktake,
    on,
    on_batch,
    on_enrolled,
    room,
    school,
)
from tests.conftest import Api
from tests.console.helpers import PASSWORD, add_user
from tests.factories import World, build_world

ADMINS = frozenset({A})
AUDIT_READERS = frozenset({A, U})
ROLLOUT_CONTROLLERS = frozenset({A, I})
TIMETABLE_WRITERS = frozenset({A, T, I})
# Sign-in, sign-out, setup and the language switch work without a session (tests/console/test_auth.py).
PUBLIC = {
    ("GET", "/signin"),
    ("POST", "/signin"),
    ("POST", "/signout"),
    ("GET", "/setup"),
    ("POST", "/setup"),
    ("POST", "/language"),
}


@dataclass(frozen=True)
class Spec:
    roles: frozenset[Role]
    ok: int
    build: Build
    out: int | None = None
    stream: bool = False  # an endless response: only the refusals are checked


def csv_row(w: World, inside: bool) -> bytes:
    i = n()
    code = "school-a" if inside else "school-b"
    return (
        f"serial_number,asset_tag,vendor,model_number,school_code\nCS-{i},CS-{i},EduTech,LT-100,{code}\n"
    ).encode()


def upload(path: str) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return path, {"files": {"file": ("delivery.csv", csv_row(w, inside), "text/csv")}}

    return build


def commit_build(path: str) -> Build:
    import base64

    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        content = base64.b64encode(csv_row(w, inside)).decode()
        return path, {"data": {"content": content, "filename": "delivery.csv"}}

    return build


async def label_form(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
    return "/labels", {"data": {"room": str(room(w, inside)), "layout": "roll50x30", "content": "tag"}}


def period_form(build: Build) -> Build:
    """A bell period's form fields, in a slot of its own (periods of one schedule may not overlap)."""

    async def wrapped(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        path, kw = await build(api, w, inside)
        start, end = free_slot()
        data = {"weekday": "2", "name": f"P{n()}", "start_time": start, "end_time": end}
        return path, {**kw, "data": data}

    return wrapped


def with_data(build: Build, **data: str) -> Build:
    async def wrapped(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        path, kw = await build(api, w, inside)
        return path, {**kw, "data": {**kw.get("data", {}), **data}}

    return wrapped


async def new_rollout(api: Api, w: World, inside: bool) -> int:
    now = api.clock.now()
    async with api.sessions() as s:
        r = Rollout(
            name=f"R{n()}",
            model_id=w.model,
            profile_key="terminal-lt100",
            target_version="1.3.0",
            artifact_sha256="0" * 64,
            school_ids=[school(w, inside)],
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
        )
        s.add(r)
        await s.commit()
        return int(r.id)


def rollout_form(path: str) -> Build:
    """The new-rollout form for one school (a draft, so repeated creates never clash over the model)."""

    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        await _import_artifacts(api)
        data = {
            "name": f"R{n()}",
            "model_id": str(w.model),
            "target_version": "1.2.0",
            "school_ids": [str(school(w, inside))],
            "canary_size": "1",
            "strategy": "per_school",
            "percents": "100",
            "success_pct": "90",
            "error_pct": "20",
            "download_window": "outside_lessons",
            "install_window": "outside_lessons",
        }
        return path, {"data": data}

    return build


async def rollout_with_device(api: Api, w: World, inside: bool) -> tuple[int, int]:
    rid = await new_rollout(api, w, inside)
    async with api.sessions() as s:
        g = RolloutGroup(rollout_id=rid, position=0, name="canary", kind="canary", state="running")
        s.add(g)
        await s.flush()
        now = api.clock.now()
        s.add(
            RolloutDevice(
                rollout_id=rid,
                group_id=g.id,
                device_id=device(w, inside),
                school_id=school(w, inside),
                state="pending",
                to_version="1.3.0",
                attempts=0,
                bytes_done=0,
                created_at=now,
                updated_at=now,
            )
        )
        await s.commit()
    return rid, device(w, inside)


def rollout_device_page() -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        rid, dev = await rollout_with_device(api, w, inside)
        return f"/rollouts/{rid}/devices/{dev}", {}

    return build


async def new_user(api: Api, w: World, inside: bool) -> int:
    return await add_user(api.sessions, api.clock, f"spare{n()}", Role.AUDITOR, (school(w, inside),))


async def new_token(api: Api, w: World, inside: bool) -> int:
    from fleet.domain.permissions import SYSTEM
    from fleet.persistence.db import unit_of_work
    from fleet.services.tokens import create_token

    async with unit_of_work(api.sessions) as session:
        row, _ = await create_token(
            session,
            principal=SYSTEM,
            at=api.clock.now(),
            name=f"t{n()}",
            role=Role.AUDITOR,
            school_ids=[school(w, inside)],
            district_wide=False,
        )
        return int(row.id)


def stocktake_start(path: str) -> Build:
    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        return path, {"data": {"room": str(room(w, inside)), "window": "today"}}

    return build


def stocktake_loss_form(fmt: str) -> Build:
    """A fresh device in the room and a fresh count that misses it, to mark lost with a reason."""

    async def build(api: Api, w: World, inside: bool) -> tuple[str, dict[str, Any]]:
        dev = await new_device(api, w, inside)
        r = await api.client.patch(
            f"/api/v1/devices/{dev}", json={"room_id": room(w, inside)}, headers=await api.admin()
        )
        assert r.status_code == 200, r.text
        st = await new_stocktake(api, w, inside)
        return fmt.format(st, dev), {"data": {"reason": "not in the room"}}

    return build


CONSOLE: dict[tuple[str, str], Spec] = {
    ("GET", "/"): Spec(ALL, 200, fixed("/")),
    ("GET", "/cockpit/stream"): Spec(ALL, 200, on("/cockpit/stream?school={}", school), out=404, stream=True),
    ("GET", "/cockpit/schools/{school_id}"): Spec(ALL, 200, on("/cockpit/schools/{}", school), out=404),
    ("GET", "/cockpit/rooms/{room_id}"): Spec(ALL, 200, on("/cockpit/rooms/{}", room), out=404),
    ("GET", "/devices"): Spec(ALL, 200, fixed("/devices?q=SN&online=no")),
    ("GET", "/devices/{device_id}"): Spec(ALL, 200, on("/devices/{}", device), out=404),
    ("POST", "/devices/{device_id}/transition"): Spec(
        ENROLLERS, 303, with_data(fresh("/devices/{}/transition", new_device), target="provisioned"), out=404
    ),
    ("POST", "/devices/{device_id}/commands"): Spec(
        COMMANDERS, 303, with_data(on_enrolled("/devices/{}/commands"), name="reboot"), out=404
    ),
    ("GET", "/commands/{batch_id}"): Spec(ALL, 200, on_batch("/commands/{}"), out=404),
    ("GET", "/deliveries"): Spec(ENROLLERS, 200, fixed("/deliveries")),
    # another school's rows are refused as rows (the school is unknown to the caller): nothing is written
    ("POST", "/deliveries/preview"): Spec(ENROLLERS, 200, upload("/deliveries/preview"), out=422),
    ("POST", "/deliveries/commit"): Spec(ENROLLERS, 200, commit_build("/deliveries/commit"), out=409),
    ("GET", "/deliveries/export.{fmt}"): Spec(ALL, 200, fixed("/deliveries/export.csv")),
    # room stocktake: technicians and admins count; everyone reads a count of their schools
    ("GET", "/stocktake"): Spec(ENROLLERS, 200, fixed("/stocktake")),
    ("POST", "/stocktake"): Spec(ENROLLERS, 303, stocktake_start("/stocktake"), out=404),
    ("GET", "/stocktake/{stocktake_id}"): Spec(ALL, 200, fresh("/stocktake/{}", new_stocktake), out=404),
    ("POST", "/stocktake/{stocktake_id}/scan"): Spec(
        ENROLLERS, 200, with_data(fresh("/stocktake/{}/scan", new_stocktake), code="AT-a-1"), out=404
    ),
    ("POST", "/stocktake/{stocktake_id}/devices/{device_id}/{action}"): Spec(
        ENROLLERS, 200, stocktake_loss_form("/stocktake/{}/devices/{}/mark-lost"), out=404
    ),
    ("POST", "/stocktake/{stocktake_id}/finish"): Spec(
        ENROLLERS, 303, fresh("/stocktake/{}/finish", new_stocktake), out=404
    ),
    # asset labels: the form over a room of one's own schools, and the PDF it prints
    ("GET", "/labels"): Spec(ENROLLERS, 200, on("/labels?room={}", room), out=404),
    ("POST", "/labels"): Spec(ENROLLERS, 200, label_form, out=404),
    ("GET", "/provisioning"): Spec(ENROLLERS, 200, on("/provisioning?school={}", school), out=404),
    ("POST", "/provisioning/{school_id}/claim-tokens"): Spec(
        ENROLLERS,
        200,
        with_data(on("/provisioning/{}/claim-tokens", school), max_uses="5", days="3"),
        out=404,
    ),
    ("POST", "/provisioning/claim-tokens/{token_id}/revoke"): Spec(
        ENROLLERS, 303, fresh("/provisioning/claim-tokens/{}/revoke", new_claim_token), out=404
    ),
    ("GET", "/alerts"): Spec(ALL, 200, fixed("/alerts?status=active")),
    ("POST", "/alerts/{alert_id}/{action}"): Spec(
        COMMANDERS, 303, fresh("/alerts/{}/ack", new_alert), out=404
    ),
    ("GET", "/rollouts"): Spec(ALL, 200, fixed("/rollouts")),
    ("GET", "/rollouts/new"): Spec(ROLLOUT_CONTROLLERS, 200, fixed("/rollouts/new")),
    # another school's targets are refused beside the field (the school is unknown to the caller)
    ("POST", "/rollouts/preview"): Spec(ROLLOUT_CONTROLLERS, 200, rollout_form("/rollouts/preview"), out=422),
    ("POST", "/rollouts/new"): Spec(ROLLOUT_CONTROLLERS, 303, rollout_form("/rollouts/new"), out=422),
    ("GET", "/rollouts/{rollout_id}/devices/{device_id}"): Spec(ALL, 200, rollout_device_page(), out=404),
    ("GET", "/rollouts/{rollout_id}"): Spec(ALL, 200, fresh("/rollouts/{}", new_rollout), out=404),
    ("GET", "/rollouts/{rollout_id}/progress"): Spec(
        ALL, 200, fresh("/rollouts/{}/progress", new_rollout), out=404
    ),
    ("POST", "/rollouts/{rollout_id}/{action}"): Spec(
        ROLLOUT_CONTROLLERS, 303, fresh("/rollouts/{}/pause", new_rollout), out=404
    ),
    ("GET", "/reports"): Spec(REPORT_READERS, 200, fixed("/reports?name=inventory")),
    ("GET", "/reports/{name}/file"): Spec(
        REPORT_READERS, 200, on("/reports/inventory/file?format=csv&school={}", school), out=404
    ),
    ("GET", "/admin"): Spec(ADMINS, 200, fixed("/admin")),
    ("POST", "/admin/users"): Spec(
        ADMINS,
        303,
        with_data(fixed("/admin/users"), username="newbie", password=PASSWORD, role="auditor", school=""),
    ),
    ("POST", "/admin/users/{user_id}/{action}"): Spec(
        ADMINS, 303, fresh("/admin/users/{}/disable", new_user)
    ),
    ("POST", "/admin/tokens/{token_id}/revoke"): Spec(
        ADMINS, 303, fresh("/admin/tokens/{}/revoke", new_token)
    ),
    ("POST", "/admin/tokens"): Spec(
        ADMINS, 200, with_data(fixed("/admin/tokens"), name="ci", role="auditor", school="", days="30")
    ),
    ("GET", "/admin/audit"): Spec(AUDIT_READERS, 200, fixed("/admin/audit")),
    # timetables: everyone reads their schools' timetables; room managers edit them; admins set time zones
    ("GET", "/admin/timetables"): Spec(ALL, 200, on("/admin/timetables?school={}", school), out=404),
    ("POST", "/admin/timetables/{school_id}/periods"): Spec(
        TIMETABLE_WRITERS, 303, period_form(on("/admin/timetables/{}/periods", school)), out=404
    ),
    ("POST", "/admin/timetables/periods/{period_id}"): Spec(
        TIMETABLE_WRITERS, 303, period_form(fresh("/admin/timetables/periods/{}", new_period)), out=404
    ),
    ("POST", "/admin/timetables/periods/{period_id}/delete"): Spec(
        TIMETABLE_WRITERS, 303, fresh("/admin/timetables/periods/{}/delete", new_period), out=404
    ),
    ("POST", "/admin/timetables/{school_id}/calendar"): Spec(
        TIMETABLE_WRITERS,
        303,
        with_data(
            on("/admin/timetables/{}/calendar", school),
            kind="holiday",
            name="Day off",
            start_date="2026-10-01",
            end_date="2026-10-07",
        ),
        out=404,
    ),
    ("POST", "/admin/timetables/calendar/{entry_id}"): Spec(
        TIMETABLE_WRITERS,
        303,
        with_data(
            fresh("/admin/timetables/calendar/{}", new_calendar),
            kind="exam_day",
            name="Exams",
            start_date="2026-06-20",
            end_date="2026-06-21",
        ),
        out=404,
    ),
    ("POST", "/admin/timetables/calendar/{entry_id}/delete"): Spec(
        TIMETABLE_WRITERS, 303, fresh("/admin/timetables/calendar/{}/delete", new_calendar), out=404
    ),
    ("POST", "/admin/timetables/{school_id}/timezone"): Spec(
        ADMINS, 303, with_data(on("/admin/timetables/{}/timezone", school), timezone="Asia/Shanghai")
    ),
    # update policies: everyone reads their schools' policies; rollout managers edit them
    ("GET", "/admin/update-policies"): Spec(
        ALL, 200, on("/admin/update-policies?school={}", school), out=404
    ),
    ("POST", "/admin/update-policies/{school_id}"): Spec(
        ROLLOUT_CONTROLLERS,
        303,
        with_data(
            on("/admin/update-policies/{}", school),
            **{"w0-weekday": "5", "w0-start": "09:00", "w0-end": "17:00", "max_concurrent_downloads": "20"},
        ),
        out=404,
    ),
}


# A route whose rules depend on a path value gets extra rows: the same route with another value.
VARIANTS: dict[tuple[str, str, str], Spec] = {
    ("GET", "/reports/{name}/file", "inspection"): Spec(
        INSPECTORS, 200, on("/reports/inspection/file?format=csv&school={}", school), out=404
    ),
    # the label form for a whole school: another school's is not found
    ("GET", "/labels", "school"): Spec(ENROLLERS, 200, on("/labels?school={}", school), out=404),
}
CASES: dict[tuple[str, str, str], Spec] = {**{(m, p, ""): s for (m, p), s in CONSOLE.items()}, **VARIANTS}


def console_routes() -> set[tuple[str, str]]:
    """Every route of every console feature module (fleet/console/<feature>.py with a `router`)."""
    import importlib
    import pkgutil

    import fleet.console

    found = set()
    for info in pkgutil.iter_modules(fleet.console.__path__):
        router = getattr(importlib.import_module(f"fleet.console.{info.name}"), "router", None)
        for route in getattr(router, "routes", []):
            assert isinstance(route, ConsoleRoute), route  # errors become console pages
            found.update((m, route.path) for m in route.methods if m != "HEAD")
    return found


async def test_every_console_route_is_in_the_matrix(api: Api) -> None:
    routes = console_routes() - PUBLIC
    assert not sorted(routes - CONSOLE.keys()), "console routes without a matrix entry"
    assert not sorted(CONSOLE.keys() - routes), "matrix entries for console routes that no longer exist"
    assert {(m, p) for m, p, _v in VARIANTS} <= routes, "variants of routes that no longer exist"


@pytest.fixture
async def browsers(api: Api) -> AsyncIterator[tuple[World, dict[Role | None, httpx.AsyncClient]]]:
    """The world, and a signed-in cookie client per role (school A for all but the admin), plus anonymous."""
    w = await build_world(api)
    transport = api.client._transport  # type: ignore[attr-defined]
    clients: dict[Role | None, httpx.AsyncClient] = {}
    try:
        for role in [None, *Role]:
            c = httpx.AsyncClient(transport=transport, base_url="http://test")
            clients[role] = c
            if role is None:
                await c.get(
                    "/signin"
                )  # the pre-session cookie, so its posts pass CSRF and meet the sign-in wall
                continue
            name = f"u-{role}"
            await add_user(api.sessions, api.clock, name, role, None if role is Role.ADMIN else (w.school_a,))
            form = await c.get("/signin")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            r = await c.post(
                "/signin", data={"csrf": csrf, "username": name, "password": PASSWORD, "next": "/"}
            )
            assert r.status_code == 303, (role, r.text[:200])
        yield w, clients
    finally:
        for c in clients.values():
            await c.aclose()


async def _csrf(c: httpx.AsyncClient) -> str:
    page = await c.get("/signin" if "lf_session" not in c.cookies else "/rollouts")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    return m.group(1) if m else ""


def expected(spec: Spec, role: Role | None, inside: bool) -> int:
    if role is None:
        return 303
    if role not in spec.roles:
        return 403
    if role is Role.ADMIN or inside:
        return spec.ok
    return spec.out if spec.out is not None else spec.ok


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]} {r[2]}".rstrip())
async def test_console_scope_matrix(api: Api, browsers: Any, route: tuple[str, str, str]) -> None:
    w, clients = browsers
    spec = CASES[route]
    failures = []
    for role, inside in itertools.product([None, *Role], [True, False]):
        want = expected(spec, role, inside)
        if spec.stream and want == spec.ok:
            continue
        path, kwargs = await spec.build(api, w, inside)
        c = clients[role]
        if route[0] == "POST":
            kwargs = {**kwargs, "headers": {"X-CSRF-Token": await _csrf(c)}}
            if "data" in kwargs and "username" in kwargs["data"]:
                kwargs["data"] = {**kwargs["data"], "username": f"newbie{n()}"}
        r = await c.request(route[0], path, **kwargs)
        if r.status_code != want:
            failures.append(
                f"{role or 'anonymous'} {'inside' if inside else 'outside'}: {r.status_code} != {want}"
            )
        assert r.status_code != 500, r.text[:300]
        if r.status_code in (403, 404):
            assert "error-code" in r.text  # the console's error page, never JSON
    assert not failures, "\n".join(failures)
