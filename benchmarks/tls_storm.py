"""The 08:00 bell over TLS against plain MQTT, in the same run: what the handshakes cost the storm.

One mosquitto with a plain and a TLS listener (TLS 1.2+, the district CA and an ECDSA P-256 server
certificate made by `labfleet tls init`'s code). The district simulator's connection pool
(simulators/district/mqttpool.py) connects N terminals on the plain listener, lets them go, then N on the TLS
listener, each verifying the broker against the CA. It prints the storm wall time, connects/s and CONNACK p99
of both, the TLS/plain ratio and the load average, and ends with one JSON line.

    .venv/bin/python benchmarks/tls_storm.py [--terminals 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.runtime.brokers import free_port, wait_for_port
from fleet.services import tls
from fleet.settings import TlsSettings
from simulators.district.mqttpool import Pool, raise_fd_limit

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# A storm that has not finished in this long has failed (10,000 plain connects take ~10 s on the dev box).
STORM_TIMEOUT_S = 300.0


def start_broker(tmp: Path, cfg: TlsSettings) -> tuple[subprocess.Popen[bytes], int, int]:
    files = tls.TlsFiles.from_settings(cfg)
    plain, secure = free_port(), free_port()
    user = "user root\n" if os.geteuid() == 0 else ""
    conf = tmp / "storm.conf"
    conf.write_text(
        f"per_listener_settings false\nallow_anonymous true\nmax_connections -1\n{user}"
        f"listener {plain} 127.0.0.1\n"
        f"listener {secure} 127.0.0.1\ncertfile {files.cert}\nkeyfile {files.key}\ntls_version tlsv1.2\n"
    )
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, plain, secure


async def storm(port: int, n: int, tag: str, ctx: ssl.SSLContext | None) -> dict[str, float]:
    """Connect n terminals through the simulator's pool; wall from the first connect to the last CONNACK."""
    pool = Pool("127.0.0.1", port, tls_context=ctx)
    pool.start()
    done = failed = 0
    latencies: list[float] = []
    finished = asyncio.Event()
    started: dict[str, float] = {}

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        nonlocal done
        pool.connecting.release()
        latencies.append(time.monotonic() - started[str(u)])
        done += 1
        if done + failed == n:
            finished.set()

    t0 = time.monotonic()
    for i in range(n):
        ident = f"{tag}-{i}"
        c = pool.new_client(ident, ident, "x", userdata=ident)
        c.on_connect = on_connect
        await pool.connecting.acquire()
        started[ident] = time.monotonic()
        rc = pool.connect(c, f"storm/{ident}/status", b"offline")
        if rc != paho.MQTT_ERR_SUCCESS:
            failed += 1
            pool.connecting.release()
        if i % 200 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(finished.wait(), STORM_TIMEOUT_S)
    wall = time.monotonic() - t0
    for c in list(pool.clients):
        c.disconnect()
    await pool.close()
    if failed:
        raise RuntimeError(f"{failed} of {n} {tag} connects failed")
    latencies.sort()
    return {
        "wall_s": round(wall, 3),
        "connects_per_s": round(n / wall, 1),
        "connack_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--terminals", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2, help="plain and TLS storms each; the best round counts")
    args = ap.parse_args()
    raise_fd_limit(args.terminals * 2 + 256)
    with tempfile.TemporaryDirectory(prefix="lf-tls-storm-") as d:
        tmp = Path(d)
        cfg = TlsSettings(dir=str(tmp / "tls"))
        tls.init(cfg, ["127.0.0.1"], datetime.now(UTC))
        ctx = tls.client_context(tls.ca_pem(cfg))
        proc, plain_port, tls_port = start_broker(tmp, cfg)
        try:
            await wait_for_port("127.0.0.1", plain_port, 10)
            await wait_for_port("127.0.0.1", tls_port, 10)
            plain_runs, tls_runs = [], []
            for r in range(args.rounds):  # interleaved, so a noisy neighbour hits both alike
                plain_runs.append(await storm(plain_port, args.terminals, f"p{r}", None))
                tls_runs.append(await storm(tls_port, args.terminals, f"t{r}", ctx))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    plain = min(plain_runs, key=lambda x: x["wall_s"])
    secure = min(tls_runs, key=lambda x: x["wall_s"])
    ratio = round(secure["wall_s"] / plain["wall_s"], 2)
    load = [round(x, 2) for x in os.getloadavg()]
    print(
        f"bell storm, {args.terminals} terminals, best of {args.rounds}, one mosquitto, the simulator's pool"
    )
    print(
        f"  plain MQTT : {plain['wall_s']:7.2f} s  {plain['connects_per_s']:8.1f} connects/s  "
        f"CONNACK p99 {plain['connack_p99_ms']} ms"
    )
    print(
        f"  MQTT/TLS   : {secure['wall_s']:7.2f} s  {secure['connects_per_s']:8.1f} connects/s  "
        f"CONNACK p99 {secure['connack_p99_ms']} ms"
    )
    print(f"  TLS / plain storm wall: x{ratio}   load average {load}")
    print(json.dumps({
        "benchmark": "tls_storm", "terminals": args.terminals, "rounds": args.rounds,
        "plain": plain, "tls": secure, "tls_over_plain_wall": ratio, "loadavg": load,
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
