"""A small district and an in-process service under test (real broker, real ingest, real API, SQLite)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet.cli.simulate import simulate
from fleet.cli.simulate_service import Controls, ServiceUnderTest
from fleet.runtime.brokers import free_port
from fleet.services import tls
from fleet.settings import Settings, TlsSettings
from simulators.district.spec import District, parse_spec


def small_spec(**scenario: Any) -> dict[str, Any]:
    """Two schools, three rooms, 16 terminals and a lab with two robots; one 45-minute lesson from 08:00."""
    return {
        "version": 1,
        "district": "Test District",
        "start": "2026-09-07T07:59:30",
        "speed": 60,
        "timetables": {
            "standard": {
                "periods": [
                    {"name": "P1", "start": "08:00", "end": "08:45"},
                    {"name": "P2", "start": "08:55", "end": "09:40"},
                ]
            }
        },
        "models": {
            "tablet": {
                "vendor": "Acme",
                "model_number": "SIM-T10",
                "kind": "terminal",
                "transport": "mqtt",
                "firmware": "2.4.1",
            },
            "robot": {
                "vendor": "RoboCo",
                "model_number": "SIM-R1",
                "kind": "robot",
                "transport": "serial",
                "profile_key": "robot-edubot-r2",
            },
        },
        "traffic": {
            "terminal": {
                "telemetry_interval_s": 60,
                "attendance": 1.0,
                "wake_jitter_s": 20,
                "burst": {"probability": 0.0, "bytes_down": 5_000_000},
            }
        },
        "schools": [
            {
                "code": "TS1",
                "uplink_mbps": 1000,
                "rooms": [
                    {"kind": "smart_classroom", "count": 2, "devices": {"tablet": 6}},
                    {"kind": "digital_lab", "devices": {"robot": 2}},
                ],
            },
            {
                "code": "TS2",
                "uplink_mbps": 1000,
                "rooms": [{"kind": "smart_classroom", "devices": {"tablet": 4}}],
            },
        ],
        "scenario": {
            "storm_window_s": 1.0,
            "flap_at_s": 60,
            "flap_down_s": 60,
            "restart_at_s": 60,
            "bad_firmware_at_s": 30,
            "bad_firmware_share": 0.25,
            "malformed_share": 0.25,
            "battery_drain_share": 0.25,
            "battery_drain_pct_per_hour": 1200,
            **scenario,
        },
    }


def district(**scenario: Any) -> District:
    return parse_spec(small_spec(**scenario), "test.yaml")


@asynccontextmanager
async def service(
    sqlite_url: str,
    tmp: Path,
    broker: str = "embedded",
    *,
    tls_only: bool = False,
    snapshot_interval_s: float = 15.0,
) -> AsyncIterator[ServiceUnderTest]:
    """The service under test; `tls_only`: MQTT over TLS with the plain listener off (production settings),
    the district CA in tmp/tls."""
    mqtt: dict[str, Any] = {"broker": broker, "listen_port": free_port(), "data_dir": str(tmp / "mqtt")}
    if tls_only:
        tls.init(TlsSettings(dir=str(tmp / "tls")), ["127.0.0.1"], datetime.now(UTC))
        mqtt |= {"tls": True, "tls_port": free_port(), "plain_listener": False}
    settings = Settings(
        database_url=sqlite_url,
        mqtt=mqtt,
        tls={"dir": str(tmp / "tls")},
        metrics={"snapshot_interval_s": snapshot_interval_s},
        # A fast rollout tick: the simulated clock runs at x60 in these tests.
        rollouts={"artifact_dir": str(tmp / "artifacts"), "step_seconds": 0.5},
    )
    async with ServiceUnderTest(settings) as sut:
        yield sut
    shutil.rmtree(tmp / "mqtt", ignore_errors=True)


async def run(
    sut: ServiceUnderTest, d: District, scenarios: tuple[str, ...], duration_s: float = 4.0, **kw: Any
) -> dict[str, Any]:
    async def set_clock(anchor: Any) -> None:
        sut.set_anchor(anchor)

    controls = Controls(
        sync_credentials=sut.sync_credentials, restart_broker=sut.restart_broker, set_clock=set_clock
    )
    cfg = sut.settings
    broker = (sut.broker.host, sut.broker.port)
    if cfg.mqtt.tls:  # terminals connect where enrollment says, verifying the district CA
        broker = ("127.0.0.1", cfg.mqtt.tls_port)
        kw["tls_context"] = tls.client_context(tls.ca_pem(cfg.tls))
    return await simulate(
        d,
        scenarios,
        api=sut.api,
        token=sut.token,
        broker=broker,
        database_url=sut.settings.database_url,
        duration_s=duration_s,
        speed=None,
        controls=controls,
        **kw,
    )
