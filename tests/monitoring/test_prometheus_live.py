"""A real Prometheus scrapes the real service while simulated terminals in two schools send traffic over MQTT.

The service is what `labfleet serve` runs: `create_app` with the default runtime hooks (embedded broker,
ingest, presence, snapshot), served by uvicorn on loopback, on an injected clock. Terminals enroll over HTTP
with a claim token, connect to the broker with their own credentials (protocol v1: persistent session, Last
Will, retained status) and publish telemetry carrying byte counts at a fixed rate. Nothing in the service is
fed by hand: every figure Prometheus sees went through MQTT, ingest, the database and the scrape-time
collector.

Waits poll Prometheus' HTTP API up to generous deadlines (a loaded CI box is slow); there are no sleeps for
timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import httpx
import pytest

from fleet.app import create_app
from fleet.domain import wire
from fleet.domain.clock import FakeClock
from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM
from fleet.persistence.db import unit_of_work, upgrade_sync
from fleet.runtime.brokers import free_port
from fleet.runtime_hooks import default_hooks
from fleet.services.tokens import create_token
from fleet.settings import Settings
from tests.conftest import TEST_ARTIFACT_DIR, Api, off_loop
from tests.factories import post
from tests.monitoring.prometheus_server import PrometheusServer, Sample, prometheus_binary, run_prometheus
from tests.monitoring.promql_names import RULE_FILES

pytestmark = [pytest.mark.external, pytest.mark.slow]

TZ = ZoneInfo("Europe/Berlin")
MONDAY_P1 = datetime(2026, 9, 7, 8, 10, tzinfo=TZ).astimezone(UTC)  # Monday of term, 10 minutes into P1
BREAK = datetime(2026, 9, 7, 8, 50, tzinfo=TZ).astimezone(UTC)  # between P1 and P2
MONDAY_P2 = datetime(2026, 9, 7, 9, 0, tzinfo=TZ).astimezone(UTC)
# Terminals per school and room, and how many of them the simulation connects (the rest stay offline).
ROOMS = {
    "s001": [("C1", "smart_classroom", 8, 6), ("Lab", "ai_lab", 4, 4)],
    "s002": [("C1", "smart_classroom", 8, 7)],
}
# Bytes per second the connected terminals of each school send up (down is a quarter of it).
UP_RATE = {"s001": 40_000.0, "s002": 14_000.0}
# 0.2 s between telemetry messages per terminal: ~85 msg/s in all, well within the embedded broker's ceiling.
TICK_S = 0.2
# Rate window: 10 scrapes at 1 s, long enough that ingest batching and scrape jitter average out.
RATE_WINDOW = "10s"
WINDOW_SAMPLES = 10
# Deadlines for conditions polled through Prometheus' HTTP API: generous for a loaded 2-core box.
DEADLINE_S = 90.0


@dataclass
class Terminal:
    school: str
    serial: str
    username: str = ""
    password: str = ""
    connect: bool = True


@dataclass
class Swarm:
    """The simulated terminals: aiomqtt clients on their own thread and event loop, like separate devices."""

    port: int
    terminals: list[Terminal]
    sent_up: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    _halt: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="terminal-swarm", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout) or self.error is not None:
            raise AssertionError(f"terminals did not connect: {self.error!r}")

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 - reported to the test through wait_ready and the assertions
            self.error = err
            self._ready.set()

    async def _main(self) -> None:
        topics = wire.Topics("labfleet")
        live = [t for t in self.terminals if t.connect]
        per_device = {
            t.serial: UP_RATE[t.school] / sum(1 for x in live if x.school == t.school) for t in live
        }
        self.sent_up = dict.fromkeys(UP_RATE, 0)
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for t in live:
                will = aiomqtt.Will(
                    topics.topic(t.school, t.username, wire.Channel.STATUS),
                    json.dumps({"v": 1, "state": "offline", "reason": "lwt"}),
                    qos=1,
                    retain=True,
                )
                c = aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=t.username,
                    username=t.username,
                    password=t.password,
                    clean_session=False,
                    will=will,
                    keepalive=60,
                )
                clients[t.serial] = await stack.enter_async_context(c)
                await c.publish(
                    topics.topic(t.school, t.username, wire.Channel.STATUS),
                    json.dumps({"v": 1, "state": "online"}),
                    qos=1,
                    retain=True,
                )
            self._ready.set()
            seq = dict.fromkeys(clients, 0)
            sent = dict.fromkeys(clients, 0)
            start = time.monotonic()
            while not self._halt.is_set():
                elapsed = time.monotonic() - start
                sends = []
                for t in live:
                    up = int(per_device[t.serial] * elapsed) - sent[t.serial]
                    if up <= 0:
                        continue
                    seq[t.serial] += 1
                    sent[t.serial] += up
                    self.sent_up[t.school] += up
                    body = {
                        "v": 1,
                        "seq": seq[t.serial],
                        "ts": int(time.time() * 1000),
                        "up": up,
                        "down": up // 4,
                    }
                    sends.append(
                        clients[t.serial].publish(
                            topics.topic(t.school, t.username, wire.Channel.TELEMETRY),
                            json.dumps(body),
                            qos=1,
                        )
                    )
                await asyncio.gather(*sends)
                await asyncio.sleep(TICK_S)


async def _seed(url: str, clock: FakeClock) -> tuple[str, list[Terminal], dict[str, int]]:
    """Two schools with rooms, bell periods and devices, through the API in process; returns an admin
    token."""
    app = create_app(Settings(database_url=url, mqtt={"broker": "none"}), clock=clock, migrate=False)
    terminals: list[Terminal] = []
    school_ids: dict[str, int] = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://seed"
        ) as client:
            api = Api(client=client, sessions=app.state.fleet.sessions, clock=clock)
            district = (await post(api, "/api/v1/districts", {"name": "Live"}))["id"]
            model = (
                await post(
                    api,
                    "/api/v1/device-models",
                    {
                        "vendor": "Acme",
                        "model_number": "T-10",
                        "kind": "terminal",
                        "transport": "mqtt",
                        "unit_price": "300.00",
                        "warranty_months": 24,
                        "supplier": "Acme",
                    },
                )
            )["id"]
            for code, rooms in ROOMS.items():
                sid = (
                    await post(
                        api,
                        "/api/v1/schools",
                        {
                            "district_id": district,
                            "code": code,
                            "name": code,
                            "uplink_mbps": 10,
                            "timezone": "Europe/Berlin",
                        },
                    )
                )["id"]
                school_ids[code] = sid
                for wd in range(5):
                    for name, start, end in (("P1", "08:00", "08:45"), ("P2", "08:55", "09:40")):
                        await post(
                            api,
                            "/api/v1/bell-periods",
                            {
                                "school_id": sid,
                                "weekday": wd,
                                "name": name,
                                "start_time": start,
                                "end_time": end,
                            },
                        )
                for room_name, kind, n, online in rooms:
                    room = (
                        await post(
                            api,
                            "/api/v1/rooms",
                            {
                                "school_id": sid,
                                "name": room_name,
                                "kind": kind,
                                **({"tier": "basic_experience"} if kind == "ai_lab" else {}),
                            },
                        )
                    )["id"]
                    for i in range(n):
                        serial = f"{code.upper()}-{room_name.upper()}-{i:02d}"
                        await post(
                            api,
                            "/api/v1/devices",
                            {
                                "serial_number": serial,
                                "asset_tag": f"AT-{serial}",
                                "model_id": model,
                                "school_id": sid,
                                "room_id": room,
                            },
                        )
                        terminals.append(Terminal(code, serial, connect=i < online))
        async with unit_of_work(app.state.fleet.sessions) as s:
            _, token = await create_token(
                s,
                principal=SYSTEM,
                at=clock.now(),
                name="live",
                role=Role.ADMIN,
                school_ids=[],
                district_wide=True,
            )
    return token, terminals, school_ids


@contextlib.asynccontextmanager
async def _service(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[str, int]]:
    """The service as `labfleet serve` assembles it, on a loopback port; yields (base URL, broker port)."""
    import uvicorn

    app = create_app(settings, clock=clock, migrate=False, runtime_hooks=default_hooks(settings))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    task = asyncio.create_task(server.serve(), name="live-service")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("the service stopped while starting")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}", settings.mqtt.listen_port
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def _wait(prom: PrometheusServer, expr: str, ok: Callable[[list[Sample]], bool]) -> list[Sample]:
    # Off the loop: the service under test answers Prometheus' scrapes on this loop meanwhile.
    return await asyncio.to_thread(prom.wait_for, expr, ok, DEADLINE_S)


async def _query(prom: PrometheusServer, expr: str) -> list[Sample]:
    return await asyncio.to_thread(prom.query, expr)


def _by(samples: list[Sample], label: str = "school") -> dict[str, float]:
    return {s[0][label]: s[1] for s in samples}


def _within(rates: dict[str, float], expected: dict[str, float], rel: float = 0.10) -> bool:
    return rates.keys() == expected.keys() and all(abs(rates[k] - v) <= rel * v for k, v in expected.items())


async def test_prometheus_sees_the_simulated_schools_through_the_real_service(tmp_path: Path) -> None:
    prometheus_binary()  # before building anything: skip, or fail when external services are required
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    off_loop(lambda: upgrade_sync(url))
    clock = FakeClock(MONDAY_P1)
    token, terminals, school_ids = await _seed(url, clock)
    settings = Settings(
        database_url=url,
        mqtt={
            "broker": "embedded",
            "listen_port": free_port(),
            "data_dir": str(tmp_path / "mqtt"),
        },
        metrics={"snapshot_interval_s": 1.0},
        reports={"monthly_enabled": False},
        rollouts={"artifact_dir": str(TEST_ARTIFACT_DIR)},
    )
    auth = {"Authorization": f"Bearer {token}"}
    async with (
        _service(settings, clock) as (base, mqtt_port),
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        for code, sid in school_ids.items():
            claim = await http.post(
                f"/api/v1/schools/{sid}/claim-tokens", json={"max_uses": 20}, headers=auth
            )
            assert claim.status_code == 201, claim.text
            for t in (t for t in terminals if t.school == code):
                r = await http.post(
                    "/api/v1/enroll", json={"claim_token": claim.json()["token"], "serial_number": t.serial}
                )
                assert r.status_code == 201, r.text
                t.username, t.password = r.json()["username"], r.json()["password"]

        swarm = Swarm(mqtt_port, terminals)
        swarm.start()
        jobs = [
            {"job_name": "labfleet-service", "static_configs": [{"targets": [base.removeprefix("http://")]}]}
        ]
        try:
            await asyncio.to_thread(swarm.wait_ready, DEADLINE_S)
            with run_prometheus(tmp_path, jobs, RULE_FILES) as prom:
                connected = {
                    code: sum(1 for t in terminals if t.school == code and t.connect) for code in ROOMS
                }
                # Online per school, straight from the gauge and through the recording rule, equals the
                # simulation.
                online = await _wait(
                    prom,
                    "sum by (school) (labfleet_devices_online)",
                    lambda r: _by(r) == {k: float(v) for k, v in connected.items()},
                )
                print(f"online per school from Prometheus: {_by(online)} (simulated: {connected})")
                await _wait(prom, "school:devices_online:sum", lambda r: _by(r) == _by(online))
                in_service = await _query(prom, "sum by (school) (labfleet_devices_in_service)")
                assert _by(in_service) == {"s001": 12.0, "s002": 8.0}
                # The two terminals of s001 and the one of s002 that never connected are unexpectedly offline.
                offline = await _wait(
                    prom,
                    "sum by (school) (labfleet_devices_unexpectedly_offline)",
                    lambda r: _by(r) == {"s001": 2.0, "s002": 1.0},
                )
                assert _by(offline) == {"s001": 2.0, "s002": 1.0}
                assert _by(await _query(prom, "labfleet_school_lessons_in_progress")) == {
                    "s001": 2.0,
                    "s002": 1.0,
                }
                period = await _query(prom, "labfleet_school_current_period")
                assert {(s[0]["school"], s[0]["period"]) for s in period} == {("s001", "P1"), ("s002", "P1")}

                # Bytes rate per school within 10% of what the terminals sent.
                # First let the rate window fill with scrapes of traffic (a rate over a half-empty window is
                # low).
                await _wait(
                    prom,
                    f'count_over_time(labfleet_school_bytes_total{{direction="up"}}[{RATE_WINDOW}])',
                    lambda r: len(r) == 2 and min(v for _, v in r) >= WINDOW_SAMPLES,
                )
                expr = f'sum by (school) (rate(labfleet_school_bytes_total{{direction="up"}}[{RATE_WINDOW}]))'
                rates = _by(await _wait(prom, expr, lambda r: _within(_by(r), UP_RATE)))
                print(
                    f"bytes/s up per school from Prometheus: {rates} (sent: {UP_RATE}; totals "
                    f"{swarm.sent_up})"
                )
                assert swarm.error is None
                # Against the configured capacity: 40,000 B/s = 320 kbit/s of a 10 Mbit/s uplink. (The
                # recording rule's 1-minute window would need a minute of traffic; its maths is pinned by
                # promtool tests.)
                util = f"{expr} * 8 / on (school) labfleet_school_uplink_capacity_bits_per_second"
                await _wait(prom, util, lambda r: _within(_by(r), {"s001": 0.032, "s002": 0.0112}))
                await _wait(prom, "school:uplink_utilisation:ratio", lambda r: len(r) == 2)

                # The API's per-period view of the same traffic agrees: the concurrency roll-up saw ten
                # online.
                peaks = (
                    await http.get(
                        "/api/v1/stats/peaks", params={"school": "s001", "date": "2026-09-07"}, headers=auth
                    )
                ).json()
                p1 = peaks["periods"][0]
                assert (p1["name"], p1["peak_online"], p1["expected_online"]) == ("P1", 10, 12)

                # The lesson gauge follows the injected clock: the 08:45 bell ends P1, 08:55 starts P2.
                clock.set(BREAK)
                await _wait(
                    prom,
                    "labfleet_school_lessons_in_progress",
                    lambda r: _by(r) == {"s001": 0.0, "s002": 0.0},
                )
                await _wait(prom, "labfleet_school_current_period", lambda r: r == [])
                await _wait(prom, "sum(labfleet_devices_unexpectedly_offline)", lambda r: r[0][1] == 0.0)
                clock.set(MONDAY_P2)
                await _wait(
                    prom,
                    "labfleet_school_lessons_in_progress",
                    lambda r: _by(r) == {"s001": 2.0, "s002": 1.0},
                )
                period = await _wait(prom, "labfleet_school_current_period", lambda r: len(r) == 2)
                assert {s[0]["period"] for s in period} == {"P2"}
        finally:
            await asyncio.to_thread(swarm.stop)
    assert swarm.error is None, swarm.error
