"""`labfleet backup FILE` and `labfleet restore FILE` (fleet/runtime/backup.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.common import console, err_console, settings
from fleet.domain.clock import SystemClock
from fleet.errors import FleetError
from fleet.i18n import _


def backup(file: Annotated[Path, typer.Argument(help="archive to write (.tar.gz)")]) -> None:
    """Back up the database, the artifact store and a settings summary (no secrets) while serving."""
    from fleet.runtime import backup as ops

    try:
        done = ops.backup(settings(), file, now=SystemClock().now())
    except FleetError as err:
        err_console.print(f"[red]{_('Error')}:[/red] {err.message}")
        raise typer.Exit(1) from None
    console.print(
        _(
            "backup written: {path} ({dialect}, revision {revision}, {rows} rows, "
            "{artifacts} artifact files)",
            path=str(done.path),
            dialect=done.dialect,
            revision=done.revision,
            rows=sum(done.rows.values()),
            artifacts=done.artifacts,
        )
    )


def restore(
    file: Annotated[Path, typer.Argument(help="archive written by `labfleet backup`")],
    force: Annotated[bool, typer.Option("--force", help="replace a target that already holds data")] = False,
) -> None:
    """Restore a backup onto a fresh install (stop `serve` and the ingest workers first)."""
    from fleet.runtime import backup as ops

    try:
        done = ops.restore(settings(), file, force=force)
    except FleetError as err:
        err_console.print(f"[red]{_('Error')}:[/red] {err.message}")
        raise typer.Exit(1) from None
    console.print(
        _(
            "restored revision {revision} (upgraded to {head}): {rows} rows, {artifacts} artifact files",
            revision=done.revision,
            head=done.upgraded_to,
            rows=sum(done.rows.values()),
            artifacts=done.artifacts,
        )
    )
