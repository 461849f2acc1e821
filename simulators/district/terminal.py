"""A simulated adaptive-learning terminal, built from docs/protocol-mqtt.md alone.

It is driven by the simulation's timers (no task per terminal): `wake` connects, `tick` sends telemetry or a
heartbeat, `sleep` shuts down for the night, `flap` drops Wi-Fi. Every message with a `seq` is QoS 1 and is
counted when sent and when the broker acknowledges it, so the report can compare against the service.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from typing import Any, Protocol

import paho.mqtt.client as paho

from fleet.domain import wire
from simulators.district.clock import SimClock
from simulators.district.mqttpool import Pool
from simulators.district.screentime import Ended, ScreenTime
from simulators.district.spec import TrafficIn
from simulators.district.stats import Stats
from simulators.terminal.credentials import CredentialStore

logger = logging.getLogger(__name__)

# Protocol section 1: reconnect backoff starts at 1 s, doubles, caps at 60 s, with +-30 % jitter.
BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 60.0
BACKOFF_JITTER = 0.3
# CONNACK return code 5 (MQTT 3.1.1): bad user name or password / not authorized.
CONNACK_NOT_AUTHORIZED = 5
# The refusals of a password as paho 2 reports them: MQTT 3.1.1 codes 4 and 5, which it maps to the MQTT 5
# reason codes 134 (bad user name or password) and 135 (not authorized).
CREDENTIALS_REFUSED = frozenset({4, CONNACK_NOT_AUTHORIZED, 134, 135})
# Every terminal model in the district specs reports this much storage in use (it is not simulated).
STORAGE_USED_PCT = 61.0
# A terminal's Last Will (protocol section 3): the broker publishes it, retained, when the link is lost.
LAST_WILL = wire.encode_uplink(wire.Status(online=False, reason="lwt"))
# Faulty terminals send one of these per telemetry tick, in turn (protocol section 6.2: one reason each).
GARBAGE = (
    wire.Reason.MALFORMED_JSON,
    wire.Reason.SCHEMA,
    wire.Reason.OVERSIZED,
    wire.Reason.UNSUPPORTED_VERSION,
)
# Commands a terminal carries out itself; `update` goes to the update state machine.
SUPPORTED = frozenset(
    {
        wire.CommandName.REBOOT,
        wire.CommandName.LOCK,
        wire.CommandName.UNLOCK,
        wire.CommandName.SET_POLICY,
        wire.CommandName.DIAGNOSTICS,
    }
)


class TerminalHost(Protocol):
    """What a terminal needs from the simulation that drives it (engine.Simulation is the one host).

    A few shared parts (the MQTT pool, the simulated clock, the counters, the topic scheme, the traffic
    profile) and a handful of calls: get connected, schedule, and ask the day's questions (which lesson is on,
    how often to report, how many bytes a lesson moves).
    """

    pool: Pool
    clock: SimClock
    stats: Stats
    topics: wire.Topics
    traffic: TrafficIn
    frozen: bool  # the run is being accounted: no reconnects, no new sequence numbers

    def connect_soon(self, t: Terminal) -> None: ...

    def after_real(self, delay: float, fn: Callable[[], None]) -> Any: ...

    def tick_after(self, t: Terminal, sim_seconds: float, *, first: bool = False) -> None: ...

    def cancel_tick(self, t: Terminal) -> None: ...

    def current_period(self, t: Terminal) -> Any: ...

    def telemetry_interval(self, t: Terminal, period: Any = None, known: bool = False) -> float: ...

    def lesson_bytes(self, t: Terminal, interval: float, period: Any = None) -> tuple[int, int]: ...

    def local_day(self, t: Terminal) -> date: ...

    def reenroll(self, t: Terminal) -> bool: ...

    def update_command(self, t: Terminal, cmd: wire.Command) -> None: ...


class Phase(Enum):
    ASLEEP = "asleep"
    CONNECTING = "connecting"
    ONLINE = "online"
    DARK = "dark"  # Wi-Fi gone: no link, waiting to come back
    BACKOFF = "backoff"


@dataclass(slots=True)
class Counters:
    sent: int = 0  # messages with a seq handed to the client
    acked: int = 0  # of those, PUBACKed by the broker
    telemetry: int = 0
    heartbeats: int = 0
    events: int = 0
    garbage: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    commands: int = 0
    error_replies: int = 0
    screen_sessions: int = 0


class Terminal:
    __slots__ = (
        "app",
        "attending",
        "backoff",
        "bad_fw",
        "base_seq",
        "battery",
        "boots",
        "charging",
        "client",
        "connect_started",
        "connected_at",
        "counters",
        "crashed",
        "creds",
        "drain",
        "due",
        "exam",
        "firmware",
        "first_connect_at",
        "host",
        "locked",
        "malformed",
        "password",
        "pending",
        "phase",
        "policy",
        "rng",
        "room",
        "room_key",
        "school",
        "screen",
        "seq",
        "serial",
        "tick_gen",
        "topics",
        "trying",
        "unsent",
    )

    def __init__(
        self,
        host: TerminalHost,
        serial: str,
        school: str,
        room: str,
        password: str,
        seq: int,
        rng: random.Random,
        firmware: str,
    ) -> None:
        self.host = host
        self.serial = serial
        self.school = school
        self.room = room
        self.room_key = f"{school}/{room}"
        self.password = password  # the current one, persisted between runs by the engine
        self.creds = CredentialStore(password)  # protocol 8.1: a rotated password beside the previous one
        self.trying = password  # the password of the connect under way
        self.seq = seq  # last seq used (persisted between runs; protocol: never repeat)
        self.base_seq = seq
        self.phase = Phase.ASLEEP
        self.client: paho.Client | None = None
        self.rng = rng
        self.battery = rng.uniform(70, 100)
        self.charging = False
        self.firmware = firmware
        self.app: str | None = None
        self.counters = Counters()
        self.pending: dict[int, int] = {}  # mid -> seq (0 for messages without a seq)
        self.policy: dict[str, Any] = {}
        self.locked = False
        self.attending = True
        self.drain = 1.0
        self.bad_fw = False
        self.crashed = False
        self.malformed = False
        self.exam = False
        self.connect_started = 0.0
        self.connected_at = 0.0
        self.first_connect_at = 0.0
        self.tick_gen = 0  # the tick wheel's entry for this terminal is current only while this matches
        self.due = 0.0  # monotonic time the next (or running) tick is due
        self.topics: dict[wire.Channel, str] = {}
        self.backoff = BACKOFF_START_S
        self.boots = 0
        # Screen time (protocol 5.3.1): sessions, breaks and the daily limit of the set_policy policy.
        self.screen = ScreenTime()
        self.unsent: list[Ended] = []  # sessions a reboot ended, sent after the next boot

    # ---------------------------------------------------------------- topics
    def topic(self, channel: wire.Channel) -> str:
        got = self.topics.get(channel)
        if got is None:
            got = self.topics[channel] = self.host.topics.topic(self.school, self.serial, channel)
        return got

    # ---------------------------------------------------------------- connection
    def wake(self) -> None:
        # Once the run is over (frozen) nobody reconnects: a terminal back from a reboot after the service was
        # read would resend and be acknowledged after the accounting, and count as lost.
        if self.phase not in (Phase.ASLEEP, Phase.BACKOFF, Phase.DARK) or self.host.frozen:
            return
        self.phase = Phase.CONNECTING
        self.host.connect_soon(self)

    def start_connect(self) -> bool:
        """Called by the connector under the pool's gate; False when the connect failed at once."""
        pool = self.host.pool
        if self.client is None:
            self.client = pool.new_client(self.serial, self.serial, self.password, userdata=self)
            self.client.on_connect = _on_connect
            self.client.on_disconnect = _on_disconnect
            self.client.on_publish = _on_publish
            self.client.on_message = _on_message
        self.client.username_pw_set(self.serial, self.trying)
        self.connect_started = time.monotonic()
        rc = pool.connect(self.client, self.topic(wire.Channel.STATUS), LAST_WILL)
        if rc != paho.MQTT_ERR_SUCCESS:
            self.counters.connect_failures += 1
            self.host.stats.connect_failures += 1
            self.phase = Phase.BACKOFF
            self._retry_later()
            return False
        return True

    def _retry_later(self) -> None:
        delay = min(self.backoff, BACKOFF_CAP_S) * self.rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
        self.backoff = min(self.backoff * 2, BACKOFF_CAP_S)
        self.host.after_real(delay, self.wake)

    def on_connected(self, rc: int) -> None:
        self.host.pool.connecting.release()
        if rc != 0:
            self.counters.connect_failures += 1
            self.host.stats.connect_failures += 1
            self.host.stats.connack_refused += 1
            self.host.stats.connack_codes[rc] = self.host.stats.connack_codes.get(rc, 0) + 1
            if rc in CREDENTIALS_REFUSED and self.creds.previous is None and self.host.reenroll(self):
                # The stored password is refused and no rotation is under way (an earlier run against another
                # database): the host enrolls this terminal afresh and wakes it; no blind retries meanwhile.
                self.phase = Phase.BACKOFF
                assert self.client is not None
                self.client.disconnect()
                return
            if rc == CONNACK_NOT_AUTHORIZED:
                # Mid-rotation: the new password first, the previous one while the new is refused (8.1).
                tries = self.creds.candidates()
                self.trying = (
                    tries[(tries.index(self.trying) + 1) % len(tries)] if self.trying in tries else tries[0]
                )
            self.phase = Phase.BACKOFF
            assert self.client is not None
            self.client.disconnect()
            self._retry_later()
            return
        now = time.monotonic()
        self.phase = Phase.ONLINE
        self.backoff = BACKOFF_START_S
        self.connected_at = now
        if not self.first_connect_at:
            self.first_connect_at = now
        self.counters.connects += 1
        self.host.stats.on_connect(self.serial, now - self.connect_started)
        c = self.client
        assert c is not None
        c.subscribe(self.topic(wire.Channel.CMD), qos=1)
        self._send(wire.Status(online=True, ts_ms=self.host.clock.now_ms()), retain=True)
        owed = self.creds.connected_with(self.trying, self.host.clock.now_ms())
        if owed is not None:  # a rotation's result: the new password works
            self._send(owed)
        if self.boots == 0 and not self.host.frozen:  # no new sequence numbers once the run is accounted
            self.boots = 1
            self.event(wire.EventType.BOOT)
            for ended in self.unsent:  # the session the reboot cut short (protocol 5.3.1: after the boot)
                self.screen_session(ended)
            self.unsent.clear()
        self.schedule_tick(first=True)

    def on_disconnected(self) -> None:
        self.counters.disconnects += 1
        self.host.stats.disconnects += 1
        self.host.cancel_tick(self)
        if self.phase == Phase.CONNECTING:  # refused or dropped before CONNACK
            self.host.pool.connecting.release()
        if self.phase in (Phase.ONLINE, Phase.CONNECTING):
            self.phase = Phase.BACKOFF
            self._retry_later()

    def sleep(self) -> None:
        """Clean shutdown for the night: retained offline status, then DISCONNECT."""
        if self.phase != Phase.ONLINE or self.client is None:
            self.phase = Phase.ASLEEP
            return
        ended = self.screen.shutdown()
        if ended is not None and not self.host.frozen:
            self.screen_session(ended)
        self._send(wire.Status(online=False, ts_ms=self.host.clock.now_ms(), reason="shutdown"), retain=True)
        self.phase = Phase.ASLEEP
        self.host.cancel_tick(self)
        self.client.disconnect()

    def flap(self, down_real_s: float) -> None:
        """Wi-Fi drops: the link dies without DISCONNECT; it comes back after `down_real_s`."""
        if self.client is None:
            return
        self.phase = Phase.DARK
        self.host.cancel_tick(self)
        self.host.pool.drop(self.client)
        self.host.after_real(down_real_s, self.wake)

    # ---------------------------------------------------------------- traffic
    def schedule_tick(self, first: bool = False) -> None:
        interval = self.host.telemetry_interval(self)
        if first:
            self.host.tick_after(self, self.rng.uniform(0, interval), first=True)
        else:
            self.host.tick_after(self, interval)

    def tick(self) -> None:
        if self.phase != Phase.ONLINE or self.host.frozen:
            return
        sim = self.host
        period = sim.current_period(self)  # once per tick: interval, lesson and bytes all follow from it
        interval = sim.telemetry_interval(self, period, known=True)
        in_lesson = period is not None
        hours = interval / 3600
        if self.charging:
            self.battery = min(100.0, self.battery + 30 * hours)
        else:
            rate = sim.traffic.battery_drain_pct_per_hour * (1.0 if in_lesson else 0.3)
            self.battery = max(0.0, self.battery - rate * self.drain * hours)
        # A bad image crashes on its first tick (so every affected terminal shows it, however few ticks a
        # short run leaves), then on half of the ticks after.
        if self.bad_fw and (not self.crashed or self.rng.random() < 0.5):
            self.crashed = True
            self.event(wire.EventType.ERROR, code="E_FW_PANIC")
            self.reboot_soon()
        if self.malformed:
            self.send_garbage()
        wants = in_lesson and self.attending
        in_use, ended = self.screen.step(
            sim.clock.now_ms(), sim.local_day(self), interval, wants, locked=self.locked
        )
        for e in ended:
            self.screen_session(e)
        if in_use:
            up, down = sim.lesson_bytes(self, interval, period)
            self.app = self._allowed_app("edu.exam" if self.exam else "edu.classroom")
            self.telemetry(up, down)
        else:  # between lessons (or not attending): idle, with a heartbeat or a small telemetry
            self.app = None
            idle = int(sim.traffic.idle_bytes_per_minute * interval / 60)
            self.telemetry(idle // 4, idle) if self.rng.random() < 0.5 else self.heartbeat()
        sim.tick_after(self, interval)

    def _allowed_app(self, wanted: str) -> str:
        allowed = self.policy.get("allowed_apps") or []
        return wanted if not allowed or wanted in allowed else str(allowed[0])

    def _send(self, value: wire.Uplink, *, retain: bool = False, seq: int = 0) -> None:
        self._publish_bytes(wire.channel_of(value), wire.encode_uplink(value), retain=retain, seq=seq)

    def _publish_bytes(
        self, channel: wire.Channel, payload: bytes, *, retain: bool = False, seq: int = 0
    ) -> None:
        c = self.client
        if c is None:
            return
        info = c.publish(self.topic(channel), payload, qos=1, retain=retain)
        self.pending[info.mid] = seq
        self.host.stats.published += 1
        self.host.pool.flush(c)  # paho wrote it at once unless the socket was full

    def _next_seq(self) -> int:
        self.seq += 1
        self.counters.sent += 1
        return self.seq

    def _rssi(self) -> int:
        return -75 + int(self.rng.random() * 31)  # -75..-45 dBm (randint costs several calls per message)

    def telemetry(self, up: int, down: int) -> None:
        seq = self._next_seq()
        c = self.counters
        c.telemetry += 1
        c.bytes_up += up
        c.bytes_down += down
        now_ms = self.host.clock.now_ms()
        self.host.stats.add_bytes(self.school, up + down, now_ms)
        payload = wire.telemetry_bytes(
            seq,
            now_ms,
            int(self.battery),
            round(30 + self.rng.random() * 12, 1),
            STORAGE_USED_PCT,
            self.firmware,
            self.app,
            up,
            down,
            self._rssi(),
            self.charging,
        )
        self._publish_bytes(wire.Channel.TELEMETRY, payload, seq=seq)

    def heartbeat(self) -> None:
        seq = self._next_seq()
        self.counters.heartbeats += 1
        payload = wire.heartbeat_bytes(seq, self.host.clock.now_ms(), self._rssi())
        self._publish_bytes(wire.Channel.HEARTBEAT, payload, seq=seq)

    def event(self, kind: wire.EventType, code: str | None = None) -> None:
        seq = self._next_seq()
        self.counters.events += 1
        self._send(wire.Event(seq, self.host.clock.now_ms(), kind, code), seq=seq)

    def screen_session(self, e: Ended) -> None:
        """One finished session of use (protocol 5.3.1), an event with its own seq."""
        seq = self._next_seq()
        self.counters.events += 1
        self.counters.screen_sessions += 1
        session = wire.ScreenSession(e.start_ms, e.use_s, wire.ScreenEnd(e.end), e.session_min, e.daily_min)
        now = max(self.host.clock.now_ms(), e.start_ms + 1000 * e.use_s)
        self._send(wire.Event(seq, now, wire.EventType.SCREEN_SESSION, screen=session), seq=seq)

    def send_garbage(self) -> None:
        """A share of the fleet sends junk: each kind is one dead-letter reason in protocol section 6.2."""
        reason = GARBAGE[self.counters.telemetry % len(GARBAGE)]
        kind = reason.value
        payload = wire.invalid_uplink(reason, self.host.clock.now_ms())
        assert self.client is not None
        info = self.client.publish(self.topic(wire.Channel.TELEMETRY), payload, qos=1)
        self.pending[info.mid] = 0
        self.host.pool.flush(self.client)
        self.counters.garbage[kind] = self.counters.garbage.get(kind, 0) + 1
        self.host.stats.garbage[kind] = self.host.stats.garbage.get(kind, 0) + 1

    def reboot_soon(self, dark_s: float = 30.0) -> None:
        """Reboot: the link drops (LWT), the terminal boots again after `dark_s` simulated seconds and
        reconnects."""
        if self.client is None or self.phase != Phase.ONLINE:
            return
        self.boots = 0  # the next CONNACK sends a boot event
        ended = self.screen.shutdown()
        if ended is not None:
            self.unsent.append(ended)
        self.flap(self.host.clock.real(dark_s))

    def publish_update(self, payload: bytes) -> None:
        """A firmware-update progress report (protocol 10): QoS 1, no seq; paho holds it while the link is
        down."""
        if self.client is None:
            return
        info = self.client.publish(self.topic(wire.Channel.UPDATE), payload, qos=1)
        self.pending[info.mid] = 0
        self.host.stats.published += 1
        self.host.pool.flush(self.client)

    # ---------------------------------------------------------------- commands
    def on_command(self, payload: bytes) -> None:
        msg = wire.decode_downlink(payload)
        stats = self.host.stats
        if isinstance(msg, wire.Rejection):
            return
        if isinstance(msg, dict):  # an error reply: the service refused something this terminal sent
            reason = str(msg.get("reason"))
            self.counters.error_replies += 1
            stats.error_replies[reason] = stats.error_replies.get(reason, 0) + 1
            return
        cid, name = msg.id, str(msg.name)
        self.counters.commands += 1
        stats.commands[name] = stats.commands.get(name, 0) + 1
        if isinstance(msg, wire.Command) and msg.name is wire.CommandName.UPDATE:
            self.host.update_command(self, msg)  # protocol 10: progress on the update channel, not ack/result
            return
        now = self.host.clock.now_ms()
        if isinstance(msg, wire.Command) and msg.name is wire.CommandName.ROTATE_CREDENTIALS:
            # Stored, then acked; the service then ends this session and the next connect uses the new one.
            self._send(self.creds.on_rotate(msg, now))
            self.password = self.trying = self.creds.password
            return
        if msg.expires_at_ms < now:
            self._send(wire.Ack(cid, now, False, "expired"))
            return
        if not isinstance(msg, wire.Command) or msg.name not in SUPPORTED:
            self._send(wire.Ack(cid, now, False, "unknown_command"))
            return
        self._send(wire.Ack(cid, now, True))
        detail: dict[str, Any] | None = None
        if msg.name is wire.CommandName.LOCK:
            self.locked = True
            self.event(wire.EventType.LOCKED)
        elif msg.name is wire.CommandName.UNLOCK:
            self.locked = False
            self.event(wire.EventType.UNLOCKED)
        elif msg.name is wire.CommandName.SET_POLICY:
            self.policy = dict(msg.args)
            self.screen.set_policy(msg.args)
        elif msg.name is wire.CommandName.DIAGNOSTICS:
            detail = {
                "battery": int(self.battery),
                "fw": self.firmware,
                "uptime_s": int(time.monotonic() - self.connected_at),
            }
        self._send(wire.Result(cid, self.host.clock.now_ms(), True, detail=detail or None))
        if msg.name is wire.CommandName.REBOOT:
            self.reboot_soon()


# ---------------------------------------------------------------- paho callbacks (userdata is the Terminal)


def _on_connect(client: paho.Client, t: Terminal, flags: Any, rc: Any, props: Any) -> None:
    t.on_connected(int(getattr(rc, "value", rc)))


def _on_disconnect(client: paho.Client, t: Terminal, flags: Any, rc: Any, props: Any) -> None:
    t.on_disconnected()


def _on_publish(client: paho.Client, t: Terminal, mid: int, rc: Any, props: Any) -> None:
    seq = t.pending.pop(mid, None)
    if seq:
        t.counters.acked += 1
        t.host.stats.acked += 1


def _on_message(client: paho.Client, t: Terminal, msg: paho.MQTTMessage) -> None:
    t.on_command(bytes(msg.payload))
