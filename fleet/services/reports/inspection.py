"""inspection: the yearly data-security inspection the district plans ask for.

Who holds access (console users and API tokens by role and school, with their last use), stale credentials
(tokens and users unused for `inspection_stale_days`, device credentials never rotated, revoked devices still
trying to connect), devices on a firmware version their profile withdraws, privacy checks (no student
identifier stored, when the pseudonym key last changed) and the audit-chain verification.

It describes the state at generation time: last-use times and counters hold only their latest value, so an
earlier date cannot be reconstructed. Privacy checks and the audit chain cover the whole database; a
school-scoped caller gets them marked as not checked (they read every school's records), as
`labfleet audit verify` does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from firmware_profiles import DEFAULT_PROFILE_DIR, FirmwareProfile, ProfileError, load_profile_key
from fleet.domain.clock import as_utc
from fleet.domain.enums import Role
from fleet.i18n import _
from fleet.i18n.labels import label
from fleet.persistence.models import ApiToken, Device, DeviceModel
from fleet.persistence.models_console import ConsoleSession, User
from fleet.persistence.models_mqtt import DeviceCredential, DeviceState
from fleet.services import audit, privacy
from fleet.services.reports.data import GONE, Context, Scope
from fleet.services.reports.model import Column, Report, Section, SummaryItem

TITLE = "Data-security inspection"
DISTRICT_WIDE = "district-wide"


@dataclass(frozen=True, slots=True)
class Holder:
    """Someone who holds access: a console user or an API token."""

    kind: str  # "user" or "token"
    name: str
    role: str
    district_wide: bool
    school_ids: frozenset[int]
    created_at: datetime
    last_used_at: datetime | None
    state: str  # active, disabled, locked_out (users); active (tokens; revoked and expired are not listed)
    prefix: str = ""
    expires_at: datetime | None = None

    def visible_in(self, scope: Scope) -> bool:
        return self.district_wide or bool(self.school_ids & scope.schools.keys())

    def idle_since(self) -> datetime:
        return self.last_used_at or self.created_at


def _scope_text(h: Holder, scope: Scope) -> str:
    if h.district_wide:
        return _("district-wide")
    codes = sorted(scope.schools[s].code for s in h.school_ids if s in scope.schools)
    hidden = len(h.school_ids) - len(codes)
    return ", ".join(codes) + (f" (+{hidden})" if hidden else "")


async def _holders(ctx: Context) -> tuple[list[Holder], list[Holder], Counter[str]]:
    """Active users and tokens visible in the scope, and counts of the ones that no longer give access."""
    now = ctx.now
    gone: Counter[str] = Counter()
    seen = dict(
        await ctx.rows(
            select(ConsoleSession.user_id, func.max(ConsoleSession.last_seen_at)).group_by("user_id")
        )
    )
    users = []
    for u in await ctx.rows(
        select(
            User.id,
            User.username,
            User.role,
            User.district_wide,
            User.school_ids,
            User.created_at,
            User.last_sign_in_at,
            User.disabled_at,
            User.locked_until,
        ).order_by(User.username)
    ):
        last = max((as_utc(t) for t in (u.last_sign_in_at, seen.get(u.id)) if t is not None), default=None)
        state = "active"
        if u.disabled_at is not None:
            state = "disabled"
        elif u.locked_until is not None and as_utc(u.locked_until) > now:
            state = "locked_out"
        h = Holder(
            "user",
            u.username,
            u.role,
            u.district_wide,
            frozenset(int(s) for s in u.school_ids),
            as_utc(u.created_at),
            last,
            state,
        )
        if h.visible_in(ctx.scope):
            users.append(h)
    tokens = []
    for t in await ctx.rows(
        select(
            ApiToken.name,
            ApiToken.prefix,
            ApiToken.role,
            ApiToken.district_wide,
            ApiToken.school_ids,
            ApiToken.created_at,
            ApiToken.last_used_at,
            ApiToken.expires_at,
            ApiToken.revoked_at,
        ).order_by(ApiToken.id)
    ):
        h = Holder(
            "token",
            t.name,
            t.role,
            t.district_wide,
            frozenset(int(s) for s in t.school_ids),
            as_utc(t.created_at),
            as_utc(t.last_used_at) if t.last_used_at is not None else None,
            "active",
            prefix=t.prefix,
            expires_at=as_utc(t.expires_at) if t.expires_at is not None else None,
        )
        if not h.visible_in(ctx.scope):
            continue
        if t.revoked_at is not None:
            gone["revoked"] += 1
        elif h.expires_at is not None and h.expires_at <= now:
            gone["expired"] += 1
        else:
            tokens.append(h)
    return users, tokens, gone


def _by_role(users: list[Holder], tokens: list[Holder], scope: Scope) -> list[tuple[Any, ...]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for h in (*users, *tokens):
        if h.state != "active":
            continue
        buckets = (
            [DISTRICT_WIDE]
            if h.district_wide
            else [scope.schools[s].code for s in h.school_ids if s in scope.schools]
        )
        for b in buckets:
            counts[(b, h.role, h.kind)] += 1
    order = {r.value: i for i, r in enumerate(Role)}
    keys = sorted(
        {(b, r) for b, r, _k in counts},
        key=lambda k: (k[0] != DISTRICT_WIDE, k[0], order.get(k[1], 99)),
    )
    return [
        (
            _("district-wide") if b == DISTRICT_WIDE else b,
            r,
            counts[(b, r, "user")],
            counts[(b, r, "token")],
        )
        for b, r in keys
    ]


def _profiles(keys: Iterable[str], directory: str) -> tuple[dict[str, FirmwareProfile], list[str]]:
    profiles, problems = {}, []
    for key in sorted(keys):
        try:
            profiles[key] = load_profile_key(key, directory)
        except ProfileError as err:
            problems.append(str(err.issues[0]))
    return profiles, problems


async def _withdrawn(ctx: Context) -> tuple[list[tuple[Any, ...]], list[str]]:
    stmt = (
        select(
            Device.asset_tag,
            Device.serial_number,
            Device.school_id,
            Device.status,
            DeviceModel.vendor,
            DeviceModel.model_number,
            DeviceModel.profile_key,
            DeviceState.firmware_version,
        )
        .join(DeviceState, DeviceState.device_id == Device.id)
        .join(DeviceModel, DeviceModel.id == Device.model_id)
        .where(DeviceState.firmware_version.is_not(None), DeviceModel.profile_key.is_not(None))
        .order_by(Device.asset_tag)
    )
    in_scope = ctx.scope.where(Device.school_id)
    if in_scope is not None:
        stmt = stmt.where(in_scope)
    devices = [r for r in await ctx.rows(stmt) if r.status not in GONE]
    directory = ctx.settings.profile_dir or str(DEFAULT_PROFILE_DIR)
    profiles, problems = await asyncio.to_thread(_profiles, {r.profile_key for r in devices}, directory)
    rows = []
    for r in devices:
        profile = profiles.get(r.profile_key)
        w = profile.withdrawn_versions.get(r.firmware_version) if profile is not None else None
        if w is not None:
            rows.append(
                (
                    r.asset_tag,
                    r.serial_number,
                    ctx.scope.schools[r.school_id].code,
                    f"{r.vendor} {r.model_number}",
                    r.profile_key,
                    r.firmware_version,
                    w.since,
                    w.reason,
                    profile.target_version if profile is not None else None,
                )
            )
    return rows, problems


async def _credentials(ctx: Context) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    stmt = (
        select(
            DeviceCredential.username,
            Device.asset_tag,
            Device.school_id,
            DeviceCredential.created_at,
            DeviceCredential.rotated_at,
            DeviceCredential.revoked_at,
            DeviceCredential.refused_connects,
            DeviceCredential.last_refused_at,
        )
        .join(Device, Device.id == DeviceCredential.device_id)
        .order_by(DeviceCredential.created_at, DeviceCredential.username)
    )
    in_scope = ctx.scope.where(Device.school_id)
    if in_scope is not None:
        stmt = stmt.where(in_scope)
    never, knocking = [], []
    for r in await ctx.rows(stmt):
        code = ctx.scope.schools[r.school_id].code
        if r.revoked_at is None and r.rotated_at is None:
            issued = as_utc(r.created_at)
            never.append((r.username, r.asset_tag, code, issued, (ctx.now - issued).days))
        elif r.revoked_at is not None and r.refused_connects:
            knocking.append(
                (
                    r.username,
                    r.asset_tag,
                    code,
                    as_utc(r.revoked_at),
                    r.refused_connects,
                    as_utc(r.last_refused_at) if r.last_refused_at is not None else None,
                )
            )
    knocking.sort(key=lambda k: (-k[4], k[0]))
    return never, knocking


def _holder_rows(holders: list[Holder], scope: Scope, cutoff: datetime) -> list[tuple[Any, ...]]:
    return [
        (
            h.name,
            h.prefix,
            h.role,
            _scope_text(h, scope),
            h.state,
            h.created_at,
            h.expires_at,
            h.last_used_at,
            h.state == "active" and h.idle_since() <= cutoff,
        )
        for h in holders
    ]


async def build(ctx: Context) -> Report:
    stages = 5
    now, days = ctx.now, ctx.settings.inspection_stale_days
    cutoff = now - timedelta(days=days)
    ctx.step("access", 0, stages)
    users, tokens, gone = await _holders(ctx)
    by_role = _by_role(users, tokens, ctx.scope)
    ctx.step("credentials", 1, stages)
    never_rotated, knocking = await _credentials(ctx)
    ctx.step("firmware", 2, stages)
    withdrawn, profile_problems = await _withdrawn(ctx)
    district = ctx.principal is None or ctx.principal.district_wide
    ctx.step("privacy", 3, stages)
    scans = await privacy.scan_columns(ctx.session) if district else []
    key = await privacy.key_history(ctx.session) if district else None
    ctx.step("audit chain", 4, stages)
    chain = await audit.verify_chain(ctx.session, ctx.principal) if district and ctx.principal else None
    ctx.step("audit chain", 5, stages)

    holder_rows = _holder_rows(users, ctx.scope, cutoff) + _holder_rows(tokens, ctx.scope, cutoff)
    stale = [r for r in holder_rows if r[8]]
    stale_rows = [
        (
            _("API token") if r[1] else _("Console user"),
            r[0],
            r[1],
            r[2],
            r[3],
            r[7],
            (now - (r[7] or r[5])).days,
        )
        for r in stale
    ]
    flagged = [s for s in scans if s.flagged]
    privacy_rows = [
        (
            s.table,
            s.column,
            s.rows,
            s.flagged,
            ", ".join(label(f) for f in sorted(s.findings)),
            ", ".join(str(i) for i in s.row_ids),
        )
        for s in scans
    ]
    chain_rows = []
    if chain is not None:
        brk = chain.first_break
        chain_rows.append(
            (
                chain.checked,
                chain.last_seq,
                chain.ok,
                brk.seq if brk else None,
                brk.reason if brk else None,
                brk.detail if brk else "",
            )
        )
    key_default = key.is_default if key is not None else None
    findings = (
        len(stale)
        + len(never_rotated)
        + len(knocking)
        + len(withdrawn)
        + len(flagged)
        + bool(key_default)
        + (chain is not None and not chain.ok)
    )
    holder_cols = (
        Column("name", "Name"),
        Column("prefix", "Token id"),
        Column("role", "Role", "code"),
        Column("scope", "Schools"),
        Column("state", "State", "code"),
        Column("created_at", "Created", "datetime"),
        Column("expires_at", "Expires", "datetime"),
        Column("last_used_at", "Last used", "datetime"),
        Column("stale", _("Unused for {days} days", days=days), "bool"),
    )
    district_only = _("Checked only for district-wide callers: it reads every school's records.")
    sections = [
        Section(
            "access_by_role",
            "Who holds access, by school and role",
            (
                Column("scope", "Schools"),
                Column("role", "Role", "code"),
                Column("users", "Console users", "int"),
                Column("tokens", "API tokens", "int"),
            ),
            by_role,
            sheet="Access by role",
        ),
        Section(
            "users",
            "Console users",
            tuple(c for c in holder_cols if c.key not in ("prefix", "expires_at")),
            [(r[0], r[2], r[3], r[4], r[5], r[7], r[8]) for r in _holder_rows(users, ctx.scope, cutoff)],
        ),
        Section(
            "tokens",
            "API tokens in force",
            tuple(c for c in holder_cols if c.key != "state"),
            [r[:4] + r[5:] for r in _holder_rows(tokens, ctx.scope, cutoff)],
        ),
        Section(
            "stale",
            _("Access unused for {days} days or more", days=days),
            (
                Column("kind", "Kind"),
                Column("name", "Name"),
                Column("prefix", "Token id"),
                Column("role", "Role", "code"),
                Column("scope", "Schools"),
                Column("last_used_at", "Last used", "datetime"),
                Column("days_unused", "Days unused", "int"),
            ),
            stale_rows,
            note="Never used: counted from when it was created. Revoke what nobody needs.",
            sheet="Stale access",
        ),
        Section(
            "never_rotated",
            "Device credentials never rotated",
            (
                Column("identity", "Device identity"),
                Column("asset_tag", "Asset tag"),
                Column("school_code", "School code"),
                Column("issued_at", "Issued", "datetime"),
                Column("age_days", "Age (days)", "int"),
            ),
            never_rotated,
            sheet="Never rotated",
        ),
        Section(
            "revoked_connecting",
            "Revoked devices still trying to connect",
            (
                Column("identity", "Device identity"),
                Column("asset_tag", "Asset tag"),
                Column("school_code", "School code"),
                Column("revoked_at", "Revoked", "datetime"),
                Column("refused", "Refused connections", "int"),
                Column("last_refused_at", "Last refused", "datetime"),
            ),
            knocking,
            note=(
                "Counted by the broker the service runs when it refuses a revoked device: the embedded "
                "broker, and a managed mosquitto through LabFleet's connect recorder (built at start from"
                " gcc and mosquitto-dev; without them the service log says so and its refusals are not "
                "counted). An external broker refuses them itself and is not counted here."
            ),
            sheet="Revoked, still connecting",
        ),
        Section(
            "withdrawn_firmware",
            "Devices on withdrawn firmware",
            (
                Column("asset_tag", "Asset tag"),
                Column("serial_number", "Serial number"),
                Column("school_code", "School code"),
                Column("model", "Model"),
                Column("profile", "Firmware profile"),
                Column("version", "Firmware version"),
                Column("withdrawn_since", "Withdrawn on", "date"),
                Column("reason", "Why withdrawn"),
                Column("target", "Update to", "text"),
            ),
            withdrawn,
            sheet="Withdrawn firmware",
        ),
        Section(
            "privacy",
            "Columns scanned for student identifiers",
            (
                Column("table", "Table"),
                Column("column", "Column"),
                Column("rows", "Values scanned", "int"),
                Column("flagged", "Values flagged", "int"),
                Column("findings", "Found"),
                Column("row_ids", "First flagged rows"),
            ),
            privacy_rows,
            note="" if district else district_only,
            sheet="Privacy scan",
        ),
        Section(
            "audit_chain",
            "Audit-chain verification",
            (
                Column("checked", "Records checked", "int"),
                Column("last_seq", "Last record", "int"),
                Column("intact", "Intact", "bool"),
                Column("break_seq", "Breaks at record", "int"),
                Column("reason", "Why", "code"),
                Column("detail", "Detail"),
            ),
            chain_rows,
            note="" if district else district_only,
        ),
    ]
    summary = [
        SummaryItem("as_of", "As of", now, "datetime"),
        SummaryItem("stale_days", "Unused for this many days is stale", days, "int"),
        SummaryItem("findings", "Findings", findings, "int"),
        SummaryItem("users", "Console users (active)", sum(h.state == "active" for h in users), "int"),
        SummaryItem("tokens", "API tokens in force", len(tokens), "int"),
        SummaryItem("tokens_revoked", "API tokens revoked", gone["revoked"], "int"),
        SummaryItem("tokens_expired", "API tokens expired", gone["expired"], "int"),
        SummaryItem("stale", "Access unused for the stale period", len(stale), "int"),
        SummaryItem("never_rotated", "Device credentials never rotated", len(never_rotated), "int"),
        SummaryItem("revoked_connecting", "Revoked devices still trying to connect", len(knocking), "int"),
        SummaryItem("withdrawn_firmware", "Devices on withdrawn firmware", len(withdrawn), "int"),
        SummaryItem(
            "privacy_findings",
            "Columns holding a student identifier",
            len(flagged) if district else None,
            "int",
        ),
        SummaryItem(
            "pseudonym_key_since",
            "Pseudonym key in use since",
            key.current_since if key is not None else None,
            "datetime",
        ),
        SummaryItem(
            "pseudonym_key_changes",
            "Earlier pseudonym keys recorded",
            key.changes if key is not None else None,
            "int",
        ),
        SummaryItem("pseudonym_key_default", "Pseudonym key is the shipped placeholder", key_default, "bool"),
        SummaryItem("audit_chain_ok", "Audit chain intact", chain.ok if chain else None, "bool"),
    ]
    notes = [
        (
            "The inspection describes the state when it was generated. A token's or user's last use is kept "
            "to the minute; requests that failed do not count."
        )
    ]
    if key is not None and key.current_since is None:
        notes.append("No pseudonym key has been recorded yet: an ingest worker records it when it starts.")
    if key_default:
        notes.append(
            "The pseudonym key is the shipped placeholder: anyone can recompute the pseudonyms. Set "
            "LABFLEET_PSEUDONYM_KEY to a long random secret."
        )
    notes.extend(_("Firmware profile not read: {problem}", problem=p) for p in profile_problems)
    return ctx.report("inspection", TITLE, summary, sections, notes)
