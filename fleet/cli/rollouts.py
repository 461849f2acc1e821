"""`labfleet rollout ...`, `labfleet artifacts ...` and `labfleet profiles check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.domain.clock import SystemClock
from fleet.domain.rollouts import GroupPlan, GroupStrategy, Window

rollout_app = typer.Typer(help="Staged firmware rollouts (timetable-aware, paced per school).", no_args_is_help=True)
artifacts_app = typer.Typer(help="The content-addressed firmware artifact store.", no_args_is_help=True)
profiles_app = typer.Typer(help="Firmware profiles (one YAML file per device model).", no_args_is_help=True)


def _cli() -> Any:
    from fleet.cli import main

    return main


def _percents(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter("percents is a comma-separated list, e.g. 25,50,100") from None


def _print_rollout(r: Any) -> None:
    m = _cli()
    m.console.print(f"rollout {r.id} [bold]{r.name}[/bold]: {r.profile_key} -> {r.target_version}, {r.state}"
                    + (f" ({r.state_reason})" if r.state_reason else ""))


@rollout_app.command("create")
def rollout_create(
        model: Annotated[int, typer.Option(help="device model id")],
        version: Annotated[str, typer.Option(help="target firmware version (in the model's profile)")],
        name: Annotated[str, typer.Option(help="a name for people")] = "",
        school: Annotated[list[int] | None, typer.Option(help="school id (repeatable; default all)")] = None,
        room: Annotated[list[int] | None, typer.Option(help="room id (repeatable)")] = None,
        from_version: Annotated[list[str] | None, typer.Option(help="only devices on this version (repeatable)")] = None,
        canary: Annotated[int, typer.Option(help="canary group size (devices)")] = 1,
        canary_percent: Annotated[float | None, typer.Option(help="canary as a percentage instead")] = None,
        strategy: Annotated[GroupStrategy, typer.Option(help="groups after the canary")] = GroupStrategy.PER_SCHOOL,
        percents: Annotated[str, typer.Option(help="cumulative percentages for --strategy percent")] = "25,50,100",
        success: Annotated[float, typer.Option(help="success share that starts the next group")] = 0.9,
        error: Annotated[float, typer.Option(help="failure share that pauses the rollout")] = 0.2,
        max_attempts: Annotated[int, typer.Option(help="tries per device")] = 3,
        download_window: Annotated[Window, typer.Option(help="when downloads may run")] = Window.OUTSIDE_LESSONS,
        install_window: Annotated[Window, typer.Option(help="when installs may run")] = Window.OUTSIDE_LESSONS,
        draft: Annotated[bool, typer.Option("--draft", help="create without starting")] = False) -> None:
    """Create a rollout and start it (canary first)."""
    from fleet.services.rollouts import RolloutService, RolloutSpec

    m = _cli()
    spec = RolloutSpec(name=name or f"model {model} to {version}", model_id=model, target_version=version,
                       school_ids=tuple(school or ()), room_ids=tuple(room or ()),
                       from_versions=tuple(from_version or ()),
                       plan=GroupPlan(canary, canary_percent, strategy, _percents(percents)),
                       success_threshold=success, error_threshold=error, max_attempts=max_attempts,
                       download_window=download_window, install_window=install_window, start=not draft)

    async def work(session: Any) -> Any:
        return await RolloutService(session, m.CLI, SystemClock().now()).create(spec)

    _print_rollout(m.run_db(work))


@rollout_app.command("list")
def rollout_list(status: Annotated[str | None, typer.Option(help="only this state")] = None) -> None:
    """List rollouts."""
    from fleet.services.rollouts import RolloutService

    m = _cli()

    async def work(session: Any) -> Any:
        return (await RolloutService(session, m.CLI, SystemClock().now()).list(cursor=None, limit=500,
                                                                               state=status)).items

    table = Table("id", "name", "profile", "target", "state", "group", "reason")
    for r in m.run_db(work):
        table.add_row(str(r.id), r.name, r.profile_key, r.target_version, r.state, str(r.current_group),
                      r.state_reason or "")
    m.console.print(table)


@rollout_app.command("show")
def rollout_show(rollout_id: int,
                 devices: Annotated[bool, typer.Option("--devices", help="list per-device states")] = False) -> None:
    """A rollout with its group progress (and per-device states with --devices)."""
    from fleet.services.rollouts import RolloutService

    m = _cli()

    async def work(session: Any) -> Any:
        return await RolloutService(session, m.CLI, SystemClock().now()).get(rollout_id)

    d = m.run_db(work)
    _print_rollout(d.rollout)
    table = Table("group", "kind", "state", "devices", "by state")
    for g in d.groups:
        table.add_row(g.name, g.kind, g.state, str(g.total),
                      ", ".join(f"{k} {v}" for k, v in sorted(g.by_state.items())))
    m.console.print(table)
    if devices:
        dt = Table("device", "school", "room", "state", "from", "reported", "attempts", "reason")
        for x in d.devices:
            dt.add_row(str(x.device_id), str(x.school_id), str(x.room_id or ""), x.state, x.from_version or "",
                       x.reported_version or "", str(x.attempts), x.reason or "")
        m.console.print(dt)


def _control(action: str, rollout_id: int) -> None:
    from fleet.services.rollouts import RolloutService

    m = _cli()

    async def work(session: Any) -> Any:
        svc = RolloutService(session, m.CLI, SystemClock().now())
        return await getattr(svc, action)(rollout_id)

    _print_rollout(m.run_db(work))


@rollout_app.command("pause")
def rollout_pause(rollout_id: int) -> None:
    """Pause: no new downloads or installs start; those in flight finish."""
    _control("pause", rollout_id)


@rollout_app.command("resume")
def rollout_resume(rollout_id: int) -> None:
    """Resume a paused rollout."""
    _control("resume", rollout_id)


@rollout_app.command("abort")
def rollout_abort(rollout_id: int) -> None:
    """Abort: pending and downloading devices are cancelled (the service tells them); installs finish."""
    _control("abort", rollout_id)


@rollout_app.command("start")
def rollout_start(rollout_id: int) -> None:
    """Start a draft rollout."""
    _control("start", rollout_id)


@artifacts_app.command("import")
def artifacts_import() -> None:
    """Copy every profile's artifacts into the store (verifying sha256 and size) and catalogue them."""
    from fleet.services import artifacts

    m = _cli()
    cfg = m.settings()

    async def work(session: Any) -> Any:
        store = artifacts.ArtifactStore(cfg.rollouts.artifact_dir)
        return await artifacts.import_profile_artifacts(session, store, m.CLI, SystemClock().now(),
                                                        signing_key=cfg.rollouts.signing_key)

    res = m.run_db(work)
    m.console.print(f"artifacts: {res.imported} imported, {res.already_present} already present")


@artifacts_app.command("list")
def artifacts_list() -> None:
    """List catalogued artifacts."""
    from fleet.services import artifacts

    m = _cli()

    async def work(session: Any) -> Any:
        return (await artifacts.list_artifacts(session, m.CLI, cursor=None, limit=500)).items

    table = Table("profile", "version", "size", "sha256", "signed")
    for a in m.run_db(work):
        table.add_row(a.profile_key, a.version, str(a.size), a.sha256[:16], a.signature_alg)
    m.console.print(table)


@profiles_app.command("check")
def profiles_check(path: Annotated[Path | None, typer.Argument(help="a profile file or folder")] = None) -> None:
    """Validate every firmware profile (and its artifacts); errors name the file and key path."""
    from firmware_profiles import check_profiles_command

    m = _cli()
    ok, lines = check_profiles_command(path)
    for line in lines:
        (m.console if ok else m.err_console).print(line, markup=False, highlight=False, soft_wrap=True)
    if not ok:
        raise typer.Exit(1)
