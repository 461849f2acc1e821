"""`labfleet agent`: the edge agent on a lab PC (USB kits <-> the fleet service over HTTP and MQTT)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import httpx
import typer

from drivers.discovery import PortWatcher
from drivers.edge import HEALTH_INTERVAL, EdgeSupervisor
from fleet.i18n import _
from fleet.runtime.agent_errors import describe
from fleet.runtime.edge_agent import AgentError, EdgeAgent
from fleet.runtime.edge_flash import KitUpdater
from fleet.runtime.supervise import cancel_and_wait

log = logging.getLogger(__name__)

# HTTP calls to the fleet service: enrollment is one small request; 15 s covers a slow school uplink.
HTTP_TIMEOUT = 15.0


async def resolve(http: httpx.AsyncClient, school: str, room: str | None) -> tuple[int, int | None]:
    """School by id or code, room by id or name, through the API (the agent's token must see them)."""
    if school.isdigit():
        school_id = int(school)
    else:
        r = await http.get("/api/v1/schools", params={"limit": 500})
        r.raise_for_status()
        match = [s["id"] for s in r.json()["items"] if s["code"] == school]
        if not match:
            raise AgentError(f"school {school!r} is not visible to this token")
        school_id = match[0]
    if room is None or room.isdigit():
        return school_id, int(room) if room else None
    r = await http.get("/api/v1/rooms", params={"school": school_id, "limit": 500})
    r.raise_for_status()
    rooms = [x["id"] for x in r.json()["items"] if x["name"] == room]
    if not rooms:
        raise AgentError(f"room {room!r} not found in school {school}")
    return school_id, rooms[0]


@contextlib.asynccontextmanager
async def watcher_for(bench: int, seed: int) -> AsyncIterator[tuple[PortWatcher, Any]]:
    if bench <= 0:
        yield PortWatcher(), None
        return
    from drivers.types import Family
    from simulators.serial.bench import SimBench, make_devices

    async with SimBench() as sim:
        for device in make_devices(bench, families=tuple(Family), seed=seed):
            sim.add(device)
        await sim.start()
        yield PortWatcher(sim.lister), sim.reset_for


@contextlib.asynccontextmanager
async def edge_agent(
    http: httpx.AsyncClient,
    downloads: httpx.AsyncClient,
    *,
    school_id: int,
    room_id: int | None,
    broker: str | None,
    watcher: PortWatcher,
    reset_for: Any,
    health_interval: float,
    signing_key: str = "",
    clock_ms: Callable[[], int] | None = None,
) -> AsyncIterator[tuple[EdgeAgent, EdgeSupervisor]]:
    """The edge agent's parts wired together: the fleet bridge, its kit updater (rollouts) and the USB
    supervisor.

    `labfleet agent` and the district simulator's lab rooms both run this, so simulated kits are bridged and
    updated exactly as real ones. `downloads` must not carry the API token: image links are signed on their
    own.
    """
    agent = EdgeAgent(http, school_id=school_id, room_id=room_id, broker=broker, clock_ms=clock_ms)
    updater = KitUpdater(downloads, clock_ms=agent.clock_ms, publish=agent._publish, signing_key=signing_key)
    agent.updates = updater
    supervisor = EdgeSupervisor(watcher, agent, reset_for=reset_for, health_interval=health_interval)
    agent.supervisor = supervisor
    updater.supervisor = supervisor
    try:
        yield agent, supervisor
    finally:
        # Mirror of setup: no more updates, every kit's port closed and its retained status set to offline
        # (then its MQTT connection closed with a DISCONNECT, so no Last Will fires). One part failing on the
        # way out (a kit that never connected cannot say goodbye) must not keep the others from closing.
        for close in (updater.aclose, supervisor.aclose, agent.aclose):
            try:
                await close()
            except Exception:
                log.warning("edge agent: %s failed on the way out", close.__qualname__, exc_info=True)


async def run_agent(
    *,
    api: str,
    token: str,
    school: str,
    room: str | None,
    broker: str | None,
    bench: int,
    seed: int,
    health_interval: float,
    signing_key: str = "",
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=api, headers=headers, timeout=HTTP_TIMEOUT) as http,
        httpx.AsyncClient() as downloads,
    ):
        school_id, room_id = await resolve(http, school, room)
        async with (
            watcher_for(bench, seed) as (watcher, reset_for),
            edge_agent(
                http,
                downloads,
                school_id=school_id,
                room_id=room_id,
                broker=broker,
                watcher=watcher,
                reset_for=reset_for,
                health_interval=health_interval,
                signing_key=signing_key,
            ) as (_agent, supervisor),
        ):
            await _until_stopped(supervisor.run())
        log.info("edge agent stopped")


async def _until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until it ends or SIGTERM/SIGINT arrives; a signal cancels it so teardown runs in order."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(work, name="edge-agent")
    stopping = asyncio.create_task(stop.wait(), name="edge-agent-stop")
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("stop signal received: closing ports and taking kits offline")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await cancel_and_wait([stopping])
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running  # re-raises what ended it, unless that was our cancel


def read_token(token: str, token_file: str) -> str:
    """The API token: from LABFLEET_AGENT_TOKEN (or --token), else the first line of the token file."""
    if token:
        return token.strip()
    if not token_file:
        raise AgentError(_("no API token: set LABFLEET_AGENT_TOKEN or LABFLEET_AGENT_TOKEN_FILE"))
    try:
        with open(token_file, encoding="utf-8") as f:
            line = f.readline().strip()
    except OSError as err:
        raise AgentError(
            _("cannot read the token file {path}: {cause}", path=token_file, cause=err.strerror or err)
        ) from None
    if not line:
        raise AgentError(_("the token file {path} is empty", path=token_file))
    return line


def agent(
    school: Annotated[str, typer.Option(help="school code or id this lab PC belongs to")],
    api: Annotated[str, typer.Option(help="fleet service base URL, e.g. http://fleet.local:8000")],
    token: Annotated[
        str,
        typer.Option(
            help="API token (technician of the school); prefer the env var or --token-file: a command line "
            "is visible to every user of the PC",
            envvar="LABFLEET_AGENT_TOKEN",
        ),
    ] = "",
    token_file: Annotated[
        str,
        typer.Option(help="file whose first line is the API token", envvar="LABFLEET_AGENT_TOKEN_FILE"),
    ] = "",
    room: Annotated[str | None, typer.Option(help="room name or id (new kits are placed there)")] = None,
    broker: Annotated[
        str | None, typer.Option(help="MQTT broker URL (default: the one enrollment returns)")
    ] = None,
    bench: Annotated[int, typer.Option(help="bridge N simulated kits instead of USB ports")] = 0,
    seed: Annotated[int, typer.Option(help="identity seed of the simulated kits")] = 0,
    health_interval: Annotated[float, typer.Option(help="seconds between health samples")] = HEALTH_INTERVAL,
    signing_key: Annotated[
        str,
        typer.Option(
            help="district image-signing key: refuse unsigned or badly signed firmware for the kits",
            envvar="LABFLEET_AGENT_SIGNING_KEY",
        ),
    ] = "",
) -> None:
    """Run the edge agent: enroll kits as they are plugged in, bridge them to MQTT, flash rollout updates."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the kit transitions
    try:
        asyncio.run(
            run_agent(
                api=api,
                token=read_token(token, token_file),
                school=school,
                room=room,
                broker=broker,
                bench=bench,
                seed=seed,
                health_interval=health_interval,
                signing_key=signing_key,
            )
        )
    except KeyboardInterrupt:
        pass
    except (AgentError, httpx.HTTPError) as err:
        typer.echo(_("Error: {message}", message=describe(err, api)), err=True)
        raise typer.Exit(1) from None
