"""An ingest worker process serves its own /metrics (what prometheus.yml's labfleet-ingest job scrapes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fleet.domain import wire
from fleet.runtime.brokers import BrokerAuthority, MosquittoBroker, free_port
from tests.mqtt.mqtt_plane import LoadPublisher, Plane, need_mosquitto, telemetry_stream, totals

SVC_USER, SVC_PW = "labfleet-service", "svc-metrics-secret"
# Deadline for the worker to connect, ingest and show it in a scrape: generous for a loaded machine.
DEADLINE_S = 60.0
# Tries at a free port for the worker's /metrics (see the loop below).
PORT_ATTEMPTS = 3


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """Worker index 3, as `labfleet ingest --index 3` starts it."""
    with log.open("a") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "fleet.runtime.worker", "--index", "3"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def test_an_ingest_worker_serves_its_own_metrics(plane: Plane, tmp_path: Path) -> None:
    need_mosquitto()
    await plane.add_devices(5, prefix="WM")
    serials = [f"WM-{i:05d}" for i in range(5)]
    await plane.enroll(serials)
    settings = plane.settings(
        broker="mosquitto", listen_port=free_port(), data_dir=str(tmp_path / "mq"), service_password=SVC_PW
    )
    async with MosquittoBroker(
        settings, BrokerAuthority(plane.sessions, wire.Topics("labfleet"), SVC_USER, SVC_PW)
    ) as broker:
        # A free port can be taken by someone else before the worker binds it (the machine is shared); the
        # worker then runs without /metrics and says so, and the test tries another port.
        for _attempt in range(PORT_ATTEMPTS):
            metrics_port = free_port()
            env = dict(
                os.environ,
                LABFLEET_DATABASE_URL=plane.url,
                LABFLEET_MQTT__BROKER="external",
                LABFLEET_MQTT__URL=f"mqtt://127.0.0.1:{broker.service_port}",
                LABFLEET_MQTT__SERVICE_USERNAME=SVC_USER,
                LABFLEET_MQTT__SERVICE_PASSWORD=SVC_PW,
                LABFLEET_MQTT__TOPIC_PREFIX="labfleet",
                LABFLEET_METRICS__WORKER_PORT_BASE=str(metrics_port - 3),
                LABFLEET_LOG_LEVEL="WARNING",
            )
            proc = await asyncio.to_thread(_spawn, env, tmp_path / "worker.log")
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            assert '"connected"' in line, (line, (tmp_path / "worker.log").read_text()[-2000:])
            if f'"metrics_port": {metrics_port}' in line:
                break
            assert '"metrics_port": null' in line, line
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.communicate, timeout=30)
        else:
            raise AssertionError(f"no free port for the worker's /metrics in {PORT_ATTEMPTS} attempts")
        try:
            pub = await asyncio.to_thread(LoadPublisher, broker.service_port, SVC_USER, SVC_PW, 1)
            stream = list(telemetry_stream(plane.school_code, serials, 3))
            for topic, payload in stream:
                pub.publish(topic, payload)
            await asyncio.to_thread(pub.wait_acked)
            pub.close()
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            deadline = time.monotonic() + DEADLINE_S
            while True:
                text = await asyncio.to_thread(_scrape, url)
                if _sample(text, 'labfleet_ingest_messages_total{result="ok"}') == len(stream):
                    break
                assert time.monotonic() < deadline, text[-3000:]
                await asyncio.sleep(0.2)
            assert _sample(text, "labfleet_mqtt_broker_connected") == 1.0
            assert _sample(
                text, f'labfleet_school_bytes_total{{direction="up",school="{plane.school_code}"}}'
            ) == 10 * len(stream)
            assert "labfleet_devices_online" not in text  # fleet state is the service's, not a worker's
            assert (await totals(plane.sessions))["ingested"] == len(stream)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.communicate, timeout=30)
