"""Enrollment over HTTP: a device trades a claim token and its serial for MQTT credentials (no API token)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from fleet.api.deps import Guard, Metrics, Now, Plane, Session, State
from fleet.api.routes.params import StrictIn
from fleet.domain import wire
from fleet.errors import InvalidInput
from fleet.services import enrollment, tls


class EnrollmentRoute(APIRoute):
    """Enrollment answers every error in the one shape the protocol documents (docs/protocol-mqtt.md 3):
    `{"error": code, "message": ..., "details": {"field": ..., "reason": ...}}`. A body that breaks the schema
    is `invalid_input` like a serial the service refuses, not the API's general `invalid_request` with a list:
    a terminal's firmware reads one shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as err:
                first: dict[str, Any] = next(iter(err.errors()), {})
                loc = [str(x) for x in first.get("loc", ()) if x != "body"]
                field = loc[0] if loc else "body"
                reason = "invalid_identity" if field == "serial_number" else "invalid"
                where = f"{field}: " if loc else ""
                raise InvalidInput(
                    f"{where}{first.get('msg', 'invalid request')}",
                    details={"field": field, "reason": reason},
                ) from None

        return handle


router = APIRouter(prefix="/api/v1", route_class=EnrollmentRoute)


class EnrollIn(StrictIn):
    claim_token: str = Field(min_length=1, max_length=128)
    serial_number: str = Field(min_length=1, max_length=120)
    vendor: str | None = Field(None, max_length=120)
    model_number: str | None = Field(None, max_length=120)


class EnrollOut(BaseModel):
    device_id: int
    identity: str
    username: str
    password: str
    school: str
    protocol: int
    broker_url: str
    # The CA certificate (PEM) the terminal verifies the broker's certificate against, when broker_url is
    # mqtts:// (docs/protocol-mqtt.md 1.1); null for plain MQTT.
    ca_pem: str | None = None
    topics: dict[str, str]


@router.post(
    "/enroll",
    status_code=201,
    tags=["enrollment"],
    responses={
        429: {"description": "too many failed attempts from this address or for this token; see Retry-After"}
    },
)
async def enroll(
    body: EnrollIn,
    session: Session,
    state: State,
    clock: Now,
    guard: Guard,
    metrics: Metrics,
    plane: Plane,
    request: Request,
) -> EnrollOut:
    """A terminal trades a claim token and its serial number for MQTT credentials (docs/protocol-mqtt.md
    §3)."""
    done = await enrollment.register(
        session,
        clock,
        enrollment.EnrollRequest(
            claim_token=body.claim_token,
            serial_number=body.serial_number,
            vendor=body.vendor,
            model_number=body.model_number,
            source=request.client.host if request.client else "unknown",
        ),
        guard=guard,
        metrics=metrics,
        plane=plane,
    )
    endpoint = await asyncio.to_thread(tls.broker_endpoint, state.settings)
    t = wire.Topics(state.settings.mqtt.topic_prefix)
    topics = {"base": t.base(done.school_code, done.identity)}
    topics.update({ch.value: t.topic(done.school_code, done.identity, ch) for ch in wire.Channel})
    return EnrollOut(
        device_id=done.device_id,
        identity=done.identity,
        username=done.identity,
        password=done.password,
        school=done.school_code,
        protocol=wire.PROTOCOL_VERSION,
        broker_url=endpoint.url,
        ca_pem=endpoint.ca_pem,
        topics=topics,
    )
