"""`labfleet simulate`: the district simulator against a service under test, and its load report.

The service under test (`fleet.cli.simulate_service`: the HTTP API, a broker and an ingest worker, on the
simulated clock) runs in a child process, so the report can compare the generator's CPU with the service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fleet.cli.simulate_service import (
    FD_HEADROOM,
    Controls,
    DbEnroller,
    DbReadBack,
    ServiceControl,
    ServiceInfo,
    child_service,
)
from fleet.i18n import _
from fleet.persistence.db import create_engine, session_factory
from fleet.runtime.supervise import cancel_and_wait
from fleet.settings import Settings
from simulators.district.mqttpool import raise_fd_limit

logger = logging.getLogger(__name__)


def edge_agents(
    api: str,
    token: str,
    broker: tuple[str, int],
    transport: httpx.AsyncBaseTransport | None = None,
    scheme: str = "mqtt",
) -> Any:
    """The real edge agent (fleet.runtime.edge_agent over drivers.edge) for one simulated lab room's bench."""

    @contextlib.asynccontextmanager
    async def start(
        school_code: str, room_name: str, bench: Any, health_interval: float, clock_ms: Callable[[], int]
    ) -> AsyncIterator[Any]:
        from drivers.discovery import PortWatcher
        from fleet.cli.agent import HTTP_TIMEOUT, edge_agent, resolve

        # The agent of `labfleet agent`, kit updater included: a rollout to lab kits is carried out as in a
        # lab.
        async with (
            httpx.AsyncClient(
                base_url=api,
                headers={"Authorization": f"Bearer {token}"},
                timeout=HTTP_TIMEOUT,
                transport=transport,
            ) as http,
            httpx.AsyncClient(transport=transport) as downloads,
        ):
            school_id, room_id = await resolve(http, school_code, room_name)
            async with edge_agent(
                http,
                downloads,
                school_id=school_id,
                room_id=room_id,
                # mqtts: the agent verifies the broker with the CA its kits' enrollment answered.
                broker=f"{scheme}://{broker[0]}:{broker[1]}",
                watcher=PortWatcher(bench.lister),
                reset_for=bench.reset_for,
                health_interval=health_interval,
                clock_ms=clock_ms,
            ) as (agent, supervisor):
                task = asyncio.create_task(supervisor.run(), name=f"edge-agent:{school_code}/{room_name}")
                try:
                    yield agent
                finally:
                    # An agent that died mid-run (a kit it could not bridge) is logged; the run goes on.
                    await cancel_and_wait([task], logger)

    return start


async def simulate(
    district: Any,
    scenarios: tuple[str, ...],
    *,
    api: str,
    token: str,
    broker: tuple[str, int],
    database_url: str | None,
    duration_s: float,
    speed: float | None,
    controls: Controls,
    state_file: Path | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    prefix: str = "labfleet",
    enroll: str = "auto",
    tls_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Provision, enroll, run and report; returns the report as a dict.

    `enroll`: "http" (POST /api/v1/enroll per terminal, as terminals do), "db" (the service's enrollment use
    case in bulk, then one broker reload: for load tests that start from an enrolled fleet), or "auto" (http
    when the service has the route, else db).
    """
    from simulators.district import report as reports
    from simulators.district.engine import Hooks, Simulation
    from simulators.district.fleetlink import FleetApi, HttpEnroller

    started = time.monotonic()
    fleet = FleetApi.connect(api, token, transport=transport)
    engine = create_engine(database_url) if database_url else None
    try:
        provisioned = await fleet.provision(district, progress)
        if controls.sync_credentials is not None:
            await controls.sync_credentials()  # the service learns the new timetables now, not in a minute
        readback = DbReadBack(session_factory(engine)) if engine is not None else None
        if enroll == "http" or (enroll == "auto" and await fleet.has_route("/api/v1/enroll")):
            enroller: Any = HttpEnroller(fleet, provisioned.school_ids)
        elif engine is not None:

            async def after() -> None:
                if controls.sync_credentials is not None:
                    await controls.sync_credentials()

            enroller = DbEnroller(session_factory(engine), after)
        else:
            raise RuntimeError(
                "the service has no /api/v1/enroll route; pass --db so the simulator can enroll"
            )

        async def exam(code: str, day: str) -> None:
            await fleet.add_exam_day(provisioned.school_ids[code], day)

        async def command(code: str, name: str, args: dict[str, Any]) -> None:
            await fleet.command("school", provisioned.school_ids[code], name, args)

        hooks = Hooks(
            restart_broker=controls.restart_broker,
            set_service_clock=controls.set_clock,
            add_exam_day=exam,
            service_pids=controls.pids,
            send_command=command,
            start_lab_agent=edge_agents(api, token, broker, transport, "mqtts" if tls_context else "mqtt"),
        )
        dl_before = await readback.dead_letters() if readback is not None else None
        sim = Simulation(
            district,
            broker=broker,
            enroller=enroller,
            readback=readback,
            scenarios=scenarios,
            duration_s=duration_s,
            speed=speed,
            prefix=prefix,
            state_file=state_file,
            hooks=hooks,
            tls_context=tls_context,
        )
        progress(f"running {len(scenarios) and ','.join(scenarios) or 'a plain day'} for {duration_s:g} s")
        await sim.run()
        dl_after = sim.outcome.get("dead_letters")
        alerts = sim.outcome.get("alerts")
        return reports.build(
            sim,
            service_clock_is_sim=controls.set_clock is not None,
            dead_letters_before=dl_before,
            dead_letters_after=dl_after,
            alerts=alerts,
            wall_s=time.monotonic() - started,
        )
    finally:
        await fleet.close()
        if engine is not None:
            await engine.dispose()


def main(
    spec_path: Path,
    scenario: str,
    duration: float,
    speed: float | None,
    api: str,
    token: str,
    broker: str,
    serve: str,
    db: str,
    out: Path,
    cfg: Settings,
    *,
    enroll: str = "auto",
) -> int:
    """The `labfleet simulate` command: 0 when the verdict passes, 1 when it fails, 2 on a bad spec."""
    from rich.console import Console

    from simulators.district import report as reports
    from simulators.district.spec import SpecError, load_spec, parse_scenarios

    err = Console(stderr=True)
    try:
        district = load_spec(spec_path)
        scenarios = parse_scenarios(scenario)
    except SpecError as e:
        err.print(f"[red]Spec error:[/red] {e}")
        return 2
    if duration <= 0:
        err.print("[red]--duration must be positive[/red]")
        return 2
    if enroll not in ("auto", "http", "db"):
        err.print("[red]--enroll must be auto, http or db[/red]")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{spec_path.stem}-{'+'.join(scenarios) or 'day'}"
    started_at = datetime.now(UTC)
    state_file = out / f"{spec_path.stem}.state.json"

    async def run() -> dict[str, Any]:
        raise_fd_limit(district.count() + FD_HEADROOM)
        if api:
            if not token:
                raise RuntimeError("--api needs --token (labfleet token create --role admin --district)")
            from fleet.runtime.mqtt_subscriber import BrokerAddress

            url = broker or cfg.mqtt.url
            ctx = None
            if url.startswith("mqtts://"):
                # The bell storm over TLS: terminals verify the broker with the district CA (protocol 1.1).
                from fleet.services import tls

                ctx = tls.client_context(tls.ca_pem(cfg.tls))
                host_port = url.removeprefix("mqtts://")
                url = "mqtt://" + (host_port if ":" in host_port.split("@")[-1] else host_port + ":8883")
            addr = BrokerAddress.from_url(url)
            return await simulate(
                district,
                scenarios,
                api=api,
                token=token,
                broker=(addr.host, addr.port),
                database_url=db or cfg.database_url,
                duration_s=duration,
                speed=speed,
                controls=Controls(),
                state_file=state_file,
                progress=err.print,
                prefix=cfg.mqtt.topic_prefix,
                enroll=enroll,
                tls_context=ctx,
            )
        database_url = db or f"sqlite+aiosqlite:///{out / (spec_path.stem + '.db')}"
        err.print(f"starting a service under test ({serve} broker, {database_url})")
        async with child_service(database_url, serve, out / f"{spec_path.stem}-{serve}") as child:
            err.print(announce(child.info, out / f"{spec_path.stem}.token"))
            ctl = ServiceControl(child.info.api)

            def pids() -> dict[str, int]:
                got = {"service": child.info.pid}
                broker_pid = _child_pid(child.info.pid)
                if broker_pid:
                    got["broker"] = broker_pid
                return got

            try:
                return await simulate(
                    district,
                    scenarios,
                    api=child.info.api,
                    token=child.info.token,
                    broker=(child.info.broker_host, child.info.broker_port),
                    database_url=database_url,
                    duration_s=duration,
                    speed=speed,
                    controls=Controls(ctl.sync_credentials, ctl.restart_broker, ctl.set_clock, pids),
                    state_file=state_file,
                    progress=err.print,
                    prefix=cfg.mqtt.topic_prefix,
                    enroll=enroll,
                )
            finally:
                await ctl.close()

    rep = asyncio.run(run())
    json_path, html_path = report_paths(out, stem, started_at)
    reports.write(rep, json_path, html_path)
    print(reports.text(rep))
    err.print(f"report: {json_path} and {html_path}")
    return 0 if rep["verdict"]["result"] == "pass" else 1


def announce(info: ServiceInfo, token_file: Path) -> str:
    """Where the service this run started listens, and how to watch it with `labfleet top`.

    The token (an admin token of this throwaway service) goes to a file only its owner can read, not to the
    screen."""
    token_file.unlink(missing_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(info.token + "\n")
    return _(
        "service under test: API {api} (port {port}), MQTT {host}:{mqtt_port}\n"
        'watch it: labfleet top --url {api} --token "$(cat {token_file})"',
        api=info.api,
        port=info.api.rsplit(":", 1)[-1],
        host=info.broker_host,
        mqtt_port=info.broker_port,
        token_file=token_file,
    )


def report_paths(out: Path, stem: str, started_at: datetime) -> tuple[Path, Path]:
    """This run's own report files: the stem and the run's start (UTC), and a counter should two runs start
    in the same second, so a run never overwrites an earlier run's report."""
    base = f"{stem}-{started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    n = 1
    while True:
        name = base if n == 1 else f"{base}-{n}"
        json_path, html_path = out / f"{name}.json", out / f"{name}.html"
        try:
            # Claim the name atomically (exclusive create), so two runs in one directory cannot race for it.
            json_path.touch(exist_ok=False)
        except FileExistsError:
            n += 1
            continue
        if html_path.exists():
            json_path.unlink()
            n += 1
            continue
        return json_path, html_path


def _child_pid(pid: int) -> int | None:
    """The managed broker's pid: the service's child process, if any (mosquitto; amqtt runs in-process)."""
    try:
        import psutil

        kids = psutil.Process(pid).children()
    except Exception:  # noqa: BLE001 - psutil.Error and a vanished process alike: no broker pid to sample
        return None
    return kids[0].pid if kids else None
