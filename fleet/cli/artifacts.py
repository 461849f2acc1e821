"""`labfleet artifacts ...` (the content-addressed firmware store) and `labfleet profiles check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.cli.common import CLI, console, err_console, run_db, settings
from fleet.domain.clock import SystemClock

artifacts_app = typer.Typer(help="The content-addressed firmware artifact store.", no_args_is_help=True)
profiles_app = typer.Typer(help="Firmware profiles (one YAML file per device model).", no_args_is_help=True)


@artifacts_app.command("import")
def artifacts_import() -> None:
    """Copy every profile's artifacts into the store (verifying sha256 and size) and catalogue them."""
    from fleet.services import artifacts

    cfg = settings()

    async def work(session: Any) -> Any:
        store = artifacts.ArtifactStore(cfg.rollouts.artifact_dir)
        return await artifacts.import_profile_artifacts(
            session, store, CLI, SystemClock().now(), signing_key=cfg.rollouts.signing_key
        )

    res = run_db(work)
    console.print(f"artifacts: {res.imported} imported, {res.already_present} already present")


@artifacts_app.command("add")
def artifacts_add(
    file: Annotated[
        Path,
        typer.Argument(
            help="the image file (e.g. a vendor download)", exists=True, dir_okay=False, readable=True
        ),
    ],
    profile: Annotated[str, typer.Option(help="firmware profile key, e.g. terminal-lt100")],
    version: Annotated[str, typer.Option(help="the profile version this file is")],
) -> None:
    """Upload one image into the store: it must match the sha256 and size its profile version declares."""
    import asyncio
    import hashlib

    from firmware_profiles import DEFAULT_PROFILE_DIR, load_profile_key
    from fleet.errors import InvalidInput, NotFound
    from fleet.services import artifacts

    cfg = settings()

    async def work(session: Any) -> Any:
        try:
            prof = await asyncio.to_thread(load_profile_key, profile, DEFAULT_PROFILE_DIR)
        except Exception as err:  # a missing or broken profile names its file and key path
            raise InvalidInput(f"profile {profile}: {err}") from err
        declared = next((v for v in prof.versions if v.version == version), None)
        if declared is None:
            raise InvalidInput(
                f"version {version} is not in profile {profile} (it lists "
                f"{', '.join(v.version for v in prof.versions)}); add it to "
                f"firmware_profiles/{profile}.yaml with the file's size and sha256 first"
            )

        def digest() -> tuple[str, int]:
            h = hashlib.sha256()
            with file.open("rb") as f:
                while chunk := f.read(artifacts.HASH_CHUNK):
                    h.update(chunk)
            return h.hexdigest(), file.stat().st_size

        sha, size = await asyncio.to_thread(digest)
        if (sha, size) != (declared.sha256, declared.size):
            raise InvalidInput(
                f"{file.name} is {size} bytes with sha256 {sha[:16]}...; profile {profile} "
                f"{version} declares {declared.size} bytes with sha256 {declared.sha256[:16]}..."
            )
        store = artifacts.ArtifactStore(cfg.rollouts.artifact_dir)
        await asyncio.to_thread(store.put_file, file)
        try:
            existing = await artifacts.artifact_by_sha(session, sha)
            return existing, False
        except NotFound:
            art = await artifacts.register(
                session,
                CLI,
                SystemClock().now(),
                sha256=sha,
                size=size,
                profile_key=profile,
                version=version,
                filename=file.name,
                signing_key=cfg.rollouts.signing_key,
            )
            return art, True

    art, new = run_db(work)
    console.print(
        f"{'stored' if new else 'already stored'}: {art.profile_key} {art.version}, {art.size} bytes, "
        f"sha256 {art.sha256}" + (", signed" if art.signature else "")
    )


@artifacts_app.command("list")
def artifacts_list() -> None:
    """List catalogued artifacts."""
    from fleet.services import artifacts

    async def work(session: Any) -> Any:
        return (await artifacts.list_artifacts(session, CLI, cursor=None, limit=500)).items

    table = Table("profile", "version", "size", "sha256", "signed")
    for a in run_db(work):
        table.add_row(a.profile_key, a.version, str(a.size), a.sha256[:16], a.signature_alg)
    console.print(table)


@profiles_app.command("check")
def profiles_check(
    path: Annotated[Path | None, typer.Argument(help="a profile file or folder")] = None,
) -> None:
    """Validate every firmware profile (and its artifacts); errors name the file and key path."""
    from firmware_profiles import check_profiles_command

    ok, lines = check_profiles_command(path)
    for line in lines:
        (console if ok else err_console).print(line, markup=False, highlight=False, soft_wrap=True)
    if not ok:
        raise typer.Exit(1)
