"""benchmarks/ingest.py runs end to end at a tiny size (its figures are not asserted: benchmarks measure,
tests pin behaviour). A change to the broker's listeners once made the benchmark hang with every test
green."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.mqtt.mqtt_plane import need_mosquitto

ROOT = Path(__file__).resolve().parents[2]


def test_ingest_benchmark_completes_every_phase_and_ends_with_its_json_line() -> None:
    need_mosquitto()
    devices, per = 20, 2
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/ingest.py",
            "--devices",
            str(devices),
            "--per-device",
            str(per),
            "--latency-seconds",
            "1",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "ingest" and result["messages_per_phase"] == devices * per
    # Every phase moved all its messages: both workers took part in the $share phase and nothing was lost.
    assert sum(result["worker_shares"]) == devices * per and all(result["worker_shares"])
    for key in ("a_paho_msg_s", "b_end_to_end_msg_s", "a_drain_msg_s", "b_drain_msg_s", "p99_ms", "rss_mb"):
        assert result[key] > 0, key
