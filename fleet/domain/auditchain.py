"""The audit log's hash chain: each record carries the hash of the one before, so an edit, a deletion or a
reordering shows as a break at a known position.

Pure functions over plain values; the algorithm is part of the stored data (migration 0050 computed the
first hashes with it), so it never changes: a new scheme would need a new version field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The hash the first record points back to.
GENESIS = "0" * 64
# The layout of the hashed document; a new layout gets a new number so old links still verify.
CHAIN_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """What a record's hash covers: its position, its content and its predecessor's hash (not its row id)."""

    id: int
    seq: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    school_id: int | None
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    summary: str | None
    prev_hash: str
    hash: str


def record_hash(
    *,
    seq: int,
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | None,
    school_id: int | None,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    summary: str | None,
) -> str:
    """sha256 over a canonical JSON of the record (sorted keys, UTC time with microseconds)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    doc = {
        "v": CHAIN_FORMAT,
        "seq": seq,
        "prev": prev_hash,
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": actor,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "school_id": school_id,
        "before": before,
        "after": after,
        "summary": summary,
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def hash_of(r: ChainRecord) -> str:
    return record_hash(
        seq=r.seq,
        prev_hash=r.prev_hash,
        at=r.at,
        actor=r.actor,
        action=r.action,
        object_type=r.object_type,
        object_id=r.object_id,
        school_id=r.school_id,
        before=r.before,
        after=r.after,
        summary=r.summary,
    )


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where the chain first breaks: the record (seq and row id) and why."""

    seq: int
    id: int | None
    reason: str  # "edited", "missing", "reordered", "prev_mismatch", "tail_missing", "duplicate"
    detail: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int
    last_seq: int
    last_hash: str
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


class ChainVerifier:
    """Feed records in seq order (in batches, for a long log); `finish` compares the end with the head."""

    def __init__(self) -> None:
        self.checked = 0
        self.prev_seq = 0
        self.prev_id = 0
        self.prev_hash = GENESIS
        self.first_break: ChainBreak | None = None

    def _break(self, r: ChainRecord, reason: str, detail: str) -> None:
        if self.first_break is None:
            self.first_break = ChainBreak(r.seq, r.id, reason, detail)

    def feed(self, records: Iterable[ChainRecord]) -> None:
        for r in records:
            self.checked += 1
            if r.seq == self.prev_seq:
                self._break(r, "duplicate", f"seq {r.seq} appears twice (row {r.id})")
            elif r.seq != self.prev_seq + 1:
                if self.first_break is None:
                    gap = f"{self.prev_seq + 1}" + (f"..{r.seq - 1}" if r.seq - 1 > self.prev_seq + 1 else "")
                    self.first_break = ChainBreak(
                        self.prev_seq + 1, None, "missing", f"record seq {gap} is missing before row {r.id}"
                    )
            elif r.id <= self.prev_id:
                self._break(
                    r, "reordered", f"row {r.id} holds seq {r.seq} but comes after row {self.prev_id}"
                )
            elif r.prev_hash != self.prev_hash:
                self._break(r, "prev_mismatch", f"row {r.id} does not point back to seq {self.prev_seq}")
            elif hash_of(r) != r.hash:
                self._break(r, "edited", f"row {r.id}'s content does not match its hash")
            self.prev_seq, self.prev_id, self.prev_hash = r.seq, r.id, r.hash

    def finish(self, head_seq: int | None, head_hash: str | None) -> ChainReport:
        if self.first_break is None and head_seq is not None and head_seq != self.prev_seq:
            self.first_break = ChainBreak(
                self.prev_seq + 1,
                None,
                "tail_missing",
                f"the chain head is at seq {head_seq} but the last record is seq {self.prev_seq}",
            )
        elif self.first_break is None and head_hash is not None and head_hash != self.prev_hash:
            self.first_break = ChainBreak(
                self.prev_seq, self.prev_id, "edited", "the last record does not match the chain head's hash"
            )
        return ChainReport(self.checked, self.prev_seq, self.prev_hash, self.first_break)
