"""The `labfleet` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleet.cli.agent import agent as agent_command
from fleet.cli.artifacts import artifacts_app, profiles_app
from fleet.cli.audit import audit_app
from fleet.cli.backup import backup as backup_command
from fleet.cli.backup import restore as restore_command
from fleet.cli.common import CLI, console, err_console, run_db, settings, setup_logging
from fleet.cli.credentials import credentials_app
from fleet.cli.labels import labels as labels_command
from fleet.cli.provision import provision as provision_command
from fleet.cli.retention import retention_app
from fleet.cli.rollouts import rollout_app
from fleet.cli.tls import tls_app
from fleet.cli.top import top as top_command
from fleet.cli.users import setup_link, user_app
from fleet.domain.clock import SystemClock
from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM
from fleet.errors import FleetError, ImportRejected
from fleet.persistence.db import upgrade_sync
from fleet.settings import Settings

app = typer.Typer(
    help="LabFleet: the hardware fleet of a school district's AI-education rollout.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
import_app = typer.Typer(help="Bulk import from XLSX or CSV (all rows or none).", no_args_is_help=True)
export_app = typer.Typer(help="CSV or XLSX export in the import format.", no_args_is_help=True)
seed_app = typer.Typer(help="Demo data.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(seed_app, name="seed")
app.add_typer(credentials_app, name="credentials")
app.add_typer(tls_app, name="tls")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "",
    port: Annotated[int, typer.Option(help="TCP port")] = 0,
    broker: Annotated[str, typer.Option(help="embedded | mosquitto | external | none")] = "",
) -> None:
    """Upgrade the schema and serve the API (and the device plane) until Ctrl-C."""
    import uvicorn

    from fleet.app import create_app
    from fleet.runtime_hooks import default_hooks

    cfg = settings()
    if broker:
        cfg.mqtt.broker = broker
    # The serving address goes into settings too: rollouts build terminals' download links from it.
    cfg.http.host = host or cfg.http.host
    cfg.http.port = port or cfg.http.port
    setup_logging(cfg.log_level)
    upgrade_sync(cfg.database_url)
    ssl_files = _https_files(cfg)
    api = create_app(cfg, migrate=False, runtime_hooks=default_hooks(cfg))
    base = f"{'https' if ssl_files else 'http'}://{host or cfg.http.host}:{port or cfg.http.port}"
    console.print(f"LabFleet on {base}  (console at /, docs at /docs)")
    if link := setup_link(base):
        console.print(
            f"No users yet. Create the first administrator (link works once, for a limited time):\n  {link}"
        )
    from fleet.observability.logredact import uvicorn_log_config

    uvicorn.run(
        api,
        host=host or cfg.http.host,
        port=port or cfg.http.port,
        log_level=cfg.log_level.lower(),
        log_config=uvicorn_log_config(),  # the access log without signed links' sig or tokens
        # HTTPS with the `tls` group's certificate (LABFLEET_HTTP__TLS=true); behind a reverse proxy uvicorn
        # takes the scheme from X-Forwarded-Proto of the proxies in FORWARDED_ALLOW_IPS (default loopback).
        ssl_certfile=str(ssl_files[0]) if ssl_files else None,
        ssl_keyfile=str(ssl_files[1]) if ssl_files else None,
    )


def _https_files(cfg: Settings) -> tuple[Path, Path] | None:
    """The certificate chain and key `serve` speaks HTTPS with, checked now (a clear error, not a traceback
    from uvicorn); None for plain HTTP."""
    if not cfg.http.tls:
        return None
    from fleet.services import tls

    files = tls.TlsFiles.from_settings(cfg.tls)
    try:
        tls.server_context_files(files)  # uvicorn builds its own context; Python's default minimum is TLS 1.2
    except tls.TlsError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(1) from None
    return files.cert, files.key


@app.command()
def ingest(
    workers: Annotated[int, typer.Option(help="worker processes on this host")] = 1,
    index: Annotated[int | None, typer.Option(help="run only the worker with this index")] = None,
) -> None:
    """Run MQTT ingest workers (shared subscription) against the configured broker and database."""
    from fleet.runtime.worker import main as worker_main
    from fleet.runtime.worker import run_workers

    if index is not None:
        worker_main(["--index", str(index)])
        return
    if not 1 <= workers <= 64:
        raise typer.BadParameter("workers must be 1..64")
    raise typer.Exit(run_workers(workers))


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply database migrations."""
    cfg = settings()
    upgrade_sync(cfg.database_url, revision)
    console.print(f"database at {revision}: {cfg.database_url}")


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="admin, technician, it_staff, procurement, auditor")],
    school: Annotated[list[int] | None, typer.Option(help="school id (repeatable)")] = None,
    district: Annotated[bool, typer.Option("--district", help="district-wide scope")] = False,
    name: Annotated[str, typer.Option(help="who or what uses the token")] = "cli-token",
) -> None:
    """Create an API token and print it once; only its hash is stored."""
    from fleet.services.tokens import create_token

    async def work(session: Any) -> str:
        _row, plain = await create_token(
            session,
            principal=CLI,
            at=SystemClock().now(),
            name=name,
            role=role,
            school_ids=school or [],
            district_wide=district,
        )
        return plain

    plain = run_db(work)
    err_console.print(f"[green]Created {role} token[/green] (shown once; store it now):")
    print(plain)


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from fleet.services.tokens import list_tokens

    async def work(session: Any) -> list[Any]:
        return list((await list_tokens(session, CLI, cursor=None, limit=500)).items)

    table = Table("id", "name", "role", "scope", "created", "revoked")
    for t in run_db(work):
        table.add_row(
            str(t.id),
            t.name,
            t.role,
            "district" if t.district_wide else ",".join(map(str, t.school_ids)),
            t.created_at.isoformat(timespec="seconds"),
            "yes" if t.revoked_at else "",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: int) -> None:
    """Revoke a token by id."""
    from fleet.services.tokens import revoke_token

    async def work(session: Any) -> None:
        await revoke_token(session, CLI, token_id, SystemClock().now())

    run_db(work)
    console.print(f"token {token_id} revoked")


def _import(
    kind: str,
    path: Path,
    dry_run: bool,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    errors_out: Path | None = None,
    lang: str | None = None,
) -> None:
    """Any file, any content: a clear message and exit 1, never a traceback (the CLI seam of the import)."""
    from fleet.i18n import _, set_locale
    from fleet.services import imports

    set_locale(lang or settings().locale)
    if not path.is_file():
        message = _("no such file: {path}", path=str(path))
        err_console.print(f"[red]Error:[/red] {message}")
        raise typer.Exit(2)
    try:
        data = path.read_bytes()
        with Progress(
            TextColumn("{task.description:<11}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        ) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done)

            async def work(session: Any) -> Any:
                fn = imports.import_devices if kind == "devices" else imports.import_rooms
                try:
                    return await fn(
                        session,
                        CLI,
                        SystemClock(),
                        data,
                        dry_run=dry_run,
                        progress=progress,
                        filename=path.name,
                        sheet=sheet,
                        encoding=encoding,
                    )
                except ImportRejected as err:
                    return err  # nothing was written; reported below, outside the progress bars

            result = run_db(work)
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as err:  # the one seam where any failure becomes a message, not a traceback
        logging.getLogger(__name__).debug("import of %s failed", path, exc_info=True)
        message = _("could not import {path}: {error}", path=str(path), error=str(err) or type(err).__name__)
        err_console.print(f"[red]Error:[/red] {message}")
        raise typer.Exit(1) from None
    if isinstance(result, ImportRejected):
        _print_rejected(result, errors_out)
        raise typer.Exit(1)
    verb = _("would import") if result.dry_run else _("imported")
    console.print(f"[green]{verb} {result.created} {kind}[/green] ← {path}")


# The terminal shows this many bad rows; --errors-out writes all of them.
SHOWN_ERRORS = 100


def _print_rejected(err: ImportRejected, errors_out: Path | None) -> None:
    from fleet.i18n import _
    from fleet.services import imports

    details = err.details or []
    title = _("Import rejected:")
    err_console.print(f"[red]{title}[/red] {err.message}")
    table = Table(_("Row"), _("Column"), _("Value"), _("Reason"), title=_("Bad rows"))
    for d in details[:SHOWN_ERRORS]:
        table.add_row(str(d["row"]), d.get("header") or d["column"] or "", d.get("value", ""), d["reason"])
    err_console.print(table)
    if errors_out is not None:
        errors_out.write_bytes(imports.errors_csv(details))
        err_console.print(_("all {n} errors written to {path}", n=len(details), path=str(errors_out)))
    elif len(details) > SHOWN_ERRORS:
        err_console.print(
            _(
                "shown: the first {shown} of {n} errors; --errors-out FILE writes all of them",
                shown=SHOWN_ERRORS,
                n=len(details),
            )
        )


SheetOpt = Annotated[str | None, typer.Option(help="XLSX: the sheet to read (default: the first)")]
EncodingOpt = Annotated[
    str | None, typer.Option(help="CSV: force an encoding (utf-8, gb18030, gbk); detected by default")
]
ErrorsOutOpt = Annotated[
    Path | None, typer.Option("--errors-out", help="write every bad row to this CSV file")
]
LangOpt = Annotated[str | None, typer.Option("--lang", help="zh-CN | en (default: LABFLEET_LOCALE)")]
DryRunOpt = Annotated[bool, typer.Option(help="validate only")]


@import_app.command("devices")
def import_devices(
    path: Path,
    dry_run: DryRunOpt = False,
    sheet: SheetOpt = None,
    encoding: EncodingOpt = None,
    errors_out: ErrorsOutOpt = None,
    lang: LangOpt = None,
) -> None:
    """Import a delivery of devices from XLSX or CSV (UTF-8, UTF-8 with BOM, GB18030/GBK)."""
    _import("devices", path, dry_run, sheet=sheet, encoding=encoding, errors_out=errors_out, lang=lang)


@import_app.command("rooms")
def import_rooms(
    path: Path,
    dry_run: DryRunOpt = False,
    sheet: SheetOpt = None,
    encoding: EncodingOpt = None,
    errors_out: ErrorsOutOpt = None,
    lang: LangOpt = None,
) -> None:
    """Import rooms from XLSX or CSV."""
    _import("rooms", path, dry_run, sheet=sheet, encoding=encoding, errors_out=errors_out, lang=lang)


def _export(kind: str, out: Path | None, school: int | None, fmt: str, bom: bool | None) -> None:
    from fleet.i18n import normalize
    from fleet.services import imports

    if fmt not in imports.EXPORT_FORMATS:
        err_console.print(f"[red]Error:[/red] --format must be one of {', '.join(imports.EXPORT_FORMATS)}")
        raise typer.Exit(2)
    if fmt == "xlsx" and out is None:
        err_console.print("[red]Error:[/red] --out FILE is needed for xlsx")
        raise typer.Exit(2)
    # Excel on Chinese Windows reads a CSV without a BOM as GBK: the BOM is the default for a zh-CN site.
    with_bom = bom if bom is not None else normalize(settings().locale) == "zh_CN"

    async def work(session: Any) -> bytes:
        fn = imports.export_devices if kind == "devices" else imports.export_rooms
        return await fn(session, CLI, school_id=school, fmt=fmt, bom=with_bom)

    body = run_db(work)
    if out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        out.write_bytes(body)
        err_console.print(f"wrote {kind} ({fmt}) to {out}")


ExportFormatOpt = Annotated[str, typer.Option("--format", "-f", help="csv | xlsx")]
BomOpt = Annotated[
    bool | None, typer.Option("--bom/--no-bom", help="CSV: UTF-8 BOM for Excel (default: on when zh-CN)")
]


@export_app.command("devices")
def export_devices(
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
    school: Annotated[int | None, typer.Option()] = None,
    fmt: ExportFormatOpt = "csv",
    bom: BomOpt = None,
) -> None:
    """Export devices in the import format (CSV or XLSX; stdout, or --out FILE)."""
    _export("devices", out, school, fmt, bom)


@export_app.command("rooms")
def export_rooms(
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
    school: Annotated[int | None, typer.Option()] = None,
    fmt: ExportFormatOpt = "csv",
    bom: BomOpt = None,
) -> None:
    """Export rooms in the import format (CSV or XLSX)."""
    _export("rooms", out, school, fmt, bom)


@seed_app.command("demo")
def seed_demo() -> None:
    """Create a small demo district: 3 schools, rooms, timetables, models and a few hundred devices."""
    from fleet.services.seed import seed_demo as seed

    cfg = settings()

    async def work(session: Any) -> dict[str, int]:
        return await seed(session, SYSTEM, SystemClock(), timezone=cfg.default_timezone)

    counts = run_db(work)
    console.print("[green]demo district created:[/green] " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command()
def simulate(
    spec: Annotated[Path, typer.Argument(help="district spec YAML, e.g. simulators/districts/demo.yaml")],
    scenario: Annotated[
        str,
        typer.Option(
            help="comma-separated: bell-storm, lesson-peak, exam-day, "
            "wifi-flap, broker-restart, bad-firmware, malformed, "
            "battery-drain, screen-overuse"
        ),
    ] = "bell-storm,lesson-peak",
    duration: Annotated[float, typer.Option(help="real seconds to run")] = 60.0,
    speed: Annotated[float, typer.Option(help="simulated seconds per real second (default: the spec's)")] = 0,
    api: Annotated[str, typer.Option(help="service URL; empty: start a service under test")] = "",
    token: Annotated[str, typer.Option(help="admin API token for --api")] = "",
    broker: Annotated[
        str, typer.Option(help="broker URL for --api (mqtt://host:port; mqtts://host:8883 verifies the CA)")
    ] = "",
    serve: Annotated[
        str, typer.Option(help="broker of the started service: embedded | mosquitto")
    ] = "embedded",
    db: Annotated[
        str,
        typer.Option(
            help="the service's database URL, for read-back (and enrollment when the API has no /enroll)"
        ),
    ] = "",
    out: Annotated[Path, typer.Option(help="report directory")] = Path("var/simulate"),
    enroll: Annotated[
        str, typer.Option(help="auto | http | db (bulk through the service's use case)")
    ] = "auto",
) -> None:
    """Simulate the district from SPEC against the service and write a load report (JSON + HTML)."""
    from fleet.cli.simulate import main as simulate_main

    raise typer.Exit(
        simulate_main(
            spec,
            scenario,
            duration,
            speed or None,
            api,
            token,
            broker,
            serve,
            db,
            out,
            settings(),
            enroll=enroll,
        )
    )


@app.command("simulate-service", hidden=True)
def simulate_service(http_port: Annotated[int, typer.Option()] = 0) -> None:
    """The service under test that `labfleet simulate` starts (a child process; prints one JSON line)."""
    from fleet.cli.simulate_service import serve_child
    from fleet.runtime.broker_files import free_port

    cfg = settings()
    setup_logging(cfg.log_level)
    asyncio.run(serve_child(cfg, http_port or free_port()))


# Rollouts, artifacts and profiles live in their own module; registered here so `labfleet --help` lists them.

app.add_typer(rollout_app, name="rollout")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(profiles_app, name="profiles")

app.add_typer(audit_app, name="audit")

app.command("provision")(provision_command)

app.command("agent")(agent_command)

app.add_typer(user_app, name="user")

app.command("top")(top_command)

app.command("labels")(labels_command)
app.command("backup")(backup_command)
app.command("restore")(restore_command)
app.add_typer(retention_app, name="retention")


@app.command()
def report(
    name: Annotated[
        str,
        typer.Argument(
            help="coverage, inventory, reliability, warranty, utilisation, "
            "budget, screentime, inspection (the data-security inspection); or monthly to write the "
            "monthly set now"
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json | csv | xlsx | html | pdf")] = "json",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="file to write (stdout for text)")] = None,
    school: Annotated[int | None, typer.Option(help="only this school")] = None,
    district: Annotated[int | None, typer.Option(help="only this district")] = None,
    start: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="first day (UTC)")] = None,
    end: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"], help="last day (UTC)")] = None,
    section: Annotated[str | None, typer.Option(help="json/csv: only this section")] = None,
    budget: Annotated[float | None, typer.Option(help="budget report: the yearly equipment budget")] = None,
    month: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m"], help="monthly: which month (default last month)")
    ] = None,
    lang: LangOpt = None,
    bom: BomOpt = None,
) -> None:
    """Generate a report (with a progress bar), or `report monthly` to write the monthly set once."""
    from decimal import Decimal

    from fleet.i18n import set_locale
    from fleet.services import reports as rep

    cfg = settings()
    set_locale(lang or cfg.locale)
    if name == "monthly":
        _monthly(cfg, month.date() if month else None)
        return
    if fmt not in rep.FORMATS:
        err_console.print(f"[red]Error:[/red] format must be one of {', '.join(rep.FORMATS)}")
        raise typer.Exit(2)
    if out is None and fmt in ("xlsx", "pdf"):
        err_console.print(f"[red]Error:[/red] --out FILE is needed for {fmt}")
        raise typer.Exit(2)
    query = rep.ReportQuery(
        school=school,
        district=district,
        start=start.date() if start else None,
        end=end.date() if end else None,
        budget=Decimal(str(budget)) if budget is not None else None,
    )
    with Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        async def work(session: Any) -> bytes:
            result = await rep.generate(
                session, CLI, name, query, settings=cfg.reports, now=SystemClock().now(), progress=progress
            )
            progress("rendering", 0, 1)
            body = await asyncio.to_thread(rep.render, result, fmt, section=section, bom=bom)
            progress("rendering", 1, 1)
            return body

        body = run_db(work)
    if out is None:
        sys.stdout.write(body.decode())
    else:
        out.write_bytes(body)
        err_console.print(f"wrote {name} ({fmt}, {len(body):,} bytes) to {out}")


def _monthly(cfg: Settings, month: Any) -> None:
    from fleet.runtime.report_job import MonthlyReports

    async def main() -> list[Path]:
        return await MonthlyReports(cfg, SystemClock()).run(month)

    upgrade_sync(cfg.database_url)
    try:
        written = asyncio.run(main())
    except FleetError as err:
        err_console.print(f"[red]Error:[/red] {err.message}")
        raise typer.Exit(1) from None
    for path in written:
        console.print(str(path))
    err_console.print(
        f"[green]wrote {len(written)} files[/green] (keeping the last {cfg.reports.keep_last} months "
        f"in {cfg.reports.folder})"
    )


if __name__ == "__main__":
    app()
