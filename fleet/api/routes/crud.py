"""A router factory for the inventory resources that share one CRUD shape."""

# No `from __future__ import annotations` here: FastAPI reads the closures' annotations at runtime.

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from fleet.api.deps import Caller, Cursor, Limit, Session, State
from fleet.api.schemas import PageOut
from fleet.services.crud import CrudService

ObjId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def add_crud_routes(
    router: APIRouter,
    *,
    path: str,
    service: type[CrudService],
    create_model: type[BaseModel],
    patch_model: type[BaseModel],
    out_model: type[BaseModel],
    filter_model: type[BaseModel],
    tag: str,
    singular: str,
) -> None:
    """GET list (filters, cursor, limit, total), POST, GET one, PATCH, DELETE for one resource."""

    @router.get(
        path,
        response_model=PageOut[out_model],  # type: ignore[valid-type]  # a model chosen per resource
        tags=[tag],
        name=f"list_{tag}",
        summary=f"List {tag} (filtered, paginated)",
    )
    async def list_items(
        session: Session,
        caller: Caller,
        state: State,
        filters: Annotated[filter_model, Query()],  # type: ignore[valid-type]  # FastAPI reads it at run time
        cursor: Cursor = None,
        limit: Limit = 100,
    ) -> Any:
        page = await service(session, caller, state.clock).list(
            cursor=cursor,
            limit=limit,
            **filters.model_dump(),  # type: ignore[attr-defined]  # a BaseModel
        )
        return {
            "items": page.items,
            "total": page.total,
            "next_cursor": page.next_cursor,
            "limit": page.limit,
        }

    @router.post(
        path,
        response_model=out_model,
        status_code=201,
        tags=[tag],
        name=f"create_{singular}",
        summary=f"Create a {singular.replace('_', ' ')}",
    )
    async def create_item(
        session: Session,
        caller: Caller,
        state: State,
        body: create_model,  # type: ignore[valid-type]  # FastAPI reads it at run time
    ) -> Any:
        return await service(session, caller, state.clock).create(body.model_dump())  # type: ignore[attr-defined]  # a BaseModel

    @router.get(
        path + "/{obj_id}",
        response_model=out_model,
        tags=[tag],
        name=f"get_{singular}",
        summary=f"Get one {singular.replace('_', ' ')}",
    )
    async def get_item(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Any:
        return await service(session, caller, state.clock).get(obj_id)

    @router.patch(
        path + "/{obj_id}",
        response_model=out_model,
        tags=[tag],
        name=f"update_{singular}",
        summary=f"Change a {singular.replace('_', ' ')}",
    )
    async def update_item(
        session: Session,
        caller: Caller,
        state: State,
        obj_id: ObjId,
        body: patch_model,  # type: ignore[valid-type]  # FastAPI reads it at run time
    ) -> Any:
        changes = body.model_dump(exclude_unset=True)  # type: ignore[attr-defined]  # a BaseModel, see above
        return await service(session, caller, state.clock).update(obj_id, changes)

    @router.delete(
        path + "/{obj_id}",
        status_code=204,
        tags=[tag],
        name=f"delete_{singular}",
        summary=f"Delete a {singular.replace('_', ' ')}",
    )
    async def delete_item(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Response:
        await service(session, caller, state.clock).delete(obj_id)
        return Response(status_code=204)
