"""Asset labels over HTTP: POST /api/v1/labels answers the selected devices' labels as one PDF."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from fleet.api import schemas as s
from fleet.api.deps import Caller, Now, Session, State
from fleet.domain.asset_labels import MAX_LABELS
from fleet.i18n import negotiate, use_locale
from fleet.services import asset_labels

router = APIRouter(prefix="/api/v1")

Listed = Annotated[str, Field(min_length=1, max_length=120)]


class LabelsIn(s.In):
    """Which devices (every given filter applies; at least one) and how to print their labels."""

    room: s.Id | None = None
    school: s.Id | None = None
    delivery: s.Id | None = Field(
        default=None, description="a device import: its audit entry id (action import.devices)"
    )
    q: str | None = Field(
        default=None, min_length=1, max_length=120, description="serial or asset tag prefix, as the search"
    )
    status: (
        Literal["ordered", "received", "provisioned", "in_service", "in_repair", "retired", "lost"] | None
    ) = None
    online: bool | None = None
    serials: list[Listed] = Field(
        default=[], max_length=MAX_LABELS, description="serial numbers or asset tags"
    )
    devices: list[s.Id] = Field(default=[], max_length=MAX_LABELS, description="device ids")
    layout: Literal["3x8", "2x7", "roll50x30"] = "3x8"
    content: Literal["url", "tag"] = Field(
        default="url", description="what the QR code carries: the device's console URL, or the asset tag"
    )
    base_url: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="the console's address in QR URLs (default: this request's)",
    )
    lang: str | None = Field(
        default=None, max_length=20, description="zh-CN or en (default: Accept-Language)"
    )


@router.post(
    "/labels",
    tags=["labels"],
    response_class=Response,
    summary="Asset labels (QR code, asset tag, serial, school) as a PDF for A4 sheets or a label roll",
    description="Layouts: 3x8 (63.5 x 33.9 mm, Avery L7159 size), 2x7 (99.1 x 38.1 mm, L7163 size), "
    f"roll50x30 (one 50 x 30 mm label per page). At most {MAX_LABELS} labels per request. The selection "
    "must match at least one device in your schools, and every listed serial must be known: otherwise 422 "
    "naming the field. Recorded in the audit log.",
    responses={200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def print_labels(
    request: Request, body: LabelsIn, session: Session, caller: Caller, state: State, clock: Now
) -> Any:
    selection = asset_labels.Selection(
        room_id=body.room,
        school_id=body.school,
        delivery_id=body.delivery,
        text=body.q,
        status=body.status,
        online=body.online,
        serials=tuple(body.serials),
        device_ids=tuple(body.devices),
    )
    loc = negotiate(
        user=body.lang, accept_language=request.headers.get("accept-language"), default=state.settings.locale
    )
    with use_locale(loc):
        out = await asset_labels.print_labels(
            session,
            caller,
            clock.now(),
            selection,
            layout=body.layout,
            content=body.content,
            base_url=body.base_url or str(request.base_url),
        )
    return Response(
        out.pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{out.filename}"',
            "X-Label-Count": str(out.count),
        },
    )
