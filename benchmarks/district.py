"""The rollout-2027 district at the 08:00 bell and through a lesson peak, against mosquitto; with baselines.

What it runs, in one process and one run:
  1. Baselines on a bare mosquitto (no auth, no service): the same connection pool connects all terminals
     (bare connects/s and wall time), and a plain paho subscriber receives a QoS 1 stream from
     `mosquitto_pub -l` (bare broker receive rate).
  2. The service under test in a child process (HTTP API, managed mosquitto, one ingest worker, SQLite),
     provisioned with rollout-2027 (50 schools, 500 classrooms x 20 terminals, 50 labs), every terminal
     enrolled over HTTP, then `bell-storm,lesson-peak`: 10,000 terminals connect within the storm window and
     work through a lesson, while two labs' robots and kits run on ptys behind the edge agent. At the spec's
     x20 this offers 20 times the district's real message rate: the stress and capacity run.
  3. The same fleet (credentials carried over) at the third lesson on a real clock (x1, --real-duration s):
     a bell storm, then a lesson at the rate the district itself offers, for publish-to-state on real time.
It prints connects/s, the storm's wall time, p99 connect-to-online, ingest figures, generator and service CPU,
each with its ratio against the same-run baseline, and ends with one JSON line.

    .venv/bin/python benchmarks/district.py [--duration 90] [--real-duration 60] [--enroll http|db] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.cli.simulate import _child_pid, simulate
from fleet.cli.simulate_service import Controls, ServiceControl, child_service
from fleet.domain import wire
from fleet.runtime.brokers import free_port, wait_for_port
from simulators.district.mqttpool import Pool, raise_fd_limit
from simulators.district.spec import District, load_spec

SPEC = Path(__file__).resolve().parents[1] / "simulators" / "districts" / "rollout-2027.yaml"
# Messages in the bare receive-rate baseline: ~5 s of stream at paho's QoS 1 ceiling, enough for a stable
# rate.
BASELINE_MESSAGES = 50_000
# A 150-byte telemetry-shaped payload, as in the design document's baselines.
PAYLOAD = wire.encode_uplink(
    wire.Telemetry(
        seq=1042,
        ts_ms=1788764400000,
        battery_pct=81,
        temperature_c=38.5,
        storage_used_pct=61.2,
        firmware="2.4.1",
        bytes_up=52311,
        bytes_down=1203344,
        rssi_dbm=-58,
        charging=False,
    )
).decode()
# The x1 run starts 10 s before the third lesson (10:00), after the x20 run's simulated half hour.
REAL_START = datetime(2026, 9, 7, 9, 59, 50)
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"


def bare_mosquitto(tmp: Path, fds: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "bare.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
        f"max_inflight_messages 1000\nmax_queued_messages 200000\n{user}"
    )

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fds, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    # preexec_fn only calls setrlimit in the child, before exec: no lock a thread of ours could hold is taken.
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limits,  # noqa: PLW1509 - see above
    )
    return proc, port


async def baseline_connects(port: int, n: int) -> dict[str, float]:
    """The simulator's own pool against a bare broker: what connecting n clients costs with no service."""
    pool = Pool("127.0.0.1", port)
    pool.start()
    done = 0
    latencies: list[float] = []
    finished = asyncio.Event()
    started: dict[str, float] = {}

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        nonlocal done
        pool.connecting.release()
        latencies.append(time.monotonic() - started[str(u)])
        done += 1
        if done == n:
            finished.set()

    t0 = time.monotonic()
    for i in range(n):
        c = pool.new_client(f"bare-{i}", f"bare-{i}", "x", userdata=f"bare-{i}")
        c.on_connect = on_connect
        await pool.connecting.acquire()
        started[f"bare-{i}"] = time.monotonic()
        pool.connect(c, f"bare/{i}/status", b"offline")
        if i % 500 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(finished.wait(), 120)
    wall = time.monotonic() - t0
    await pool.close()
    latencies.sort()
    return {
        "connects_per_s": n / wall,
        "wall_s": wall,
        "connack_p99_s": latencies[int(len(latencies) * 0.99) - 1],
    }


def baseline_receive(port: int) -> float:
    """A plain paho subscriber (QoS 1) receiving a stream from mosquitto_pub -l: the bare receive rate."""
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        nonlocal got, first, last
        got += 1
        now = time.monotonic()
        if got == 1:
            first = now
        last = now
        if got >= BASELINE_MESSAGES:
            done.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", clean_session=True)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("bench/#", qos=1)
    sub.loop_start()
    time.sleep(0.3)
    pub = subprocess.Popen(
        [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-t", "bench/t", "-q", "1", "-l"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert pub.stdin is not None
    pub.stdin.write(((PAYLOAD + "\n") * BASELINE_MESSAGES).encode())
    pub.stdin.close()
    done.wait(120)
    pub.wait(30)
    sub.loop_stop()
    sub.disconnect()
    return got / (last - first) if last > first else 0.0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=90.0, help="real seconds of storm plus lesson")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    # http: every terminal enrolls over HTTP first (POST /api/v1/enroll, as terminals do); db: the fleet
    # starts enrolled in bulk through the service's enrollment use case (one broker reload), for a quicker
    # storm-only run.
    ap.add_argument("--enroll", choices=("db", "http"), default="http")
    # The x20 run offers 20 times the district's real message rate (every terminal's minute of telemetry in
    # 3 s): the stress and capacity figures. Publish-to-state is a real-time promise, so it is also measured
    # with the same fleet on a real clock, at the rate a real lesson offers.
    ap.add_argument(
        "--real-duration", type=float, default=60.0, help="real seconds of a second run at x1 (0: skip)"
    )
    args = ap.parse_args()
    district = load_spec(SPEC)
    n = district.count("terminal")
    raise_fd_limit(n + 4096)
    tmp = Path(tempfile.mkdtemp(prefix="labfleet-district-"))
    try:
        # ---------------------------------------------------------------- baselines
        bare, port = bare_mosquitto(tmp, n + 4096)
        try:
            await wait_for_port("127.0.0.1", port, 10, None)
            base_conn = await baseline_connects(port, n)
            base_rx = await asyncio.to_thread(baseline_receive, port)
        finally:
            bare.terminate()
            bare.wait(20)
        print(
            f"baseline (bare mosquitto): {base_conn['connects_per_s']:.0f} connects/s, {n} in "
            f"{base_conn['wall_s']:.1f} s, CONNACK p99 {base_conn['connack_p99_s'] * 1000:.0f} ms; "
            f"plain paho QoS 1 receive {base_rx:.0f} msg/s",
            flush=True,
        )

        # ---------------------------------------------------------------- the district
        db = f"sqlite+aiosqlite:///{tmp / 'district.db'}"
        async with child_service(db, "mosquitto", tmp / "sut") as child:
            ctl = ServiceControl(child.info.api)

            def pids() -> dict[str, int]:
                got = {"service": child.info.pid}
                b = _child_pid(child.info.pid)
                if b:
                    got["broker"] = b
                return got

            state = (
                tmp / "simulate.state.json"
            )  # credentials and seq marks carried from the x20 run to the x1 run

            async def run(d: District, duration: float, speed: float | None) -> dict[str, Any]:
                return await simulate(
                    d,
                    ("bell-storm", "lesson-peak"),
                    api=child.info.api,
                    token=child.info.token,
                    broker=(child.info.broker_host, child.info.broker_port),
                    database_url=db,
                    duration_s=duration,
                    speed=speed,
                    controls=Controls(ctl.sync_credentials, ctl.restart_broker, ctl.set_clock, pids),
                    progress=lambda m: print("  " + m, flush=True),
                    enroll=args.enroll,
                    state_file=state,
                )

            try:
                r = await run(district, args.duration, None)
                real = None
                if args.real_duration > 0:
                    # The same fleet, already enrolled, at the third lesson on a real clock: its own bell
                    # storm, then the lesson at the rate the district itself offers.
                    real = await run(dataclasses.replace(district, start=REAL_START), args.real_duration, 1.0)
            finally:
                await ctl.close()
        from simulators.district import report as reports

        reports.write(r, tmp / "district.json", tmp / "district.html")
        print(reports.text(r), flush=True)
        if real is not None:
            reports.write(real, tmp / "district-x1.json", tmp / "district-x1.html")
            print(reports.text(real), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"work directory kept: {tmp}")

    c, a, e, res = r["connections"], r["accounting"], r["enrollment"], r["resources"]
    storm = c["storm_wall_s"] or 0.0
    # The lesson peak: the second half of the run, when the storm is over and every terminal is in class.
    series = r["series"]
    peak = series[len(series) // 2 :]
    ingest_rate = sum(p["acked_per_s"] for p in peak) / len(peak) if peak else 0.0
    svc_cpu = sum((v or {}).get("cpu_mean") or 0 for k, v in res.items() if k in ("service", "broker"))
    figures = {
        "terminals": n,
        "connected": c["connected"],
        "enroll_success": e["success_ratio"],
        "enroll_per_s": e["per_s"],
        "connects_per_s": c["connects_per_s_mean"],
        "bare_connects_per_s": round(base_conn["connects_per_s"], 1),
        "connects_ratio": round((c["connects_per_s_mean"] or 0) / base_conn["connects_per_s"], 3),
        "storm_wall_s": storm,
        "bare_connect_wall_s": round(base_conn["wall_s"], 2),
        "p99_connect_to_online_s": c["connect_to_online_p99_s"],
        "bare_connack_p99_s": round(base_conn["connack_p99_s"], 3),
        "lesson_peak_ingest_msg_per_s": round(ingest_rate, 1),
        "bare_receive_msg_per_s": round(base_rx, 1),
        "ingest_ratio": round(ingest_rate / base_rx, 3) if base_rx else None,
        # Offered (published) against what the service committed, after the storm; the ingest backlog is
        # acknowledged by the broker and not yet committed by the service.
        "offered_msg_per_s": r["load"]["offered_msg_per_s"],
        "real_clock_msg_per_s": r["load"]["real_clock_msg_per_s"],
        "service_ingested_msg_per_s": r["load"]["ingested_msg_per_s"],
        "ingest_backlog_max": r["load"]["backlog_max"],
        "generator_loop_lag_max_s": r["load"]["loop_lag_max_s"],
        "sent": a["sent"],
        "ingested": a["ingested"],
        "lost": a["lost"],
        "duplicated": a["duplicated"],
        "p50_publish_to_state_s": r["publish_to_state"]["p50_s"],
        "p99_publish_to_state_s": r["publish_to_state"]["p99_s"],
        "generator_cpu": res.get("sim", {}).get("cpu_mean"),
        "service_and_broker_cpu": round(svc_cpu, 3),
        "generator_vs_service_cpu": res.get("generator_vs_service_cpu"),
        "generator_rss_mb": res.get("sim", {}).get("rss_max_mb"),
        "service_rss_mb": res.get("service", {}).get("rss_max_mb"),
        "broker_rss_mb": res.get("broker", {}).get("rss_max_mb"),
        "lab_devices_on_ptys": r["labs"]["on_ptys"],
        "lab_devices_online": r["labs"]["online_at_end"],
        # The machine is shared: other processes' load at the end of the run, for reading the figures.
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "verdict": r["verdict"]["result"],
    }
    if real is not None:
        ra, rl = real["accounting"], real["load"]
        figures["real_clock_run"] = {
            "speed": 1,
            "connected": real["connections"]["connected"],
            "storm_wall_s": real["connections"]["storm_wall_s"],
            "offered_msg_per_s": rl["offered_msg_per_s"],
            "service_ingested_msg_per_s": rl["ingested_msg_per_s"],
            "ingest_backlog_max": rl["backlog_max"],
            "generator_loop_lag_max_s": rl["loop_lag_max_s"],
            "sent": ra["sent"],
            "lost": ra["lost"],
            "duplicated": ra["duplicated"],
            "p50_publish_to_state_s": real["publish_to_state"]["p50_s"],
            "p99_publish_to_state_s": real["publish_to_state"]["p99_s"],
            "probes": real["publish_to_state"]["samples"],
            "generator_vs_service_cpu": real["resources"].get("generator_vs_service_cpu"),
            "verdict": real["verdict"]["result"],
            "failed": real["verdict"]["failed"],
        }
    print(
        f"connects/s {figures['connects_per_s']} (x{figures['connects_ratio']} of bare), storm wall "
        f"{storm} s (bare {figures['bare_connect_wall_s']} s), p99 connect-to-online "
        f"{figures['p99_connect_to_online_s']} s; lesson-peak ingest "
        f"{figures['lesson_peak_ingest_msg_per_s']} msg/s "
        f"(x{figures['ingest_ratio']} of bare receive), lost {a['lost']}, duplicated {a['duplicated']}"
    )
    print(
        f"enrollment ({args.enroll}): {e['per_s']}/s, success {e['success_ratio']}; generator CPU "
        f"{figures['generator_cpu']} cores vs service + broker {figures['service_and_broker_cpu']} "
        f"(ratio {figures['generator_vs_service_cpu']}); lab devices online through the edge agent "
        f"{figures['lab_devices_online']}/{figures['lab_devices_on_ptys']}"
    )
    if real is not None:
        x1 = figures["real_clock_run"]
        print(
            f"on a real clock (x1, {args.real_duration:g} s): offered {x1['offered_msg_per_s']} msg/s, "
            f"publish-to-state p50 {x1['p50_publish_to_state_s']} s, p99 {x1['p99_publish_to_state_s']} s "
            f"over {x1['probes']} probes, lost {x1['lost']}, duplicated {x1['duplicated']}; "
            f"verdict {x1['verdict']}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
