"""paho-mqtt 2.2's private API, in one place: the hooks under its receive path and its PUBACK handling.

Two per-message costs of paho sit behind private methods with no public switch: it reads a packet with three
or four recv() calls, and it decodes every PUBACK through its MQTT 5 path. The ingest hot path
(fleet.runtime.mqtt_subscriber) and the district simulator's pool (simulators.district.mqttpool) take those
costs out through the classes below, and nothing else in the tree names a private paho attribute.
tests/compat/test_paho_contract.py pins every private name used here and fails on a paho upgrade that moves
one (pyproject.toml pins the tested minor).
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# The paho-mqtt minor this module was written against (pyproject.toml pins it; the contract test checks both).
TESTED_MINOR = "2.2"
# Client methods overridden or called below: (name, parameters after self); the contract test checks each.
PRIVATE_METHODS: dict[str, tuple[str, ...]] = {
    "_sock_recv": ("bufsize",),
    "_handle_on_message": ("message",),
    "_handle_pubackcomp": ("cmd",),
    "_do_on_publish": ("mid", "reason_code", "properties"),
    "_create_socket_connection": (),
}
# Client attributes read below; the contract test checks each exists on a fresh client.
PRIVATE_ATTRIBUTES = (
    "_in_packet",
    "_protocol",
    "_out_message_mutex",
    "_out_messages",
    "_on_message",
    "_userdata",
)
# paho reads a packet with three or four recv() calls (fixed header byte, each remaining-length byte, body):
# four system calls per 120-byte telemetry message, about a tenth of the service's CPU per message. One
# recv() of up to this many bytes feeds ~2,000 packets from memory instead.
RECV_CHUNK = 256 * 1024


class BufferedClient(mqtt.Client):
    """paho's client, with two per-message costs of its receive path taken out (the ingest hot path).

    - A read buffer under its packet reader. paho asks its socket for exactly the bytes it parses next (one
      byte of fixed header, then the remaining length a byte at a time, then the body). `_sock_recv` answers
      those asks from one large recv() per socket read event, so the syscall count per message drops from
      ~4 to ~0. Bytes held in the buffer do not make the socket readable again: the reader must keep calling
      `loop_read` while `buffered()` says there are some.
    - The message dispatch. paho walks its per-topic callback matcher and takes two locks for every message;
      this client has one `on_message` and no per-topic callbacks, on one thread, so `_handle_on_message`
      calls it straight.

    Everything else (packet parsing, acks, keepalive) is paho's own.
    """

    _rbuf: bytes = b""
    _rpos: int = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(RECV_CHUNK)  # BlockingIOError when empty, b"" at EOF: as paho expects
            if not buf:
                return buf
            self._rbuf, pos = buf, 0
        end = pos + bufsize
        self._rpos = end
        return buf[pos:end]

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self._on_message
        if on_message is not None:
            on_message(self, self._userdata, message)

    def buffered(self) -> int:
        """Bytes received from the socket and not yet handed to paho's parser."""
        return len(self._rbuf) - self._rpos


# What paho hands on_publish for an MQTT 3.1.1 PUBACK, which has neither a reason code nor properties: one
# shared pair (callbacks that use these only read the mid) instead of two fresh objects per acknowledgement.
_PUBACK_OK = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


class LeanPubackClient(mqtt.Client):
    """A paho client whose MQTT 3.1.1 PUBACK path allocates nothing per acknowledgement, with a socket hook.

    paho decodes every PUBACK through its MQTT 5 path, building a ReasonCode and a Properties object (whose
    constructor builds a name table) that a 3.1.1 PUBACK can never carry: a third of the cost of reading a
    PUBACK in a cProfile of the rollout-2027 generator (7.1 of 21 s). Here a well-formed 3.1.1 PUBACK (two
    bytes: the packet id) goes straight to paho's own completion (`_do_on_publish`: callback, out-message and
    in-flight bookkeeping); anything else (MQTT 5, PUBCOMP, a malformed length) takes paho's path unchanged.

    `adopt_socket` (public, override it) sees each TCP socket paho opens before paho uses it.
    """

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol != mqtt.MQTTv311 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_OK, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _create_socket_connection(self) -> socket.socket:
        # paho 2.x's one hook where its TCP socket is made.
        return self.adopt_socket(super()._create_socket_connection())

    def adopt_socket(self, sock: socket.socket) -> socket.socket:
        """The socket paho will use for a connection it just opened (this one, or a replacement)."""
        return sock


def unacknowledged(client: mqtt.Client) -> int:
    """QoS 1/2 messages the client has queued or sent and the broker has not acknowledged yet."""
    return len(client._out_messages)
