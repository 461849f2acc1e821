"""SIGTERM of a real `labfleet ingest` worker process mid-stream (managed mosquitto, QoS 1): the worker
commits the batch in hand before it exits (everything it received is in the database, nothing received is
left uncommitted), and after a restart the rest arrives with nothing lost and nothing applied twice."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from fleet.runtime.ingest import IngestStats
from tests.mqtt.mqtt_plane import LoadPublisher, Plane, telemetry_stream, totals
from tests.mqtt.test_mqtt_faults import PER_DEVICE, SVC_PW, SVC_USER, _broker, _fleet, _wait_ingested, _worker


async def test_sigterm_mid_stream_commits_the_current_batch_and_loses_nothing(
    plane: Plane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches commit only when full (200, set by _worker) during the run: the 10 s timer never fires, so a
    # partial batch in hand at SIGTERM is committed only by the shutdown drain.
    monkeypatch.setenv("LABFLEET_MQTT__INGEST_BATCH_MS", "10000")
    serials = await _fleet(plane)
    broker = _broker(plane, tmp_path)
    async with broker:
        worker = await asyncio.to_thread(_worker, plane.url, broker.service_port, 0, tmp_path)
        pub = await asyncio.to_thread(LoadPublisher, broker.service_port, SVC_USER, SVC_PW)
        stream = list(telemetry_stream(plane.school_code, serials, PER_DEVICE))
        try:

            def paced() -> None:  # ~4,000 msg/s in chunks of 199, never a whole batch of 200
                for i, (topic, payload) in enumerate(stream):
                    pub.publish(topic, payload)
                    if i % 199 == 198:
                        time.sleep(0.05)

            sending = asyncio.create_task(asyncio.to_thread(paced), name="paced-publisher")
            await _wait_ingested(plane, len(stream) // 3)
            worker.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(worker.communicate, None, 30)
            assert worker.returncode == 0, out
            stopped = json.loads(out.strip().splitlines()[-1])
            assert stopped["state"] == "stopped"
            at_stop = await totals(plane.sessions)
            await sending
            await asyncio.to_thread(pub.wait_acked)
            worker = await asyncio.to_thread(_worker, plane.url, broker.service_port, 0, tmp_path)
            final = await _wait_ingested(plane, len(stream))
        finally:
            pub.close()
            if worker.poll() is None:
                worker.kill()
    fields = set(IngestStats.__dataclass_fields__)
    assert fields <= set(stopped)
    print(f"\nSIGTERM: sent={len(stream)} received_before_stop={stopped['received']} at_stop={at_stop}")
    assert len(stream) // 3 <= at_stop["ingested"] < len(stream)  # the signal really landed mid-stream
    # Drained: every message the worker took in was committed before it exited; none failed to commit.
    assert stopped["new"] + stopped["duplicates"] + stopped["rejected"] == stopped["received"]
    assert stopped["commit_failures"] == 0 and stopped["dropped"] == 0
    assert at_stop["ingested"] == stopped["new"]
    assert stopped["received"] % 200 != 0  # the last batch was partial: the drain committed it
    # Nothing lost, nothing applied twice, across the stop and restart.
    assert final["ingested"] == len(stream)
    assert final["max_messages"] == PER_DEVICE and final["min_last_seq"] == PER_DEVICE
