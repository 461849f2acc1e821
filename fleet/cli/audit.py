"""`labfleet audit`: verify the hash chain, export the log for inspectors."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.domain import timebounds
from fleet.domain.auditchain import ChainReport

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


def _instant(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        return timebounds.instant(datetime.fromisoformat(value), what)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint=f"--{what}") from None


@audit_app.command("verify")
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON line")] = False,
) -> None:
    """Walk the whole hash chain; exit 1 and say where it breaks if a record was edited, deleted or moved."""
    from fleet.cli.common import CLI, console, err_console, run_db
    from fleet.services.audit import verify_chain

    async def work(session: Any) -> ChainReport:
        return await verify_chain(session, CLI)

    report = run_db(work)
    brk = report.first_break
    if as_json:
        doc: dict[str, Any] = {"ok": report.ok, "checked": report.checked, "last_seq": report.last_seq}
        if brk is not None:
            doc["break"] = {"seq": brk.seq, "id": brk.id, "reason": brk.reason, "detail": brk.detail}
        sys.stdout.write(json.dumps(doc) + "\n")
    elif brk is None:
        console.print(
            f"[green]audit chain intact[/green]: {report.checked} records, head seq {report.last_seq}, "
            f"hash {report.last_hash[:16]}"
        )
    else:
        err_console.print(
            f"[red]audit chain broken at seq {brk.seq}[/red]"
            + (f" (row {brk.id})" if brk.id is not None else "")
            + f": {brk.reason}: {brk.detail}"
        )
    if brk is not None:
        raise typer.Exit(1)


@audit_app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="csv (UTF-8 with BOM) | xlsx")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", help="file to write; stdout when omitted (csv)")
    ] = None,
    school: Annotated[int | None, typer.Option(help="only this school's records")] = None,
    since: Annotated[str | None, typer.Option(help="from this time, with offset")] = None,
    until: Annotated[str | None, typer.Option(help="before this time, with offset")] = None,
) -> None:
    """Export the audit log in chain order, with each record's hashes, for an inspector."""
    from fleet.cli.common import CLI, err_console, run_db
    from fleet.services.audit import export_entries

    start, end = _instant(since, "since"), _instant(until, "until")
    if fmt == "xlsx" and out is None:
        raise typer.BadParameter("xlsx needs --out FILE", param_hint="--out")

    async def work(session: Any) -> bytes:
        return await export_entries(session, CLI, fmt, school_id=school, since=start, until=end)

    body = run_db(work)
    if out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        out.write_bytes(body)
        err_console.print(f"wrote the audit log ({fmt}, {len(body):,} bytes) to {out}")
