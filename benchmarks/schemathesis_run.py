"""schemathesis against a loopback LabFleet: every operation, `--checks all`, as admin, auditor and a
school-scoped technician. Prints each role's counts and ends with one JSON line.

    .venv/bin/python benchmarks/schemathesis_run.py              # the longer run (100 examples per operation)
    .venv/bin/python benchmarks/schemathesis_run.py --max-examples 5 --roles admin   # what CI runs

The service runs in this process (uvicorn on 127.0.0.1, a fresh SQLite file, a small seeded district); each
role is one `schemathesis run` subprocess. Exit status 0 only when every run finds no failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.services.tokens import create_token
from fleet.settings import Settings

ROLES = ("admin", "auditor", "technician")
# Operations that do not answer a random caller quickly or are not part of the contract under test:
# the signed download is reached through links the service makes (its sig is a 64-hex HMAC).
EXCLUDE_PATH_REGEX = r"^/api/v1/artifacts/\{sha256\}/download$"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _token(url: str, clock: FakeClock, role: str) -> str:
    engine = create_engine(url)
    try:
        async with unit_of_work(session_factory(engine)) as session:
            scoped = role == "technician"
            _, plain = await create_token(
                session,
                principal=SYSTEM,
                at=clock.now(),
                name=f"schemathesis-{role}",
                role=Role(role),
                school_ids=[1] if scoped else [],
                district_wide=not scoped,
            )
        return plain
    finally:
        await engine.dispose()


async def seed(base: str, url: str, clock: FakeClock) -> dict[str, str]:
    """A district with two schools, rooms, a device, periods; one token per role (technician: school 1)."""
    tokens = {"admin": await _token(url, clock, "admin")}
    h = {"Authorization": f"Bearer {tokens['admin']}"}
    async with httpx.AsyncClient(base_url=base, headers=h, timeout=30) as c:
        d = (await c.post("/api/v1/districts", json={"name": "Probe District"})).json()
        m = (
            await c.post(
                "/api/v1/device-models",
                json={
                    "vendor": "EduTech",
                    "model_number": "LT-100",
                    "kind": "terminal",
                    "transport": "mqtt",
                    "unit_price": "329.00",
                    "warranty_months": 36,
                    "supplier": "EduTech Supply",
                },
            )
        ).json()
        for i in (1, 2):
            s = (
                await c.post(
                    "/api/v1/schools",
                    json={"district_id": d["id"], "code": f"s{i}", "name": f"School {i}", "uplink_mbps": 100},
                )
            ).json()
            r = (
                await c.post(
                    "/api/v1/rooms", json={"school_id": s["id"], "name": "Lab", "kind": "digital_lab"}
                )
            ).json()
            await c.post(
                "/api/v1/devices",
                json={
                    "serial_number": f"SN-{i}",
                    "asset_tag": f"AT-{i}",
                    "model_id": m["id"],
                    "school_id": s["id"],
                    "room_id": r["id"],
                },
            )
            await c.post(
                "/api/v1/bell-periods",
                json={
                    "school_id": s["id"],
                    "weekday": 0,
                    "name": "P1",
                    "start_time": "08:00",
                    "end_time": "08:40",
                },
            )
    for role in ROLES[1:]:
        tokens[role] = await _token(url, clock, role)
    return tokens


def run_schemathesis(
    url: str,
    token: str,
    max_examples: int,
    seed_: int,
    workers: int,
    exclude_checks: str = "",
    phases: str = "",
    max_time: float = 0,
) -> dict[str, Any]:
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(ROOT / "benchmarks" / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed_),
        "--workers",
        str(workers),
        "--generation-deterministic",
        "--exclude-path-regex",
        EXCLUDE_PATH_REGEX,
        "--request-timeout",
        "30",
        "-H",
        f"Authorization: Bearer {token}",
    ]
    if exclude_checks:
        cmd += ["--exclude-checks", exclude_checks]
    if phases:
        cmd += ["--phases", phases]
    if max_time > 0:  # a time budget: fuzzing and stateful testing repeat until it is spent
        cmd += ["--max-time", str(max(1, int(max_time)))]
    started = time.perf_counter()
    # In a temporary directory: schemathesis keeps its example database under the working directory.
    with tempfile.TemporaryDirectory(prefix="labfleet-st-") as cwd:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600, cwd=cwd)
    out = proc.stdout + proc.stderr
    counts = {"exit": proc.returncode, "seconds": round(time.perf_counter() - started, 1)}
    # schemathesis' per-phase lines ("N passed  N failed  N skipped", one per phase: examples, coverage,
    # fuzzing, stateful), summed over the phases, and the test-case count.
    phase_lines = [
        line
        for line in out.splitlines()
        if re.search(r"\d+ (passed|failed|skipped|errored)", line) and "generated" not in line
    ]
    for key in ("passed", "failed", "errored", "skipped"):
        counts[key] = sum(int(n) for line in phase_lines for n in re.findall(rf"(\d+) {key}", line))
    m = re.search(r"(\d+) generated", out) or re.search(r"Test cases:\s*(\d+)", out)
    counts["test_cases"] = int(m[1]) if m else None
    counts["failures"] = len(re.findall(r"^_+ .+ _+$", out, re.MULTILINE))
    counts["output"] = out
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-examples", type=int, default=100)
    ap.add_argument("--roles", default=",".join(ROLES))
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--show", action="store_true", help="print schemathesis' full output")
    ap.add_argument("--exclude-checks", default="", help="comma-separated schemathesis checks to skip")
    ap.add_argument("--phases", default="", help="schemathesis phases (default: all)")
    ap.add_argument("--max-time", type=float, default=0, help="seconds per role (0: no time budget)")
    args = ap.parse_args(argv)
    roles = [r for r in args.roles.split(",") if r]

    tmp = Path(tempfile.mkdtemp(prefix="labfleet-schemathesis-"))
    url = f"sqlite+aiosqlite:///{tmp}/probe.db"
    upgrade_sync(url)
    clock = FakeClock(datetime(2026, 9, 7, 7, 55, tzinfo=UTC))
    settings = Settings(database_url=url, rollouts={"artifact_dir": str(tmp / "artifacts")})  # type: ignore[arg-type]
    app = create_app(settings, clock=clock, migrate=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="labfleet-under-test", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        tokens = asyncio.run(seed(base, url, clock))
        for role in roles:
            res = run_schemathesis(
                base,
                tokens[role],
                args.max_examples,
                args.seed,
                args.workers,
                args.exclude_checks,
                args.phases,
                args.max_time,
            )
            output = res.pop("output")
            if args.show or res["exit"] != 0:
                print(output[-60000:])
            print(f"{role}: {res}")
            results[role] = res
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    ok = all(r["exit"] == 0 for r in results.values())
    print(
        json.dumps(
            {
                "benchmark": "schemathesis",
                "max_examples": args.max_examples,
                "excluded_checks": args.exclude_checks,
                "ok": ok,
                **{f"{role}_{k}": v for role, r in results.items() for k, v in r.items()},
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
