"""Update commands and progress over a real broker (the embedded one): enrolled terminals receive `update` on
their cmd topic, download over HTTP, and report on their `update` channel, which the broker's ACL allows."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt

from fleet.domain import wire
from fleet.domain.clock import FakeClock
from fleet.domain.update_wire import encode_progress
from fleet.persistence.db import unit_of_work
from fleet.runtime.brokers import free_port
from fleet.runtime.plane import DevicePlane
from fleet.runtime.rollouts import MqttUpdateLink
from fleet.services import enrollment
from simulators.terminal.update import SimTerminal
from tests.rollouts.harness import NEW, lab

EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)


async def _terminal(
    sim: SimTerminal,
    school: str,
    password: str,
    port: int,
    topics: wire.Topics,
    outbox: asyncio.Queue[tuple[SimTerminal, bytes]],
    ready: asyncio.Event,
    clock: FakeClock,
) -> None:
    """One terminal's MQTT side: commands in on cmd, handled by the simulator; progress out on update."""
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=sim.identity, username=sim.identity, password=password
    ) as client:
        await client.subscribe(topics.topic(school, sim.identity, wire.Channel.CMD), qos=1)
        ready.set()
        publisher = asyncio.create_task(
            _publish(client, sim, school, topics, outbox), name=f"pub-{sim.identity}"
        )
        try:
            async for msg in client.messages:
                cmd = wire.decode_downlink(bytes(msg.payload))
                if isinstance(cmd, wire.Command):
                    for p in await sim.handle(cmd, clock.now()):
                        await outbox.put((sim, encode_progress(p)))
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher


async def _publish(
    client: aiomqtt.Client,
    sim: SimTerminal,
    school: str,
    topics: wire.Topics,
    outbox: asyncio.Queue[tuple[SimTerminal, bytes]],
) -> None:
    while True:
        owner, payload = await outbox.get()
        if owner is sim:
            await client.publish(topics.topic(school, sim.identity, wire.Channel.UPDATE), payload, qos=1)
        else:
            await outbox.put((owner, payload))
            await asyncio.sleep(0)


async def test_rollout_over_the_embedded_broker_completes(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        school_id = await lb.add_school("S-MQ")
        ids = await lb.add_terminals(school_id, 3)
        passwords = {}
        async with unit_of_work(lb.api.sessions) as s:
            tok = await enrollment.create_claim_token(
                s,
                school_id=school_id,
                max_uses=3,
                ttl=timedelta(days=1),
                allow_unknown=False,
                label="t",
                actor="test",
                now=lb.clock.now(),
            )
            for d in ids:
                e = await enrollment.enroll(
                    s,
                    claim_token=tok.token,
                    serial_number=lb.sims[d].identity,
                    vendor=None,
                    model_number=None,
                    now=lb.clock.now(),
                )
                passwords[d] = e.password
        port = free_port()
        settings = lb.app.state.fleet.settings.model_copy(
            update={
                "mqtt": lb.app.state.fleet.settings.mqtt.model_copy(
                    update={"broker": "embedded", "listen_port": port, "data_dir": str(tmp_path / "mq")}
                )
            }
        )
        topics = wire.Topics(settings.mqtt.topic_prefix)
        async with DevicePlane(settings, lb.api.sessions, lb.clock, run_ingest=False) as plane:
            assert plane.address is not None
            link = MqttUpdateLink(
                plane.address,
                topics,
                lb.api.sessions,
                lb.clock,
                shared=bool(getattr(plane.broker, "shared_subscriptions", True)),
            )
            link.engine = lb.engine
            lb.engine.sender = link
            tasks = [asyncio.create_task(link.run(), name="rollout-link")]
            outbox: asyncio.Queue[tuple[SimTerminal, bytes]] = asyncio.Queue(maxsize=1000)
            for d in ids:
                sim = lb.sims[d]
                ready = asyncio.Event()
                tasks.append(
                    asyncio.create_task(
                        _terminal(sim, "S-MQ", passwords[d], port, topics, outbox, ready, lb.clock),
                        name=f"terminal-{d}",
                    )
                )
                await asyncio.wait_for(ready.wait(), 10)
            await asyncio.wait_for(link.connected.wait(), 10)
            try:
                r = await lb.create_rollout(groups={"canary_size": 1, "strategy": "per_school"})
                for _ in range(400):  # bounded: a few simulated hours at 30 s steps
                    now = lb.clock.now()
                    await lb.engine.step(now)
                    for d in ids:
                        sim = lb.sims[d]
                        for p in await sim.tick(now):
                            await outbox.put((sim, encode_progress(p)))
                    await asyncio.sleep(0.05)  # let the broker carry commands and reports
                    if await lb.rollout_state(r["id"]) == "completed":
                        break
                    lb.clock.advance(30)
                assert await lb.rollout_state(r["id"]) == "completed"
                assert all(lb.sims[d].version == NEW for d in ids)
                assert not link.rejected
                # A report on a topic the broker would refuse never reaches the engine through the link.
                assert not await link.handle("labfleet/v1/S-MQ/LT99999/update", b'{"v":1}')
                assert link.rejected["schema"] == 1
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await t
