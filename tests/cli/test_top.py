"""`labfleet top`: one frame over the real API, in process and as the installed command against `labfleet
serve`."""

from __future__ import annotations

import io
import stat
import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console
from sqlalchemy import update

from fleet.cli.simulate import announce
from fleet.cli.simulate_service import ServiceInfo
from fleet.cli.top import clock_line, run_top
from fleet.domain.enums import DeviceStatus, Role
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device
from tests.api.test_stats_peaks import Site, _morning, at, site  # noqa: F401 - `site` is a fixture
from tests.cli.test_cli import LABFLEET, _free_port, env, run  # noqa: F401 - `env` is a fixture
from tests.conftest import Api
from tests.factories import build_world


async def _frame(api: Api, token: str, **kw: object) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    app = api.client._transport.app
    await run_top(
        "http://top",
        token,
        once=True,
        interval=5,
        school=kw.get("school"),
        sort=str(kw.get("sort", "utilisation")),
        console=console,
        transport=httpx.ASGITransport(app=app),
    )
    return out.getvalue().replace("│", " ").replace("┃", " ")


async def test_one_frame_shows_online_against_expected_lessons_bandwidth_alerts_and_ingest(
    api: Api,
    site: Site,  # noqa: F811 - the fixture imported above
) -> None:
    await _morning(api, site)  # eight terminals came online in P1 and sent traffic; two went offline at 08:22
    api.clock.set(at(8, 24))
    holder = api.client._transport.app.state.fleet.snapshot
    holder.publish(await site.plane.build_snapshot())  # what the plane's snapshot loop publishes
    async with unit_of_work(api.sessions) as s:  # 12 of the 14 enrolled devices are in service (lifecycle)
        await s.execute(
            update(Device)
            .where(Device.serial_number.in_(site.serials[:12]))
            .values(status=DeviceStatus.IN_SERVICE.value)
        )
    text = await _frame(api, await api.token(Role.ADMIN), school="pk1")
    # pk1: six of the ten classroom terminals the timetable expects are online (the lab has no lesson in P1).
    row = next(line for line in text.splitlines() if line.strip().startswith("pk1 "))
    assert "6 / 10 (60%)" in row and "P1" in row
    # in service 12 (lifecycle status, not the 14 MQTT logins), 1 lesson in P1, 1 student session still on,
    # 8 x 75 kB in the 240 s window = 0.02 Mbit/s of a 1 Mbit/s uplink, 1.6% on the busier (up) direction, two
    # unexpected-offline alerts.
    assert row.split()[5:] == ["12", "1", "P1", "1", "0.02", "1", "1.6", "2", "warning"]
    assert "district: 1 schools" in text and "1 lessons in progress" in text
    assert "ingest: BROKER DISCONNECTED" in text  # no broker in this app
    # The school's periods today, from /stats/peaks.
    assert "pk1 2026-09-07 (school day)" in text
    p1 = next(line for line in text.splitlines() if line.strip().startswith("P1 "))
    assert p1.split()[:7] == ["P1", "08:00", "08:45", "in_progress", "10", "8", "80"]


async def test_a_scoped_token_sees_only_its_schools(api: Api, site: Site) -> None:  # noqa: F811
    await build_world(api)
    everyone = await _frame(api, await api.token(Role.ADMIN), sort="code")
    first = [line.split()[0] for line in everyone.splitlines() if line.strip()]
    assert [c for c in first if c in ("pk1", "school-a", "school-b")] == ["pk1", "school-a", "school-b"]
    mine = await _frame(api, await api.token(Role.PROCUREMENT, (site.school,)))
    assert "school-a" not in mine and "district: 1 schools" in mine


def test_the_command_prints_one_frame_from_a_running_service(env: dict[str, str]) -> None:  # noqa: F811
    run(env, "db", "upgrade")
    run(env, "seed", "demo")
    token = run(env, "token", "create", "--role", "it_staff", "--district").stdout.strip()
    port = _free_port()
    serve_env = {**env, "LABFLEET_MQTT__BROKER": "none"}
    proc = subprocess.Popen(
        [LABFLEET, "serve", "--port", str(port)],
        env=serve_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60  # a loaded machine takes a while to import and migrate
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        api = f"http://127.0.0.1:{port}"
        # --url: the name `labfleet simulate` prints for the service it starts (--api is the same option).
        out = run({**env, "LABFLEET_TOKEN": token}, "top", "--once", "--url", api).stdout
        assert "district: 3 schools" in out and "ingest: not reported" not in out
        assert "online / expected" in out and "util %" in out
        bad = run(env, "top", "--once", "--api", api, "--token", "lf_nope", ok=False)
        assert bad.returncode == 1 and "refused the token" in bad.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_header_names_the_service_clock_and_says_when_it_is_simulated() -> None:
    """Issue 20: top's expected counts follow the service's clock; a simulation's is not the real one."""
    real = datetime(2026, 12, 4, 18, 30, tzinfo=UTC)
    same = clock_line("2026-12-04T18:30:02+00:00", real)
    assert same == "2026-12-04 18:30:02 UTC (service clock)"
    sim = clock_line("2027-09-06T08:05:00+00:00", real)
    assert sim.startswith("2027-09-06 08:05:00 UTC (service clock); simulated")
    assert "2026-12-04 18:30:00 UTC" in sim


def test_simulate_announces_the_service_it_starts_and_keeps_the_token_private(tmp_path: Path) -> None:
    """Issue 20: the service `simulate` started listened on an unannounced random port."""
    info = ServiceInfo("http://127.0.0.1:40123", "lf_secret", "127.0.0.1", 41883, 1, None, "sqlite://")
    token_file = tmp_path / "demo.token"
    text = announce(info, token_file)
    assert "port 40123" in text and "MQTT 127.0.0.1:41883" in text
    assert f'labfleet top --url http://127.0.0.1:40123 --token "$(cat {token_file})"' in text
    assert "lf_secret" not in text
    assert token_file.read_text().strip() == "lf_secret"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
