"""`labfleet user ...`: console accounts from the command line (the first administrator, a disable)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.cli import common
from fleet.domain.clock import SystemClock
from fleet.domain.enums import Role

user_app = typer.Typer(
    help="Console users (sign-in accounts with a role and school scope).", no_args_is_help=True
)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Option(help="sign-in name")],
    role: Annotated[Role, typer.Option(help="admin, technician, it_staff, procurement, auditor")],
    school: Annotated[list[int] | None, typer.Option(help="school id (repeatable)")] = None,
    district: Annotated[bool, typer.Option("--district", help="district-wide scope")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
    locale: Annotated[str | None, typer.Option(help="the user's language: zh_CN or en")] = None,
) -> None:
    """Create a console user; the password comes from a prompt (or one line of stdin), never an argument."""
    from fleet.i18n import normalize
    from fleet.services.users import create_user

    password = _read_password(password_stdin)

    async def work(session: Any) -> int:
        user = await create_user(
            session,
            principal=common.CLI,
            at=SystemClock().now(),
            username=username,
            password=password,
            role=role,
            school_ids=school or [],
            district_wide=district or role == Role.ADMIN,
            locale=normalize(locale),
        )
        return int(user.id)

    uid = common.run_db(work)
    common.console.print(f"user {username} created (id {uid}, {role})")


@user_app.command("list")
def user_list() -> None:
    """List console users."""
    from fleet.services.users import list_users

    async def work(session: Any) -> list[Any]:
        return await list_users(session, common.CLI)

    table = Table("id", "username", "role", "scope", "disabled", "last sign-in")
    for u in common.run_db(work):
        table.add_row(
            str(u.id),
            u.username,
            u.role,
            "district" if u.district_wide else ",".join(map(str, u.school_ids)),
            "yes" if u.disabled_at else "",
            u.last_sign_in_at.isoformat(timespec="seconds") if u.last_sign_in_at else "",
        )
    common.console.print(table)


@user_app.command("disable")
def user_disable(user_id: int) -> None:
    """Disable a user; their sessions end at once."""
    from fleet.services.users import set_disabled

    async def work(session: Any) -> None:
        await set_disabled(session, common.CLI, user_id, disabled=True, at=SystemClock().now())

    common.run_db(work)
    common.console.print(f"user {user_id} disabled")


def setup_link(base_url: str) -> str | None:
    """On an install with no users: a one-time first-admin link (as Jupyter prints its token), else None."""
    from fleet.services.users import create_setup_token

    cfg = common.settings()

    async def work(session: Any) -> str | None:
        return await create_setup_token(session, cfg.console, SystemClock().now())

    token = common.run_db(work, migrate=False)
    return f"{base_url.rstrip('/')}/setup?token={token}" if token else None
