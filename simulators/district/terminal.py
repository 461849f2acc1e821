"""A simulated adaptive-learning terminal, built from docs/protocol-mqtt.md alone.

It is driven by the simulation's timers (no task per terminal): `wake` connects, `tick` sends telemetry or a
heartbeat, `sleep` shuts down for the night, `flap` drops Wi-Fi. Every message with a `seq` is QoS 1 and is
counted when sent and when the broker acknowledges it, so the report can compare against the service.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho

if TYPE_CHECKING:
    from simulators.district.engine import Simulation

logger = logging.getLogger(__name__)

# Protocol section 1: reconnect backoff starts at 1 s, doubles, caps at 60 s, with +-30 % jitter.
BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 60.0
BACKOFF_JITTER = 0.3


# Telemetry and heartbeat bodies (protocol sections 4.1 and 4.2), pre-encoded: a %-format over bytes builds
# the same JSON as json.dumps of the dict, at a fraction of the cost of a dict and an encoder pass per
# message.
_TELEMETRY = (
    b'{"v":1,"seq":%d,"ts":%d,"battery":%d,"charging":%s,"temp_c":%.1f,"storage_pct":61.0,"fw":%s,'
    b'"up":%d,"down":%d,"rssi":%d%s}'
)
_HEARTBEAT = b'{"v":1,"seq":%d,"ts":%d,"rssi":%d}'


@functools.lru_cache(maxsize=256)
def _json_str(value: str) -> bytes:
    """A JSON string literal, cached: firmware versions and app names repeat across the fleet."""
    return json.dumps(value).encode()


def telemetry_payload(
    seq: int,
    ts_ms: int,
    battery: int,
    charging: bool,
    temp_c: float,
    fw: str,
    up: int,
    down: int,
    rssi: int,
    app: str | None,
) -> bytes:
    """The telemetry body (protocol 4.1), the same JSON as json.dumps of its dict (temp_c to one decimal)."""
    return _TELEMETRY % (
        seq,
        ts_ms,
        battery,
        b"true" if charging else b"false",
        temp_c,
        _json_str(fw),
        up,
        down,
        rssi,
        b',"app":' + _json_str(app) if app else b"",
    )


def heartbeat_payload(seq: int, ts_ms: int, rssi: int) -> bytes:
    """The heartbeat body (protocol 4.2)."""
    return _HEARTBEAT % (seq, ts_ms, rssi)


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


class Terminal:
    __slots__ = (
        "app",
        "attending",
        "backoff",
        "bad_fw",
        "base_seq",
        "battery",
        "boots",
        "break_until",
        "charging",
        "client",
        "connect_started",
        "connected_at",
        "counters",
        "crashed",
        "drain",
        "due",
        "exam",
        "firmware",
        "first_connect_at",
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
        "seq",
        "serial",
        "sim",
        "tick_gen",
        "topics",
        "used_s",
    )

    def __init__(
        self,
        sim: Simulation,
        serial: str,
        school: str,
        room: str,
        password: str,
        seq: int,
        rng: random.Random,
        firmware: str,
    ) -> None:
        self.sim = sim
        self.serial = serial
        self.school = school
        self.room = room
        self.room_key = f"{school}/{room}"
        self.password = password
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
        self.topics: dict[str, str] = {}
        self.backoff = BACKOFF_START_S
        self.boots = 0
        self.used_s = 0.0  # continuous use in this session (simulated seconds), for the screen-time policy
        self.break_until = 0.0  # simulated monotonic seconds

    # ---------------------------------------------------------------- topics
    def topic(self, channel: str) -> str:
        got = self.topics.get(channel)
        if got is None:
            got = self.topics[channel] = f"{self.sim.prefix}/v1/{self.school}/{self.serial}/{channel}"
        return got

    # ---------------------------------------------------------------- connection
    def wake(self) -> None:
        # Once the run is over (frozen) nobody reconnects: a terminal back from a reboot after the service was
        # read would resend and be acknowledged after the accounting, and count as lost.
        if self.phase not in (Phase.ASLEEP, Phase.BACKOFF, Phase.DARK) or self.sim.frozen:
            return
        self.sim.connect_queue.append(self)
        self.phase = Phase.CONNECTING
        self.sim.kick_connector()

    def start_connect(self) -> bool:
        """Called by the connector under the pool's gate; False when the connect failed at once."""
        pool = self.sim.pool
        if self.client is None:
            self.client = pool.new_client(self.serial, self.serial, self.password, userdata=self)
            self.client.on_connect = _on_connect
            self.client.on_disconnect = _on_disconnect
            self.client.on_publish = _on_publish
            self.client.on_message = _on_message
        self.connect_started = self.sim.mono()
        will = json.dumps({"v": 1, "state": "offline", "reason": "lwt"}).encode()
        rc = pool.connect(self.client, self.topic("status"), will)
        if rc != paho.MQTT_ERR_SUCCESS:
            self.counters.connect_failures += 1
            self.sim.stats.connect_failures += 1
            self.phase = Phase.BACKOFF
            self._retry_later()
            return False
        return True

    def _retry_later(self) -> None:
        delay = min(self.backoff, BACKOFF_CAP_S) * self.rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
        self.backoff = min(self.backoff * 2, BACKOFF_CAP_S)
        self.sim.after_real(delay, self.wake)

    def on_connected(self, rc: int) -> None:
        self.sim.pool.connecting.release()
        if rc != 0:
            self.counters.connect_failures += 1
            self.sim.stats.connect_failures += 1
            self.sim.stats.connack_refused += 1
            self.sim.stats.connack_codes[rc] = self.sim.stats.connack_codes.get(rc, 0) + 1
            self.phase = Phase.BACKOFF
            assert self.client is not None
            self.client.disconnect()
            self._retry_later()
            return
        now = self.sim.mono()
        self.phase = Phase.ONLINE
        self.backoff = BACKOFF_START_S
        self.connected_at = now
        if not self.first_connect_at:
            self.first_connect_at = now
        self.counters.connects += 1
        self.sim.stats.on_connect(self, now - self.connect_started)
        c = self.client
        assert c is not None
        c.subscribe(self.topic("cmd"), qos=1)
        self._publish_raw("status", {"v": 1, "state": "online", "ts": self.sim.clock.now_ms()}, retain=True)
        if self.boots == 0 and not self.sim.frozen:  # no new sequence numbers once the run is accounted
            self.boots = 1
            self.event("boot")
        self.schedule_tick(first=True)

    def on_disconnected(self) -> None:
        self.counters.disconnects += 1
        self.sim.stats.disconnects += 1
        self.sim.ticks.cancel(self)
        if self.phase == Phase.CONNECTING:  # refused or dropped before CONNACK
            self.sim.pool.connecting.release()
        if self.phase in (Phase.ONLINE, Phase.CONNECTING):
            self.phase = Phase.BACKOFF
            self._retry_later()

    def sleep(self) -> None:
        """Clean shutdown for the night: retained offline status, then DISCONNECT."""
        if self.phase != Phase.ONLINE or self.client is None:
            self.phase = Phase.ASLEEP
            return
        self._publish_raw(
            "status",
            {"v": 1, "state": "offline", "reason": "shutdown", "ts": self.sim.clock.now_ms()},
            retain=True,
        )
        self.phase = Phase.ASLEEP
        self.sim.ticks.cancel(self)
        self.client.disconnect()

    def flap(self, down_real_s: float) -> None:
        """Wi-Fi drops: the link dies without DISCONNECT; it comes back after `down_real_s`."""
        if self.client is None:
            return
        self.phase = Phase.DARK
        self.sim.ticks.cancel(self)
        self.sim.pool.drop(self.client)
        self.sim.after_real(down_real_s, self.wake)

    # ---------------------------------------------------------------- traffic
    def schedule_tick(self, first: bool = False) -> None:
        interval = self.sim.telemetry_interval(self)
        if first:
            self.sim.tick_after(self, self.rng.uniform(0, interval), first=True)
        else:
            self.sim.tick_after(self, interval)

    def tick(self) -> None:
        if self.phase != Phase.ONLINE or self.sim.frozen:
            return
        sim = self.sim
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
            self.event("error", code="E_FW_PANIC")
            self.reboot_soon()
        if self.malformed:
            self.send_garbage()
        if in_lesson and self.attending and not self.locked and self._policy_allows(interval):
            up, down = sim.lesson_bytes(self, interval, period)
            self.app = self._allowed_app("edu.exam" if self.exam else "edu.classroom")
            self.telemetry(up, down)
        else:  # between lessons (or not attending): idle, with a heartbeat or a small telemetry
            self.app = None
            idle = int(sim.traffic.idle_bytes_per_minute * interval / 60)
            self.telemetry(idle // 4, idle) if self.rng.random() < 0.5 else self.heartbeat()
        sim.tick_after(self, interval)

    def _policy_allows(self, interval: float) -> bool:
        """The myopia-prevention policy (protocol 6.1 set_policy): a break after `session_minutes` of use."""
        now = self.sim.clock.monotonic()
        if now < self.break_until:
            return False
        session = self.policy.get("session_minutes")
        self.used_s += interval
        if isinstance(session, int) and self.used_s > session * 60:
            self.used_s = 0.0
            self.break_until = now + 60 * int(self.policy.get("break_minutes", 10))
            return False
        return True

    def _allowed_app(self, wanted: str) -> str:
        allowed = self.policy.get("allowed_apps") or []
        return wanted if not allowed or wanted in allowed else str(allowed[0])

    def _publish_raw(self, channel: str, body: dict[str, Any], *, retain: bool = False, seq: int = 0) -> None:
        self._publish_bytes(channel, json.dumps(body, separators=(",", ":")).encode(), retain=retain, seq=seq)

    def _publish_bytes(self, channel: str, payload: bytes, *, retain: bool = False, seq: int = 0) -> None:
        c = self.client
        if c is None:
            return
        info = c.publish(self.topic(channel), payload, qos=1, retain=retain)
        self.pending[info.mid] = seq
        self.sim.stats.published += 1
        self.sim.pool.flush(c)  # paho wrote it at once unless the socket was full

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
        now_ms = self.sim.clock.now_ms()
        self.sim.stats.add_bytes(self.school, up + down, now_ms)
        payload = telemetry_payload(
            seq,
            now_ms,
            int(self.battery),
            self.charging,
            30 + self.rng.random() * 12,
            self.firmware,
            up,
            down,
            self._rssi(),
            self.app,
        )
        self._publish_bytes("telemetry", payload, seq=seq)

    def heartbeat(self) -> None:
        seq = self._next_seq()
        self.counters.heartbeats += 1
        self._publish_bytes(
            "heartbeat", heartbeat_payload(seq, self.sim.clock.now_ms(), self._rssi()), seq=seq
        )

    def event(self, kind: str, **extra: Any) -> None:
        seq = self._next_seq()
        self.counters.events += 1
        self._publish_raw(
            "event", {"v": 1, "seq": seq, "ts": self.sim.clock.now_ms(), "type": kind, **extra}, seq=seq
        )

    def send_garbage(self) -> None:
        """A share of the fleet sends junk: each kind is one dead-letter reason in protocol section 6.2."""
        kinds = ("malformed_json", "schema", "oversized", "unsupported_version")
        kind = kinds[self.counters.telemetry % len(kinds)]
        payload: bytes
        if kind == "malformed_json":
            payload = b"{not json"
        elif kind == "schema":
            payload = json.dumps({"v": 1, "seq": "x", "ts": self.sim.clock.now_ms(), "battery": 900}).encode()
        elif kind == "oversized":
            payload = json.dumps(
                {"v": 1, "seq": 1, "ts": self.sim.clock.now_ms(), "app": "x" * 5000}
            ).encode()
        else:
            payload = json.dumps({"v": 7, "seq": 1, "ts": self.sim.clock.now_ms()}).encode()
        assert self.client is not None
        info = self.client.publish(self.topic("telemetry"), payload, qos=1)
        self.pending[info.mid] = 0
        self.sim.pool.flush(self.client)
        self.counters.garbage[kind] = self.counters.garbage.get(kind, 0) + 1
        self.sim.stats.garbage[kind] = self.sim.stats.garbage.get(kind, 0) + 1

    def reboot_soon(self, dark_s: float = 30.0) -> None:
        """Reboot: the link drops (LWT), the terminal boots again after `dark_s` simulated seconds and
        reconnects."""
        if self.client is None or self.phase != Phase.ONLINE:
            return
        self.boots = 0  # the next CONNACK sends a boot event
        self.flap(self.sim.clock.real(dark_s))

    def publish_update(self, payload: bytes) -> None:
        """A firmware-update progress report (protocol 10): QoS 1, no seq; paho holds it while the link is
        down."""
        if self.client is None:
            return
        info = self.client.publish(self.topic("update"), payload, qos=1)
        self.pending[info.mid] = 0
        self.sim.stats.published += 1
        self.sim.pool.flush(self.client)

    # ---------------------------------------------------------------- commands
    def on_command(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "error":
            self.counters.error_replies += 1
            self.sim.stats.error_replies[str(msg.get("reason"))] = (
                self.sim.stats.error_replies.get(str(msg.get("reason")), 0) + 1
            )
            return
        if msg.get("type") != "command":
            return
        cid, name, args = str(msg.get("id", "")), msg.get("cmd"), msg.get("args") or {}
        self.counters.commands += 1
        self.sim.stats.commands[str(name)] = self.sim.stats.commands.get(str(name), 0) + 1
        if name == "update":  # protocol 10: progress on the update channel, not ack/result
            self.sim.updates.command(self, msg)
            return
        now = self.sim.clock.now_ms()
        if isinstance(msg.get("expires_at"), int) and msg["expires_at"] < now:
            self._publish_raw("ack", {"v": 1, "id": cid, "ts": now, "accepted": False, "reason": "expired"})
            return
        if name not in ("reboot", "lock", "unlock", "set_policy", "diagnostics"):
            self._publish_raw(
                "ack", {"v": 1, "id": cid, "ts": now, "accepted": False, "reason": "unknown_command"}
            )
            return
        self._publish_raw("ack", {"v": 1, "id": cid, "ts": now, "accepted": True})
        detail: dict[str, Any] | None = None
        if name == "lock":
            self.locked = True
            self.event("locked")
        elif name == "unlock":
            self.locked = False
            self.event("unlocked")
        elif name == "set_policy":
            self.policy = dict(args)
        elif name == "diagnostics":
            detail = {
                "battery": int(self.battery),
                "fw": self.firmware,
                "uptime_s": int(self.sim.mono() - self.connected_at),
            }
        body: dict[str, Any] = {"v": 1, "id": cid, "ts": self.sim.clock.now_ms(), "ok": True}
        if detail:
            body["detail"] = detail
        self._publish_raw("result", body)
        if name == "reboot":
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
        t.sim.stats.acked += 1


def _on_message(client: paho.Client, t: Terminal, msg: paho.MQTTMessage) -> None:
    t.on_command(bytes(msg.payload))
