"""The district generator alone: rollout-2027's terminals against a bare mosquitto, CPU of generator vs
broker.

No service, no enrollment: every terminal connects to an anonymous mosquitto, runs `bell-storm,lesson-peak` on
the spec's simulated clock and is accounted by its PUBACKs. It isolates what the generator costs per message,
so a change to simulators/district/{mqttpool,terminal,engine}.py can be measured in a minute instead of a full
district run. The baseline, measured in the same run, is the bare broker's CPU for the same messages.

    .venv/bin/python benchmarks/generator.py [--duration 60] [--profile out.pstats]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.district import SPEC, bare_mosquitto
from fleet.runtime.brokers import wait_for_port
from simulators.district.engine import Hooks, Simulation
from simulators.district.fleetlink import Credentials
from simulators.district.mqttpool import raise_fd_limit
from simulators.district.spec import load_spec


class AnyoneEnroller:
    """The bare broker takes any credentials: every terminal is 'enrolled' at once."""

    async def enroll(self, school_code: str, serials: list[str]) -> dict[str, Credentials | str]:
        return {s: Credentials(s, "x", school_code) for s in serials}


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=60.0, help="real seconds of storm plus lesson")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    args = ap.parse_args()
    district = load_spec(SPEC)
    n = district.count("terminal")
    raise_fd_limit(n + 4096)
    tmp = Path(tempfile.mkdtemp(prefix="labfleet-generator-"))
    broker, port = bare_mosquitto(tmp, n + 4096)
    prof = cProfile.Profile() if args.profile else None
    # Cyclic-GC pauses by generation: a full collection walks every long-lived client object, and the loop
    # stands still meanwhile.
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    try:
        await wait_for_port("127.0.0.1", port, 10, None)
        # No lab rooms: they need the service's API; this measures the terminals only.
        district = dataclasses.replace(district, edge=district.edge.model_copy(update={"labs": 0}))
        sim = Simulation(
            district,
            broker=("127.0.0.1", port),
            enroller=AnyoneEnroller(),
            readback=None,
            scenarios=("bell-storm", "lesson-peak"),
            duration_s=args.duration,
            hooks=Hooks(service_pids=lambda: {"broker": broker.pid}),
        )
        if prof is not None:
            prof.enable()
        await sim.run()
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.profile)
    finally:
        broker.terminate()
        broker.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)
    st = sim.stats
    series = st.series
    # The lesson peak: after the storm, when every terminal is online and in class.
    peak = [p for p in series if p["online"] >= 0.99 * n][2:]
    gen = mean([p["sim_cpu"] for p in peak])
    brk = mean([p.get("broker_cpu", 0.0) for p in peak])
    rate = mean([p["published_per_s"] for p in peak])
    acked = mean([p["acked_per_s"] for p in peak])
    storm = max(st.connect_times[:n]) if st.connect_times else None
    storm_cpu = mean([p["sim_cpu"] for p in series if p["online"] < 0.99 * n])
    figures: dict[str, Any] = {
        "benchmark": "generator",
        "terminals": n,
        "connected": len(st.connack_mono),
        "storm_wall_s": round(storm, 2) if storm else None,
        "storm_generator_cpu": round(storm_cpu, 3),
        "peak_seconds": len(peak),
        "peak_published_per_s": round(rate, 1),
        "peak_acked_per_s": round(acked, 1),
        "peak_generator_cpu": round(gen, 3),
        "peak_broker_cpu": round(brk, 3),
        "generator_vs_broker_cpu": round(gen / brk, 3) if brk else None,
        "generator_us_per_msg": round(gen / rate * 1e6, 1) if rate else None,
        "broker_us_per_msg": round(brk / rate * 1e6, 1) if rate else None,
        "sent": sum(t.counters.sent for t in sim.terminals),
        "acked": st.acked,
        "generator_rss_mb": max((p["sim_rss_mb"] for p in series), default=None),
        "gc_full_collections": len(pauses[2]),
        "gc_full_pause_max_s": round(max(pauses[2], default=0.0), 3),
        "gc_pause_total_s": round(sum(sum(v) for v in pauses.values()), 2),
        "loop_lag_max_s": max((p.get("loop_lag_s", 0.0) for p in series), default=None),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(
        f"storm {figures['storm_wall_s']} s; lesson peak {rate:.0f} msg/s offered, {acked:.0f}/s acked; "
        f"generator {gen:.3f} cores ({figures['generator_us_per_msg']} us/msg) "
        f"vs bare broker {brk:.3f} cores ({figures['broker_us_per_msg']} us/msg): "
        f"ratio {figures['generator_vs_broker_cpu']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
