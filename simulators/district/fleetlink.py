"""How the simulator talks to the fleet service: provisioning and enrollment over the HTTP API, read-back.

The simulator imports nothing from `fleet`: it speaks the public API (`/api/v1`) and the MQTT protocol
(docs/protocol-mqtt.md), as a vendor's terminal or a load-testing team would. Read-back of sequence accounting
and alerts goes through the `ReadBack` protocol, so it can come from the API or, where the API does not offer
it yet, from an adapter the `labfleet simulate` command supplies.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from simulators.district.spec import District

logger = logging.getLogger(__name__)

# Page size for listing what exists; the API caps pages at 500.
PAGE = 500
# Enrollment requests in flight at once, across all schools. Each request commits in a few milliseconds and
# then waits for the broker's coalesced credential reload (at most one a second; a cycle measured ~1.7 s with
# 10,000 devices), so throughput is about this many per cycle: 48 gave 28/s on rollout-2027. A SQLite-backed
# service still writes one at a time, so far more would only queue on its write lock. Failures (5xx) are
# retried below, as a terminal would.
ENROLL_CONCURRENCY = 128
# A terminal retries a failed enrollment (5xx, connection error) like any HTTP client: a few times, backing
# off.
ENROLL_RETRIES = 3
ENROLL_RETRY_S = 0.5
# One API call must not hang a run; provisioning a 10,000-device CSV import takes a few seconds.
HTTP_TIMEOUT_S = 120.0


class FleetLinkError(RuntimeError):
    """The service refused or failed a provisioning step; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Credentials:
    identity: str
    password: str
    school_code: str
    device_id: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the service holds for one device: the basis of sequence accounting and presence checks."""

    identity: str
    last_seq: int
    messages: int  # messages the service accepted (telemetry, heartbeat, event), each seq once
    duplicates: int  # redeliveries it recognised and absorbed
    online: bool
    online_changed_at: float | None  # epoch seconds on the service's clock
    battery: int | None = None
    firmware: str | None = None
    health: str | None = None
    bytes_down: int = 0


@dataclass(frozen=True, slots=True)
class AlertRow:
    identity: str
    school_code: str
    room: str | None
    rule: str
    status: str


@dataclass
class Provisioned:
    school_ids: dict[str, int] = field(default_factory=dict)
    device_ids: dict[str, int] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)


class Enroller(Protocol):
    async def enroll(self, school_code: str, serials: list[str]) -> dict[str, Credentials | str]:
        """serial -> credentials, or the refusal reason."""
        ...


class ReadBack(Protocol):
    async def device_states(self, identities: list[str]) -> dict[str, DeviceState]: ...

    async def dead_letters(self) -> dict[str, int]: ...

    async def messages_total(self) -> int:
        """Messages the service has accepted from every device together (the report's ingest rate and
        backlog)."""
        ...

    async def alerts(self, since: float | None = None) -> list[AlertRow]:
        """Alerts opened at or after `since` (epoch seconds on the service's clock), any status."""
        ...


class FleetApi:
    """The inventory API (`/api/v1`), with a bearer token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.http = client

    @classmethod
    def connect(
        cls, base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> FleetApi:
        return cls(
            httpx.AsyncClient(
                base_url=base_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=HTTP_TIMEOUT_S,
                transport=transport,
            )
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = r.text[:300]
            raise FleetLinkError(f"{method} {path} -> {r.status_code}: {body}")
        return r.json() if r.content else None

    async def list_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = {**params, "limit": PAGE, **({"cursor": cursor} if cursor else {})}
            page = await self._call("GET", path, params=q)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    # ---------------------------------------------------------------- provisioning (idempotent)
    async def provision(
        self, district: District, progress: Callable[[str], None] = lambda _m: None
    ) -> Provisioned:
        """Create what the spec lists and the service lacks; reuse what exists (matched by name, code,
        serial)."""
        out = Provisioned()
        districts = {d["name"]: d for d in await self.list_all("/api/v1/districts")}
        d = districts.get(district.name) or await self._call(
            "POST", "/api/v1/districts", json={"name": district.name}
        )
        out.created["districts"] = 0 if district.name in districts else 1
        existing_schools = {s["code"]: s for s in await self.list_all("/api/v1/schools")}
        n = 0
        for s in district.schools:
            row = existing_schools.get(s.code)
            if row is None:
                row = await self._call(
                    "POST",
                    "/api/v1/schools",
                    json={
                        "district_id": d["id"],
                        "code": s.code,
                        "name": s.name,
                        "uplink_mbps": s.uplink_mbps,
                        "timezone": s.timezone,
                    },
                )
                n += 1
            elif row["district_id"] != d["id"]:
                raise FleetLinkError(f"school {s.code} exists in another district")
            out.school_ids[s.code] = row["id"]
        out.created["schools"] = n
        progress(f"schools: {len(out.school_ids)} ({n} new)")

        models = {(m["vendor"], m["model_number"]): m for m in await self.list_all("/api/v1/device-models")}
        n = 0
        for m in district.models.values():
            if (m.vendor, m.model_number) not in models:
                models[(m.vendor, m.model_number)] = await self._call(
                    "POST",
                    "/api/v1/device-models",
                    json={
                        "vendor": m.vendor,
                        "model_number": m.model_number,
                        "kind": m.kind,
                        "transport": m.transport,
                        "unit_price": f"{m.unit_price:.2f}",
                        "warranty_months": m.warranty_months,
                        "supplier": m.supplier,
                        "profile_key": m.profile_key,
                    },
                )
                n += 1
        out.created["device_models"] = n

        rooms_have = {(r["school_id"], r["name"]) for r in await self.list_all("/api/v1/rooms")}
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["school_code", "name", "kind", "tier", "capacity"])
        n = 0
        for s in district.schools:
            for r in s.rooms:
                if (out.school_ids[s.code], r.name) not in rooms_have:
                    w.writerow([s.code, r.name, r.kind, r.tier or "", len(r.devices)])
                    n += 1
        if n:
            await self._call(
                "POST", "/api/v1/imports/rooms", files={"file": ("rooms.csv", buf.getvalue(), "text/csv")}
            )
        out.created["rooms"] = n
        progress(f"rooms: {n} new")

        periods_have = {
            (p["school_id"], p["weekday"], p["name"]) for p in await self.list_all("/api/v1/bell-periods")
        }
        n = 0
        for s in district.schools:
            tt = district.timetables[s.timetable]
            sid = out.school_ids[s.code]
            for wd in tt.weekdays:
                for p in tt.periods:
                    if (sid, wd, p.name) in periods_have:
                        continue
                    await self._call(
                        "POST",
                        "/api/v1/bell-periods",
                        json={
                            "school_id": sid,
                            "weekday": wd,
                            "name": p.name,
                            "start_time": p.start.isoformat(),
                            "end_time": p.end.isoformat(),
                        },
                    )
                    n += 1
        out.created["bell_periods"] = n
        progress(f"bell periods: {n} new")

        devices_have = {dv["serial_number"]: dv for dv in await self.list_all("/api/v1/devices")}
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["serial_number", "asset_tag", "vendor", "model_number", "school_code", "room", "status"])
        n = 0
        for s, r, dev in district.devices():
            if dev.serial in devices_have:
                continue
            m = district.models[dev.model]
            w.writerow([dev.serial, dev.asset_tag, m.vendor, m.model_number, s.code, r.name, "in_service"])
            n += 1
        if n:
            await self._call(
                "POST", "/api/v1/imports/devices", files={"file": ("devices.csv", buf.getvalue(), "text/csv")}
            )
            devices_have = {dv["serial_number"]: dv for dv in await self.list_all("/api/v1/devices")}
        out.created["devices"] = n
        out.device_ids = {serial: dv["id"] for serial, dv in devices_have.items()}
        progress(f"devices: {len(district.devices())} ({n} new)")
        return out

    async def add_exam_day(self, school_id: int, day: str) -> None:
        have = await self.list_all("/api/v1/calendar-entries", school=school_id, kind="exam_day")
        if any(e.get("start_date") == day or e.get("date") == day for e in have):
            return
        await self._call(
            "POST",
            "/api/v1/calendar-entries",
            json={
                "school_id": school_id,
                "kind": "exam_day",
                "start_date": day,
                "end_date": day,
                "name": "Simulated exam day",
            },
        )

    async def command(self, kind: str, target_id: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """A command to a device, room or school through the commands API; returns the batch."""
        batch: dict[str, Any] = await self._call(
            "POST",
            "/api/v1/commands",
            json={
                "target": {"kind": kind, "id": target_id},
                "name": name,
                "args": args,
                "ttl_seconds": 3600,
                "timeout_seconds": 600,
            },
        )
        return batch

    async def room_lesson(self, room_id: int, at_iso: str) -> dict[str, Any]:
        lesson: dict[str, Any] = await self._call(
            "GET", f"/api/v1/rooms/{room_id}/lesson", params={"at": at_iso}
        )
        return lesson

    async def has_route(self, path: str) -> bool:
        """Whether the service offers a POST route (a 404/405 for an empty body means it does not)."""
        r = await self.http.post(path, json={})
        return r.status_code not in (404, 405)


class HttpEnroller:
    """Protocol section 3: a claim token per school (technician's step), then POST /api/v1/enroll per
    terminal."""

    def __init__(
        self,
        api: FleetApi,
        school_ids: dict[str, int],
        *,
        token_uses: int = 5000,
        concurrency: int = ENROLL_CONCURRENCY,
    ) -> None:
        self.api = api
        self.school_ids = school_ids
        self.token_uses = token_uses
        self.retries = 0  # enrollment attempts retried after a 5xx or a connection error
        self._sem = asyncio.Semaphore(concurrency)  # shared by every school enrolling at once

    async def enroll(self, school_code: str, serials: list[str]) -> dict[str, Credentials | str]:
        token = await self.claim_token(self.school_ids[school_code], len(serials))
        return await self.enroll_with(token, serials)

    async def claim_token(self, school_id: int, uses: int) -> str:
        body = await self.api._call(
            "POST",
            f"/api/v1/schools/{school_id}/claim-tokens",
            json={
                "max_uses": max(1, min(uses, self.token_uses)),
                "ttl_seconds": 3600,
                "label": "labfleet simulate",
            },
        )
        return str(body.get("token") or body.get("claim_token"))

    async def enroll_with(
        self, token: str, serials: list[str], vendor: str | None = None
    ) -> dict[str, Credentials | str]:
        sem = self._sem
        out: dict[str, Credentials | str] = {}

        async def one(serial: str) -> None:
            async with sem:
                for attempt in range(ENROLL_RETRIES + 1):
                    try:
                        r = await self.api.http.post(
                            "/api/v1/enroll", json={"claim_token": token, "serial_number": serial}
                        )
                    except httpx.HTTPError as err:
                        out[serial] = f"http:{type(err).__name__}"
                        self.retries += 1
                        await asyncio.sleep(ENROLL_RETRY_S * 2**attempt)
                        continue
                    if r.status_code >= 500 and attempt < ENROLL_RETRIES:
                        self.retries += 1
                        await asyncio.sleep(ENROLL_RETRY_S * 2**attempt)
                        continue
                    break
                else:
                    return
                if r.status_code == 201:
                    b = r.json()
                    out[serial] = Credentials(b["username"], b["password"], b["school"], b.get("device_id"))
                else:
                    try:
                        out[serial] = str(r.json()["error"]["code"])
                    except (ValueError, KeyError, TypeError):
                        out[serial] = f"http_{r.status_code}"

        await asyncio.gather(*(one(s) for s in serials))
        return out


Enroll = Callable[[str, list[str]], Awaitable[dict[str, Credentials | str]]]
