"""Ingest workers as processes: `labfleet ingest --workers N` (one host) or `--index I` (one worker).

Each worker is one IngestService with a stable client id (`labfleet-ingest-<index>`), so the broker keeps
its persistent session, and the unacknowledged messages in it, across a crash or restart of that worker. All
workers join one shared subscription group, so mosquitto or EMQX splits the stream between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
from dataclasses import asdict
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry

from fleet.domain.clock import SystemClock
from fleet.observability.exposition import MetricsAccess
from fleet.observability.http import serve_metrics_thread
from fleet.observability.metrics import FleetMetrics
from fleet.persistence.db import create_engine, session_factory
from fleet.runtime.ingest import IngestService
from fleet.settings import Settings

logger = logging.getLogger(__name__)

# A supervised worker that dies is restarted after this pause (a crash loop costs one restart a second).
RESTART_PAUSE_S = 1.0


async def run_worker(settings: Settings, index: int, *, stop: asyncio.Event | None = None) -> dict[str, int]:
    """Run one ingest worker until SIGTERM/SIGINT (or `stop`); returns its counters."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    engine = create_engine(settings.database_url)
    # Its own registry and /metrics (prometheus.yml's labfleet-ingest job): messages, batches, lag, bytes per
    # school.
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    httpd = _metrics_server(settings, registry, index)
    try:
        ingest = IngestService(
            settings,
            session_factory(engine),
            SystemClock(),
            client_id=f"labfleet-ingest-{index}",
            metrics=metrics,
            shared=settings.mqtt.ingest_shared and settings.mqtt.broker != "embedded",
        )
        async with ingest:
            logger.info("ingest worker %d started", index)
            # One line on stdout when connected, so a supervisor (or a test) knows the worker is live.
            await ingest.wait_connected(timeout=30)
            print(
                json.dumps(
                    {
                        "worker": index,
                        "state": "connected",
                        "metrics_port": httpd.server_port if httpd else None,
                    }
                ),
                flush=True,
            )
            await stop.wait()
            await ingest.drain()  # stop reading, commit (and ack) what was taken in, then leave
        stats = asdict(ingest.stats)
        print(json.dumps({"worker": index, "state": "stopped", **stats}), flush=True)
        return stats
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        await engine.dispose()


def _metrics_server(settings: Settings, registry: CollectorRegistry, index: int) -> WSGIServer | None:
    """Serve this worker's /metrics on worker_port_base + index; a taken port costs the metrics, not the
    worker."""
    cfg = settings.metrics
    if not cfg.worker_port_base:
        return None
    port = cfg.worker_port_base + index
    access = MetricsAccess.from_settings(cfg.allowed_networks, cfg.token or None)
    try:
        return serve_metrics_thread(registry, access, cfg.worker_host, port)
    except OSError as err:
        logger.warning(
            "ingest worker %d serves no /metrics: %s:%d is unavailable (%s)",
            index,
            cfg.worker_host,
            port,
            err,
        )
        return None


def run_workers(n: int, *, python: str = sys.executable) -> int:
    """Start N worker processes and restart any that dies, until Ctrl-C / SIGTERM."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    import os

    # More than one worker must split the stream through the shared subscription group.
    env = dict(os.environ, LABFLEET_MQTT__INGEST_SHARED="true") if n > 1 else None

    def start(i: int) -> None:
        procs[i] = subprocess.Popen([python, "-m", "fleet.runtime.worker", "--index", str(i)], env=env)

    def halt(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, halt)
    signal.signal(signal.SIGINT, halt)
    for i in range(n):
        start(i)
    import time

    while not stopping:
        time.sleep(0.5)
        for i, p in list(procs.items()):
            if p.poll() is not None and not stopping:
                logger.warning("ingest worker %d exited with %s; restarting", i, p.returncode)
                time.sleep(RESTART_PAUSE_S)
                start(i)
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="one LabFleet ingest worker")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(settings, args.index))


if __name__ == "__main__":
    main()
