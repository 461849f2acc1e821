"""Firmware artifacts: a content-addressed store by sha256, import from firmware profiles, image signatures,
and short-lived signed download URLs for terminals (which hold no API token)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_profiles import DEFAULT_PROFILE_DIR, artifact_path, load_all
from fleet.domain.permissions import Permission, Principal
from fleet.errors import InvalidInput, NotFound, Unauthenticated
from fleet.persistence.models_rollouts import FirmwareArtifact
from fleet.services import audit
from fleet.services.common import Page, paginate, require

log = logging.getLogger(__name__)

HASH_CHUNK = 1024 * 1024  # 1 MiB reads: hashing speed without holding an image in memory


def _is_sha(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class ArtifactStore:
    """Files named by their sha256 under root/<sha[:2]>/; written atomically, never overwritten."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        if not _is_sha(sha256):
            raise InvalidInput("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        sha = hashlib.sha256(data).hexdigest()
        self._write(sha, lambda f: f.write(data))
        return sha, len(data)

    def put_file(self, src: Path) -> tuple[str, int]:
        h = hashlib.sha256()
        with src.open("rb") as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
        sha = h.hexdigest()

        def copy(out: Any) -> None:
            with src.open("rb") as f:
                while chunk := f.read(HASH_CHUNK):
                    out.write(chunk)

        self._write(sha, copy)
        return sha, src.stat().st_size

    def _write(self, sha: str, writer: Any) -> None:
        target = self.path_for(sha)
        if target.is_file():
            return  # content-addressed: the same name is the same bytes
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --- image signatures -------------------------------------------------------------------------------------


def sign_image(sha256: str, key: str) -> tuple[str, str | None]:
    """(alg, signature) for an image digest: HMAC-SHA256 when a signing key is set, else unsigned."""
    if not key:
        return "none", None
    return "hmac-sha256", hmac.new(key.encode(), bytes.fromhex(sha256), hashlib.sha256).hexdigest()


def verify_image_signature(sha256: str, alg: str, signature: str | None, key: str) -> bool:
    """The device-side check; with a key configured, an unsigned or mismatched image is refused."""
    if not key:
        return True
    if alg != "hmac-sha256" or not signature:
        return False
    expected = hmac.new(key.encode(), bytes.fromhex(sha256), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


# --- signed download URLs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownloadGrant:
    sha256: str
    device_id: int
    school_id: int
    expires: int  # unix seconds


def _url_mac(key: str, g: DownloadGrant) -> str:
    msg = f"{g.sha256}:{g.device_id}:{g.school_id}:{g.expires}".encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def download_path(key: str, g: DownloadGrant) -> str:
    """The path and query of a signed download URL, bound to one image, device, school and expiry."""
    return (
        f"/api/v1/artifacts/{g.sha256}/download?device={g.device_id}&school={g.school_id}"
        f"&expires={g.expires}&sig={_url_mac(key, g)}"
    )


def check_grant(key: str, g: DownloadGrant, sig: str, now: datetime) -> None:
    if not hmac.compare_digest(_url_mac(key, g), sig):
        raise Unauthenticated("the download link's signature does not match")
    if now.timestamp() > g.expires:
        raise Unauthenticated("the download link has expired; the next update command carries a fresh one")


# --- catalogue --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportResult:
    imported: int
    already_present: int


async def import_profile_artifacts(
    session: AsyncSession,
    store: ArtifactStore,
    principal: Principal,
    at: datetime,
    *,
    signing_key: str = "",
    profile_dir: str | Path = DEFAULT_PROFILE_DIR,
) -> ImportResult:
    """Copy every profile version's artifact into the store and catalogue it (idempotent)."""
    require(principal, Permission.MANAGE_ROLLOUTS)
    profiles = await asyncio.to_thread(load_all, profile_dir)
    imported = present = 0
    for profile in profiles.values():
        for v in profile.versions:
            src = artifact_path(profile_dir, v.artifact)
            sha, size = await asyncio.to_thread(store.put_file, src)
            if sha != v.sha256 or size != v.size:
                raise InvalidInput(
                    f"{profile.model}: version {v.version}: artifact does not match its profile "
                    f"(sha256 or size)"
                )
            existing = (
                await session.execute(select(FirmwareArtifact).where(FirmwareArtifact.sha256 == sha))
            ).scalar_one_or_none()
            if existing is not None:
                present += 1
                continue
            await register(
                session,
                principal,
                at,
                sha256=sha,
                size=size,
                profile_key=profile.model,
                version=v.version,
                filename=Path(v.artifact).name,
                signing_key=signing_key,
            )
            imported += 1
    log.info("artifacts imported: %d new, %d already present", imported, present)
    return ImportResult(imported, present)


async def register(
    session: AsyncSession,
    principal: Principal,
    at: datetime,
    *,
    sha256: str,
    size: int,
    profile_key: str,
    version: str,
    filename: str,
    signing_key: str = "",
) -> FirmwareArtifact:
    """Catalogue an image already in the store (and sign it when a signing key is configured)."""
    alg, sig = sign_image(sha256, signing_key)
    art = FirmwareArtifact(
        sha256=sha256,
        size=size,
        profile_key=profile_key,
        version=version,
        filename=filename,
        signature_alg=alg,
        signature=sig,
        created_at=at,
    )
    session.add(art)
    await session.flush()
    audit.record(
        session,
        principal=principal,
        at=at,
        action="artifact.import",
        object_type="artifact",
        object_id=art.id,
        after={
            "sha256": sha256,
            "profile": profile_key,
            "version": version,
            "size": size,
            "signed": sig is not None,
        },
    )
    return art


async def list_artifacts(
    session: AsyncSession,
    principal: Principal,
    *,
    cursor: str | None,
    limit: int,
    profile_key: str | None = None,
) -> Page[FirmwareArtifact]:
    require(principal, Permission.READ_OPERATIONS)
    stmt = select(FirmwareArtifact)
    if profile_key:
        stmt = stmt.where(FirmwareArtifact.profile_key == profile_key)
    return await paginate(session, stmt, FirmwareArtifact, cursor, limit)


async def get_artifact(session: AsyncSession, principal: Principal, sha256: str) -> FirmwareArtifact:
    require(principal, Permission.READ_OPERATIONS)
    return await artifact_by_sha(session, sha256)


async def artifact_by_sha(session: AsyncSession, sha256: str) -> FirmwareArtifact:
    art = (
        await session.execute(select(FirmwareArtifact).where(FirmwareArtifact.sha256 == sha256))
    ).scalar_one_or_none()
    if art is None:
        raise NotFound(f"artifact {sha256[:12]} not found")
    return art
