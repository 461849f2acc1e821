"""Telemetry ingest throughput and latency against mosquitto on loopback, with a same-run baseline.

    .venv/bin/python benchmarks/ingest.py [--devices 10000] [--per-device 5] [--latency-seconds 10]

(a) bare receive rate of a plain paho subscriber (QoS 1, auto-ack), in its own process;
(b) end-to-end rate, publish -> latest state committed in SQLite, of the ingest service (one worker, this
    process) for `--devices` simulated device ids;
(c) b/a, the p99 heartbeat->state latency with the publisher paced at 1,000 msg/s, and the service's peak RSS.

The publisher is a lean child process: a few paho connections without network threads carry many device ids,
so the generator does not starve the service of CPU.
Targets (issue 3): b >= 10,000 msg/s, b/a >= 0.6, p99 <= 250 ms, RSS <= 200 MB. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.domain import wire  # noqa: E402

SVC_USER, SVC_PW = "labfleet-service", "bench-secret"
SCHOOL = "BENCH1"
# Publisher connections: "many device ids over a few connections" (holding 10,000 is the simulator's job).
PUB_CONNECTIONS = 4


# ------------------------------------------------------------------ publisher (child process)
def publisher(port: int, devices: int, per_device: int, rate: float, seq_start: int) -> None:
    """Send devices x per_device telemetry messages (QoS 1); rate 0 = as fast as the broker takes them."""
    import paho.mqtt.client as mqtt

    topics = wire.Topics("labfleet")
    clients = []
    for i in range(PUB_CONNECTIONS):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}-{i}",
                        clean_session=True)
        c.username_pw_set(SVC_USER, SVC_PW)
        c.max_inflight_messages_set(0)  # unlimited: the broker's PUBACKs are read in bulk below
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port, keepalive=60)
        while not c.is_connected():
            c.loop(0.05)
        clients.append(c)
    names = [topics.topic(SCHOOL, f"B{d:05d}", "telemetry") for d in range(devices)]
    total = devices * per_device
    sent = 0
    started = time.monotonic()
    for k in range(per_device):
        seq = seq_start + k
        for d in range(devices):
            ts = int(time.time() * 1000)
            body = b'{"v":1,"seq":%d,"ts":%d,"battery":77,"temp_c":36.5,"fw":"2.4.1","up":120,"down":900,"rssi":-55}' % (
                seq, ts)
            clients[sent % PUB_CONNECTIONS].publish(names[d], body, qos=1)
            sent += 1
            if rate:
                due = started + sent / rate
                if due > time.monotonic() and sent % 10 == 0:
                    _pump(clients)
                    time.sleep(max(0.0, due - time.monotonic()))
            elif sent % 500 == 0:
                _pump(clients)
    # Wait for the broker's PUBACKs so every message is really in the broker before we leave.
    while any(c._out_messages or c.want_write() for c in clients):  # noqa: SLF001 - paho keeps unacknowledged QoS 1 here
        _pump(clients)
        time.sleep(0.001)
    for c in clients:
        c.disconnect()
    print(json.dumps({"published": total, "seconds": round(time.monotonic() - started, 3)}), flush=True)


def _pump(clients: list) -> None:  # type: ignore[type-arg]
    """Read the broker's PUBACKs and write what paho still holds, without blocking."""
    for c in clients:
        c.loop_read()
        if c.want_write():
            c.loop_write()


def spawn_publisher(port: int, devices: int, per_device: int, rate: float, seq_start: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--publish", str(port), str(devices), str(per_device),
                             str(rate), str(seq_start)], stdout=subprocess.PIPE, text=True)


# ------------------------------------------------------------------ (a) bare paho subscriber (child process)
def paho_subscriber(port: int, expect: int) -> None:
    import paho.mqtt.client as mqtt

    got = 0
    first = last = 0.0

    def on_message(_c, _u, _m) -> None:  # type: ignore[no-untyped-def]
        nonlocal got, first, last
        got += 1
        last = time.monotonic()
        if got == 1:
            first = last

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho", clean_session=True)
    c.username_pw_set(SVC_USER, SVC_PW)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe("labfleet/v1/+/+/telemetry", qos=1)
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + 300
    while got < expect and time.monotonic() < deadline:
        c.loop(0.05)
    c.disconnect()
    print(json.dumps({"received": got, "rate": round(got / max(last - first, 1e-9), 1)}), flush=True)


# ------------------------------------------------------------------ the run
async def seed(url: str, devices: int) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from sqlalchemy import insert

    from fleet.domain.credentials import hash_password
    from fleet.persistence.db import create_engine
    from fleet.persistence.models import Device, DeviceModel, District, Room, School
    from fleet.persistence.models_mqtt import DeviceCredential

    now = datetime.now(UTC)
    engine = create_engine(url)
    pw_hash = hash_password("unused-by-the-benchmark")
    async with engine.begin() as c:
        await c.execute(insert(District), [{"id": 1, "name": "Bench", "created_at": now}])
        await c.execute(insert(School), [{"id": 1, "district_id": 1, "code": SCHOOL, "name": "Bench school",
                                          "uplink_mbps": 1000, "timezone": "UTC", "created_at": now}])
        await c.execute(insert(Room), [{"id": 1 + r, "school_id": 1, "name": f"Room {r}", "kind": "smart_classroom",
                                        "tier": None, "capacity": 20, "created_at": now} for r in range(500)])
        await c.execute(insert(DeviceModel), [{"id": 1, "vendor": "Acme", "model_number": "T10", "kind": "terminal",
                                               "transport": "mqtt", "unit_price": Decimal("300"), "warranty_months": 24,
                                               "supplier": "Acme", "profile_key": "terminal-lt100", "created_at": now}])
        await c.execute(insert(Device), [{"id": 1 + d, "vendor": "Acme", "serial_number": f"B{d:05d}",
                                          "asset_tag": f"BA{d:05d}", "model_id": 1, "school_id": 1,
                                          "room_id": 1 + d % 500, "status": "in_service", "ownership": "owned",
                                          "created_at": now, "updated_at": now} for d in range(devices)])
        await c.execute(insert(DeviceCredential), [{"device_id": 1 + d, "username": f"B{d:05d}", "school_code": SCHOOL,
                                                    "password_hash": pw_hash, "created_at": now}
                                                   for d in range(devices)])
    await engine.dispose()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(args: argparse.Namespace) -> dict[str, object]:
    from fleet.domain.clock import SystemClock
    from fleet.persistence.db import create_engine, session_factory, upgrade
    from fleet.runtime.brokers import BrokerAuthority, MosquittoBroker, free_port
    from fleet.runtime.ingest import IngestService
    from fleet.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="labfleet-bench-ingest-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    n = args.devices * args.per_device
    try:
        await upgrade(url)
        await seed(url, args.devices)
        port = free_port()
        settings = Settings(database_url=url, mqtt={"broker": "mosquitto", "listen_port": port,  # type: ignore[arg-type]
                                                    "data_dir": str(tmp / "mq"), "service_password": SVC_PW})
        engine = create_engine(url)
        sessions = session_factory(engine)
        authority = BrokerAuthority(sessions, wire.Topics("labfleet"), SVC_USER, SVC_PW)
        async with MosquittoBroker(settings, authority) as broker:
            # (a) bare paho subscriber, its own process
            sub = subprocess.Popen([sys.executable, __file__, "--paho", str(port), str(n)], stdout=subprocess.PIPE,
                                   text=True)
            assert sub.stdout is not None
            sub.stdout.readline()
            await asyncio.sleep(0.3)
            pub = spawn_publisher(port, args.devices, args.per_device, 0, 1)
            out_a = json.loads((await asyncio.to_thread(sub.communicate, None, 600))[0].strip().splitlines()[-1])
            pub.wait(60)
            a = float(out_a["rate"])
            print(f"(a) bare paho subscriber, QoS 1: {a:,.0f} msg/s ({out_a['received']} messages)")

            # (b) end-to-end through the ingest service into SQLite
            ingest = IngestService(settings, sessions, SystemClock(), address=broker.address,
                                   client_id="labfleet-ingest-bench", shared=False)
            async with ingest:
                await ingest.wait_connected()
                t0 = time.monotonic()
                pub = spawn_publisher(port, args.devices, args.per_device, 0, 1)
                while ingest.stats.committed < n:
                    await asyncio.sleep(0.005)
                    if time.monotonic() - t0 > 600:
                        raise RuntimeError(f"ingest stalled at {ingest.stats}")
                b_seconds = time.monotonic() - t0
                await asyncio.to_thread(pub.wait, 60)
                b = n / b_seconds
                print(f"(b) end-to-end publish -> state committed (SQLite), {args.devices:,} devices: {b:,.0f} msg/s "
                      f"({n:,} messages in {b_seconds:.2f} s, {ingest.stats.batches} commits, "
                      f"{ingest.stats.duplicates} duplicates)")

                # (c) latency at 1,000 msg/s: commit time minus the publisher's timestamp, per message
                latencies: list[float] = []
                orig_flush = ingest.flush

                async def timed_flush() -> None:
                    items = list(ingest._pending.items)
                    await orig_flush()
                    now_ms = time.time() * 1000
                    latencies.extend(now_ms - it.value.ts_ms for it in items)  # type: ignore[union-attr]

                ingest.flush = timed_flush  # type: ignore[method-assign]
                per = max(1, int(1000 * args.latency_seconds) // args.devices)
                devs = min(args.devices, 1000 * args.latency_seconds)
                pub = spawn_publisher(port, devs, per, 1000.0, 1 + args.per_device)
                await asyncio.to_thread(pub.wait, 600)
                target = n + devs * per
                while ingest.stats.committed < target:
                    await asyncio.sleep(0.01)
                latencies.sort()
                p50 = latencies[len(latencies) // 2]
                p99 = latencies[int(len(latencies) * 0.99) - 1]
                print(f"(c) heartbeat->state latency at 1,000 msg/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
                      f"({len(latencies):,} messages)")
            rss = rss_mb()
            print(f"    b/a = {b / a:.2f}; service peak RSS {rss:.0f} MB")
        await engine.dispose()
        return {"benchmark": "ingest", "devices": args.devices, "messages": n, "a_paho_msg_s": round(a),
                "b_end_to_end_msg_s": round(b), "b_over_a": round(b / a, 3), "p50_ms": round(p50, 1),
                "p99_ms": round(p99, 1), "rss_mb": round(rss, 1),
                "targets": {"b": 10000, "b_over_a": 0.6, "p99_ms": 250, "rss_mb": 200},
                "met": {"b": b >= 10000, "b_over_a": b / a >= 0.6, "p99_ms": p99 <= 250, "rss_mb": rss <= 200}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        port, devices, per, rate, start = sys.argv[2:7]
        publisher(int(port), int(devices), int(per), float(rate), int(start))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--paho":
        paho_subscriber(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--per-device", type=int, default=5)
    parser.add_argument("--latency-seconds", type=int, default=10)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result))
