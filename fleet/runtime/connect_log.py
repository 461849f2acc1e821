"""Who is refused at CONNECT by a managed mosquitto: its connect-recorder plugin, built here, and the socket
it reports to.

mosquitto refuses a revoked device itself (the device is gone from its password file and from
dynamic-security) and logs only "Client <unknown> disconnected, not authorised.", so without help the
security inspection cannot count revoked devices still trying to connect on that broker. The plugin
(`mosquitto_plugin/labfleet_connects.c`; its header says why it listens for disconnects rather than
authentication) sends the username of each refused CONNECT in one datagram to a unix socket this module
owns; it decides nothing. `BrokerAuthority.note_attempt` counts the ones of revoked identities into the same
store the embedded broker's auth check uses (fleet/runtime/refused_connects.py).

The plugin is compiled with gcc against Debian's mosquitto-dev headers when the broker starts, into a cache
keyed by a digest of its source and the headers (a changed source or a mosquitto upgrade rebuilds it). Without
gcc or the headers the broker runs without it and the service says once why those attempts are not counted.
Passwords never reach the plugin's datagrams, and nothing here logs an identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet.runtime.broker_files import BrokerAccount

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("mosquitto_plugin") / "labfleet_connects.c"
# Where Debian's mosquitto-dev (and a source install) put the plugin headers.
INCLUDE_DIRS = (Path("/usr/include"), Path("/usr/local/include"))
HEADERS = ("mosquitto.h", "mosquitto_broker.h", "mosquitto_plugin.h")
MAGIC = b"lfc1"
# gcc builds the plugin in 0.07 s of CPU (0.7 s wall at a load average of 13); 60 s is a machine starved.
BUILD_TIMEOUT_S = 60.0
# Refused CONNECTs arrive at a revoked terminal's retry pace; a burst is read as fast as the event loop gets
# to it. 1 MiB of ~40-byte datagrams is more than the kernel's default queue of 512 unread ones
# (net.unix.max_dgram_qlen), the real limit: past it the plugin drops records and the broker never waits.
RECV_BUFFER_BYTES = 1 << 20
# sockaddr_un holds 108 bytes; the socket lives in a short private temp directory to stay well inside it.
MAX_SOCKET_PATH = 100


class RecorderUnavailable(Exception):
    """The connect recorder cannot be built here (no gcc, no mosquitto-dev headers, a failed build)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    username: str
    client_id: str
    address: str


def parse(datagram: bytes) -> Attempt | None:
    """One plugin datagram: MAGIC NUL username NUL client id (empty once refused) NUL address; None for
    anything else."""
    parts = datagram.split(b"\0")
    if len(parts) != 4 or parts[0] != MAGIC or not parts[1]:
        return None
    try:
        username, client_id, address = (p.decode() for p in parts[1:])
    except UnicodeDecodeError:
        return None
    return Attempt(username, client_id, address)


def _headers_dir() -> Path:
    for d in INCLUDE_DIRS:
        if all((d / h).is_file() for h in HEADERS):
            return d
    raise RecorderUnavailable(
        "mosquitto's plugin headers are not installed (Debian: apt-get install mosquitto-dev)"
    )


async def build(cache_dir: Path, compiler: str = "gcc") -> Path:
    """The compiled plugin, from `cache_dir` when it is there and current, else compiled now."""
    cc = shutil.which(compiler)
    if cc is None:
        raise RecorderUnavailable(f"{compiler} is not installed (Debian: apt-get install gcc mosquitto-dev)")
    include = _headers_dir()
    digest = hashlib.sha256(SOURCE.read_bytes())
    for h in HEADERS:
        digest.update((include / h).read_bytes())
    out = cache_dir / f"labfleet_connects-{digest.hexdigest()[:16]}.so"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # two services building at once do not collide
    proc = await asyncio.create_subprocess_exec(
        cc,
        "-shared",
        "-fPIC",
        "-O2",
        "-Wall",
        f"-I{include}",
        "-o",
        str(tmp),
        str(SOURCE),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), BUILD_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RecorderUnavailable(f"{compiler} took over {BUILD_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RecorderUnavailable(f"{compiler} failed: {err.decode(errors='replace')[-300:].strip()}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    for stale in cache_dir.glob("labfleet_connects-*.so"):
        if stale != out:
            stale.unlink(missing_ok=True)
    logger.info("mosquitto: built LabFleet's connect recorder (%s)", out)
    return out


class ConnectLog(asyncio.DatagramProtocol):
    """LabFleet's end of the plugin's socket: each attempt's username goes to `on_attempt`."""

    def __init__(self, on_attempt: Callable[[str], None]) -> None:
        self._on_attempt = on_attempt
        self._transport: asyncio.BaseTransport | None = None
        self._dir: Path | None = None
        self.socket_path: Path | None = None
        self.received = 0  # attempts read: visible to tests
        self.malformed = 0

    async def open(self, owner: BrokerAccount | None) -> Path:
        """Bind the socket in a fresh private directory that `owner` (the broker's account) may write to."""
        self._dir = Path(tempfile.mkdtemp(prefix="labfleet-mq-"))
        path = self._dir / "connects.sock"
        if len(str(path)) > MAX_SOCKET_PATH:
            self.close()
            raise RecorderUnavailable(f"the temp directory's path is too long for a unix socket: {path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
            sock.setblocking(False)
            os.chmod(path, 0o600)  # only the broker's account (and root) may send
            if owner is not None:
                os.chown(self._dir, owner.uid, owner.gid)
                os.chown(path, owner.uid, owner.gid)
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            self.close()
            raise
        self.socket_path = path
        return path

    def datagram_received(self, data: bytes, addr: object) -> None:
        attempt = parse(data)
        if attempt is None:
            self.malformed += 1
            return
        self.received += 1
        self._on_attempt(attempt.username)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.socket_path = None


@dataclass(frozen=True, slots=True)
class Recorder:
    """The plugin as the broker loads it, and the socket it reports to."""

    plugin: Path
    log: ConnectLog

    def conf_lines(self) -> str:
        """mosquitto.conf lines for a device listener, before dynamic-security."""
        return (
            "# Refused CONNECTs, told to the service by username (fleet/runtime/connect_log.py): it only\n"
            "# listens to disconnects, so dynamic-security and the password file decide as without it.\n"
            f"plugin {self.plugin}\nplugin_opt_socket {self.log.socket_path}"
        )


async def open_recorder(
    cache_dir: Path, plugin_dir: Path, owner: BrokerAccount | None, on_attempt: Callable[[str], None]
) -> Recorder | None:
    """The listening socket and the plugin copied into `plugin_dir` (which the broker's account can read), or
    None, said once, when the plugin cannot be built: mosquitto then runs without it."""
    try:
        built = await build(cache_dir)
        log = ConnectLog(on_attempt)
        await log.open(owner)
    except (RecorderUnavailable, OSError) as err:
        logger.warning(
            "mosquitto: revoked devices' CONNECT attempts are not counted for the security inspection: %s",
            err,
        )
        return None
    plugin = plugin_dir / "labfleet_connects.so"
    tmp = plugin.with_suffix(".so.tmp")
    await asyncio.to_thread(shutil.copyfile, built, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, plugin)
    return Recorder(plugin, log)
