"""MQTT brokers from settings: embedded amqtt, a managed mosquitto child process, or an external URL.

All three answer the same questions for the rest of the service: where to connect (`address`, with the
service identity), how to make credential changes take effect (`sync`), and how to throw a revoked device off
(`kick`). Device authentication and ACLs come from the database through one `BrokerAuthority`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from amqtt.contexts import Action as _AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.compat.amqtt import AuthFirstBroker
from fleet.domain import acl, credentials, wire
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.runtime import connect_log, dynsec
from fleet.runtime.broker_files import (  # free_port, wait_for_port: also imported from here by tests
    DeviceListeners,
    atomic_write,
    broker_account,
    free_port,
    runtime_dir,
    wait_for_port,
)
from fleet.runtime.mqtt_subscriber import BrokerAddress
from fleet.runtime.refused_connects import RefusedConnects
from fleet.services import tls
from fleet.settings import Settings

logger = logging.getLogger(__name__)

# mosquitto binds its port within ~50 ms; 10 s means it will not start (port taken, bad config).
MOSQUITTO_START_TIMEOUT_S = 10.0
# On shutdown mosquitto saves its persistence file; give it this long before SIGKILL.
MOSQUITTO_STOP_TIMEOUT_S = 5.0
# At most one password-file rewrite + SIGHUP per second. A reload re-checks the password of every connected
# client (measured with 10,000 connected: ~0.07 s of broker CPU at 1 PBKDF2 iteration, ~1 s at 101) and
# mosquitto serves nobody meanwhile, so at the bell it must not run per enrollment; 1 s keeps a reload from
# stalling connects more than a few per cent of the time, and revocation within the 5 s the protocol promises.
RELOAD_MIN_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class _Cred:
    password_hash: str
    school_code: str
    revoked: bool
    # During a credential rotation's grace period (fleet/services/credential_rotation.py): the new password's
    # hash, accepted beside the old one until the device acks or the grace period ends.
    pending_hash: str | None = None


class BrokerAuthority:
    """Device credentials and ACLs from the database, held in memory for the broker's per-packet checks."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        topics: wire.Topics,
        service_username: str,
        service_password: str,
    ) -> None:
        self._sessions = sessions
        self.topics = topics
        self.service_username = service_username
        self.service_password = service_password
        self._creds: dict[str, _Cred] = {}
        self.refused = RefusedConnects()  # revoked devices still trying: for the security inspection

    async def load(self) -> None:
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(
                        DeviceCredential.username,
                        DeviceCredential.password_hash,
                        DeviceCredential.school_code,
                        DeviceCredential.revoked_at,
                        DeviceCredential.pending_hash,
                    )
                )
            ).all()
        self._creds = {u: _Cred(h, code, rev is not None, pending) for u, h, code, rev, pending in rows}

    def active_devices(self) -> list[tuple[str, str, str]]:
        """(school code, identity, password hash) of every device that may connect."""
        return sorted((c.school_code, u, c.password_hash) for u, c in self._creds.items() if not c.revoked)

    def authenticate(self, username: str | None, password: str | None, client_id: str | None) -> bool:
        if username is None or password is None:
            return False
        if username == self.service_username:
            return bool(self.service_password) and password == self.service_password
        self.note_attempt(username)
        cred = self._creds.get(username)
        # The same rule on every broker: a device connects as its identity only (client id == username), and
        # only with an identity mosquitto's password file could hold.
        if cred is None or cred.revoked or client_id != username or not wire.is_device_identity(username):
            return False
        return credentials.verify_password(password, cred.password_hash) or (
            cred.pending_hash is not None and credentials.verify_password(password, cred.pending_hash)
        )

    def note_attempt(self, username: str) -> None:
        """A CONNECT as `username` (checked here, or refused by mosquitto, as its connect recorder says):
        counted when the identity is revoked, so the count is bounded by the revoked credentials."""
        cred = self._creds.get(username)
        if cred is not None and cred.revoked:
            self.refused.note(username)

    def allowed(self, username: str | None, topic: str, action: acl.Action) -> bool:
        if username == self.service_username:
            return True
        cred = self._creds.get(username or "")
        if cred is None or cred.revoked or username is None:
            return False
        return acl.device_allowed(self.topics, cred.school_code, username, topic, action)


class Broker(Protocol):
    address: BrokerAddress
    shared_subscriptions: bool

    async def sync(self) -> None: ...

    async def kick(self, username: str) -> None: ...


# ---------------------------------------------------------------- embedded (amqtt)


class DbAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: CONNECT checked against device credentials (client id must equal username).

    Runs before amqtt looks at any session (fleet.compat.amqtt.AuthFirstBroker), so a refused CONNECT cannot
    take one over.
    """

    @dataclass
    class Config:
        authority: Any = None

    async def authenticate(self, *, session: Any) -> bool | None:
        authority: BrokerAuthority = self.context.config.authority
        return authority.authenticate(session.username, session.password, session.client_id)


class DbTopicPlugin(BaseTopicPlugin):
    """amqtt topic plugin: publish, subscribe and delivery checked against the device ACL."""

    @dataclass
    class Config:
        authority: Any = None

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool | None:
        authority: BrokerAuthority = self.context.config.authority
        if session is None or topic is None:
            return False
        mapped = {
            _AmqttAction.PUBLISH: acl.Action.PUBLISH,
            _AmqttAction.SUBSCRIBE: acl.Action.SUBSCRIBE,
            _AmqttAction.RECEIVE: acl.Action.RECEIVE,
        }[action]
        return authority.allowed(session.username, topic, mapped)


class EmbeddedBroker:
    """amqtt in-process: zero setup, for demos and small sites (~1,700 msg/s on the design machine)."""

    shared_subscriptions = False  # amqtt 0.12 has no $share: one ingest worker

    def __init__(self, settings: Settings, authority: BrokerAuthority) -> None:
        cfg = settings.mqtt
        self.authority = authority
        self.host, self.port = cfg.listen_host, cfg.listen_port
        self.listeners = DeviceListeners.from_settings(settings)
        self._tls_settings = settings.tls
        # With the plain device listener off, the service's own clients get a plain listener on loopback
        # (nothing but this machine reaches it; TLS to ourselves would only cost CPU).
        service = (
            (self.host, self.port)
            if self.listeners.plain
            else ("127.0.0.1", cfg.service_listen_port or free_port())
        )
        self.address = BrokerAddress(*service, authority.service_username, authority.service_password)
        self._broker: AuthFirstBroker | None = None

    async def __aenter__(self) -> Self:
        await self.authority.load()
        # amqtt needs a listener named "default": the plain device listener, or the service's loopback one.
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{self.address.host}:{self.address.port}"}
        }
        tls_ctx = None
        if self.listeners.tls:
            tls_ctx = await asyncio.to_thread(tls.server_context, self._tls_settings)
            listeners["tls"] = {"type": "tcp", "bind": f"{self.host}:{self.listeners.tls_port}", "ssl": True}
        config = {
            "listeners": listeners,
            "plugins": {
                f"{__name__}.DbAuthPlugin": {"authority": self.authority},
                f"{__name__}.DbTopicPlugin": {"authority": self.authority},
            },
        }
        # amqtt logs whole payloads at DEBUG; payloads may carry a login reference before ingest pseudonymises
        # it, so its loggers never go below INFO (house rule: no student data in logs).
        amqtt_log = logging.getLogger("amqtt")
        if amqtt_log.getEffectiveLevel() < logging.INFO:
            amqtt_log.setLevel(logging.INFO)
        self._broker = AuthFirstBroker(config, tls=tls_ctx)
        await self._broker.start()
        logger.info("embedded MQTT broker: %s", self.listeners.describe(self.host, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    async def sync(self) -> None:
        await self.authority.load()

    async def kick(self, username: str) -> None:
        if self._broker is not None and await self._broker.disconnect_client(username):
            logger.info("embedded broker disconnected a revoked device")


# ---------------------------------------------------------------- managed mosquitto


class MosquittoBroker:
    """A mosquitto child process with a generated config, a password file and the dynamic-security plugin.

    Passwords live in a password file; access control in the dynamic-security plugin (fleet.runtime.dynsec
    says why: the acl_file granted every SUBSCRIBE). Credentials change at enrollment, rotation and
    revocation; each sync first pushes the device clients and roles that changed over `$CONTROL` (so a device
    enrolled just now has its ACL before it can log in), then rewrites the password file and sends SIGHUP,
    which makes mosquitto re-read it. Changes are coalesced: at most one push and reload per
    RELOAD_MIN_INTERVAL_S, covering every change requested before it started; a sync that changes nothing
    pushes and reloads nothing.
    """

    shared_subscriptions = True

    def __init__(
        self, settings: Settings, authority: BrokerAuthority, *, data_dir: Path | None = None
    ) -> None:
        cfg = settings.mqtt
        self.authority = authority
        self.topics = authority.topics
        self.host, self.port = cfg.listen_host, cfg.listen_port
        # The service's own listener: loopback, whatever listen_host says (nothing but this machine uses it).
        self.service_host = "127.0.0.1"
        self.service_port = cfg.service_listen_port or free_port(self.service_host)
        self.dir = Path(data_dir or cfg.data_dir)
        self.listeners = DeviceListeners.from_settings(settings)
        self._tls_files = tls.TlsFiles.from_settings(settings.tls)
        # Started by root, mosquitto drops to this unprivileged account (never runs as root); None otherwise.
        self.run_as = broker_account(cfg.mosquitto_user)
        if self.run_as is not None:
            self.dir = runtime_dir(self.dir, self.run_as)
        self.binary = shutil.which(cfg.mosquitto_bin) or cfg.mosquitto_bin
        self.plugin = dynsec.find_plugin(cfg.mosquitto_dynsec_plugin)
        # The identity LabFleet manages the plugin with, on the device listener (the plugin's control topic is
        # served there only); a fresh password per start, known to this process and the password file only.
        self.admin_username = f"{authority.service_username}-dynsec"
        self._admin_password = credentials.new_password()
        self._pushed: dict[str, str] = {}  # identity -> school code, as the plugin holds them
        self.address = BrokerAddress(
            self.service_host, self.service_port, authority.service_username, authority.service_password
        )
        self.proc: asyncio.subprocess.Process | None = None
        self.reloads = 0  # SIGHUPs sent: the coalescing is visible to tests and benchmarks
        self.restarts = 0  # bulk changes applied by a restart (dynsec.stall_s says when)
        self.bulk_stall_s = dynsec.BULK_STALL_S
        self._service_line = ""
        self._passwd_written: str | None = None
        self._sync_lock = asyncio.Lock()
        self._requested = 0  # sync() calls so far
        self._covered = 0  # sync() calls covered by the last finished reload
        self._last_reload = -RELOAD_MIN_INTERVAL_S
        self._unwritable: set[str] = set()  # identities already warned about
        self.plugin_cache = Path(cfg.mosquitto_plugin_cache)
        self.recorder: connect_log.Recorder | None = None  # refused CONNECTs; None: not counted

    @property
    def conf_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    def write_files(self) -> None:
        """Config, service ACL and the plugin's start-up file (fixed for the broker's life) and the password
        file; blocking, for start-up."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "store").mkdir(exist_ok=True)
        if self.run_as is not None:
            # After dropping privileges mosquitto re-reads these files on SIGHUP and writes its store.
            for path in (self.dir, self.dir / "store", *(self.dir / "store").iterdir()):
                os.chown(path, self.run_as.uid, self.run_as.gid)
        self._service_line = (
            f"{self.authority.service_username}:{credentials.hash_password(self.authority.service_password)}\n"
            f"{self.admin_username}:{credentials.hash_password(self._admin_password)}"
        )
        self._write_passwd(self._passwd_text())
        self._write_plugin_config(self._devices())
        if (self.dir / "acl").exists():  # written by LabFleet before the plugin: the store may hold a $share
            (self.dir / "acl").unlink()  # membership a device got then (README, known limits)
            logger.warning("mosquitto: first start with dynamic-security ACLs; see README on the old store")
        atomic_write(
            self.dir / "passwd-service",
            self._service_line.split("\n", 1)[0] + "\n",
            mode=0o600,
            owner=self.run_as,
        )
        device = f"""use_username_as_clientid true
allow_anonymous false
password_file {self.dir / "passwd"}
{self.recorder.conf_lines() if self.recorder is not None else ""}
# Access control: the dynamic-security plugin, not an acl_file. mosquitto 2.0's acl_file grants every
# SUBSCRIBE (`#`, other devices' topics, the service's $share group) and filters only delivery; the plugin
# refuses a forbidden one (SUBACK 0x80, MQTT 5: 0x87). It defers passwords to the file above.
plugin {self.plugin}
plugin_opt_config_file {self.dir / "dynsec.json"}
"""
        cert, key = self._copy_tls_files()
        conf = f"""# Generated by LabFleet (labfleet serve --broker mosquitto); rewritten on every start.
# Each listener has its own password file: the service's listener takes the service identity only.
per_listener_settings true

# Devices (plain MQTT and/or MQTT over TLS). A client's id is replaced by its username, so a device only ever
# holds its own session: nobody can connect with another device's identity as client id to kick it off or
# wipe its queued commands (MQTT session takeover). The service identity may log in here too, but then as
# one client id: its own clients use the listener below, where each keeps its own id (ingest workers'
# persistent sessions, $share groups). With both device listeners each holds its own copy of the plugin,
# and LabFleet pushes every change to both.
{self.listeners.mosquitto(self.host, self.port, device, cert, key)}

# The service's own clients, on loopback: only the service identity logs in here, and it may do anything.
listener {self.service_port} {self.service_host}
allow_anonymous false
password_file {self.dir / "passwd-service"}

# Persistent sessions survive a broker restart: queued QoS 1 telemetry and commands are not lost.
persistence true
persistence_location {self.dir / "store"}/
autosave_interval 1
# Ingest acks after its database commit, in batches of up to 2,000: the default of 20 in-flight
# messages per client would cap it at 20 per commit.
max_inflight_messages 20000
# Messages held for a disconnected or slow persistent session; bounded so memory cannot grow unbounded.
max_queued_messages 200000
# Protocol payloads are at most 4 KiB; 64 KiB lets a bad one through to be counted as oversized.
max_packet_size 65536
{self._user_line()}log_dest stderr
log_type error
log_type warning
"""
        atomic_write(self.conf_path, conf, owner=self.run_as)

    def _copy_tls_files(self) -> tuple[Path, Path]:
        """The server certificate chain and key, copied where the broker's account can read them (the key
        0600, owned by that account); blocking, for start-up."""
        cert, key = self.dir / "tls-server.pem", self.dir / "tls-server.key"
        if self.listeners.tls:
            tls.server_context_files(self._tls_files)  # a clear error now, not a mosquitto log line later
            atomic_write(cert, self._tls_files.cert.read_text(), owner=self.run_as)
            atomic_write(key, self._tls_files.key.read_text(), mode=0o600, owner=self.run_as)
        return cert, key

    def _devices(self) -> dict[str, str]:
        """identity -> school code of every device that may connect and can be written to the broker."""
        return {
            identity: school
            for school, identity, _hash in self.authority.active_devices()
            if wire.is_device_identity(identity)
        }

    def _passwd_text(self) -> str:
        lines = [self._service_line]
        for _school, identity, pw_hash in self.authority.active_devices():
            # Never write a name that could break the file or the ACL. mosquitto's password file splits each
            # line at ':', so an identity holding one cannot log in. Enrollment refuses such identities and
            # migration 0040 renamed the kits' old `robot:<uid>` forms; a row left from before is said once.
            if not wire.is_device_identity(identity):
                if identity not in self._unwritable:
                    self._unwritable.add(identity)
                    logger.warning(
                        "device identity %r cannot be written to mosquitto's password file (':' or not "
                        "an identity); it cannot connect to this broker",
                        identity,
                    )
                continue
            lines.append(f"{identity}:{pw_hash}")
        return "\n".join(lines) + "\n"

    def _write_passwd(self, text: str) -> None:
        atomic_write(self.dir / "passwd", text, mode=0o600, owner=self.run_as)
        self._passwd_written = text

    def _user_line(self) -> str:
        # Started as root, mosquitto switches to this account once its listeners are open.
        return f"user {self.run_as.name}\n" if self.run_as is not None else ""

    async def __aenter__(self) -> Self:
        await self.authority.load()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.recorder = await connect_log.open_recorder(
            self.plugin_cache, self.dir, self.run_as, self.authority.note_attempt
        )
        try:
            self.write_files()
            await self.start()
        except BaseException:
            self._close_recorder()
            raise
        return self

    def _close_recorder(self) -> None:
        if self.recorder is not None:
            self.recorder.log.close()
            self.recorder = None

    async def start(self) -> None:
        # stderr to a file, not a pipe: nobody reads a pipe while the broker runs, and a full pipe blocks it.
        # A local file opens at once: no thread for it.
        with open(self.dir / "mosquitto.log", "ab") as log:  # noqa: ASYNC230
            self.proc = await asyncio.create_subprocess_exec(
                self.binary, "-c", str(self.conf_path), stdout=asyncio.subprocess.DEVNULL, stderr=log
            )
        try:
            for port, _tls in self.listeners.ports(self.port):
                await wait_for_port(self.host, port, MOSQUITTO_START_TIMEOUT_S, self.proc)
            await wait_for_port(self.service_host, self.service_port, MOSQUITTO_START_TIMEOUT_S, self.proc)
        except RuntimeError as err:
            tail = (self.dir / "mosquitto.log").read_text(errors="replace")[-500:]
            raise RuntimeError(f"{err}; log: {tail}") from None
        logger.info(
            "mosquitto (pid %s) listening on %s (service clients on %s:%s)",
            self.proc.pid,
            self.listeners.describe(self.host, self.port),
            self.service_host,
            self.service_port,
        )

    async def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), MOSQUITTO_STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self._close_recorder()

    async def sync(self) -> None:
        """Make the database's credentials take effect: returns once a reload that covers this call is
        done."""
        self._requested += 1
        mine = self._requested
        loop = asyncio.get_running_loop()
        async with self._sync_lock:
            if self._covered >= mine:
                return  # a reload that started after this call was made has already covered it
            wait = self._last_reload + RELOAD_MIN_INTERVAL_S - loop.time()
            if wait > 0:
                await asyncio.sleep(
                    wait
                )  # callers arriving meanwhile queue on the lock and share the next reload
            covering = self._requested
            await self.authority.load()
            devices = self._devices()
            cmds = dynsec.changes(self.topics, self._pushed, devices)
            text = self._passwd_text()
            if self.running and dynsec.stall_s(len(cmds), len(devices)) > self.bulk_stall_s:
                await self._restart_with(devices, text)  # a bulk change: one restart beats the commands
                self._last_reload = loop.time() + dynsec.BULK_MIN_INTERVAL_S - RELOAD_MIN_INTERVAL_S
            elif self.running:
                await self._control(cmds)  # before the password file: a new device must find its ACL
            else:
                await asyncio.to_thread(self._write_plugin_config, devices)  # read when it starts again
            self._pushed = devices
            if text != self._passwd_written:
                await asyncio.to_thread(self._write_passwd, text)  # ~1 MB at 10,000 devices: off the loop
                if self.proc is not None and self.proc.returncode is None:
                    # Sent before the caller answers (the enrollment reply): a CONNECT the terminal sends
                    # after that reply is read by mosquitto after the signal, so after the reload.
                    self.proc.send_signal(signal.SIGHUP)
                    self.reloads += 1
                self._last_reload = loop.time()
            self._covered = covering

    async def kick(self, username: str) -> None:
        # Nothing more to do. The sync before this call deleted a revoked device from the plugin, which
        # disconnects it; and its SIGHUP made mosquitto re-check every connected client against the reloaded
        # password file, which drops a rotated device (its session was opened with the old password).
        # tests/mqtt/test_acl_matrix.py measures both.
        return None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def _control(self, cmds: list[dict[str, Any]]) -> None:
        # The plugin's control topic is served on the device listeners only, and each holds its own copy.
        for port, on_tls in self.listeners.ports(self.port):
            # Our own child on a port we chose: the CA pins it; the name it is reached by (listen_host,
            # often 0.0.0.0) need not be in the certificate.
            ctx = tls.loopback_client_context(self._tls_files) if on_tls else None
            await dynsec.apply(
                self.host, port, self.admin_username, self._admin_password, [dict(c) for c in cmds], tls=ctx
            )

    async def _restart_with(self, devices: dict[str, str], passwd: str) -> None:
        """Stop, write the plugin's file and the password file from the database, start (clients reconnect;
        persistent sessions and their queued messages are kept)."""
        logger.warning("mosquitto: %d device changes at once, restarting it with the new ACLs", len(devices))
        await self.stop()
        await asyncio.to_thread(self._write_plugin_config, devices)
        await asyncio.to_thread(self._write_passwd, passwd)
        await self.start()
        self.restarts += 1

    def _write_plugin_config(self, devices: dict[str, str]) -> None:
        cfg = dynsec.config(
            self.topics,
            devices,
            admin_username=self.admin_username,
            service_username=self.authority.service_username,
        )
        atomic_write(self.dir / "dynsec.json", json.dumps(cfg), mode=0o600, owner=self.run_as)
        self._pushed = devices


class ExternalBroker:
    """Any MQTT 3.1.1/5 broker given by URL; its auth and ACLs are the operator's (docs show mosquitto's)."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.mqtt
        self.address = BrokerAddress.from_url(cfg.url, cfg.service_username, cfg.service_password or None)
        self.shared_subscriptions = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def sync(self) -> None:
        return None

    async def kick(self, username: str) -> None:
        logger.warning("external broker: revoke the device's credentials on the broker as well")


def service_password(settings: Settings) -> str:
    """The configured service password, or a fresh one per start for managed brokers."""
    return settings.mqtt.service_password or credentials.new_password()


def broker_from_settings(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Any:
    """An async context manager for the configured broker (embedded, mosquitto, external), or None."""
    kind = settings.mqtt.broker
    if kind == "none":
        return None
    if kind == "external":
        return ExternalBroker(settings)
    authority = BrokerAuthority(
        sessions,
        wire.Topics(settings.mqtt.topic_prefix),
        settings.mqtt.service_username,
        service_password(settings),
    )
    if kind == "embedded":
        return EmbeddedBroker(settings, authority)
    if kind == "mosquitto":
        return MosquittoBroker(settings, authority)
    raise ValueError(f"unknown broker kind {kind!r} (embedded, mosquitto, external, none)")
