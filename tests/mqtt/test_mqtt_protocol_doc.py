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
    src = (ROOT / "fleet" / "domain" / "wire.py").read_text()
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


def test_no_module_builds_topics_by_hand() -> None:
    """Topics are built only by wire.Topics, so the document stays the single source of topic names."""
    offenders = []
    for path in (ROOT / "fleet").rglob("*.py"):
        if path.name == "wire.py":
            continue
        for lit in re.findall(r"[\"']([^\"'\n]*/v1/[^\"'\n]*)[\"']", path.read_text()):
            if not lit.startswith("/api/v1") and "/api/v1" not in lit:
                offenders.append((path.name, lit))
    assert not offenders, offenders
