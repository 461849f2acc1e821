"""The paho-mqtt private API that fleet.compat.paho relies on: present, unchanged in shape, and behaving.

An upgrade of paho that renames a hook or changes when it is called fails here, by name; the ingest and the
district simulator tests run every message through the same classes.
"""

from __future__ import annotations

import inspect
import re
import socket
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet.compat import paho as compat

ROOT = Path(__file__).resolve().parents[2]
# Who calls each overridden hook inside paho: if paho stops calling it there, our override does nothing.
CALLERS = {
    "_sock_recv": "_packet_read",
    "_handle_on_message": "_handle_publish",
    "_handle_pubackcomp": "_packet_handle",
    "_create_socket_connection": "_create_socket",
}


def test_installed_paho_is_the_tested_minor_and_pyproject_pins_it() -> None:
    assert version("paho-mqtt").startswith(compat.TESTED_MINOR + "."), version("paho-mqtt")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("paho-mqtt")]
    major, minor = compat.TESTED_MINOR.split(".")
    assert re.fullmatch(rf"paho-mqtt>={major}\.{minor}(\.\d+)?,<{major}\.{int(minor) + 1}", pin), pin


def test_the_private_methods_exist_with_the_parameters_used() -> None:
    for name, want in compat.PRIVATE_METHODS.items():
        fn = getattr(mqtt.Client, name, None)
        assert fn is not None, f"paho Client lost {name}"
        assert list(inspect.signature(fn).parameters)[1:] == list(want), name


def test_paho_still_calls_each_overridden_hook_where_it_did() -> None:
    for hook, caller in CALLERS.items():
        src = inspect.getsource(getattr(mqtt.Client, caller))
        assert f"self.{hook}(" in src, f"paho's {caller} no longer calls {hook}"


def test_a_fresh_client_has_the_private_attributes_used() -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="contract")
    missing = [name for name in compat.PRIVATE_ATTRIBUTES if not hasattr(c, name)]
    assert not missing, f"paho Client lost {missing}"


def _listener() -> socket.socket:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    return srv


class _Adopting(compat.LeanPubackClient):
    adopted: list[socket.socket]

    def adopt_socket(self, sock: socket.socket) -> socket.socket:
        self.adopted.append(sock)
        return sock


def test_lean_puback_completes_a_qos1_publish_and_adopts_the_socket() -> None:
    """Over a real loopback socket: CONNACK, then a bare 3.1.1 PUBACK completes the publish through paho."""
    srv = _listener()
    c = _Adopting(CallbackAPIVersion.VERSION2, client_id="contract", protocol=mqtt.MQTTv311)
    c.adopted = []
    acked: list[int] = []
    c.on_publish = lambda _c, _u, mid, rc, props: acked.append(mid)
    try:
        c.connect("127.0.0.1", srv.getsockname()[1], keepalive=60)
        peer, _ = srv.accept()
        # paho 2.2 makes its wake-up socket pair only in loop()/loop_start(); the simulator's pool relies on
        # it.
        assert c._sockpairR is None and c._sockpairW is None
        assert c.adopted == [c.socket()]
        info = c.publish("t/1", b"x", qos=1)
        assert compat.unacknowledged(c) == 1
        peer.sendall(b"\x20\x02\x00\x00" + b"\x40\x02" + info.mid.to_bytes(2, "big"))  # CONNACK, PUBACK
        peer.settimeout(2)
        for _ in range(20):
            c.loop_read()
            if acked:
                break
        assert acked == [info.mid]
        assert compat.unacknowledged(c) == 0
        assert info.is_published()
        peer.close()
    finally:
        sock = c.socket()
        if sock is not None:
            sock.close()
        srv.close()


def test_buffered_client_reads_many_packets_from_one_recv() -> None:
    """Three PUBLISH packets in one TCP write reach on_message, in order, from one read of the socket."""
    srv = _listener()
    c = compat.BufferedClient(CallbackAPIVersion.VERSION2, client_id="contract", protocol=mqtt.MQTTv311)
    got: list[tuple[str, bytes]] = []
    c.on_message = lambda _c, _u, msg: got.append((msg.topic, msg.payload))
    reads: list[int] = []
    real = mqtt.Client._sock_recv

    def counting(self: Any, bufsize: int) -> bytes:
        reads.append(bufsize)
        return real(self, bufsize)

    try:
        c.connect("127.0.0.1", srv.getsockname()[1], keepalive=60)
        peer, _ = srv.accept()
        publishes = b"".join(
            b"\x30" + bytes([2 + 3 + len(p)]) + b"\x00\x03t/" + str(i).encode() + p
            for i, p in enumerate((b"a", b"bb", b"ccc"))
        )
        peer.sendall(b"\x20\x02\x00\x00" + publishes)
        mqtt.Client._sock_recv = counting
        try:
            import time

            deadline = time.monotonic() + 2
            while len(got) < 3 and time.monotonic() < deadline:
                try:
                    c.loop_read()
                except BlockingIOError:
                    time.sleep(0.01)
        finally:
            mqtt.Client._sock_recv = real
        assert got == [("t/0", b"a"), ("t/1", b"bb"), ("t/2", b"ccc")]
        assert len(reads) <= 2 and all(r == compat.RECV_CHUNK for r in reads), reads
        assert c.buffered() == 0
        peer.close()
    finally:
        sock = c.socket()
        if sock is not None:
            sock.close()
        srv.close()
