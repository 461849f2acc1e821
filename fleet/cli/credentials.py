"""`labfleet credentials`: rotate device passwords over MQTT (docs/protocol-mqtt.md 8.1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer

credentials_app = typer.Typer(help="Device broker credentials.", no_args_is_help=True)


@credentials_app.command("rotate")
def rotate(
    school: Annotated[str | None, typer.Option(help="the school's code; omit with --all")] = None,
    all_schools: Annotated[bool, typer.Option("--all", help="every school of the district")] = False,
    grace_hours: Annotated[
        float, typer.Option(help="how long the old password works when a device does not acknowledge")
    ] = 24.0,
) -> None:
    """Send each device a new password on its cmd topic; the old one stops at its ack or after the grace
    period. The running service delivers the commands (to offline devices when they come back)."""
    from sqlalchemy import select

    from fleet.cli.common import CLI, console, err_console, run_db
    from fleet.domain.clock import SystemClock
    from fleet.persistence.models import School
    from fleet.services import credential_rotation

    if all_schools == (school is not None):
        err_console.print("[red]give exactly one of --school CODE or --all[/red]")
        raise typer.Exit(2)

    async def work(session: Any) -> credential_rotation.Started:
        school_id = None
        if school is not None:
            school_id = (await session.execute(select(School.id).where(School.code == school))).scalar()
            if school_id is None:
                err_console.print(f"[red]no school with code {school!r}[/red]")
                raise typer.Exit(1)
        return await credential_rotation.start(
            session, CLI, SystemClock(), school_id=school_id, grace=timedelta(hours=grace_hours)
        )

    done = run_db(work)
    console.print(
        f"rotation queued for {done.devices} device(s) (batch {done.batch_id}); "
        f"{done.skipped} already rotating; grace {grace_hours:g} h"
    )
