"""Telemetry ingest throughput and latency against mosquitto on loopback, with a same-run baseline.

    .venv/bin/python benchmarks/ingest.py [--devices 10000] [--per-device 5] [--latency-seconds 10] \
        [--workers 2]

(a) bare receive rate of a plain paho subscriber (QoS 1, auto-ack, its own loop), in its own process;
(b) end-to-end rate, publish -> latest state committed in SQLite, of the ingest service (one worker, this
    process: paho driven from the asyncio loop, acks after commit) for `--devices` simulated device ids;
(c) b/a, the p99 heartbeat->state latency with the publisher paced at 1,000 msg/s, and the service's peak RSS.

(a) and (b) run twice: live (the publisher runs meanwhile, on the same 2 cores) and draining a backlog already
queued in the broker for the subscriber's persistent session (the generator is idle while measured). With
--workers N > 1, N `labfleet ingest` worker processes on one $share subscription also ingest a live run into
the same SQLite file, for the aggregate rate.

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

from fleet.compat.paho import unacknowledged
from fleet.domain import wire

SVC_USER, SVC_PW = "labfleet-service", "bench-secret"
SCHOOL = "BENCH1"
# Publisher connections: "many device ids over a few connections" (holding 10,000 is the simulator's job).
PUB_CONNECTIONS = 4


# ------------------------------------------------------------------ publisher (child process)
def publisher(port: int, devices: int, per_device: int, rate: float, seq_start: int) -> None:
    """Send devices x per_device telemetry messages (QoS 1); rate 0 = as fast as the broker takes them."""
    import paho.mqtt.client as mqtt

    topics = wire.Topics("labfleet")
    # The codec's bytes, cached: the publisher shares the 2 cores with the service it measures, so its cost
    # per message stays at one format (as when this body was a literal), not a full encode.
    reading = wire.TelemetryTemplate(77, 36.5, None, "2.4.1", None, 120, 900, -55, None)
    clients = []
    for i in range(PUB_CONNECTIONS):
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}-{i}", clean_session=True
        )
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
            body = reading(seq, ts)
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
    while any(unacknowledged(c) or c.want_write() for c in clients):
        _pump(clients)
        time.sleep(0.001)
    for c in clients:
        c.disconnect()
    print(json.dumps({"published": total, "seconds": round(time.monotonic() - started, 3)}), flush=True)


def _pump(clients: list) -> None:
    """Read the broker's PUBACKs and write what paho still holds, without blocking."""
    for c in clients:
        c.loop_read()
        if c.want_write():
            c.loop_write()


def spawn_publisher(
    port: int, devices: int, per_device: int, rate: float, seq_start: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--publish",
            str(port),
            str(devices),
            str(per_device),
            str(rate),
            str(seq_start),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


# ------------------------------------------------------------------ (a) bare paho subscriber (child process)
def paho_subscriber(port: int, expect: int, client_id: str, persistent: bool) -> None:
    """A plain paho subscriber (QoS 1, auto-ack, its own loop). persistent: a clean_session False session that
    first subscribes and leaves (so the broker queues for it), waits for "go" on stdin, then drains."""
    import paho.mqtt.client as mqtt

    got = 0
    first = last = 0.0

    def on_message(_c, _u, _m) -> None:
        nonlocal got, first, last
        got += 1
        last = time.monotonic()
        if got == 1:
            first = last

    def client() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        c.username_pw_set(SVC_USER, SVC_PW)
        c.on_message = on_message
        return c

    c = client()
    c.connect("127.0.0.1", port)
    c.subscribe(wire.Topics("labfleet").uplink_filter(wire.Channel.TELEMETRY), qos=1)
    while not c.is_connected():
        c.loop(0.05)
    c.loop(0.2)  # the SUBACK
    if persistent:
        c.disconnect()
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()  # the backlog is in the broker
        c = client()
        c.connect("127.0.0.1", port)
    else:
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
        await c.execute(
            insert(School),
            [
                {
                    "id": 1,
                    "district_id": 1,
                    "code": SCHOOL,
                    "name": "Bench school",
                    "uplink_mbps": 1000,
                    "timezone": "UTC",
                    "created_at": now,
                }
            ],
        )
        await c.execute(
            insert(Room),
            [
                {
                    "id": 1 + r,
                    "school_id": 1,
                    "name": f"Room {r}",
                    "kind": "smart_classroom",
                    "tier": None,
                    "capacity": 20,
                    "created_at": now,
                }
                for r in range(500)
            ],
        )
        await c.execute(
            insert(DeviceModel),
            [
                {
                    "id": 1,
                    "vendor": "Acme",
                    "model_number": "T10",
                    "kind": "terminal",
                    "transport": "mqtt",
                    "unit_price": Decimal(300),
                    "warranty_months": 24,
                    "supplier": "Acme",
                    "profile_key": "terminal-lt100",
                    "created_at": now,
                }
            ],
        )
        await c.execute(
            insert(Device),
            [
                {
                    "id": 1 + d,
                    "vendor": "Acme",
                    "serial_number": f"B{d:05d}",
                    "asset_tag": f"BA{d:05d}",
                    "model_id": 1,
                    "school_id": 1,
                    "room_id": 1 + d % 500,
                    "status": "in_service",
                    "ownership": "owned",
                    "created_at": now,
                    "updated_at": now,
                }
                for d in range(devices)
            ],
        )
        await c.execute(
            insert(DeviceCredential),
            [
                {
                    "device_id": 1 + d,
                    "username": f"B{d:05d}",
                    "school_code": SCHOOL,
                    "password_hash": pw_hash,
                    "created_at": now,
                }
                for d in range(devices)
            ],
        )
    await engine.dispose()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def committed_total(sessions) -> int:
    from sqlalchemy import func, select

    from fleet.persistence.models_mqtt import DeviceState

    async with sessions() as s:
        return int(
            (await s.execute(select(func.coalesce(func.sum(DeviceState.messages_total), 0)))).scalar_one()
        )


def bare_paho(port: int, n: int, devices: int, per_device: int, seq_start: int, *, drain: bool) -> float:
    """(a) in its own process; drain: the whole backlog is in the broker before the subscriber reconnects."""
    sub = subprocess.Popen(
        [sys.executable, __file__, "--paho", str(port), str(n), f"bench-paho-{int(drain)}", str(int(drain))],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None and sub.stdin is not None
    sub.stdout.readline()
    pub = spawn_publisher(port, devices, per_device, 0, seq_start)
    if drain:
        pub.wait(300)
        sub.stdin.write("go\n")
        sub.stdin.flush()
    out = json.loads(sub.communicate(None, 600)[0].strip().splitlines()[-1])
    pub.wait(60)
    if out["received"] < n:
        raise RuntimeError(f"bare paho subscriber got {out['received']} of {n}")
    return float(out["rate"])


def spawn_worker(url: str, port: int, index: int, log: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        LABFLEET_DATABASE_URL=url,
        LABFLEET_MQTT__INGEST_SHARED="true",
        LABFLEET_MQTT__BROKER="external",
        LABFLEET_MQTT__URL=f"mqtt://127.0.0.1:{port}",
        LABFLEET_MQTT__SERVICE_USERNAME=SVC_USER,
        LABFLEET_MQTT__SERVICE_PASSWORD=SVC_PW,
        LABFLEET_MQTT__TOPIC_PREFIX="labfleet",
        LABFLEET_LOG_LEVEL="WARNING",
    )
    # The child gets its own copy of the log's descriptor: the parent's closes once the process has started.
    with open(log, "a") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet.runtime.worker", "--index", str(index)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    return proc


async def workers_live(
    url: str,
    port: int,
    sessions,
    workers: int,
    devices: int,
    per_device: int,
    seq_start: int,
    tmp: Path,
) -> tuple[float, list[int]]:
    """N `labfleet ingest` worker processes on one $share subscription, same SQLite, while the publisher runs.

    Live, not draining: mosquitto 2.0 does not queue messages of a shared subscription for a member that is
    offline, so a backlog cannot be prepared for the group (the README's known limit)."""
    before = await committed_total(sessions)
    n = devices * per_device
    procs = [spawn_worker(url, port, i, tmp / f"worker-{i}.log") for i in range(workers)]
    try:
        lines = await asyncio.gather(*(asyncio.to_thread(p.stdout.readline) for p in procs))
        assert all('"connected"' in line for line in lines), lines
        t0 = time.monotonic()
        pub = spawn_publisher(port, devices, per_device, 0, seq_start)
        while await committed_total(sessions) - before < n:
            await asyncio.sleep(0.02)
            if time.monotonic() - t0 > 600:
                raise RuntimeError("workers stalled")
        seconds = time.monotonic() - t0
        await asyncio.to_thread(pub.wait, 60)
    finally:
        for p in procs:
            p.terminate()
    shares = []
    for p in procs:
        out, _ = await asyncio.to_thread(p.communicate, None, 60)
        shares.append(int(json.loads(out.strip().splitlines()[-1]).get("new", 0)))
    return n / seconds, shares


async def main(args: argparse.Namespace) -> dict[str, object]:
    from fleet.domain.clock import SystemClock
    from fleet.persistence.db import create_engine, session_factory, upgrade
    from fleet.runtime.brokers import BrokerAuthority, MosquittoBroker, free_port
    from fleet.runtime.ingest import IngestService
    from fleet.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="labfleet-bench-ingest-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    per = args.per_device
    n = args.devices * per
    seq = 1  # every phase publishes fresh sequence numbers, so each message is new to the database
    try:
        await upgrade(url)
        await seed(url, args.devices)
        port = free_port()
        settings = Settings(
            database_url=url,
            mqtt={
                "broker": "mosquitto",
                "listen_port": port,
                "data_dir": str(tmp / "mq"),
                "service_password": SVC_PW,
            },
        )
        engine = create_engine(url)
        sessions = session_factory(engine)
        authority = BrokerAuthority(sessions, wire.Topics("labfleet"), SVC_USER, SVC_PW)
        async with MosquittoBroker(settings, authority) as broker:
            # Every client here logs in with the service identity (the publisher carries many device ids over
            # a few connections), so all of them use the service's own listener: the device listener replaces
            # a client id by the username, and several service clients there would take each other's session.
            port = broker.service_port
            # (a) live: a bare paho subscriber while the publisher runs
            a = await asyncio.to_thread(bare_paho, port, n, args.devices, per, seq, drain=False)
            print(f"(a) bare paho subscriber, QoS 1, live: {a:,.0f} msg/s ({n:,} messages)")

            # (b) live: end-to-end through the ingest service (this process) into SQLite
            ingest = IngestService(
                settings,
                sessions,
                SystemClock(),
                address=broker.address,
                client_id="labfleet-ingest-bench",
                shared=False,
            )
            async with ingest:
                await ingest.wait_connected()
                cpu0 = time.process_time()
                t0 = time.monotonic()
                pub = spawn_publisher(port, args.devices, per, 0, seq)
                while ingest.stats.committed < n:
                    await asyncio.sleep(0.005)
                    if time.monotonic() - t0 > 600:
                        raise RuntimeError(f"ingest stalled at {ingest.stats}")
                b_seconds = time.monotonic() - t0
                b_cpu_us = (time.process_time() - cpu0) / n * 1e6
                await asyncio.to_thread(pub.wait, 60)
                seq += per
                b = n / b_seconds
                print(
                    f"(b) end-to-end publish -> state committed (SQLite), {args.devices:,} devices, live: "
                    f"{b:,.0f} msg/s ({n:,} messages in {b_seconds:.2f} s, {ingest.stats.batches} commits, "
                    f"{ingest.stats.duplicates} duplicates; service CPU {b_cpu_us:.0f} us/msg)"
                )

                # (c) latency at 1,000 msg/s: commit time minus the publisher's timestamp, per message
                latencies: list[float] = []
                orig_flush = ingest.flush

                async def timed_flush() -> None:
                    items = list(ingest._pending.items)
                    await orig_flush()
                    now_ms = time.time() * 1000
                    latencies.extend(now_ms - it.value.ts_ms for it in items)

                ingest.flush = timed_flush
                lat_per = max(1, int(1000 * args.latency_seconds) // args.devices)
                devs = min(args.devices, 1000 * args.latency_seconds)
                pub = spawn_publisher(port, devs, lat_per, 1000.0, seq)
                await asyncio.to_thread(pub.wait, 600)
                target = n + devs * lat_per
                while ingest.stats.committed < target:
                    await asyncio.sleep(0.01)
                seq += lat_per
                latencies.sort()
                p50 = latencies[len(latencies) // 2]
                p99 = latencies[int(len(latencies) * 0.99) - 1]
                print(
                    f"(c) heartbeat->state latency at 1,000 msg/s: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
                    f"({len(latencies):,} messages)"
                )
                ingest.flush = orig_flush
            rss = rss_mb()
            print(f"    live b/a = {b / a:.2f}; service peak RSS {rss:.0f} MB")

            # Drain: the backlog is already in the broker (a bell storm the service is catching up on), so
            # the generator's CPU is not shared with the subscriber while it is measured.
            a_drain = await asyncio.to_thread(bare_paho, port, n, args.devices, per, seq, drain=True)
            seq += per
            print(f"(a) bare paho subscriber, QoS 1, draining a {n:,}-message backlog: {a_drain:,.0f} msg/s")
            ingest = IngestService(
                settings,
                sessions,
                SystemClock(),
                address=broker.address,
                client_id="labfleet-ingest-drain",
                shared=False,
            )
            async with ingest:
                await ingest.wait_connected()
            pub = spawn_publisher(port, args.devices, per, 0, seq)
            await asyncio.to_thread(pub.wait, 300)
            seq += per
            ingest = IngestService(
                settings,
                sessions,
                SystemClock(),
                address=broker.address,
                client_id="labfleet-ingest-drain",
                shared=False,
            )
            async with ingest:
                # __aenter__ has loaded the device directory and started connecting: the backlog flows from
                # here.
                cpu0 = time.process_time()
                t0 = time.monotonic()
                while ingest.stats.committed < n:
                    await asyncio.sleep(0.005)
                    if time.monotonic() - t0 > 600:
                        raise RuntimeError(f"ingest stalled at {ingest.stats}")
                b_drain_seconds = time.monotonic() - t0
            b_drain = n / b_drain_seconds
            b_drain_cpu_us = (time.process_time() - cpu0) / n * 1e6
            print(
                f"(b) end-to-end, draining the same backlog into SQLite: {b_drain:,.0f} msg/s "
                f"(service CPU {b_drain_cpu_us:.0f} us/msg); b/a {b_drain / a_drain:.2f}"
            )
            w_rate: float | None = None
            shares: list[int] = []
            if args.workers > 1:
                w_rate, shares = await workers_live(
                    url, port, sessions, args.workers, args.devices, per, seq, tmp
                )
                seq += per
                print(
                    f"(b) {args.workers} ingest worker processes on one $share subscription, same SQLite, "
                    "live: "
                    f"{w_rate:,.0f} msg/s aggregate (messages per worker {shares}; compare live b {b:,.0f})"
                )
            rss = rss_mb()
        await engine.dispose()
        best_b = max(b, b_drain, w_rate or 0.0)
        return {
            "benchmark": "ingest",
            "devices": args.devices,
            "messages_per_phase": n,
            "a_paho_msg_s": round(a),
            "b_end_to_end_msg_s": round(b),
            "b_over_a": round(b / a, 3),
            "a_drain_msg_s": round(a_drain),
            "b_drain_msg_s": round(b_drain),
            "b_drain_over_a_drain": round(b_drain / a_drain, 3),
            "service_cpu_us_per_msg": round(b_drain_cpu_us),
            "workers": args.workers,
            "b_workers_live_msg_s": round(w_rate) if w_rate else None,
            "worker_shares": shares,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "rss_mb": round(rss, 1),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "targets": {"b": 10000, "b_over_a": 0.6, "p99_ms": 250, "rss_mb": 200},
            "met": {
                "b": best_b >= 10000,
                "b_over_a": b / a >= 0.6 and b_drain / a_drain >= 0.6,
                "p99_ms": p99 <= 250,
                "rss_mb": rss <= 200,
            },
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        port, devices, per, rate, start = sys.argv[2:7]
        publisher(int(port), int(devices), int(per), float(rate), int(start))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--paho":
        paho_subscriber(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1")
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--per-device", type=int, default=5)
    parser.add_argument("--latency-seconds", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, default=2, help="ingest worker processes for the $share drain phase"
    )
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result))
