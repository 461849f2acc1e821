"""The firmware artifact catalogue over HTTP: list, one by sha256, import from the firmware profiles."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import ConfigDict

from fleet.api.deps import Caller, Cursor, Limit, Now, Session, State, Store
from fleet.api.routes.params import Sha
from fleet.api.schemas import In
from fleet.services import artifacts as arts

router = APIRouter(prefix="/api/v1")


def _page(page: Any, conv: Callable[[Any], Any]) -> dict[str, Any]:
    return {
        "items": [conv(i) for i in page.items],
        "total": page.total,
        "next_cursor": page.next_cursor,
        "limit": page.limit,
    }


class _Strict(In):
    model_config = ConfigDict(extra="forbid")


class ArtifactImportIn(_Strict):
    source: Literal["profiles"] = "profiles"


def _artifact_out(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "sha256": a.sha256,
        "size": a.size,
        "profile": a.profile_key,
        "version": a.version,
        "filename": a.filename,
        "signature_alg": a.signature_alg,
        "signed": a.signature is not None,
        "created_at": a.created_at,
    }


@router.get("/artifacts", tags=["rollouts"], summary="The firmware artifact catalogue")
async def list_artifacts(
    session: Session,
    caller: Caller,
    cursor: Cursor = None,
    limit: Limit = 100,
    profile: Annotated[str | None, Query(max_length=120)] = None,
) -> Any:
    page = await arts.list_artifacts(session, caller, cursor=cursor, limit=limit, profile_key=profile)
    return _page(page, _artifact_out)


@router.get("/artifacts/{sha256:sha256}", tags=["rollouts"], summary="One artifact by its sha256")
async def get_artifact(session: Session, caller: Caller, sha256: Sha) -> Any:
    return _artifact_out(await arts.get_artifact(session, caller, sha256))


@router.post(
    "/artifacts/import",
    status_code=201,
    tags=["rollouts"],
    summary="Import every firmware profile's artifacts into the content-addressed store",
)
async def import_artifacts(
    session: Session, caller: Caller, state: State, clock: Now, store: Store, body: ArtifactImportIn
) -> Any:
    res = await arts.import_profile_artifacts(
        session, store, caller, clock.now(), signing_key=state.settings.rollouts.signing_key
    )
    return {"imported": res.imported, "already_present": res.already_present}
