"""A managed broker's files and account: atomic writes with an owner, and the unprivileged account a
root-started mosquitto runs as (with a directory it can reach)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pwd
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fleet.settings import Settings

logger = logging.getLogger(__name__)


def atomic_write(path: Path, text: str, mode: int = 0o644, owner: BrokerAccount | None = None) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, owner.uid, owner.gid)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """The unprivileged account a root-started mosquitto runs as."""

    name: str
    uid: int
    gid: int


def broker_account(name: str) -> BrokerAccount | None:
    """The account mosquitto drops to when LabFleet runs as root; None when it does not (it inherits ours)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"labfleet runs as root and the broker account {name!r} does not exist: create it "
            f"(useradd --system {name}) or set LABFLEET_MQTT__MOSQUITTO_USER; mosquitto never runs as root"
        ) from None
    if entry.pw_uid == 0:
        raise RuntimeError(f"mqtt.mosquitto_user {name!r} is root; mosquitto never runs as root")
    return BrokerAccount(name, entry.pw_uid, entry.pw_gid)


def _reachable(path: Path, account: BrokerAccount) -> bool:
    """Whether `account` may enter every directory above `path` (the x bit that applies to it)."""
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def runtime_dir(data_dir: Path, account: BrokerAccount) -> Path:
    """`data_dir`, or, when the broker account cannot reach it (a root-only home or tmp), a private directory
    of that account under the system temp dir, stable per data_dir so the persistence store survives a
    restart of the service."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if _reachable(data_dir, account):
        return data_dir
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    alt = Path(tempfile.gettempdir()) / f"labfleet-mosquitto-{digest}"
    try:
        alt.mkdir(mode=0o700)
    except FileExistsError:
        st = alt.lstat()
        # /tmp is shared: never follow a link or use a directory somebody else made.
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, account.uid):
            raise RuntimeError(f"{alt} exists and is not LabFleet's; remove it or make {data_dir} reachable")
    os.chown(alt, account.uid, account.gid)
    logger.warning(
        "mosquitto runs as %s, which cannot reach %s; its config, passwords and store are in %s",
        account.name,
        data_dir,
        alt,
    )
    return alt


@dataclass(frozen=True, slots=True)
class DeviceListeners:
    """Which device listeners a managed broker opens: plain MQTT on listen_port, MQTT over TLS on tls_port."""

    plain: bool
    tls: bool
    tls_port: int

    @classmethod
    def from_settings(cls, settings: Settings) -> DeviceListeners:
        cfg = settings.mqtt
        if not (cfg.plain_listener or cfg.tls):
            raise ValueError(
                "no device listener: LABFLEET_MQTT__PLAIN_LISTENER=false needs LABFLEET_MQTT__TLS=true"
            )
        return cls(cfg.plain_listener, cfg.tls, cfg.tls_port)

    def ports(self, plain_port: int) -> list[tuple[int, bool]]:
        """(port, is TLS) of every device listener."""
        return [(plain_port, False)] * self.plain + [(self.tls_port, True)] * self.tls

    def describe(self, host: str, plain_port: int) -> str:
        return ", ".join(
            f"{'mqtts' if tls else 'mqtt'}://{host}:{port}" for port, tls in self.ports(plain_port)
        )

    def mosquitto(self, host: str, plain_port: int, device_settings: str, cert: Path, key: Path) -> str:
        """mosquitto.conf lines for the device listeners, each with the same device settings (with
        per_listener_settings every listener carries its own)."""
        out = []
        for port, tls in self.ports(plain_port):
            out.append(f"listener {port} {host}\n{device_settings}")
            if tls:
                # tls_version is the lowest version accepted: TLS 1.0 and 1.1 are refused at the handshake.
                out.append(f"certfile {cert}\nkeyfile {key}\ntls_version tlsv1.2\n")
        return "".join(out)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_for_port(
    host: str, port: int, timeout: float, proc: asyncio.subprocess.Process | None = None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if proc is not None and proc.returncode is not None:
            raise RuntimeError(f"broker process exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection(host, port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s") from None
            await asyncio.sleep(0.02)
