"""The audit log over HTTP (read-only)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from fleet.api import schemas as s
from fleet.api.deps import Caller, Cursor, Limit, Session
from fleet.services import audit

router = APIRouter(prefix="/api/v1")
FilterId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


def _page(page: Any) -> dict[str, Any]:
    return {"items": page.items, "total": page.total, "next_cursor": page.next_cursor, "limit": page.limit}


@router.get(
    "/audit",
    response_model=s.PageOut[s.AuditOut],
    tags=["audit"],
    summary="The audit log (admins and auditors; read-only)",
)
async def list_audit(
    session: Session,
    caller: Caller,
    cursor: Cursor = None,
    limit: Limit = 100,
    action: Annotated[str | None, Query(max_length=64)] = None,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=120)] = None,
    school: FilterId = None,
    since: Annotated[
        s.Instant | None, Query(description="entries at or after this time (with offset)")
    ] = None,
    until: Annotated[s.Instant | None, Query(description="entries before this time (with offset)")] = None,
) -> Any:
    return _page(
        await audit.list_entries(
            session,
            caller,
            cursor=cursor,
            limit=limit,
            action=action,
            object_type=object_type,
            object_id=object_id,
            actor=actor,
            school_id=school,
            since=since,
            until=until,
        )
    )


@router.get(
    "/audit/verify",
    response_model=s.AuditVerifyOut,
    tags=["audit"],
    summary="Verify the audit hash chain (district-wide admins and auditors)",
    description="Walks every record: an edited, deleted or reordered record shows as `break` with its place.",
)
async def verify_audit(session: Session, caller: Caller) -> Any:
    report = await audit.verify_chain(session, caller)
    brk = report.first_break
    return {
        "ok": report.ok,
        "checked": report.checked,
        "last_seq": report.last_seq,
        "last_hash": report.last_hash,
        "break": None
        if brk is None
        else {"seq": brk.seq, "id": brk.id, "reason": brk.reason, "detail": brk.detail},
    }


@router.get(
    "/audit/export",
    tags=["audit"],
    response_class=Response,
    summary="The audit log for inspectors: CSV (UTF-8 with BOM) or XLSX, in chain order with its hashes",
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                audit.EXPORT_MEDIA_TYPES["xlsx"]: {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def export_audit(
    session: Session,
    caller: Caller,
    format: Annotated[str, Query(pattern="^(csv|xlsx)$", description="csv | xlsx")] = "csv",
    school: FilterId = None,
    since: Annotated[s.Instant | None, Query(description="records at or after this time")] = None,
    until: Annotated[s.Instant | None, Query(description="records before this time")] = None,
) -> Response:
    body = await audit.export_entries(session, caller, format, school_id=school, since=since, until=until)
    return Response(
        body,
        media_type=audit.EXPORT_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="audit.{format}"'},
    )
