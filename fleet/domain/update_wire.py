"""The firmware-update command's arguments and the device's progress reports (protocol section 10).

Pure encode/decode with reasons, like fleet.domain.wire; the command itself travels as a wire.Command
with cmd `update` on the device's `cmd` topic, progress comes back on its `update` channel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fleet.domain import wire

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A signed download URL is path + query with a 64-hex signature: 512 characters leave room for long hosts.
MAX_URL_CHARS = 512
# Images above 4 GiB are not something a classroom terminal takes over Wi-Fi.
MAX_IMAGE_BYTES = 4 * 1024**3


class Phase(StrEnum):
    DOWNLOAD = "download"  # fetch (resuming with Range), verify sha256 and signature, stage
    INSTALL = "install"  # install the staged image and reboot; roll back if the new image fails to boot
    CANCEL = "cancel"  # drop a download in progress or a staged image; never interrupts an install


class Progress(StrEnum):
    DOWNLOADING = "downloading"
    DOWNLOAD_PAUSED = "download_paused"  # stopped at not_after; resumes with Range on the next command
    DOWNLOADED = "downloaded"  # verified and staged
    DOWNLOAD_FAILED = "download_failed"  # HTTP or I/O error; partial data kept for a resume
    VERIFY_FAILED = "verify_failed"  # sha256 or signature mismatch: the image was discarded
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    SUCCEEDED = "succeeded"  # booted the new version
    ROLLED_BACK = "rolled_back"  # the new version failed to boot; back on `version` (the old one)
    INSTALL_FAILED = "install_failed"  # install refused before reboot (no staged image, low battery)
    CANCELLED = "cancelled"
    REFUSED = "refused"  # bad arguments or an expired command


_STATES = frozenset(p.value for p in Progress)


@dataclass(frozen=True, slots=True)
class UpdateArgs:
    phase: Phase
    version: str
    sha256: str
    size: int = 0
    url: str | None = None
    signature: str | None = None
    signature_alg: str = "none"
    # Byte-rate hint for this download (the server enforces the school's total anyway).
    max_bytes_per_second: int | None = None
    # ms since epoch: the device must not download or install past this moment (the next lesson starts).
    not_after_ms: int | None = None


@dataclass(frozen=True, slots=True)
class UpdateProgress:
    id: str
    ts_ms: int
    state: Progress
    version: str | None = None
    offset: int | None = None
    size: int | None = None
    reason: str | None = None


def update_args(a: UpdateArgs) -> dict[str, Any]:
    body: dict[str, Any] = {
        "phase": a.phase.value,
        "version": a.version,
        "sha256": a.sha256,
        "size": a.size,
        "url": a.url,
        "signature": a.signature,
        "signature_alg": a.signature_alg,
        "max_bytes_per_second": a.max_bytes_per_second,
        "not_after": a.not_after_ms,
    }
    return {k: v for k, v in body.items() if v is not None}


def parse_update_args(args: dict[str, Any]) -> UpdateArgs:
    """Validate an `update` command's args on the device side; raises ValueError naming the field."""
    try:
        raw_phase: Any = args.get("phase")  # unchecked JSON: the enum is the check
        phase = Phase(raw_phase)
    except ValueError:
        raise ValueError("phase must be download, install or cancel") from None
    version = args.get("version")
    if type(version) is not str or not 0 < len(version) <= 64 or not version.isprintable():
        raise ValueError("version must be 1..64 printable characters")
    sha = args.get("sha256")
    if type(sha) is not str or not SHA256_RE.match(sha):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    size = args.get("size", 0)
    if type(size) is not int or not 0 <= size <= MAX_IMAGE_BYTES:
        raise ValueError(f"size must be an integer 0..{MAX_IMAGE_BYTES}")
    url = args.get("url")
    if phase == Phase.DOWNLOAD and (type(url) is not str or not 0 < len(url) <= MAX_URL_CHARS):
        raise ValueError(f"url is required for download, at most {MAX_URL_CHARS} characters")
    rate = args.get("max_bytes_per_second")
    if rate is not None and (type(rate) is not int or rate < 1):
        raise ValueError("max_bytes_per_second must be a positive integer")
    not_after = args.get("not_after")
    if not_after is not None and (
        type(not_after) is not int or not wire.TS_MIN_MS <= not_after <= wire.TS_MAX_MS
    ):
        raise ValueError("not_after must be ms since epoch")
    sig = args.get("signature")
    alg = args.get("signature_alg", "none")
    if alg not in ("none", "hmac-sha256", "ed25519") or (sig is not None and type(sig) is not str):
        raise ValueError("signature_alg must be none, hmac-sha256 or ed25519")
    return UpdateArgs(phase, version, sha, size, url, sig, alg, rate, not_after)


def encode_progress(p: UpdateProgress) -> bytes:
    body = {
        "v": wire.PROTOCOL_VERSION,
        "id": p.id,
        "ts": p.ts_ms,
        "state": p.state.value,
        "version": p.version,
        "offset": p.offset,
        "size": p.size,
        "reason": p.reason,
    }
    return json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":")).encode()


def decode_progress(payload: bytes) -> UpdateProgress | wire.Rejection:
    """Decode a progress report from the `update` channel; never raises."""
    if len(payload) > wire.MAX_UPLINK_BYTES:
        return wire.Rejection(wire.Reason.OVERSIZED, f"over {wire.MAX_UPLINK_BYTES} bytes")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return wire.Rejection(wire.Reason.MALFORMED_JSON, "not UTF-8 JSON")
    if type(obj) is not dict:
        return wire.Rejection(wire.Reason.MALFORMED_JSON, "not a JSON object")
    if obj.get("v") != wire.PROTOCOL_VERSION:
        return wire.Rejection(wire.Reason.UNSUPPORTED_VERSION, "v must be 1")
    try:
        cid = obj.get("id")
        if type(cid) is not str or not wire.CORRELATION_RE.match(cid):
            raise ValueError("id must be a correlation id")
        ts = obj.get("ts")
        if type(ts) is not int or not wire.TS_MIN_MS <= ts <= wire.TS_MAX_MS:
            raise ValueError("ts must be ms since epoch")
        raw_state: Any = obj.get("state")  # unchecked JSON: the enum is the check
        if type(raw_state) is not str:
            raise ValueError("state must be a string")
        if raw_state not in _STATES:
            # A state this protocol does not define (a newer firmware, a typo): kept as a dead letter with
            # its own reason rather than folded into schema errors, so it is found and the doc extended.
            return wire.Rejection(
                wire.Reason.UNKNOWN_STATE, f"state {raw_state[:40]!r} is not a protocol state"
            )
        state = Progress(raw_state)
        version = obj.get("version")
        if version is not None and (type(version) is not str or not 0 < len(version) <= 64):
            raise ValueError("version must be 1..64 characters")
        nums = []
        for key in ("offset", "size"):
            v = obj.get(key)
            if v is not None and (type(v) is not int or not 0 <= v <= MAX_IMAGE_BYTES):
                raise ValueError(f"{key} must be an integer 0..{MAX_IMAGE_BYTES}")
            nums.append(v)
        reason = obj.get("reason")
        if reason is not None and (type(reason) is not str or not 0 < len(reason) <= 200):
            raise ValueError("reason must be 1..200 characters")
    except ValueError as err:
        return wire.Rejection(wire.Reason.SCHEMA, str(err))
    return UpdateProgress(cid, ts, state, version, nums[0], nums[1], reason)
