"""docs/protocol-mqtt.md and the service agree on what the outside probe found undocumented or contradicted
(issue 16): the claim-token and command request bodies (fields and bounds, read from the doc's tables and
compared with the request models), that every telemetry message is complete (the reducer clears what a message
leaves out), and that `update` commands get no ack or result."""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from fleet.api.routes.claim_tokens import ClaimTokenIn
from fleet.api.routes.commands import CommandIn, Target
from fleet.domain import wire
from fleet.domain.device_state import Context, DeviceRef, DeviceState, reduce

DOC = (Path(__file__).parents[2] / "docs" / "protocol-mqtt.md").read_text()


def _table_after(marker: str) -> dict[str, str]:
    """field -> rule of the first `| field | type | rule |` table after `marker`."""
    rest = DOC[DOC.index(marker) :]
    start = rest.index("| field | type | rule |")
    rows: dict[str, str] = {}
    for line in rest[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[2]
    return rows


def _bounds(model: type[BaseModel], name: str) -> tuple[int, int, object]:
    info = model.model_fields[name]
    lo = next(m.ge for m in info.metadata if hasattr(m, "ge"))
    hi = next(m.le for m in info.metadata if hasattr(m, "le"))
    return lo, hi, info.default


def _doc_bounds(rule: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+)\.\.(\d+).*default (\d+)", rule)
    assert m, rule
    return int(m[1]), int(m[2]), int(m[3])


def test_the_claim_token_body_is_documented_field_by_field() -> None:
    rows = _table_after("POST /api/v1/schools/{school_id}/claim-tokens")
    assert set(rows) == set(ClaimTokenIn.model_fields)
    for name in ("max_uses", "ttl_seconds"):
        assert _doc_bounds(rows[name]) == _bounds(ClaimTokenIn, name), name
    assert (
        "default false" in rows["allow_unknown"]
        and ClaimTokenIn.model_fields["allow_unknown"].default is False
    )
    label_max = next(
        m.max_length for m in ClaimTokenIn.model_fields["label"].metadata if hasattr(m, "max_length")
    )
    assert f"up to {label_max} characters" in rows["label"]


def test_post_commands_is_documented_field_by_field() -> None:
    rows = _table_after("POST /api/v1/commands\n")
    fields = {f"target.{n}" for n in Target.model_fields} | set(CommandIn.model_fields) - {"target"}
    assert set(rows) == fields
    names = typing.get_args(CommandIn.model_fields["name"].annotation)
    assert set(re.findall(r"`(\w+)`", rows["name"])) == set(names)
    kinds = typing.get_args(Target.model_fields["kind"].annotation)
    assert set(re.findall(r"`(\w+)`", rows["target.kind"])) == set(kinds)
    for name in ("ttl_seconds", "timeout_seconds"):
        assert _doc_bounds(rows[name]) == _bounds(CommandIn, name), name
    # The service-only commands cannot be sent through it, as the doc says.
    assert wire.CommandName.UPDATE.value not in names
    assert wire.CommandName.ROTATE_CREDENTIALS.value not in names


def test_a_telemetry_message_replaces_the_readings_as_the_doc_says() -> None:
    assert "**Every telemetry message is complete.**" in DOC
    now = datetime(2026, 9, 7, 8, 30, tzinfo=UTC)
    dev = DeviceRef(7, 1, 3, "pk1", "dev-7", False, "LT-100", "terminal", "smart_classroom")
    ctx = Context(now, "key", lambda _ref, _at: False)
    full = wire.Telemetry(
        seq=1, ts_ms=1_000, battery_pct=81, charging=True, temperature_c=38.5, storage_used_pct=61.2,
        firmware="2.4.1", app="edu.reader", rssi_dbm=-58,
    )  # fmt: skip
    partial = wire.Telemetry(seq=2, ts_ms=2_000, battery_pct=80)  # only what changed: not what the doc allows
    state, _ = reduce(DeviceState(7), [(full, now), (partial, now)], dev, ctx)
    assert state.battery_pct == 80
    # Left out: unknown, not kept ...
    assert (state.charging, state.temperature_c, state.storage_used_pct, state.app) == (
        None,
        None,
        None,
        None,
    )
    # ... except the two the doc names.
    assert (state.firmware_version, state.rssi_dbm) == ("2.4.1", -58)


def test_the_doc_says_update_commands_get_no_ack_or_result() -> None:
    assert "An `update` command gets **no `ack` and no `result`**" in DOC
    assert "The\n`update` command is the exception: it is answered on the `update` channel only" in DOC
