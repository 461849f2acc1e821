"""The edge agent's fleet side: a gateway from serial kits (drivers/edge.py) to the fleet service.

Each kit, once identified, is enrolled over HTTP with a one-use claim token (the service matches it to its
inventory record by serial number, or registers it as `received`) and then gets its own MQTT connection with
its own credentials, so the broker's per-device ACLs hold for kits exactly as for terminals: a kit can only
publish under its own topics and read its own `cmd` topic. Presence is the kit's retained `status` (Last Will
on a lost agent), health is published as `telemetry`, and commands from `cmd` run through the supervisor and
are answered with `ack` and `result` as protocol v1 says.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt

from drivers.discovery import PortInfo
from drivers.edge import CommandError, EdgeSupervisor
from drivers.errors import DriverError
from drivers.types import DeviceIdentity, Family, Health
from firmware_profiles import ProfileError, load_profile_key
from fleet.domain import wire
from fleet.domain.credentials import EDGE_AGENT_LABEL
from fleet.runtime.agent_errors import describe
from fleet.runtime.supervise import TaskOwner
from fleet.services import tls

log = logging.getLogger(__name__)

# Protocol v1 keep-alive (section 1).
KEEPALIVE = 60
# One-use claim tokens live this long: the agent trades them at once, so a leaked one is useless soon.
CLAIM_TTL_SECONDS = 300
# Commands the agent can carry out on a serial kit; others are refused in the ack (protocol 5.4).
SUPPORTED = {"reboot": "reboot", "diagnostics": "health"}
# CONNACK codes for a refused login (MQTT 3.1.1: 4, 5; as paho reports them: 134, 135): the kit's password
# was rotated elsewhere, so the agent enrolls it again instead of letting paho retry a dead password.
REFUSED_CREDENTIALS = frozenset({4, 5, 134, 135})
# Bounded: a kit's command backlog beyond this is refused rather than queued without limit.
MAX_PENDING_COMMANDS = 16
# A kit the broker refused (broker down or restarting, a login not yet known to it) is tried again while it
# stays plugged in: 2 s, doubling, capped at 60 s like paho's own reconnect delay for bridged kits, with
# jitter (half to full) so a lab's kits refused together do not all come back in the same second.
BRIDGE_RETRY_BASE = 2.0
BRIDGE_RETRY_CAP = 60.0


class UpdateHandler(Protocol):
    """Carries out `update` commands (firmware rollouts) for bridged kits: fleet.runtime.edge_flash."""

    async def handle(self, link: KitLink, cmd: wire.Command) -> None: ...


class AgentError(Exception):
    """The fleet service refused the agent (bad token, wrong school, unknown model)."""


@dataclass
class KitLink:
    """One kit's enrollment and its own MQTT connection."""

    hardware_id: str
    identity: str
    device_id: int
    topics: dict[str, str]
    client: mqtt.Client
    seq: int = 0
    done: set[str] = field(default_factory=set)  # correlation ids already executed (protocol 5.5)
    pending: int = 0
    # Where and what the kit is, to bridge it again when the broker stops taking its credentials.
    port: PortInfo | None = None
    kit: DeviceIdentity | None = None
    connected_once: bool = False

    def next_seq(self, now_ms: int) -> int:
        # Time-based so a restarted agent never repeats a seq (protocol 5: no repeats across reboots).
        self.seq = max(self.seq + 1, now_ms)
        return self.seq


class EdgeAgent:
    """Implements drivers.edge.EdgeEvents; owns one paho client per online kit."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        school_id: int,
        room_id: int | None = None,
        broker: str | None = None,
        clock_ms: Callable[[], int] | None = None,
        retry_base: float = BRIDGE_RETRY_BASE,
        rng: random.Random | None = None,
    ) -> None:
        self.http = http
        self.retry_base = retry_base
        self._rng = rng or random.Random()
        # Kits the broker refused, with how many times in a row: a retry runs only while the kit is listed.
        self.refused: dict[str, int] = {}
        self.school_id = school_id
        self.room_id = room_id
        self.broker = broker
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.supervisor: EdgeSupervisor | None = None
        self.kits: dict[str, KitLink] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Command runs and re-bridges: named, owned, cancelled and awaited by aclose.
        self._tasks = TaskOwner(log)
        self._models: dict[Family, tuple[str, str]] | None = None
        # Rollout updates (download, flash, report); None: `update` is refused like any unsupported command.
        self.updates: UpdateHandler | None = None

    # ---- HTTP -----------------------------------------------------------------------------

    async def _json(self, method: str, url: str, **kw: Any) -> Any:
        r = await self.http.request(method, url, **kw)
        if r.status_code >= 400:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise AgentError(f"{method} {url}: HTTP {r.status_code}: {message}")
        return r.json()

    async def _model_for(self, family: Family) -> tuple[str, str]:
        """(vendor, model_number) of the catalogue model whose firmware profile drives this family."""
        if self._models is None:
            self._models = {}
            page = await self._json(
                "GET", "/api/v1/device-models", params={"transport": "serial", "limit": 500}
            )
            for m in page.get("items", page if isinstance(page, list) else []):
                if not m.get("profile_key"):
                    continue
                try:
                    profile = await asyncio.to_thread(load_profile_key, m["profile_key"])
                    fam = Family(profile.driver)
                except (ProfileError, ValueError):
                    continue
                self._models.setdefault(fam, (m["vendor"], m["model_number"]))
        if family not in self._models:
            raise AgentError(f"no serial device model in the catalogue drives {family} kits")
        return self._models[family]

    async def enroll(self, identity: DeviceIdentity) -> dict[str, Any]:
        """Match the kit to inventory (or register it as received) and get its own MQTT credentials."""
        vendor, model_number = await self._model_for(identity.family)
        token = await self._json(
            "POST",
            f"/api/v1/schools/{self.school_id}/claim-tokens",
            json={
                "max_uses": 1,
                "allow_unknown": True,
                "ttl_seconds": CLAIM_TTL_SECONDS,
                "label": f"{EDGE_AGENT_LABEL}{identity.hardware_id}"[:120],
            },
        )
        return dict(
            await self._json(
                "POST",
                "/api/v1/enroll",
                json={
                    "claim_token": token["token"],
                    "serial_number": identity.hardware_id,
                    "vendor": vendor,
                    "model_number": model_number,
                },
            )
        )

    async def _place(self, device_id: int) -> None:
        """Put a kit registered just now into the agent's room (best effort: the kit is bridged anyway)."""
        try:
            device = await self._json("GET", f"/api/v1/devices/{device_id}")
            if device.get("room_id") is None:
                await self._json("PATCH", f"/api/v1/devices/{device_id}", json={"room_id": self.room_id})
        except (AgentError, httpx.HTTPError) as err:
            log.warning("device %s: not placed in room %s: %s", device_id, self.room_id, err)

    # ---- EdgeEvents -------------------------------------------------------------------------

    async def online(self, port: PortInfo, identity: DeviceIdentity) -> None:
        self.refused.pop(port.hardware_id, None)  # plugged in (again): a fresh start, any retry stands down
        await self._bridge(port, identity)

    def retry_delay(self, attempt: int) -> float:
        """Seconds before bridging attempt `attempt` (1, 2, ...) of a refused kit: capped, jittered."""
        return min(BRIDGE_RETRY_CAP, self.retry_base * 2 ** (attempt - 1)) * self._rng.uniform(0.5, 1.0)

    async def _retry_bridge(self, port: PortInfo, identity: DeviceIdentity, attempt: int) -> None:
        await asyncio.sleep(self.retry_delay(attempt))
        if self.refused.get(port.hardware_id) != attempt:
            return  # unplugged, plugged in again, or bridged meanwhile: this retry is stale
        await self._bridge(port, identity)

    async def _bridge(self, port: PortInfo, identity: DeviceIdentity) -> None:
        self._loop = asyncio.get_running_loop()
        hw = port.hardware_id
        stale = self.kits.pop(hw, None)
        if stale is not None:  # identified again (after provisioning, or a refused login): a fresh bridge
            await asyncio.to_thread(_stop, stale.client)
        try:
            creds = await self.enroll(identity)
        except (AgentError, httpx.HTTPError) as err:
            log.warning("%s: not bridged: %s", hw, describe(err, str(self.http.base_url)))
            return
        await self._keep_on_kit(hw, creds)
        if self.room_id is not None:
            await self._place(int(creds["device_id"]))
        link = KitLink(
            hw,
            creds["username"],
            int(creds["device_id"]),
            creds["topics"],
            self._client(creds),
            port=port,
            kit=identity,
        )
        self.kits[hw] = link
        try:
            await self._connect(link, creds)
        except (TimeoutError, OSError) as err:
            # One kit the broker will not take (down, or refusing its login) must not stop the lab's
            # supervisor: drop this bridge; the next plug-in or identify tries again.
            self.kits.pop(hw, None)
            await asyncio.to_thread(_stop, link.client)
            attempt = self.refused.get(hw, 0) + 1
            self.refused[hw] = attempt
            if attempt == 1:  # the first refusal is news; the retries are not (each is logged at debug)
                log.warning(
                    "%s: not bridged: broker %s did not accept the kit: %s; retrying while it is plugged in",
                    hw,
                    self._broker_url(creds),
                    err or type(err).__name__,
                )
            else:
                log.debug("%s: broker refused the kit again (attempt %d)", hw, attempt)
            self._tasks.spawn(self._retry_bridge(port, identity, attempt), f"edge-bridge-retry:{hw}")
            return
        if self.refused.pop(hw, None):
            log.info("%s: broker accepted the kit after refusing it", hw)
        self._publish(link, wire.Status(online=True, ts_ms=self.clock_ms()), retain=True)
        announce(link, self._publish, self.clock_ms(), identity.firmware_version)
        log.info("%s bridged as %s (device %s)", hw, link.identity, link.device_id)

    async def _keep_on_kit(self, hw: str, creds: Mapping[str, Any]) -> None:
        """Store the credentials enrollment just issued in the kit's own settings.

        One credential per kit: the fleet keeps its hash, the kit keeps the password in its settings, and
        the agent logs in with it. Whoever mints a new one writes it to both (`labfleet provision` writes
        the kit, then records the hash; the agent enrolls, then writes the kit), so neither is left stale.
        Firmata kits keep no settings: there the agent's copy is the only one.
        """
        if self.supervisor is None:
            return
        try:
            stored = (await self.supervisor.command(hw, "read_config"))["config"]
            if stored is None:
                return
            if (
                stored.get("mqtt_username") == creds["username"]
                and stored.get("mqtt_password") == creds["password"]
            ):
                return
            merged = {**stored, "mqtt_username": creds["username"], "mqtt_password": creds["password"]}
            result = await self.supervisor.command(hw, "apply_config", {"config": merged})
            if not result["ok"]:
                log.warning("%s: new MQTT credentials not stored on the kit: %s", hw, result["reason"])
        except (CommandError, DriverError) as err:
            log.warning("%s: new MQTT credentials not stored on the kit: %s", hw, err)

    def _rebridge(self, link: KitLink) -> None:
        """The broker refused a kit's password (rotated elsewhere, e.g. by a provisioning run): enroll
        it again, which also writes the new password to the kit."""
        if self.kits.get(link.hardware_id) is not link or link.port is None or link.kit is None:
            return
        self._tasks.spawn(self.online(link.port, link.kit), f"edge-rebridge:{link.hardware_id}")

    async def offline(self, hardware_id: str, reason: str) -> None:
        self.refused.pop(hardware_id, None)  # unplugged: no more retries for it
        link = self.kits.pop(hardware_id, None)
        if link is None:
            return
        info = self._publish(
            link,
            wire.Status(
                online=False, ts_ms=self.clock_ms(), reason="unplugged" if "unplug" in reason else "shutdown"
            ),
            retain=True,
        )
        try:
            await asyncio.to_thread(info.wait_for_publish, 5.0)
        except (RuntimeError, ValueError) as err:  # paho: not connected, or the queue refused it
            log.warning("%s: offline status not published: %s", hardware_id, err)
        await asyncio.to_thread(_stop, link.client)

    async def health(self, hardware_id: str, health: Health) -> None:
        link = self.kits.get(hardware_id)
        if link is not None:
            self._publish(link, telemetry(health, link.next_seq(self.clock_ms()), self.clock_ms()))

    async def aclose(self) -> None:
        # Tasks first, so no command run or re-bridge is left pending and none bridges a kit again meanwhile.
        await self._tasks.aclose()
        for hw in list(self.kits):
            await self.offline(hw, "agent stopping")

    # ---- MQTT ------------------------------------------------------------------------------

    def _client(self, creds: Mapping[str, Any]) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=creds["username"], clean_session=False
        )
        client.username_pw_set(creds["username"], creds["password"])
        client.will_set(creds["topics"]["status"], wire.encode_uplink(LAST_WILL), qos=1, retain=True)
        # Protocol 1: capped backoff; paho jitters nothing itself, but one lab PC has few kits.
        client.reconnect_delay_set(1, 60)
        return client

    def _broker_url(self, creds: Mapping[str, Any]) -> str:
        return str(self.broker or creds.get("broker_url") or "mqtt://127.0.0.1:1883")

    async def _connect(self, link: KitLink, creds: Mapping[str, Any]) -> None:
        url = urlsplit(self._broker_url(creds))
        connected = asyncio.Event()
        loop = asyncio.get_running_loop()
        cmd_topic = link.topics["cmd"]

        def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                client.subscribe(cmd_topic, qos=1)
                link.connected_once = True
                loop.call_soon_threadsafe(connected.set)
            else:
                log.warning("%s: broker refused the kit: %s", link.hardware_id, reason)
                if link.connected_once and getattr(reason, "value", None) in REFUSED_CREDENTIALS:
                    loop.call_soon_threadsafe(self._rebridge, link)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self._on_cmd, link, bytes(msg.payload))

        link.client.on_connect = on_connect
        link.client.on_message = on_message
        if url.scheme == "mqtts":
            # Verify the broker against the CA enrollment handed out (protocol 1.1), and that CA only; without
            # one (an operator's publicly signed broker) the system's CAs. paho checks the host name too.
            ca = creds.get("ca_pem")
            link.client.tls_set_context(tls.client_context(ca) if ca else ssl.create_default_context())
        await asyncio.to_thread(
            link.client.connect,
            url.hostname or "127.0.0.1",
            url.port or (8883 if url.scheme == "mqtts" else 1883),
            KEEPALIVE,
        )
        link.client.loop_start()
        # The first connect must succeed promptly; later drops are paho's reconnect loop's job.
        await asyncio.wait_for(connected.wait(), 10)

    def _publish(self, link: KitLink, value: wire.Uplink, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish one protocol message on the kit's topic for its channel (QoS 1)."""
        topic = link.topics[wire.channel_of(value).value]
        return link.client.publish(topic, wire.encode_uplink(value), qos=1, retain=retain)

    def _on_cmd(self, link: KitLink, payload: bytes | bytearray) -> None:
        cmd = wire.decode_downlink(bytes(payload))
        if isinstance(cmd, wire.Rejection):
            log.warning("%s: undecodable cmd message dropped (%s)", link.hardware_id, cmd.detail)
            return
        if isinstance(cmd, dict):
            log.warning("%s: service refused a message: %s", link.hardware_id, cmd.get("reason"))
            return
        if cmd.id in link.done:
            return  # redelivered after a reconnect: executed once already
        link.done.add(cmd.id)
        self._tasks.spawn(self._run_command(link, cmd), f"edge-cmd:{cmd.id}")

    async def _run_command(self, link: KitLink, cmd: wire.Command | wire.UnknownCommand) -> None:
        cid, name = cmd.id, str(cmd.name)
        if isinstance(cmd, wire.Command) and cmd.name is wire.CommandName.UPDATE and self.updates is not None:
            # Firmware updates answer with progress reports on the `update` channel, as terminals do.
            log.info("command %s on %s (%s): started", name, link.identity, cid)
            await self.updates.handle(link, cmd)
            log.info(
                "command %s on %s (%s): finished (its result is on the update channel)",
                name,
                link.identity,
                cid,
            )
            return
        now = self.clock_ms()

        def ack(accepted: bool, reason: str = "") -> None:
            if not accepted:
                # Every command the agent is sent leaves one line: name, kit, result (no arguments: a
                # command's parameters may carry secrets).
                log.info("command %s on %s (%s): refused: %s", name, link.identity, cid, reason)
            self._publish(
                link, wire.Ack(cid, self.clock_ms(), accepted, reason[: wire.MAX_CODE_TEXT] or None)
            )

        if cmd.expires_at_ms < now:
            ack(False, "expired")
            return
        if name not in SUPPORTED or self.supervisor is None:
            ack(False, f"unsupported on a serial kit: {name}")
            return
        if link.pending >= MAX_PENDING_COMMANDS:
            ack(False, "busy")
            return
        ack(True)
        link.pending += 1
        try:
            out = await self.supervisor.command(link.hardware_id, SUPPORTED[name])
            detail = out if name == "diagnostics" else None
            self._publish(link, wire.Result(cid, self.clock_ms(), True, detail=detail))
            log.info("command %s on %s (%s): done", name, link.identity, cid)
            if name == "reboot":
                now = self.clock_ms()
                self._publish(link, wire.Event(link.next_seq(now), now, wire.EventType.BOOT))
        except (CommandError, DriverError) as err:
            code = type(err).__name__[: wire.MAX_CODE_TEXT]
            self._publish(link, wire.Result(cid, self.clock_ms(), False, code=code))
            log.info("command %s on %s (%s): failed: %s", name, link.identity, cid, code)
        finally:
            link.pending -= 1


# The kit's Last Will: the broker publishes it (retained) when the agent's connection for the kit is lost.
LAST_WILL = wire.Status(online=False, reason="lwt")


def announce(
    link: KitLink, publish: Callable[[KitLink, wire.Uplink], Any], now_ms: int, version: str
) -> None:
    """The kit (re)booted on `version`: a boot event, then telemetry carrying the firmware version."""
    publish(link, wire.Event(link.next_seq(now_ms), now_ms, wire.EventType.BOOT))
    publish(link, wire.Telemetry(link.next_seq(now_ms), now_ms, firmware=version[: wire.MAX_CODE_TEXT]))


def telemetry(health: Health, seq: int, ts: int) -> wire.Telemetry:
    """Protocol 5.1 telemetry from a driver health reading (only the fields a kit has)."""
    readings = dict(health.readings)
    battery = None
    if "battery_pct" in readings:
        battery = max(wire.BATTERY_PCT_MIN, min(wire.BATTERY_PCT_MAX, int(readings["battery_pct"])))
    temp = readings.get("temperature_c", readings.get("temp_c"))
    if temp is not None and wire.TEMPERATURE_C_MIN <= temp <= wire.TEMPERATURE_C_MAX:
        temp = round(float(temp), 1)
    else:
        temp = None
    return wire.Telemetry(seq, ts, battery_pct=battery, temperature_c=temp)


def _stop(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()
