"""The hot-path MQTT codec: byte tables, split feeds and hostile lengths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.runtime import mqtt_codec as c


def test_connect_bytes_match_the_spec_example() -> None:
    pkt = c.encode_connect("dev1", username="u", password="p", clean_session=True, keepalive=60)
    assert pkt == bytes([0x10, 22]) + b"\x00\x04MQTT\x04\xc2\x00\x3c" + b"\x00\x04dev1\x00\x01u\x00\x01p"


def test_pubacks_batch_encoding() -> None:
    assert c.encode_pubacks([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"


@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.binary(max_size=3000), st.integers(0, 1),
                          st.integers(1, 65535), st.booleans()), max_size=8),
       st.integers(1, 50))
def test_publishes_survive_any_split_of_the_stream(msgs, chunk) -> None:  # type: ignore[no-untyped-def]
    stream = b"".join(c.encode_publish(t, p, qos=q, packet_id=pid, retain=r) for t, p, q, pid, r in msgs)
    d = c.Decoder()
    got = []
    for i in range(0, len(stream), chunk):
        got += d.feed(stream[i:i + chunk])
    assert got == [c.Publish(t, p, q, pid if q else None, r, False) for t, p, q, pid, r in msgs]


def test_connack_suback_and_ping() -> None:
    d = c.Decoder()
    out = d.feed(b"\x20\x02\x01\x00" + b"\x90\x03\x00\x07\x01" + b"\xd0\x00")
    assert out == [c.Connack(True, 0), c.Suback(7, (1,)), c.Other(c.PINGRESP, b"")]


def test_hostile_length_is_a_protocol_error_not_a_buffer() -> None:
    with pytest.raises(c.MqttProtocolError):
        c.Decoder().feed(b"\x30\xff\xff\xff\x7f")
    with pytest.raises(c.MqttProtocolError):
        c.Decoder().feed(b"\x30\xff\xff\xff\xff\x01")
