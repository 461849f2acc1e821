"""What a credential change costs mosquitto's dynamic-security plugin, by fleet size.

The managed mosquitto keeps one plugin client and role per device (fleet/runtime/dynsec.py); the plugin
rewrites its whole file after every change command. This starts a bare mosquitto with the plugin holding N
devices (the file LabFleet writes at start-up) and measures, over `$CONTROL` as LabFleet sends them:
- the load: start until the port answers (what a bulk restart costs);
- the baseline, measured in the same run: a read-only command (`getDefaultACLAccess`, no file rewrite);
- one enrollment: the two commands `dynsec.changes` makes for a new device.
It prints the enrollment / baseline ratio and the load average, and ends with one JSON line.

    .venv/bin/python benchmarks/dynsec_cost.py --devices 1000 10000 --enrollments 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.domain import credentials, wire
from fleet.runtime import dynsec
from fleet.runtime.brokers import free_port, wait_for_port

ADMIN, SERVICE = "bench-admin", "bench-service"
T = wire.Topics("labfleet")


async def measure(devices: int, enrollments: int, workdir: Path) -> dict[str, float]:
    held = {f"TAB-{i:05d}": f"S{i % 50:03d}" for i in range(devices)}
    password = credentials.new_password()
    port = free_port()
    (workdir / "dynsec.json").write_text(
        json.dumps(dynsec.config(T, held, admin_username=ADMIN, service_username=SERVICE))
    )
    (workdir / "passwd").write_text(f"{ADMIN}:{credentials.hash_password(password)}\n")
    (workdir / "mosquitto.conf").write_text(
        f"per_listener_settings true\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {workdir / 'passwd'}\nplugin {dynsec.find_plugin()}\n"
        f"plugin_opt_config_file {workdir / 'dynsec.json'}\nmax_packet_size 65536\n"
    )
    if os.geteuid() == 0:  # mosquitto drops to its own account: let it write the plugin's file
        shutil.chown(workdir, "mosquitto")
        for f in workdir.iterdir():
            shutil.chown(f, "mosquitto")
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto") or "/usr/sbin/mosquitto",
        "-c",
        str(workdir / "mosquitto.conf"),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_for_port("127.0.0.1", port, 120, proc)
        load_s = time.perf_counter() - started

        async def timed(cmds: list[dict[str, object]]) -> float:
            t0 = time.perf_counter()
            await dynsec.apply("127.0.0.1", port, ADMIN, password, cmds)
            return time.perf_counter() - t0

        reads = [await timed([{"command": "getDefaultACLAccess"}]) for _ in range(enrollments)]
        adds = []
        for k in range(enrollments):
            new = {**held, f"NEW-{k:05d}": "S000"}
            adds.append(await timed(dynsec.changes(T, held, new)))
            held = new
    finally:
        proc.terminate()
        await proc.wait()
    baseline = sorted(reads)[len(reads) // 2]
    enrollment = sorted(adds)[len(adds) // 2]
    return {
        "devices": devices,
        "load_s": round(load_s, 3),
        "baseline_command_s": round(baseline, 4),
        "enrollment_s": round(enrollment, 4),
        "enrollment_vs_baseline": round(enrollment / baseline, 1),
        "model_enrollment_s": round(dynsec.stall_s(2, devices), 4),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--enrollments", type=int, default=5, help="per size; the median is reported")
    args = ap.parse_args()
    rows = []
    for n in args.devices:
        with tempfile.TemporaryDirectory(prefix="dynsec-bench-") as tmp:
            row = await measure(n, args.enrollments, Path(tmp))
        rows.append(row)
        print(
            f"{n:>6} devices: load {row['load_s']:.2f} s, "
            f"read-only command {row['baseline_command_s']:.4f} s, "
            f"one enrollment {row['enrollment_s']:.4f} s ({row['enrollment_vs_baseline']}x the baseline; "
            f"model {row['model_enrollment_s']:.4f} s)"
        )
    load = os.getloadavg()[0]
    print(f"load average (1 min): {load:.2f}")
    print(json.dumps({"benchmark": "dynsec_cost", "sizes": rows, "load_avg_1m": round(load, 2)}))


if __name__ == "__main__":
    asyncio.run(main())
