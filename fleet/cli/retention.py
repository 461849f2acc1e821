"""`labfleet retention run [--dry-run]`: apply the retention settings now (the nightly job does the same)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from fleet.cli.common import console, settings
from fleet.domain.clock import SystemClock
from fleet.i18n import _
from fleet.persistence.db import create_engine, session_factory, upgrade_sync
from fleet.runtime.retention_job import JOB
from fleet.services import retention

retention_app = typer.Typer(help="Delete history older than the retention settings.", no_args_is_help=True)


@retention_app.command("run")
def run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count what would be deleted")] = False,
) -> None:
    """Delete usage roll-ups, presence transitions, dead letters and finished commands past their age."""
    cfg = settings()
    upgrade_sync(cfg.database_url)

    async def main() -> retention.RetentionResult:
        engine = create_engine(cfg.database_url)
        try:
            return await retention.run(
                session_factory(engine), JOB, cfg.retention, SystemClock().now(), dry_run=dry_run
            )
        finally:
            await engine.dispose()

    result = asyncio.run(main())
    title = _("Rows that would be deleted (dry run)") if dry_run else _("Rows deleted")
    table = Table(_("Table"), _("Older than"), _("Rows"), title=title)
    for name, n in result.rows.items():
        table.add_row(name, result.cutoffs[name], str(n))
    console.print(table)
