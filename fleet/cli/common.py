"""What every `labfleet` subcommand shares: consoles, the CLI's principal, logging, settings, `run_db`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from fleet.domain.enums import Role
from fleet.domain.permissions import Principal
from fleet.errors import FleetError, ImportRejected
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.settings import Settings

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")
CLI = Principal(name="cli", role=Role.ADMIN, district_wide=True, school_ids=frozenset())


# Third-party loggers that speak at INFO once per connection or state change: at the 08:00 bell that is
# 10,000 lines a minute. They still report warnings and errors.
CHATTY_LOGGERS = ("amqtt", "transitions")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    from fleet.observability.logredact import HideClientIds

    for handler in logging.root.handlers:  # the embedded broker names devices by id; not below DEBUG
        handler.addFilter(HideClientIds())


def settings() -> Settings:
    return Settings()


def run_db(work: Callable[[Any], Awaitable[T]], *, migrate: bool = True) -> T:
    """Run one unit of work against the configured database, translating domain errors into exit 1."""
    cfg = settings()
    if migrate:
        upgrade_sync(cfg.database_url)

    async def main() -> T:
        engine = create_engine(cfg.database_url)
        try:
            async with unit_of_work(session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ImportRejected as err:
        err_console.print(f"[red]Import rejected:[/red] {err.message}")
        table = Table("row", "column", "reason", title="Bad rows")
        for d in err.details or []:
            table.add_row(str(d["row"]), d["column"] or "", d["reason"])
        err_console.print(table)
        raise typer.Exit(1) from None
    except FleetError as err:
        err_console.print(f"[red]Error:[/red] {err.message}")
        raise typer.Exit(1) from None
