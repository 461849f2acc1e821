"""Many paho-mqtt clients on one asyncio loop, without a thread per client.

This is how aiomqtt drives paho: each client's socket callbacks register its socket with the loop
(`add_reader` -> `loop_read`, `add_writer` -> `loop_write`), and a housekeeping task calls `loop_misc` for
keepalive. Ten thousand clients then cost ten thousand sockets and a few kilobytes each, not ten thousand
threads. paho's own `connect()` opens its TCP socket blocking; on loopback that returns at once as long as the
broker's listen backlog is not full, so the pool bounds how many connects wait for a CONNACK.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import resource
import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from fleet.compat.paho import LeanPubackClient
from fleet.runtime.supervise import cancel_and_wait

logger = logging.getLogger(__name__)

# Connects waiting for CONNACK at once: below the broker's accept queue (mosquitto 2.0 listens with a backlog
# of 100, whatever the kernel allows), so paho's blocking connect() always finds room. With 512, a broker that
# paused for a moment (a persistence save) overflowed that queue, the kernel dropped SYNs, and each connect()
# then blocked the whole loop for a 1 s SYN retransmit: the rollout-2027 storm crawled at 90 connects/s with
# every process idle. The broker answers a connect in well under 1 ms, so 64 in flight lose no throughput.
MAX_CONNECTING = 64
# Keepalive housekeeping pass: paho's loop_misc only needs to run well within the 60 s keepalive.
MISC_INTERVAL_S = 5.0
# Protocol section 1: 60 s keepalive.
KEEPALIVE_S = 60
# TCP connect timeout for paho's blocking connect: loopback answers at once or refuses.
CONNECT_TIMEOUT_S = 5.0
# QoS 1 messages in flight per terminal: a terminal sends one message a minute, so 20 (paho's default) is
# plenty; a larger window would only hide a stalled broker.
MAX_INFLIGHT = 20
# select() cannot watch a file descriptor at or above FD_SETSIZE (1024 on Linux): paho's own network thread
# (loop_start, used by the lab rooms' edge agents in this process) gets "filedescriptor out of range" there,
# counts it as a lost connection and never sees a CONNACK. The pool's sockets, driven by the asyncio loop
# (epoll), are moved to numbers from here up, so 10,000 terminals leave the low numbers to select() users.
SELECT_FD_LIMIT = 1024


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE towards `wanted` (capped at the hard limit); returns the soft limit now in
    force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class PoolClient(LeanPubackClient):
    """A paho client with the lean PUBACK path, its sockets moved above select()'s range."""

    def adopt_socket(self, sock: socket.socket) -> socket.socket:
        return above_select_range(sock)


def above_select_range(sock: socket.socket) -> socket.socket:
    """The same connection on a file descriptor >= SELECT_FD_LIMIT (the socket itself when none is free)."""
    if sock.fileno() >= SELECT_FD_LIMIT:
        return sock
    try:
        high = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, SELECT_FD_LIMIT)
    except OSError:  # the fd limit is below SELECT_FD_LIMIT or reached: keep the low number, as before
        return sock
    moved = socket.socket(fileno=high)
    moved.settimeout(sock.gettimeout())
    sock.close()
    return moved


class Pool:
    """Owns the socket registrations of many paho clients on one loop, and a bounded connect gate."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connecting: int = MAX_CONNECTING,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # MQTT over TLS (protocol 1.1): every client verifies the broker with this context. paho does the
        # handshake inside its blocking connect(), so at the bell the handshakes are paid in this loop, once
        # per terminal, exactly as the broker pays them: what benchmarks/tls_storm.py measures. So the broker
        # must not run on this loop (the in-process embedded broker could not answer the handshake).
        self.tls_context = tls_context
        self.loop = asyncio.get_running_loop()
        self.clients: set[paho.Client] = set()
        # Sockets with a writer registered: unregistering one that has none is asyncio raising and formatting
        # a KeyError inside, once per paho write (paho asks after every packet).
        self._writing: set[Any] = set()
        self.connecting = asyncio.Semaphore(max_connecting)
        self._misc: asyncio.Task[None] | None = None

    def new_client(
        self, client_id: str, username: str, password: str, *, userdata: Any = None
    ) -> paho.Client:
        c = PoolClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            userdata=userdata,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,
        )
        c.username_pw_set(username, password)
        if self.tls_context is not None:
            c.tls_set_context(self.tls_context)
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.connect_timeout = CONNECT_TIMEOUT_S
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        # No on_socket_register_write: paho then writes a packet at once when it is queued outside a callback,
        # instead of a writer registration, a loop pass and an unregistration per message (~1/3 of the
        # generator's cost per message). What is left unwritten (a full socket buffer, or a packet queued
        # inside a callback) is flushed through `flush`, which registers a writer only then.
        c.on_socket_unregister_write = self._on_unregister_write
        self.clients.add(c)
        return c

    def forget(self, c: paho.Client) -> None:
        self.clients.discard(c)

    def start(self) -> None:
        self._misc = asyncio.create_task(self._misc_loop(), name="mqttpool-misc")

    async def close(self) -> None:
        await cancel_and_wait([self._misc], logger)
        self._misc = None
        for c in list(self.clients):  # a second close finds every socket gone already
            sock = c.socket()
            if sock is not None:
                self._unregister(sock)
                try:
                    sock.close()
                except OSError:
                    pass

    # ---------------------------------------------------------------- socket callbacks
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_reader(sock, self._read, client)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        # paho 2.2 opens its wake-up socket pair only in loop() and loop_start(), which this pool never calls,
        # so a pool client holds one file descriptor and writes no wake-up byte per message (pinned by
        # tests/compat/test_paho_contract.py).

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._unregister(sock)

    def _add_writer(self, client: paho.Client, sock: Any) -> None:
        self.loop.add_writer(sock, self._write, client)
        self._writing.add(sock)

    def _remove_writer(self, sock: Any) -> None:
        if sock in self._writing:
            self._writing.discard(sock)
            self.loop.remove_writer(sock)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._remove_writer(sock)

    def _unregister(self, sock: Any) -> None:
        try:
            self.loop.remove_reader(sock)
            self._remove_writer(sock)
        except (ValueError, OSError):  # already closed: nothing registered any more
            pass

    def _read(self, client: paho.Client) -> None:
        client.loop_read()
        self.flush(client)  # PUBACKs and anything the callbacks published

    def _write(self, client: paho.Client) -> None:
        client.loop_write()
        if not client.want_write():
            sock = client.socket()
            if sock is not None:
                self._remove_writer(sock)

    def flush(self, client: paho.Client) -> None:
        """Write what paho still holds, at once, or once the socket can take it."""
        if not client.want_write():
            return
        client.loop_write()
        sock = client.socket()
        if client.want_write() and sock is not None:
            self._add_writer(client, sock)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            started = time.monotonic()
            for i, c in enumerate(list(self.clients)):
                if c.socket() is not None:
                    c.loop_misc()
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # let socket callbacks run between slices of a 10,000-client pass
            logger.debug(
                "misc pass over %d clients took %.1f ms",
                len(self.clients),
                (time.monotonic() - started) * 1000,
            )

    # ---------------------------------------------------------------- connect
    def connect(self, client: paho.Client, will_topic: str, will_payload: bytes) -> MQTTErrorCode | str:
        """Open the TCP connection and send CONNECT (the CONNACK arrives through on_connect)."""
        client.will_set(will_topic, will_payload, qos=1, retain=True)
        try:
            if client.host:  # reconnect keeps paho's queued QoS 1 messages and resends them
                return client.reconnect()
            return client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        except (OSError, TimeoutError) as err:
            return type(err).__name__

    @staticmethod
    def drop(client: paho.Client) -> None:
        """Lose the link without DISCONNECT (Wi-Fi gone): the broker sees EOF and publishes the Last Will."""
        sock = client.socket()
        if sock is None:
            return
        try:
            # The reader then sees EOF and paho reports the connection lost through on_disconnect.
            sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]  # paho types its TCP socket narrowly
        except OSError:
            pass
