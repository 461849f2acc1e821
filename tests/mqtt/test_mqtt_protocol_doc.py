"""docs/protocol-mqtt.md covers every topic, channel, field, reason, event type and command the code uses."""

from __future__ import annotations

import re
from pathlib import Path

from fleet.domain import seqwindow, wire
from fleet.runtime.ingest import ERROR_REPLY_INTERVAL_S

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol-mqtt.md").read_text()
CODE_TOKENS = set(re.findall(r"`([^`]+)`", DOC))


def _wire_field_names() -> set[str]:
    src = "\n".join(path.read_text() for path in sorted(WIRE.glob("*.py")))
    names = set(re.findall(r"_(?:int|num|text|bool)\(\w+, \"(\w+)\"", src))
    names |= set(re.findall(r"\.get\(\"(\w+)\"", src))
    # keys of the encoded downlink bodies
    for body in re.findall(r"body = \{(.*?)\}", src, re.DOTALL):
        names |= set(re.findall(r"\"(\w+)\":", body))
    return names


def test_topic_scheme_is_documented() -> None:
    assert "<prefix>/v1/<school>/<device>/<channel>" in DOC
    assert f"`{wire.TOPIC_VERSION}`" in DOC
    t = wire.Topics("labfleet")
    assert t.shared("ingest", t.uplink_filter(wire.Channel.TELEMETRY)) in DOC


def test_every_channel_reason_event_and_command_is_documented() -> None:
    for vocab in (wire.Channel, wire.Reason, wire.EventType, wire.CommandName):
        missing = {v.value for v in vocab} - CODE_TOKENS
        assert not missing, f"{vocab.__name__} values missing from the protocol doc: {missing}"


def test_every_payload_field_the_decoders_read_is_documented() -> None:
    names = _wire_field_names()
    assert {"seq", "ts", "battery", "state", "accepted"} <= names  # the extraction itself works
    missing = names - CODE_TOKENS
    assert not missing, f"fields missing from the protocol doc: {missing}"


def test_limits_in_doc_match_code() -> None:
    assert f"{wire.MAX_UPLINK_BYTES} bytes" in DOC
    assert f"{wire.MAX_DOWNLINK_BYTES} bytes" in DOC
    assert f"{wire.MAX_TOPIC_CHARS} characters" in DOC
    assert wire.IDENTITY_RE.pattern in DOC
    assert wire.DEVICE_IDENTITY_RE.pattern in DOC
    assert f"more than {seqwindow.WINDOW} below the highest" in DOC


def test_error_replies_in_doc_match_code() -> None:
    """Which refusals get an error reply, and how often, are stated as the ingest implements them."""
    for reason in wire.Reason:
        row = next(
            line
            for line in DOC.splitlines()
            if line.startswith(f"| `{reason.value}` |")
            and "reply" not in line.split("|")[1]
            and line.count("|") == 4
        )
        replied = row.split("|")[3].strip().startswith("yes")
        assert replied == (reason in wire.REPLIED_REASONS), reason
    assert f"one error reply per\ndevice every {int(ERROR_REPLY_INTERVAL_S)} s" in DOC


# Every package that produces or parses MQTT traffic; only the protocol codec modules may spell it out.
GUARDED_PACKAGES = ("fleet", "simulators", "benchmarks", "drivers")
# Exactly the modules of the codec (the fleet.domain.wire package and update_wire) that write a topic or
# a payload; its other modules (limits, vocabulary, messages, uplink decoding) are guarded like any other.
WIRE = ROOT / "fleet" / "domain" / "wire"
CODEC_MODULES = {
    WIRE / "topics.py",
    WIRE / "fields.py",
    WIRE / "uplink_encoding.py",
    WIRE / "commands.py",
    WIRE / "refusals.py",
    ROOT / "fleet" / "domain" / "update_wire.py",
}
# A hand-built topic: a literal holding the version level, or an f-string gluing levels onto the version.
HAND_TOPIC = re.compile(r"[\"'][^\"'\n]*(?<!/api)/v1/[^\"'\n]*[\"']|\{[^}]*TOPIC_VERSION[^}]*\}")
# A hand-built payload: the protocol's version key written out (a dict, a JSON literal, a %-template), or a
# hand-rolled JSON parse of an MQTT payload.
HAND_PAYLOAD = re.compile(
    r"""[\"']v\\?[\"']\s*:\s*(?:1\b|%|PROTOCOL_VERSION|wire\.PROTOCOL_VERSION)"""
    r"""|\bv=(?:1|PROTOCOL_VERSION)\b"""
    r"""|(?:json|orjson)\.loads\((?:[\w.]*\.)?payload\b"""
)


def _offenders(pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    found = []
    for pkg in GUARDED_PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path in CODEC_MODULES:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if line.lstrip().startswith("#"):
                    continue
                m = pattern.search(line)
                if m:
                    found.append((str(path.relative_to(ROOT)), n, m.group(0)))
    return found


def test_every_codec_module_exemption_is_needed() -> None:
    """Each exempted module exists and spells a topic or a payload: an exemption that is no longer needed (a
    module renamed, or its payloads moved) is removed rather than left to hide a hand-built payload later."""
    for path in sorted(CODEC_MODULES):
        assert path.exists(), path
        lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert any(HAND_TOPIC.search(line) or HAND_PAYLOAD.search(line) for line in lines), path


def test_no_module_builds_topics_by_hand() -> None:
    """Topics are built only by wire.Topics, so the document stays the single source of topic names."""
    offenders = _offenders(HAND_TOPIC)
    assert not offenders, offenders


def test_no_module_builds_or_parses_payloads_by_hand() -> None:
    """Protocol v1 payloads are encoded and decoded only by the codec modules (of fleet.domain.wire and
    update_wire): the edge agent, the simulators and the benchmarks call them instead of writing JSON."""
    offenders = _offenders(HAND_PAYLOAD)
    assert not offenders, offenders


def test_the_guards_catch_what_they_are_for() -> None:
    """The patterns above match the forms they forbid (so a regression in them cannot pass silently)."""
    topics = [
        'f"{prefix}/v1/{school}/{serial}/{channel}"',
        '"labfleet/v1/+/+/telemetry"',
        'f"{p}/{TOPIC_VERSION}/{s}"',
    ]
    payloads = [
        '{"v": 1, "state": "online"}',
        'b\'{"v":1,"seq":%d}\'',
        "json.dumps({'v': 1})",
        "body = json.loads(payload)",
        "msg = json.loads(msg.payload)",
        "orjson.loads(payload)",
    ]
    assert all(HAND_TOPIC.search(t) for t in topics), [t for t in topics if not HAND_TOPIC.search(t)]
    assert all(HAND_PAYLOAD.search(p) for p in payloads), [p for p in payloads if not HAND_PAYLOAD.search(p)]
    assert not HAND_TOPIC.search('"/api/v1/devices"')
