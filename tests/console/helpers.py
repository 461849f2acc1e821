"""Console test helpers: users and signed-in in-process clients."""

from __future__ import annotations

import re

import httpx

from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM
from fleet.persistence.db import unit_of_work
from fleet.services.users import create_user

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


async def add_user(
    sessions,
    clock,
    username: str,
    role: Role | str = Role.ADMIN,
    schools: tuple[int, ...] | None = None,
    locale: str | None = None,
) -> int:
    role = Role(role)
    async with unit_of_work(sessions) as session:
        user = await create_user(
            session,
            principal=SYSTEM,
            at=clock.now(),
            username=username,
            password=PASSWORD,
            role=role,
            school_ids=list(schools or []),
            district_wide=schools is None,
            locale=locale,
        )
        return int(user.id)


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "page has no CSRF field"
    return m.group(1)


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD, next: str = "/"
) -> httpx.Response:
    form = await client.get("/signin")
    return await client.post(
        "/signin",
        data={"csrf": csrf_of(form.text), "username": username, "password": password, "next": next},
    )
