"""`labfleet agent` as a real process: bridged kits go online, and SIGTERM or SIGINT stops it cleanly (ports
closed, every kit's retained status set to offline, MQTT disconnected, exit status 0)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.runtime.brokers import free_port
from fleet.runtime.plane import device_plane_hook
from tests.conftest import Api, make_settings
from tests.factories import build_world, post
from tests.mqtt.mqtt_plane import wait_until

V1 = "/api/v1"
ROOT = Path(__file__).resolve().parents[2]
# Python start-up, imports and the first enrollment of a kit take a few seconds on a busy 2-core machine.
PROCESS_DEADLINE_S = 60.0


@contextlib.asynccontextmanager
async def served(sqlite_url: str) -> AsyncIterator[tuple[Api, str, int]]:
    """The service (embedded broker, ingest) on a loopback port, plus an in-process client for setup."""
    import uvicorn

    # The agent process stamps messages with the real time, so the service's clock starts at now.
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    settings = make_settings(
        sqlite_url, mqtt={"broker": "embedded", "listen_port": free_port(), "ingest_batch_ms": 20}
    )
    app = create_app(settings, clock=clock, migrate=False, runtime_hooks=[device_plane_hook])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    )
    task = asyncio.create_task(server.serve(), name="agent-test-service")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("the service stopped while starting")
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            yield (
                Api(client=client, sessions=app.state.fleet.sessions, clock=clock),
                f"http://127.0.0.1:{port}",
                settings.mqtt.listen_port,
            )
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_agent_process_stops_cleanly_on_a_signal_and_takes_its_kits_offline(
    sqlite_url: str, sig: signal.Signals
) -> None:
    async with served(sqlite_url) as (api, base_url, mqtt_port):
        w = await build_world(api)
        await post(
            api,
            f"{V1}/device-models",
            {
                "vendor": "Espressif",
                "model_number": "ESP32-KIT",
                "kind": "mcu_kit",
                "transport": "serial",
                "unit_price": "19.00",
                "warranty_months": 12,
                "supplier": "Maker",
                "profile_key": "kit-esp32-mpy",
            },
        )
        tech = await api.as_("technician", (w.school_a,))
        token = tech["Authorization"].removeprefix("Bearer ")
        env = {**os.environ, "LABFLEET_AGENT_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleet.cli.main",
            "agent",
            "--school",
            str(w.school_a),
            "--room",
            str(w.room_a),
            "--api",
            base_url,
            "--broker",
            f"mqtt://127.0.0.1:{mqtt_port}",
            "--bench",
            "1",
            "--seed",
            "4",
            "--health-interval",
            "1",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:

            async def kit() -> dict[str, object] | None:
                page = (
                    await api.client.get(
                        f"{V1}/devices", headers=tech, params={"school": w.school_a, "limit": 500}
                    )
                ).json()
                found = [d for d in page["items"] if str(d["serial_number"]).startswith("mpy-")]
                return found[0] if found else None

            async def online() -> bool:
                device = await kit()
                if device is None:
                    return False
                state = (await api.client.get(f"{V1}/devices/{device['id']}/state", headers=tech)).json()
                return state["online"] is True

            await wait_until(online, timeout=PROCESS_DEADLINE_S)
            proc.send_signal(sig)
            output, _ = await asyncio.wait_for(proc.communicate(), PROCESS_DEADLINE_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        log = output.decode(errors="replace")
        assert proc.returncode == 0, log[-2000:]
        assert (
            "stop signal received" in log and "offline: agent stopping" in log and "edge agent stopped" in log
        )
        assert "Traceback" not in log

        async def offline() -> bool:
            return not await online()

        await wait_until(offline)  # the retained offline status, not a Last Will after a timeout
