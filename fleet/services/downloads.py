"""The paced artifact download for terminals: signed links, the live-rollout check, byte ranges, and one
token bucket per school so all downloads at a school stay within its update budget."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.rollouts import FINAL_STATES, TokenBucket
from fleet.errors import NotFound
from fleet.persistence.models import Device, School
from fleet.persistence.models_rollouts import Rollout, RolloutDevice
from fleet.services.artifacts import ArtifactStore, DownloadGrant, artifact_by_sha, check_grant
from fleet.services.rollout_policy import school_budget
from fleet.settings import RolloutSettings


@dataclass
class SchoolPacer:
    """One token bucket per school, in real time: the sum of all downloads at a school stays within its
    budget."""

    burst_seconds: float
    monotonic: Callable[[], float] = time.monotonic
    buckets: dict[int, TokenBucket] = field(default_factory=dict)
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def bucket(self, school_id: int, rate: int) -> TokenBucket:
        b = self.buckets.get(school_id)
        if b is None or b.rate != rate:
            b = TokenBucket(rate=float(rate), burst=max(1.0, rate * self.burst_seconds))
            self.buckets[school_id] = b
        return b

    def forget(self, school_id: int) -> None:
        self.buckets.pop(school_id, None)

    async def acquire(self, school_id: int, rate: int, n: int) -> None:
        wait = self.bucket(school_id, rate).take(n, self.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)


# A Range header we serve: one range, `bytes=a-b`, `bytes=a-` or the suffix `bytes=-n`.
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True, slots=True)
class Download:
    """What to stream: bytes start..end (inclusive) of the image at `path`, at the school's rate."""

    path: Path
    sha256: str
    size: int
    start: int
    end: int
    partial: bool  # a Range was asked for and is served (206)
    school_id: int
    school_code: str
    rate: int  # bytes per second for the whole school

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class RangeRefused:
    """The Range header cannot be served (416)."""

    size: int
    message: str


async def prepare(
    session: AsyncSession,
    settings: RolloutSettings,
    store: ArtifactStore,
    grant: DownloadGrant,
    sig: str,
    range_header: str | None,
    now: datetime,
) -> Download | RangeRefused:
    """Check a signed download link and the Range asked for; no API token, the signature is the permission."""
    check_grant(settings.url_key, grant, sig, now)
    # The link names a device of a school: it must still be there, and be in a live rollout of this image.
    dev = await session.get(Device, grant.device_id)
    if dev is None or dev.school_id != grant.school_id:
        raise NotFound("no such download")
    live = (
        (
            await session.execute(
                select(RolloutDevice.state)
                .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
                .where(RolloutDevice.device_id == grant.device_id, Rollout.artifact_sha256 == grant.sha256)
            )
        )
        .scalars()
        .all()
    )
    if not any(s not in FINAL_STATES for s in live):
        raise NotFound("no such download")
    art = await artifact_by_sha(session, grant.sha256)
    path = store.path_for(grant.sha256)
    if not path.is_file():
        raise NotFound("artifact missing from the store")
    size = art.size
    rate = await school_budget(session, settings, grant.school_id)
    school_row = await session.get(School, grant.school_id)
    school_code = school_row.code if school_row else str(grant.school_id)
    start, end, partial = 0, size - 1, False
    if range_header:
        m = _RANGE.match(range_header.strip())
        if m is None or (not m.group(1) and not m.group(2)):
            return RangeRefused(size, "only one byte range of the form bytes=a-b is supported")
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # suffix range: the last n bytes
            start = max(0, size - int(m.group(2)))
        if start >= size or start > end:
            return RangeRefused(size, f"range starts past the end ({size} bytes)")
        partial = True
    return Download(path, grant.sha256, size, start, end, partial, grant.school_id, school_code, rate)
