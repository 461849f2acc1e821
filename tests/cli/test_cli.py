"""The `labfleet` command as a user runs it: real processes, a real SQLite file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.csvgen import delivery_csv

LABFLEET = str(Path(sys.executable).parent / "labfleet")


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [LABFLEET, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "LABFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db", "COLUMNS": "120"}


def test_seed_token_import_export_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    run(env, "db", "upgrade")
    out = run(env, "seed", "demo").stdout
    assert "3 schools" in out and "devices" in out
    assert run(env, "seed", "demo", ok=False).returncode == 1  # refuses to run twice, with a reason
    token = run(
        env, "token", "create", "--role", "technician", "--school", "1", "--name", "bench"
    ).stdout.strip()
    assert token.startswith("lf_")
    listing = run(env, "token", "list").stdout
    assert "bench" in listing and token.split("_")[-1] not in listing

    csv = tmp_path / "delivery.csv"
    csv.write_text(delivery_csv(1500, school_code="north-primary", room="Classroom 1"))
    proc = run(env, "import", "devices", str(csv))
    assert "imported 1500 devices" in proc.stdout
    assert "inserting" in proc.stderr and "1500/1500" in proc.stderr  # the progress bar reached the end

    bad = tmp_path / "bad.csv"
    lines = csv.read_text().replace("DLV-", "NEW-").splitlines()
    lines[3] = lines[3].replace("owned", "borrowed").replace("leased", "borrowed")
    bad.write_text("\n".join(lines) + "\n")
    proc = run(env, "import", "devices", str(bad), ok=False)
    assert proc.returncode == 1
    assert "nothing was imported" in proc.stderr and "ownership" in proc.stderr

    exported = tmp_path / "out.csv"
    run(env, "export", "devices", "--out", str(exported), "--school", "1")
    rows = exported.read_text().splitlines()
    assert rows[0].startswith("serial_number,asset_tag")
    assert sum(1 for r in rows if r.startswith("DLV-")) == 1500


def test_import_of_a_missing_file_says_so(env: dict[str, str]) -> None:
    proc = run(env, "import", "devices", "/nonexistent.csv", ok=False)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_migrates_and_answers_healthz(env: dict[str, str]) -> None:
    port = _free_port()
    env = {**env, "LABFLEET_MQTT__BROKER": "none"}
    proc = subprocess.Popen(
        [LABFLEET, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as r:
            assert b"/api/v1/imports/devices" in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=5) as r:
            assert b"swagger" in r.read().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_credentials_rotate_takes_a_school_or_all(env: dict[str, str]) -> None:
    run(env, "db", "upgrade")
    run(env, "seed", "demo")
    assert "rotation queued for" in run(env, "credentials", "rotate", "--all", "--grace-hours", "2").stdout
    assert "no school with code" in run(env, "credentials", "rotate", "--school", "nope", ok=False).stderr
    assert run(env, "credentials", "rotate", ok=False).returncode == 2  # neither a school nor --all


def test_serve_speaks_https_with_the_district_ca_and_hsts(env: dict[str, str], tmp_path: Path) -> None:
    """`labfleet tls init`, then `serve` with LABFLEET_HTTP__TLS=true: a browser holding the district CA gets
    the console over HTTPS with HSTS; plain HTTP on that port gets no page."""
    import ssl

    port = _free_port()
    env = {**env, "LABFLEET_MQTT__BROKER": "none", "LABFLEET_TLS__DIR": str(tmp_path / "tls")}
    made = run(env, "tls", "init", "--name", "127.0.0.1")
    assert "PRIVATE KEY" not in made.stdout + made.stderr
    refused = run(
        {**env, "LABFLEET_TLS__DIR": str(tmp_path / "none"), "LABFLEET_HTTP__TLS": "true"}, "serve", ok=False
    )
    assert refused.returncode == 1 and "labfleet tls init" in refused.stderr  # a clear error, no traceback
    proc = subprocess.Popen(
        [LABFLEET, "serve", "--port", str(port)],
        env={**env, "LABFLEET_HTTP__TLS": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=2, context=ctx) as r:
                    assert r.status == 200
                    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"LabFleet on https://127.0.0.1:{port}" in out
