"""A real Prometheus server (Debian's `prometheus`) on a free loopback port, for integration tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import need_external

# 30 s: Prometheus is ready in ~1-2 s on the dev machine; a loaded CI box gets plenty of slack.
READY_TIMEOUT_S = 30.0
# 10 s: a clean shutdown flushes the head block; past that it is killed.
STOP_TIMEOUT_S = 10.0
# 0.2 s between polls of the HTTP API while waiting for a condition (not a timing assertion).
POLL_S = 0.2

Sample = tuple[dict[str, str], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> list[Sample]:
        """Instant query through /api/v1/query; vector results as (labels, value)."""
        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait_for(self, expr: str, ok: Callable[[list[Sample]], bool], timeout: float = 30.0) -> list[Sample]:
        """Poll until `ok(query(expr))`; fail with the last result and the server log after `timeout`."""
        deadline = time.monotonic() + timeout
        last: list[Sample] = []
        while time.monotonic() < deadline:
            last = self.query(expr)
            if ok(last):
                return last
            time.sleep(POLL_S)
        log = self.log_path.read_text()[-2000:]
        raise AssertionError(
            f"{expr} never satisfied the condition; last result {last}\nprometheus log:\n{log}"
        )

    def targets_up(self) -> dict[str, str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            body = json.load(resp)
        return {
            t["scrapePool"] + " " + t["labels"]["instance"]: t["health"]
            for t in body["data"]["activeTargets"]
        }


def prometheus_binary() -> str:
    """The `prometheus` binary; skips the test, or fails it when LABFLEET_TEST_REQUIRE_EXTERNAL=1."""
    binary = shutil.which("prometheus")
    if binary is None:
        need_external("prometheus (Debian package prometheus)")
    assert binary is not None
    return binary


@contextmanager
def run_prometheus(
    workdir: Path,
    scrape_configs: list[dict[str, Any]],
    rule_files: list[Path] = (),
    scrape_interval: str = "1s",
) -> Iterator[PrometheusServer]:
    """Start Prometheus with the given jobs and rule files; stop it (by pid) on exit."""
    binary = prometheus_binary()
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": scrape_configs,
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited with {process.returncode}:\n{log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready after {READY_TIMEOUT_S} s")
            time.sleep(POLL_S)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
