"""Faults with mosquitto: a broker restart and a kill -9 of the ingest worker lose nothing committed and
count nothing twice; two workers share one QoS 1 stream through a shared subscription (PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleet.domain import wire
from fleet.runtime.brokers import BrokerAuthority, MosquittoBroker, free_port
from fleet.runtime.ingest import IngestService
from tests.mqtt.mqtt_plane import LoadPublisher, Plane, need_mosquitto, seed, telemetry_stream, totals

DEVICES = 1000
PER_DEVICE = 6
SVC_USER, SVC_PW = "labfleet-service", "svc-fault-secret"


async def _fleet(plane: Plane) -> list[str]:
    await plane.add_devices(DEVICES, prefix="FT")
    serials = [f"FT-{i:05d}" for i in range(DEVICES)]
    await plane.enroll(serials)
    return serials


def _broker(plane: Plane, tmp: Path) -> MosquittoBroker:
    need_mosquitto()
    settings = plane.settings(
        broker="mosquitto", listen_port=free_port(), data_dir=str(tmp / "mq"), service_password=SVC_PW
    )
    return MosquittoBroker(
        settings, BrokerAuthority(plane.sessions, wire.Topics("labfleet"), SVC_USER, SVC_PW)
    )


async def _wait_ingested(plane: Plane, want: int, timeout: float = 60) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        t = await totals(plane.sessions)
        if t["ingested"] >= want:
            return t
        if loop.time() > deadline:
            raise AssertionError(f"ingested {t['ingested']} of {want}")
        await asyncio.sleep(0.1)


async def test_broker_restart_under_qos1_load_loses_no_seq_and_counts_no_duplicate(
    plane: Plane, tmp_path: Path
) -> None:
    serials = await _fleet(plane)
    broker = _broker(plane, tmp_path)
    async with broker:
        settings = plane.settings(broker="mosquitto", listen_port=broker.port, service_password=SVC_PW)
        async with IngestService(
            settings,
            plane.sessions,
            plane.clock,
            address=broker.address,
            client_id="labfleet-ingest-fault",
            shared=False,
        ) as ingest:
            await ingest.wait_connected()
            pub = await asyncio.to_thread(LoadPublisher, broker.service_port, SVC_USER, SVC_PW)
            stream = list(telemetry_stream(plane.school_code, serials, PER_DEVICE))
            half = len(stream) // 2
            for topic, payload in stream[:half]:
                pub.publish(topic, payload)
            await broker.stop()  # mid-stream: the first half is partly queued, in flight and committed
            for topic, payload in stream[half:]:
                pub.publish(topic, payload)  # paho queues while the broker is down
            await broker.start()
            await asyncio.to_thread(pub.wait_acked)
            try:
                t = await _wait_ingested(plane, len(stream))
            except AssertionError as err:
                raise AssertionError(
                    f"{err}; ingest {ingest.stats}; pending {len(ingest._pending)}; writer {ingest._writer}"
                ) from None
            pub.close()
    print(
        f"\nbroker restart: sent={len(stream)} ingested={t['ingested']} "
        f"duplicates_detected={t['duplicates']} "
        f"redelivered_to_ingest={ingest.stats.received - len(stream)}"
    )
    assert t["ingested"] == len(stream)  # every message counted exactly once ...
    assert t["devices"] == DEVICES and t["min_last_seq"] == PER_DEVICE and t["max_messages"] == PER_DEVICE
    assert t["bytes_up"] == 10 * len(stream)  # ... and so are the roll-ups


def _worker(url: str, port: int, index: int, tmp: Path, *, shared: bool = False) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        LABFLEET_DATABASE_URL=url,
        LABFLEET_MQTT__INGEST_SHARED=str(shared).lower(),
        LABFLEET_MQTT__BROKER="external",
        LABFLEET_MQTT__URL=f"mqtt://127.0.0.1:{port}",
        LABFLEET_MQTT__SERVICE_USERNAME=SVC_USER,
        LABFLEET_MQTT__SERVICE_PASSWORD=SVC_PW,
        LABFLEET_MQTT__TOPIC_PREFIX="labfleet",
        LABFLEET_MQTT__INGEST_BATCH_MAX="200",
        LABFLEET_LOG_LEVEL="WARNING",
    )
    # The child gets its own copy of the log's descriptor: the parent's closes once the process has started.
    with open(tmp / f"worker-{index}.log", "a") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.runtime.worker", "--index", str(index)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the worker is subscribed (or died)
    assert '"connected"' in line, (line, (tmp / f"worker-{index}.log").read_text()[-2000:])
    return proc


def _stop(proc: subprocess.Popen[str]) -> dict[str, int]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


async def test_kill_9_of_ingest_mid_stream_then_restart_loses_no_committed_state(
    plane: Plane, tmp_path: Path
) -> None:
    serials = await _fleet(plane)
    broker = _broker(plane, tmp_path)
    async with broker:
        worker = await asyncio.to_thread(_worker, plane.url, broker.service_port, 0, tmp_path)
        pub = await asyncio.to_thread(LoadPublisher, broker.service_port, SVC_USER, SVC_PW)
        stream = list(telemetry_stream(plane.school_code, serials, PER_DEVICE))
        half = len(stream) // 2
        try:
            for topic, payload in stream[:half]:
                pub.publish(topic, payload)
            await _wait_ingested(plane, half)

            def paced() -> None:  # ~4,000 msg/s, so the kill lands while the second half is flowing
                import time

                for i, (topic, payload) in enumerate(stream[half:]):
                    pub.publish(topic, payload)
                    if i % 200 == 199:
                        time.sleep(0.05)

            second = asyncio.create_task(asyncio.to_thread(paced), name="paced-publisher")
            await _wait_ingested(plane, half + 400)
            worker.send_signal(signal.SIGKILL)  # mid-ingest of the second half
            await asyncio.to_thread(worker.wait, 10)
            await second
            committed = await totals(plane.sessions)
            async with plane.sessions() as s:
                from sqlalchemy import select

                from fleet.persistence.models_mqtt import DeviceState

                before = dict(
                    (await s.execute(select(DeviceState.device_id, DeviceState.messages_total))).all()
                )
            await asyncio.to_thread(pub.wait_acked)
            worker = await asyncio.to_thread(_worker, plane.url, broker.service_port, 0, tmp_path)
            t = await _wait_ingested(plane, len(stream))
            stats = await asyncio.to_thread(_stop, worker)
        finally:
            pub.close()
            if worker.poll() is None:
                worker.kill()
    async with plane.sessions() as s:
        after = dict((await s.execute(select(DeviceState.device_id, DeviceState.messages_total))).all())
    print(
        f"\nkill -9: sent={len(stream)} committed_before_kill={committed['ingested']} "
        f"ingested={t['ingested']} "
        f"duplicates_detected={t['duplicates']} after_restart_received={stats['received']}"
    )
    assert half < committed["ingested"] < len(stream)  # the kill really landed mid-stream
    assert all(after[d] >= n for d, n in before.items())  # nothing committed was lost
    assert (
        t["ingested"] == len(stream) and t["max_messages"] == PER_DEVICE and t["min_last_seq"] == PER_DEVICE
    )
    assert t["bytes_up"] == 10 * len(stream)


@pytest.fixture
async def pg_plane(postgres_url: str, tmp_path: Path) -> AsyncIterator[Plane]:
    """The shared migrated PostgreSQL test database, truncated, seeded with one school."""
    p = await seed(postgres_url, tmp_path)
    yield p
    await p.engine.dispose()


async def test_two_workers_share_one_qos1_stream_on_postgres_without_loss_or_duplicates(
    pg_plane: Plane, tmp_path: Path
) -> None:
    await _two_workers(pg_plane, tmp_path)


async def test_two_workers_on_one_sqlite_file_lose_no_update(plane: Plane, tmp_path: Path) -> None:
    """Each device's messages alternate between the workers: both update the same state rows, and neither
    may overwrite the other's counts (SQLite has no row locks; the batch takes the writer lock first)."""
    await _two_workers(plane, tmp_path)


async def _two_workers(plane: Plane, tmp_path: Path) -> None:
    serials = await _fleet(plane)
    broker = _broker(plane, tmp_path)
    async with broker:
        workers = [
            await asyncio.to_thread(_worker, plane.url, broker.service_port, i, tmp_path, shared=True)
            for i in (0, 1)
        ]
        pub = await asyncio.to_thread(LoadPublisher, broker.service_port, SVC_USER, SVC_PW)
        try:
            stream = list(telemetry_stream(plane.school_code, serials, PER_DEVICE))
            for topic, payload in stream:
                pub.publish(topic, payload)
            await asyncio.to_thread(pub.wait_acked)
            t = await _wait_ingested(plane, len(stream))
            stats = [await asyncio.to_thread(_stop, w) for w in workers]
        finally:
            pub.close()
            for w in workers:
                if w.poll() is None:
                    w.kill()
    print(
        f"\ntwo workers: sent={len(stream)} ingested={t['ingested']} duplicates_detected={t['duplicates']} "
        f"worker_new={[s['new'] for s in stats]}"
    )
    assert all(s["new"] > 0 for s in stats)  # both took part
    assert sum(s["new"] for s in stats) == len(stream)
    assert (
        t["ingested"] == len(stream) and t["max_messages"] == PER_DEVICE and t["min_last_seq"] == PER_DEVICE
    )
    assert t["bytes_up"] == 10 * len(stream)
