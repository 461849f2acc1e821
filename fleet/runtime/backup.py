"""Backup and restore of one LabFleet install: the database, the artifact store and a settings summary.

An archive is a gzipped tar:

    manifest.json     format version, migration revision, dialect, row count per table, settings summary
    db.sqlite3        SQLite: a consistent copy taken with SQLite's online backup API (writers keep going)
    db.pgdump         PostgreSQL: `pg_dump --format=custom` (one snapshot transaction)
    artifacts/...     the content-addressed firmware store, as on disk

Secrets never enter the archive in clear: the settings summary says only whether each secret is set. Device
credentials travel as the database holds them (salted hashes), so a restored install lets every terminal log
in again with the password it already has, and the managed broker's files are rebuilt from the database at
start. Restore refuses a target that already holds data unless forced, an archive of another format version,
and an archive whose migration revision this install does not know (an archive from a newer LabFleet); an
archive from an older revision is upgraded to head after it is loaded.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData, func, inspect, select, text
from sqlalchemy.engine import make_url

from fleet.errors import Conflict, InvalidInput
from fleet.i18n import _
from fleet.persistence.db import alembic_config, create_engine, upgrade_sync
from fleet.persistence.schema import metadata
from fleet.settings import Settings

# Bumped whenever the archive's layout changes; restore refuses any other value.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "db.sqlite3"
PG_MEMBER = "db.pgdump"
ARTIFACTS = "artifacts"
# Setting names whose values are secrets: the summary says "set" or "empty", never the value.
SECRET_WORDS = ("password", "secret", "key", "token")


@dataclass(frozen=True)
class BackupResult:
    path: Path
    revision: str
    dialect: str
    rows: dict[str, int]
    artifacts: int


@dataclass(frozen=True)
class RestoreResult:
    revision: str
    upgraded_to: str
    rows: dict[str, int]
    artifacts: int


def settings_summary(cfg: Settings) -> dict[str, Any]:
    """The settings as a nested dict with every secret replaced by "(set)" or "(empty)"."""

    def scrub(value: Any, name: str) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if any(word in name.lower() for word in SECRET_WORDS) and isinstance(value, str):
            return "(set)" if value else "(empty)"
        return value

    data = scrub(cfg.model_dump(mode="json"), "")
    data["database_url"] = make_url(cfg.database_url).render_as_string(hide_password=True)
    return data


def pg_tool(name: str) -> str:
    """The path of pg_dump / pg_restore, or a clear error naming the package that ships it."""
    path = shutil.which(name)
    if path is None:
        raise InvalidInput(
            _(
                "{tool} is not installed: PostgreSQL backups need the PostgreSQL client tools "
                "(Debian: apt-get install postgresql-client)",
                tool=name,
            )
        )
    return path


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    """libpq connection options and environment for a SQLAlchemy URL (the password via PGPASSWORD, so it
    never shows in the process list)."""
    u = make_url(url)
    args = ["--host", u.host or "127.0.0.1", "--port", str(u.port or 5432), "--dbname", u.database or ""]
    if u.username:
        args += ["--username", u.username]
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return args, env


async def _table_rows(url: str) -> tuple[str | None, dict[str, int]]:
    """The migration revision (None when the schema was never created) and the row count of each table."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            revision = None
            if "alembic_version" in names:
                revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            rows = {}
            for table in metadata.sorted_tables:
                if table.name in names:
                    rows[table.name] = (
                        await conn.execute(select(func.count()).select_from(table))
                    ).scalar_one()
            return revision, rows
    finally:
        await engine.dispose()


def _run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def _add_tree(tar: tarfile.TarFile, root: Path) -> int:
    count = 0
    if not root.is_dir():
        return 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            tar.add(path, arcname=f"{ARTIFACTS}/{path.relative_to(root).as_posix()}", recursive=False)
            count += 1
    return count


def backup(cfg: Settings, out: Path, *, now: datetime) -> BackupResult:
    """Write an archive of this install to `out` while the service keeps running."""
    url = cfg.database_url
    revision, rows = _run_async(_table_rows(url))
    if revision is None:
        raise InvalidInput(_("the database has no LabFleet schema: nothing to back up"))
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="labfleet-backup-") as tmp:
        if dialect == "sqlite":
            db_file, member = Path(tmp) / SQLITE_MEMBER, SQLITE_MEMBER
            src_path = cfg.sqlite_path()
            if src_path is None:
                raise InvalidInput(_("an in-memory database cannot be backed up"))
            src = sqlite3.connect(src_path)
            dst = sqlite3.connect(db_file)
            try:
                src.backup(dst)  # online: pages are copied while other connections keep writing
            finally:
                dst.close()
                src.close()
        else:
            db_file, member = Path(tmp) / PG_MEMBER, PG_MEMBER
            args, env = _pg_args(url)
            proc = subprocess.run(
                [
                    pg_tool("pg_dump"),
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    "--file",
                    str(db_file),
                    *args,
                ],
                check=False,
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise InvalidInput(_("pg_dump failed: {error}", error=proc.stderr.strip()[-500:]))
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": now.isoformat(),
            "revision": revision,
            "dialect": dialect,
            "rows": rows,
            "settings": settings_summary(cfg),
        }
        with tarfile.open(partial, "w:gz") as tar:
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            info.mtime = int(now.timestamp())
            tar.addfile(info, io.BytesIO(data))
            tar.add(db_file, arcname=member)
            artifacts = _add_tree(tar, Path(cfg.rollouts.artifact_dir))
    partial.replace(out)  # never a half-written archive under the name the operator asked for
    return BackupResult(out, revision, dialect, rows, artifacts)


def read_manifest(archive: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise KeyError(MANIFEST)
            manifest: dict[str, Any] = json.loads(member.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as err:
        raise InvalidInput(_("not a LabFleet backup archive: {path}", path=str(archive))) from err
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise InvalidInput(
            _(
                "backup format version {found} is not supported (this LabFleet reads version {expected})",
                found=str(version),
                expected=str(FORMAT_VERSION),
            )
        )
    return manifest


def _check_revision(url: str, revision: str) -> str:
    """The head revision, after checking this install's migrations know `revision`."""
    script = ScriptDirectory.from_config(alembic_config(url))
    try:
        known = script.get_revision(revision)
    except CommandError:  # an unknown or malformed id (ResolutionError is a subclass)
        known = None
    if known is None:
        raise InvalidInput(
            _(
                "the backup is at migration revision {revision}, which this LabFleet does not know: "
                "restore it with the LabFleet version that wrote it, or a newer one",
                revision=revision,
            )
        )
    head = script.get_current_head()
    assert head is not None
    return head


async def _drop_everything(url: str) -> None:
    """Drop every table (and, on PostgreSQL, every sequence) in the target, whatever its revision."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            reflected = MetaData()
            await conn.run_sync(reflected.reflect)
            await conn.run_sync(reflected.drop_all)
    finally:
        await engine.dispose()


def _extract_artifacts(tar: tarfile.TarFile, dest: Path) -> int:
    count = 0
    prefix = ARTIFACTS + "/"
    members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
    for m in members:
        m.name = m.name[len(prefix) :]
        tar.extract(m, dest, filter="data")  # refuses absolute paths, '..' and links out of dest
        count += 1
    return count


def restore(cfg: Settings, archive: Path, *, force: bool = False) -> RestoreResult:
    """Load an archive into this install's database and artifact store."""
    manifest = read_manifest(archive)
    url = cfg.database_url
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    if manifest["dialect"] != dialect:
        raise InvalidInput(
            _(
                "the backup holds a {found} database but this install uses {expected}",
                found=manifest["dialect"],
                expected=dialect,
            )
        )
    head = _check_revision(url, manifest["revision"])
    artifact_dir = Path(cfg.rollouts.artifact_dir)
    if not force:
        _refuse_non_empty(cfg, artifact_dir)
    with tempfile.TemporaryDirectory(prefix="labfleet-restore-") as tmp, tarfile.open(archive, "r:gz") as tar:
        member = SQLITE_MEMBER if dialect == "sqlite" else PG_MEMBER
        tar.extract(member, tmp, filter="data")
        db_file = Path(tmp) / member
        if dialect == "sqlite":
            _restore_sqlite(cfg, db_file)
        else:
            _restore_postgres(url, db_file)
        if force and artifact_dir.exists():
            shutil.rmtree(artifact_dir)
        artifact_dir.mkdir(parents=True, exist_ok=True)
        artifacts = _extract_artifacts(tar, artifact_dir)
    upgrade_sync(url)
    rows = _run_async(_table_rows(url))[1]
    return RestoreResult(manifest["revision"], head, rows, artifacts)


@cache
def fresh_install_rows() -> dict[str, int]:
    """Rows the migrations themselves write (the audit chain's genesis, the reference generation): a
    target holding only these is a fresh install. Measured on a scratch database, so a new seeded row in a
    later migration needs no list kept here."""
    with tempfile.TemporaryDirectory(prefix="labfleet-fresh-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'fresh.db'}"
        upgrade_sync(url)
        rows: dict[str, int] = _run_async(_table_rows(url))[1]
        return rows


def _refuse_non_empty(cfg: Settings, artifact_dir: Path) -> None:
    path = cfg.sqlite_path()
    if path is None or path.exists():
        rows = _run_async(_table_rows(cfg.database_url))[1]
        seeded = fresh_install_rows()
        full = sorted(name for name, n in rows.items() if n > seeded.get(name, 0))
        if full:
            raise Conflict(
                _(
                    "the target database is not empty ({tables}): restore onto a fresh install, "
                    "or pass --force to replace its contents",
                    tables=", ".join(full[:5]) + (", ..." if len(full) > 5 else ""),
                )
            )
    if artifact_dir.is_dir() and any(artifact_dir.iterdir()):
        raise Conflict(
            _(
                "the artifact store {path} is not empty: restore onto a fresh install, or pass --force",
                path=str(artifact_dir),
            )
        )


def _restore_sqlite(cfg: Settings, db_file: Path) -> None:
    path = cfg.sqlite_path()
    if path is None:
        raise InvalidInput(_("an in-memory database cannot be restored into"))
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    src = sqlite3.connect(db_file)
    dst = sqlite3.connect(path)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _restore_postgres(url: str, dump: Path) -> None:
    restore_bin = pg_tool("pg_restore")
    _run_async(_drop_everything(url))
    args, env = _pg_args(url)
    proc = subprocess.run(
        [
            restore_bin,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            *args,
            str(dump),
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise InvalidInput(_("pg_restore failed: {error}", error=proc.stderr.strip()[-500:]))
