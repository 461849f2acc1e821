"""mosquitto's dynamic-security plugin: each device a client with a role of its own, managed over `$CONTROL`.

Why this plugin. mosquitto 2.0's `acl_file` never checks a SUBSCRIBE (its source says "FIXME - implement ACL
subscription strings"): every filter was granted (SUBACK 0x01 for `#`, other devices' topics, and the
service's `$share/ingest/...` group) and only delivery was filtered. A device in the shared group took a
share of every school's telemetry that its read ACL then dropped: lost for the service (issue 16). The
dynamic-security plugin, shipped with Debian's mosquitto, checks SUBSCRIBE against its ACLs and refuses what
none allows: SUBACK 0x80 (MQTT 3.1.1) or 0x87 Not authorized (MQTT 5). It is also the API an external
mosquitto is managed through (issue 17), so this module is the one place that knows its JSON.

How it is used. mosquitto 2.0's dynamic-security ACLs have no `%u` pattern, so each device has a role of its
own (its publish channels and its cmd topic, school level pinned) and a client entry that pins its client id
to its username. Device clients carry no password: the plugin defers authentication to the listener's
password file, which keeps LabFleet's salted hashes and its coalesced reload (the plugin's control API takes
only clear passwords, which LabFleet does not keep). An ACL check for a username the plugin does not know is
refused.

Cost, measured with mosquitto 2.0.11 on the shared 2-core machine at a load average of ~15: the plugin
rewrites its whole JSON file after every control command, and the broker serves nobody meanwhile: ~0.17 s
per command at 1,000 devices held, ~0.6 s at 10,000. One enrollment is two commands. Connects and messages
cost nothing extra (a hash lookup per check): the 08:00 bell is not slowed; an enrollment burst during a
lesson is (README, known limits).
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import ssl
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import aiomqtt

from fleet.domain import wire

logger = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
PLUGIN_FILE = "mosquitto_dynamic_security.so"
# Where Debian, Fedora and a source install put the plugin.
PLUGIN_GLOBS = (
    "/usr/lib/*/" + PLUGIN_FILE,
    "/usr/lib/" + PLUGIN_FILE,
    "/usr/lib64/" + PLUGIN_FILE,
    "/usr/local/lib/" + PLUGIN_FILE,
)
ADMIN_ROLE = "labfleet-dynsec-admin"
SERVICE_ROLE = "labfleet-service"
DEVICE_ROLE_PREFIX = "device:"  # device identities hold no ':' (protocol section 2): no clash with the above
# mosquitto's max_packet_size in the generated config is 64 KiB; a control message stays well below it.
MAX_CONTROL_BYTES = 48 * 1024
# The plugin rewrites its whole file per command (~1 s per command at 10,000 devices on a loaded 2-core
# machine): the wait for an answer scales with the batch, and a broker that says nothing in that time is down.
RESPONSE_TIMEOUT_BASE_S = 10.0
RESPONSE_TIMEOUT_PER_COMMAND_S = 2.0
# Broker time one control command costs per device the plugin holds (it rewrites its whole file): 0.5 s per
# command at 10,000 devices, measured with mosquitto 2.0.11 on the shared 2-core machine at a load average of
# ~15 (1.5 s at ~23; benchmarks/dynsec_cost.py). A coarse estimate: it only decides commands vs a restart.
COMMAND_S_PER_DEVICE = 0.5 / 10_000
# A change set that would stall the broker longer than this is applied by a restart instead (the plugin
# loads 10,000 devices in ~1 s; clients reconnect, persistent sessions are kept): a provisioning run or a
# simulated district enrolling thousands of terminals at once would otherwise freeze the broker for hours
# (the cost is quadratic in the batch). 30 s: a lab of 30 terminals enrolled together at 10,000 devices.
BULK_STALL_S = 30.0
# After a bulk restart, further changes wait this long to be applied together: an enrollment storm restarts
# the broker every 10 s at most, not every second.
BULK_MIN_INTERVAL_S = 10.0
# Answers that mean the change is already in place (a retried batch, or state saved by the plugin before a
# restart): not errors.
IDEMPOTENT_ERRORS = {
    "createRole": "Role already exists",
    "createClient": "Client already exists",
    "deleteClient": "Client not found",
    "deleteRole": "Role not found",
}


class DynsecError(RuntimeError):
    """The plugin refused a command, or did not answer."""


def find_plugin(configured: str = "") -> str:
    """The plugin's path: the configured one, or the first installed one."""
    if configured:
        return configured
    for pattern in PLUGIN_GLOBS:
        for path in sorted(glob.glob(pattern)):
            return path
    raise RuntimeError(
        "mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) was not found; it ships with "
        "mosquitto 2.0 (Debian: the mosquitto package); set LABFLEET_MQTT__MOSQUITTO_DYNSEC_PLUGIN to it"
    )


def device_role_name(identity: str) -> str:
    return DEVICE_ROLE_PREFIX + identity


def device_acls(topics: wire.Topics, school: str, identity: str) -> list[dict[str, Any]]:
    """Protocol section 4 for one device: publish its uplink channels, subscribe to and receive its cmd."""
    acls: list[dict[str, Any]] = [
        {"acltype": "publishClientSend", "topic": topics.topic(school, identity, ch), "allow": True}
        for ch in wire.DEVICE_PUBLISH_CHANNELS
    ]
    cmd = topics.topic(school, identity, wire.Channel.CMD)
    # Literal: the filter must be exactly the cmd topic, so `+`, `#` and `$share/...` are never granted.
    acls.append({"acltype": "subscribeLiteral", "topic": cmd, "allow": True})
    acls.append({"acltype": "publishClientReceive", "topic": cmd, "allow": True})
    return acls


def _create_device(topics: wire.Topics, identity: str, school: str) -> list[dict[str, Any]]:
    role = device_role_name(identity)
    return [
        {"command": "createRole", "rolename": role, "acls": device_acls(topics, school, identity)},
        {
            "command": "createClient",
            "username": identity,
            "clientid": identity,
            "roles": [{"rolename": role}],
        },
    ]


def _delete_device(identity: str) -> list[dict[str, Any]]:
    # Deleting the client disconnects it at once.
    return [
        {"command": "deleteClient", "username": identity},
        {"command": "deleteRole", "rolename": device_role_name(identity)},
    ]


def changes(topics: wire.Topics, old: Mapping[str, str], new: Mapping[str, str]) -> list[dict[str, Any]]:
    """Control commands that turn devices `old` into `new` (identity -> school code)."""
    cmds: list[dict[str, Any]] = []
    for identity in sorted(old.keys() - new.keys()):
        cmds += _delete_device(identity)
    for identity in sorted(new.keys() & old.keys()):
        if new[identity] != old[identity]:  # moved school: its topics moved with it
            cmds += _delete_device(identity) + _create_device(topics, identity, new[identity])
    for identity in sorted(new.keys() - old.keys()):
        cmds += _create_device(topics, identity, new[identity])
    return cmds


def config(
    topics: wire.Topics, devices: Mapping[str, str], *, admin_username: str, service_username: str
) -> dict[str, Any]:
    """The plugin's start-up file: default deny, the admin and service clients, every device and its role.

    The file is written at each broker start from the database (the source of truth); the plugin then keeps it
    up to date itself as control commands arrive.
    """
    clients: list[dict[str, Any]] = [
        {"username": admin_username, "clientid": admin_username, "roles": [{"rolename": ADMIN_ROLE}]},
        {"username": service_username, "roles": [{"rolename": SERVICE_ROLE}]},
    ]
    roles: list[dict[str, Any]] = [
        {
            "rolename": ADMIN_ROLE,
            "acls": [
                {"acltype": acltype, "topic": CONTROL_TOPIC + "/#", "allow": True}
                for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern")
            ],
        },
        {
            "rolename": SERVICE_ROLE,
            "acls": [
                {"acltype": "publishClientSend", "topic": topics.prefix + "/#", "allow": True},
                {"acltype": "publishClientReceive", "topic": topics.prefix + "/#", "allow": True},
                {"acltype": "subscribePattern", "topic": topics.prefix + "/#", "allow": True},
                {"acltype": "subscribePattern", "topic": "$share/+/" + topics.prefix + "/#", "allow": True},
            ],
        },
    ]
    for identity, school in sorted(devices.items()):
        role = device_role_name(identity)
        clients.append({"username": identity, "clientid": identity, "roles": [{"rolename": role}]})
        roles.append({"rolename": role, "acls": device_acls(topics, school, identity)})
    return {
        # Everything not allowed by a role is refused, subscriptions included.
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def stall_s(commands: int, devices: int) -> float:
    """Estimated broker time `commands` control commands cost with `devices` held."""
    return commands * max(devices, 1) * COMMAND_S_PER_DEVICE


def batches(cmds: Iterable[dict[str, Any]], limit: int = MAX_CONTROL_BYTES) -> list[list[dict[str, Any]]]:
    """Commands split into control messages under `limit` bytes each."""
    out: list[list[dict[str, Any]]] = []
    size = 0
    for cmd in cmds:
        n = len(json.dumps(cmd)) + 2
        if not out or size + n > limit:
            out.append([])
            size = 20
        out[-1].append(cmd)
        size += n
    return out


async def apply(
    host: str,
    port: int,
    username: str,
    password: str,
    cmds: list[dict[str, Any]],
    *,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Send control commands as the admin identity and wait for every answer; DynsecError on a refusal.

    One short connection per call: calls are coalesced to at most about one a second, and a fresh connection
    needs no reconnect logic across a broker restart.
    """
    if not cmds:
        return
    async with aiomqtt.Client(
        host, port, identifier=username, username=username, password=password, tls_context=tls
    ) as c:
        await c.subscribe(RESPONSE_TOPIC, qos=1)
        for batch in batches(cmds):
            tag = uuid.uuid4().hex
            for i, cmd in enumerate(batch):
                cmd["correlationData"] = f"{tag}:{i}"
            await c.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
            timeout = RESPONSE_TIMEOUT_BASE_S + RESPONSE_TIMEOUT_PER_COMMAND_S * len(batch)
            try:
                async with asyncio.timeout(timeout):
                    async for msg in c.messages:
                        responses = json.loads(bytes(msg.payload)).get("responses", [])
                        if responses and str(responses[0].get("correlationData", "")).startswith(tag):
                            break
            except TimeoutError:
                raise DynsecError(f"no answer to {len(batch)} control commands in {timeout:.0f} s") from None
            failed = [
                r
                for r in responses
                if r.get("error") and IDEMPOTENT_ERRORS.get(r.get("command", "")) != r.get("error")
            ]
            if failed:
                first = failed[0]
                raise DynsecError(
                    f"{first.get('command')} refused: {first.get('error')} ({len(failed)} refused)"
                )
