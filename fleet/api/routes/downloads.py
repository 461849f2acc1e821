"""The paced artifact download for terminals over HTTP: a signed link, byte ranges, the school's rate."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fleet.api.deps import Metrics, Now, Pacer, Session, State, Store
from fleet.api.errors import error_body
from fleet.api.routes.params import Sha
from fleet.services import downloads
from fleet.services.artifacts import DownloadGrant

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1")


def _range_error(size: int, message: str) -> JSONResponse:
    return JSONResponse(
        error_body("range_not_satisfiable", message),
        status_code=416,
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
    )


@router.get(
    "/artifacts/{sha256:sha256}/download",
    tags=["rollouts"],
    response_class=Response,
    summary="Download an image with a signed link from an update command (Range supported)",
)
async def download_artifact(
    request: Request,
    session: Session,
    state: State,
    clock: Now,
    store: Store,
    pacer: Pacer,
    metrics: Metrics,
    sha256: Sha,
    device: Annotated[int, Query(ge=1, le=2**31 - 1)],
    school: Annotated[int, Query(ge=1, le=2**31 - 1)],
    expires: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> Any:
    settings = state.settings.rollouts
    got = await downloads.prepare(
        session,
        settings,
        store,
        DownloadGrant(sha256, device, school, expires),
        sig,
        request.headers.get("range"),
        clock.now(),
    )
    if isinstance(got, downloads.RangeRefused):
        return _range_error(got.size, got.message)
    chunk = settings.chunk_bytes

    async def body() -> AsyncIterator[bytes]:
        with got.path.open("rb") as f:
            f.seek(got.start)
            left = got.length
            while left > 0:
                n = min(chunk, left)
                await pacer.acquire(got.school_id, got.rate, n)
                data = await asyncio.to_thread(f.read, n)
                if not data:
                    return
                left -= len(data)
                metrics.school_traffic(got.school_code, "down", len(data))
                yield data

    headers = {"Accept-Ranges": "bytes", "Content-Length": str(got.length), "ETag": f'"{sha256}"'}
    if got.partial:
        headers["Content-Range"] = f"bytes {got.start}-{got.end}/{got.size}"
    log.debug("artifact %s to device %d: bytes %d-%d", sha256[:12], device, got.start, got.end)
    return StreamingResponse(
        body(),
        status_code=206 if got.partial else 200,
        media_type="application/octet-stream",
        headers=headers,
    )
