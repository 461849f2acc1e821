"""benchmarks/dynsec_cost.py runs end to end at a tiny size (its figures are not asserted: benchmarks measure,
tests pin behaviour)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.mqtt.mqtt_plane import need_mosquitto

ROOT = Path(__file__).resolve().parents[2]


def test_dynsec_benchmark_measures_each_size_and_ends_with_its_json_line() -> None:
    need_mosquitto()
    proc = subprocess.run(
        [sys.executable, "benchmarks/dynsec_cost.py", "--devices", "20", "--enrollments", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    (row,) = result["sizes"]
    assert row["devices"] == 20 and row["enrollment_s"] > 0 and "load_avg_1m" in result
