"""The lean generator's parts: pre-encoded payloads, the tick wheel, and paho's PUBACK completion in the
pool."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.domain import wire
from fleet.domain.wire import uplink_encoding
from fleet.runtime.brokers import free_port, wait_for_port
from simulators.district.engine import TickWheel
from simulators.district.mqttpool import SELECT_FD_LIMIT, Pool, raise_fd_limit

from ..conftest import need_external


@given(
    seq=st.integers(1, wire.MAX_SEQ),
    ts=st.integers(wire.TS_MIN_MS, wire.TS_MAX_MS),
    battery=st.none() | st.integers(0, 100),
    charging=st.none() | st.booleans(),
    temp=st.none() | st.floats(-40, 150).map(lambda t: round(t, 1)),
    storage=st.none() | st.floats(0, 100),
    fw=st.none() | st.sampled_from(["2.4.1", "2.5.0-rc1", 'odd "fw"\\x', "固件 1.0"]),
    up=st.integers(0, 10**9),
    down=st.integers(0, 10**9),
    rssi=st.none() | st.integers(-130, 0),
    app=st.none() | st.sampled_from(["edu.classroom", "edu.exam"]),
)
def test_the_hot_path_telemetry_encoder_writes_the_reference_json_and_the_service_decodes_it(
    seq: int,
    ts: int,
    battery: int | None,
    charging: bool | None,
    temp: float | None,
    storage: float | None,
    fw: str | None,
    up: int,
    down: int,
    rssi: int | None,
    app: str | None,
) -> None:
    t = wire.Telemetry(seq, ts, battery, temp, storage, fw, app, up, down, rssi, charging)
    payload = wire.encode_telemetry(t)
    # byte for byte what json.dumps of the dict gives
    assert payload == uplink_encoding._encode_uplink_json(t)
    assert payload == wire.telemetry_bytes(seq, ts, battery, temp, storage, fw, app, up, down, rssi, charging)
    template = wire.TelemetryTemplate(battery, temp, storage, fw, app, up, down, rssi, charging)
    assert template(seq, ts) == payload
    assert wire.decode_uplink(wire.Channel.TELEMETRY, payload) == t


def test_the_hot_path_heartbeat_encoder_writes_the_reference_json() -> None:
    for h in (wire.Heartbeat(7, 1_788_764_400_000, -60), wire.Heartbeat(8, 1_788_764_400_000)):
        assert wire.encode_heartbeat(h) == uplink_encoding._encode_uplink_json(h)
        assert wire.heartbeat_bytes(h.seq, h.ts_ms, h.rssi_dbm) == wire.encode_heartbeat(h)
        assert wire.decode_uplink(wire.Channel.HEARTBEAT, wire.encode_heartbeat(h)) == h


class _Ticking:
    """Stands in for a terminal: the wheel only reads `tick_gen` and calls `tick`."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log, self.tick_gen = name, log, 0

    def tick(self) -> None:
        self.log.append(self.name)


async def test_tick_wheel_runs_due_ticks_once_in_slot_order_and_skips_cancelled_ones() -> None:
    now = [100.0]
    wheel = TickWheel(slot_s=0.02, mono=lambda: now[0])
    log: list[str] = []
    a, b, c, d = (_Ticking(n, log) for n in "abcd")
    wheel.schedule(a, 100.10)
    wheel.schedule(b, 100.01)
    wheel.schedule(c, 100.05)
    wheel.schedule(d, 100.05)
    wheel.cancel(c)  # e.g. the terminal went dark
    wheel.schedule(a, 100.03)  # rescheduled: only the newest entry counts
    wheel.run_due()
    assert log == []  # nothing is early
    now[0] += 0.045
    wheel.run_due()
    assert log == ["b", "a"]
    now[0] += 1.0
    wheel.run_due()
    assert log == ["b", "a", "d"] and not wheel.slots
    wheel.stop()


@pytest.fixture
async def bare_broker(tmp_path: Path) -> AsyncIterator[int]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        need_external("mosquitto")
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "bare.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    # Popen returns once the broker is forked; the port wait below is what takes time, and it is awaited.
    proc = subprocess.Popen(  # noqa: ASYNC220 - see above
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_for_port("127.0.0.1", port, 10, None)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_pool_client_completes_qos1_publishes_on_their_pubacks(bare_broker: int) -> None:
    pool = Pool("127.0.0.1", bare_broker)
    pool.start()
    connected, acked = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        pool.connecting.release()
        connected.set()

    def on_publish(c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        seen.append(mid)
        if len(seen) == 3:
            acked.set()

    c = pool.new_client("gen-test", "gen-test", "x")
    c.on_connect, c.on_publish = on_connect, on_publish
    await pool.connecting.acquire()
    assert pool.connect(c, "gen/test/status", b"offline") == paho.MQTT_ERR_SUCCESS
    try:
        await asyncio.wait_for(connected.wait(), 10)
        infos = [c.publish("gen/test/telemetry", b"{}", qos=1) for _ in range(3)]
        for _ in infos:
            pool.flush(c)
        await asyncio.wait_for(acked.wait(), 10)
        assert sorted(seen) == sorted(i.mid for i in infos)
        assert all(i.is_published() for i in infos)
        assert c.want_write() is False
    finally:
        await pool.close()


async def test_pool_sockets_sit_above_select_range_so_a_lab_agent_in_the_process_can_still_connect(
    bare_broker: int,
) -> None:
    """10,000 terminals took every file descriptor below 1024, so the lab agents' paho clients (whose network
    thread runs select()) got one above it, never saw a CONNACK, and in the benchmark's x1 run only the 2-4
    kits bridged before the bell storm came online. The pool's sockets live above select()'s range instead."""
    raise_fd_limit(SELECT_FD_LIMIT + 256)
    pool = Pool("127.0.0.1", bare_broker)
    pool.start()
    connected = asyncio.Event()

    def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        pool.connecting.release()
        connected.set()

    c = pool.new_client("gen-fd", "gen-fd", "x")
    c.on_connect = on_connect
    await pool.connecting.acquire()
    assert pool.connect(c, "gen/fd/status", b"offline") == paho.MQTT_ERR_SUCCESS
    try:
        await asyncio.wait_for(connected.wait(), 10)
        sock = c.socket()
        assert sock is not None and sock.fileno() >= SELECT_FD_LIMIT
        # A select()-driven client (as the edge agent runs, loop_start) still gets a low descriptor and
        # connects.
        agent_side = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="agent-side")
        agent_up = asyncio.Event()
        loop = asyncio.get_running_loop()
        agent_side.on_connect = lambda *_a: loop.call_soon_threadsafe(agent_up.set)
        agent_side.connect("127.0.0.1", bare_broker)
        agent_side.loop_start()
        try:
            await asyncio.wait_for(agent_up.wait(), 10)
        finally:
            agent_side.disconnect()
            agent_side.loop_stop()
    finally:
        await pool.close()


async def test_tick_wheel_wakes_for_a_tick_due_before_the_one_it_waits_for() -> None:
    # A terminal connecting later can draw a first tick earlier than everything pending (ticks start at a
    # random point of the first interval): the wheel must not hold it until the later one.
    wheel = TickWheel(slot_s=0.01)
    log: list[str] = []
    ticked = asyncio.Event()
    late, early = _Ticking("late", log), _Ticking("early", log)
    early.tick = lambda: (log.append("early"), ticked.set())
    loop = asyncio.get_running_loop()
    wheel.schedule(late, loop.time() + 60.0)  # TickWheel and the loop both read the monotonic clock
    wheel.schedule(early, loop.time() + 0.02)
    try:
        await asyncio.wait_for(ticked.wait(), 10)
    finally:
        wheel.stop()
    assert log == ["early"]
