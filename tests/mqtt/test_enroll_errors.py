"""Enrollment answers every error in the one shape docs/protocol-mqtt.md section 3 documents:
`{"error", "message", "details": {"reason", ...}}`, with `invalid_identity` for a serial that cannot be an
MQTT identity, whether the service or the request schema refuses it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.factories import build_world, post

V1 = "/api/v1"


def _shape(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error", "message", "details"}, body
    assert isinstance(body["details"], dict) and isinstance(body["details"].get("reason"), str), body
    return body


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({"serial_number": "robot:cafe"}, "serial_number", "invalid_identity"),  # the service refuses it
        ({"serial_number": "TAB 1"}, "serial_number", "invalid_identity"),
        ({"serial_number": "T" * 121}, "serial_number", "invalid_identity"),  # the schema refuses it
        ({"serial_number": None}, "serial_number", "invalid_identity"),
        ({"serial_number": "SN-a-1", "colour": "red"}, "colour", "invalid"),
        ({"serial_number": "SN-a-1", "claim_token": ""}, "claim_token", "invalid"),
    ],
)
async def test_a_refused_field_answers_invalid_input_with_a_details_object(
    api: Api, payload: dict[str, Any], field: str, reason: str
) -> None:
    w = await build_world(api)
    tok = (await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 2}))["token"]
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, **payload})
    assert r.status_code == 422, r.text
    body = _shape(r.json())
    assert body["error"] == "invalid_input"
    assert body["details"] == {"field": field, "reason": reason}


async def test_a_body_that_is_not_an_object_and_a_bad_token_answer_the_same_shape(api: Api) -> None:
    r = await api.client.post(f"{V1}/enroll", json=["not", "an", "object"])
    assert r.status_code == 422
    assert _shape(r.json())["details"] == {"field": "body", "reason": "invalid"}
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": "ct_nope_nope", "serial_number": "SN-a-1"})
    assert r.status_code == 401
    assert _shape(r.json())["details"] == {"reason": "bad_token"}
