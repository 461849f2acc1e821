"""Console sign-in: argon2 passwords, sessions in HttpOnly SameSite cookies, CSRF on every POST, lockout,
the one-time first-admin link, and a disabled user's sessions ending at once."""

from __future__ import annotations

from sqlalchemy import select

from fleet.persistence.db import unit_of_work
from fleet.persistence.models import AuditEntry
from fleet.persistence.models_console import User
from fleet.services.users import create_setup_token
from tests.conftest import Api
from tests.console.helpers import PASSWORD, add_user, csrf_of, sign_in


async def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(api: Api) -> None:
    await add_user(api.sessions, api.clock, "ada")
    r = await api.client.get("/?school=7")
    assert r.status_code == 303
    assert r.headers["location"] == "/signin?next=%2F%3Fschool%3D7"
    r = await sign_in(api.client, "ada", next="/?school=7")
    assert r.status_code == 303 and r.headers["location"] == "/?school=7"
    cookie = r.headers["set-cookie"]
    assert "lf_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS requests get Secure
    assert (await api.client.get("/")).status_code == 200


async def test_the_session_cookie_is_secure_behind_https(api: Api) -> None:
    await add_user(api.sessions, api.clock, "ada")
    form = await api.client.get("/signin")
    r = await api.client.post(
        "/signin",
        data={"csrf": csrf_of(form.text), "username": "ada", "password": PASSWORD, "next": "/"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "Secure" in r.headers["set-cookie"]


async def test_a_post_without_the_csrf_token_is_refused(api: Api) -> None:
    await add_user(api.sessions, api.clock, "ada")
    await sign_in(api.client, "ada")
    r = await api.client.post("/signout", data={})
    assert r.status_code == 403 and "security token" in r.text
    assert (await api.client.get("/")).status_code == 200  # still signed in
    r = await api.client.post("/signout", data={"csrf": "forged"})
    assert r.status_code == 403
    page = await api.client.get("/")
    r = await api.client.post("/signout", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    assert (await api.client.get("/")).status_code == 303


async def test_sign_in_without_the_pre_session_token_is_refused(api: Api) -> None:
    await add_user(api.sessions, api.clock, "ada")
    r = await api.client.post("/signin", data={"username": "ada", "password": PASSWORD})
    assert r.status_code == 403


async def test_wrong_passwords_lock_the_account_and_say_so_in_the_users_language(api: Api) -> None:
    await add_user(api.sessions, api.clock, "ada")
    for _ in range(5):
        r = await sign_in(api.client, "ada", "wrong password!")
        assert r.status_code == 401
    r = await sign_in(api.client, "ada")  # the right password, but locked now
    assert r.status_code == 401 and "locked" in r.text
    api.client.headers["Accept-Language"] = "zh-CN"
    r = await sign_in(api.client, "ada")
    assert "锁定" in r.text
    api.clock.advance(16 * 60)
    r = await sign_in(api.client, "ada")
    assert r.status_code == 303


async def test_disabling_a_user_ends_their_sessions_at_once(api: Api) -> None:
    await add_user(api.sessions, api.clock, "root")
    async with unit_of_work(api.sessions) as session:
        from fleet.domain.permissions import SYSTEM
        from fleet.services.users import set_disabled

        uid = (await session.execute(select(User.id).where(User.username == "root"))).scalar_one()
    await sign_in(api.client, "root")
    assert (await api.client.get("/")).status_code == 200
    async with unit_of_work(api.sessions) as session:
        await set_disabled(session, SYSTEM, uid, disabled=True, at=api.clock.now())
    assert (await api.client.get("/")).status_code == 303


async def test_the_setup_link_creates_the_first_admin_once(api: Api) -> None:
    from fleet.settings import ConsoleSettings

    async with unit_of_work(api.sessions) as session:
        token = await create_setup_token(session, ConsoleSettings(), api.clock.now())
    assert token
    form = await api.client.get(f"/setup?token={token}")
    assert form.status_code == 200
    bad = await api.client.post(
        "/setup",
        data={
            "csrf": csrf_of(form.text),
            "token": token,
            "username": "root",
            "password": "short",
            "password2": "short",
        },
    )
    assert bad.status_code == 422 and "At least 10 characters" in bad.text
    r = await api.client.post(
        "/setup",
        data={
            "csrf": csrf_of(form.text),
            "token": token,
            "username": "root",
            "password": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert r.status_code == 303
    assert (await api.client.get("/")).status_code == 200
    async with unit_of_work(api.sessions) as session:
        assert await create_setup_token(session, ConsoleSettings(), api.clock.now()) is None
        actors = set((await session.execute(select(AuditEntry.actor))).scalars())
    assert any(a.startswith("user:") and a.endswith(":root") for a in actors)
    again = await api.client.get(f"/setup?token={token}", headers={"Accept": "text/html"})
    assert again.status_code == 404
