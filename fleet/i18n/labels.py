"""Readable, localized names for the domain's codes: a person never reads `in_service` or `smart_classroom`.

Each name is marked with `N_` for extraction and translated with `label()` in the current locale. A test
fails when a value of a listed enum has no name here, so a new code cannot reach a page or report unnamed.
"""

from __future__ import annotations

from enum import StrEnum

from fleet.domain.enums import (
    AiLabTier,
    CalendarKind,
    DeviceKind,
    DeviceStatus,
    Ownership,
    Role,
    RoomKind,
    Transport,
)
from fleet.domain.privacy import Finding
from fleet.domain.rollouts import DeviceUpdateState, GroupStrategy, RolloutStatus, Window
from fleet.domain.stocktake import LineStatus, Resolution, WindowChoice
from fleet.domain.wire import CommandName, EventType
from fleet.i18n import N_, gettext

NAMES: dict[type[StrEnum], dict[str, str]] = {
    RoomKind: {
        "smart_classroom": N_("Smart classroom"),
        "digital_lab": N_("Digital lab"),
        "ai_lab": N_("AI lab"),
    },
    AiLabTier: {
        "basic_experience": N_("Basic experience"),
        "subject_integration": N_("Subject integration"),
        "advanced_research": N_("Advanced research"),
    },
    DeviceKind: {
        "terminal": N_("Learning terminal"),
        "robot": N_("Robot"),
        "mcu_kit": N_("Microcontroller kit"),
        "sensor": N_("Sensor"),
    },
    Transport: {"mqtt": N_("MQTT (network)"), "serial": N_("Serial (USB)")},
    DeviceStatus: {
        "ordered": N_("Ordered"),
        "received": N_("Received"),
        "provisioned": N_("Provisioned"),
        "in_service": N_("In service"),
        "in_repair": N_("In repair"),
        "retired": N_("Retired"),
        "lost": N_("Lost"),
    },
    Ownership: {"owned": N_("Owned"), "leased": N_("Leased")},
    Role: {
        "admin": N_("Administrator"),
        "technician": N_("Lab technician"),
        "it_staff": N_("IT staff"),
        "procurement": N_("Procurement officer"),
        "auditor": N_("Auditor"),
    },
    CalendarKind: {"term": N_("Term"), "holiday": N_("Holiday"), "exam_day": N_("Exam day")},
    RolloutStatus: {
        "draft": N_("Draft"),
        "running": N_("Running"),
        "paused": N_("Paused"),
        "aborted": N_("Aborted"),
        "completed": N_("Completed"),
    },
    DeviceUpdateState: {
        "pending": N_("Pending"),
        "scheduled": N_("Scheduled"),
        "downloading": N_("Downloading"),
        "downloaded": N_("Downloaded"),
        "installing": N_("Installing"),
        "succeeded": N_("Succeeded"),
        "failed": N_("Failed"),
        "rolled_back": N_("Rolled back"),
        "cancelled": N_("Cancelled"),
    },
    Window: {"outside_lessons": N_("Outside lessons"), "after_school": N_("After school")},
    GroupStrategy: {"per_school": N_("School by school"), "percent": N_("By percentage")},
    CommandName: {
        "reboot": N_("Reboot"),
        "lock": N_("Lock screen"),
        "unlock": N_("Unlock screen"),
        "set_policy": N_("Set screen-time policy"),
        "diagnostics": N_("Run diagnostics"),
        "update": N_("Firmware update"),
        "rotate_credentials": N_("Rotate credentials"),
    },
    Finding: {
        "resident_id": N_("Resident identity number"),
        "student_number": N_("National student number"),
        "login_reference": N_("Login reference"),
        "not_a_pseudonym": N_("Not a pseudonym"),
    },
    EventType: {
        "boot": N_("Boot"),
        "error": N_("Error"),
        "login": N_("Sign-in"),
        "logout": N_("Sign-out"),
        "app_start": N_("App started"),
        "app_stop": N_("App stopped"),
        "locked": N_("Locked"),
        "unlocked": N_("Unlocked"),
        "screen_session": N_("Screen-time session"),
    },
    LineStatus: {"found": N_("Found here"), "missing": N_("Missing"), "unexpected": N_("Belongs elsewhere")},
    Resolution: {"moved_here": N_("Moved here"), "marked_lost": N_("Marked lost")},
    WindowChoice: {
        "today": N_("Today"),
        "since_yesterday": N_("Since yesterday"),
        "week": N_("The last 7 days"),
        "none": N_("No network pre-marks"),
    },
}

# Codes that are not enums but still reach people: presence, health, alert status and severity.
EXTRA: dict[str, str] = {
    "online": N_("Online"),
    "offline": N_("Offline"),
    "unknown": N_("Unknown"),
    "ok": N_("OK"),
    "degraded": N_("Degraded"),
    "fault": N_("Fault"),
    "open": N_("Open"),
    "acknowledged": N_("Acknowledged"),
    "resolved": N_("Resolved"),
    "info": N_("Info"),
    "warning": N_("Warning"),
    "critical": N_("Critical"),
    # Command statuses (fleet/services/commands.py), shown on the console's device page.
    "queued": N_("Queued"),
    "sent": N_("Sent to device"),
    "acked": N_("Accepted by device"),
    "rejected": N_("Rejected by device"),
    "timed_out": N_("Timed out"),
    "expired": N_("Expired"),
    # Alert rules (fleet/domain/health.py and the presence sweep).
    "battery_low": N_("Battery low"),
    "temperature_high": N_("Temperature high"),
    "storage_full": N_("Storage nearly full"),
    "error_code": N_("Device error"),
    "repeated_reboots": N_("Repeated reboots"),
    # Console user states (security inspection).
    "active": N_("Active"),
    "disabled": N_("Disabled"),
    "locked_out": N_("Locked out"),
    # Where an audit chain breaks (fleet/domain/auditchain.py).
    "edited": N_("Record edited"),
    "missing": N_("Record missing"),
    "reordered": N_("Records reordered"),
    "prev_mismatch": N_("Link to the previous record broken"),
    "tail_missing": N_("Latest records missing"),
    "duplicate": N_("Record duplicated"),
}


def label(value: StrEnum | str, kind: type[StrEnum] | None = None) -> str:
    """The localized name of a code; an unknown code is shown as it is rather than hidden."""
    code = str(value)
    enum = kind or (type(value) if isinstance(value, StrEnum) else None)
    table = NAMES.get(enum, {}) if enum else {}
    text = table.get(code) or EXTRA.get(code)
    if text is None:
        text = next((names[code] for names in NAMES.values() if code in names), None)
    return gettext(text) if text is not None else code


# Audit log actions are `<object type>.<verb>` (fleet/services/*, fleet/runtime/rollout_engine.py,
# fleet/cli/provision.py, and `<CrudService.name>.create|update|delete`); the console shows them by name.
AUDIT_OBJECTS: dict[str, str] = {
    "retention": N_("Retention"),
    "district": N_("District"),
    "school": N_("School"),
    "room": N_("Room"),
    "device_model": N_("Device model"),
    "device": N_("Device"),
    "bell_period": N_("Bell period"),
    "calendar_entry": N_("Calendar day"),
    "user": N_("User"),
    "token": N_("API token"),
    "claim_token": N_("Claim token"),
    "import": N_("Import"),
    "labels": N_("Asset labels"),
    "artifact": N_("Firmware file"),
    "command": N_("Command"),
    "credentials": N_("Device credentials"),
    "rollout": N_("Rollout"),
    "alert": N_("Alert"),
    "kit": N_("Kit"),
    "stocktake": N_("Stocktake"),
}
AUDIT_VERBS: dict[str, str] = {
    "run": N_("run"),
    "create": N_("created"),
    "update": N_("changed"),
    "delete": N_("deleted"),
    "disable": N_("disabled"),
    "enable": N_("enabled"),
    "sign_in": N_("signed in"),
    "sign_out": N_("signed out"),
    "revoke": N_("revoked"),
    "rotate": N_("rotated"),
    "rotated": N_("rotated"),
    "rotation_start": N_("rotation started"),
    "rotation_lapsed": N_("rotation lapsed"),
    "rooms": N_("rooms"),
    "devices": N_("devices"),
    "update_policy": N_("update policy changed"),
    "import": N_("imported"),
    "print": N_("printed"),
    "send": N_("sent"),
    "cancel": N_("cancelled"),
    "start": N_("started"),
    "pause": N_("paused"),
    "resume": N_("resumed"),
    "abort": N_("aborted"),
    "group_start": N_("group started"),
    "complete": N_("completed"),
    "transition": N_("lifecycle status changed"),
    "enroll": N_("enrolled"),
    "registered": N_("registered"),
    "provision_provisioned": N_("provisioned"),
    "provision_failed": N_("provisioning failed"),
    "provision_skipped": N_("provisioning skipped"),
    "ack": N_("acknowledged"),
    "resolve": N_("resolved"),
    "finish": N_("finished"),
    "move": N_("moved to another room"),
}


def _readable(code: str) -> str:
    return code.replace("_", " ").strip()


def audit_object(object_type: str | None) -> str:
    """The localized name of an audited object type; an unknown one reads as words, not as a code."""
    if not object_type:
        return ""
    text = AUDIT_OBJECTS.get(object_type)
    return gettext(text) if text is not None else _readable(object_type).capitalize()


def audit_action(code: str) -> str:
    """`bell_period.create` -> "Bell period · created" ("作息时段 · 创建"); the record keeps the code."""
    obj, _sep, verb = code.partition(".")
    if not verb:
        return audit_object(obj)
    text = AUDIT_VERBS.get(verb)
    return f"{audit_object(obj)} · {gettext(text) if text is not None else _readable(verb)}"


# The fields audit records keep in their before/after documents, by name (an unknown field reads as words).
AUDIT_FIELDS: dict[str, str] = {
    "deleted": N_("Rows deleted"),
    "cutoffs": N_("Kept from"),
    "name": N_("Name"),
    "username": N_("User name"),
    "role": N_("Role"),
    "district_wide": N_("Whole district"),
    "school_ids": N_("Schools"),
    "school_id": N_("School"),
    "room_id": N_("Room"),
    "model_id": N_("Model"),
    "kind": N_("Kind"),
    "tier": N_("AI lab tier"),
    "status": N_("Status"),
    "code": N_("Code"),
    "capacity": N_("Capacity"),
    "vendor": N_("Vendor"),
    "supplier": N_("Supplier"),
    "model_number": N_("Model number"),
    "serial_number": N_("Serial number"),
    "asset_tag": N_("Asset tag"),
    "order_number": N_("Order number"),
    "purchase_date": N_("Purchase date"),
    "unit_cost": N_("Unit cost"),
    "unit_price": N_("Unit price"),
    "funding_source": N_("Funding source"),
    "ownership": N_("Ownership"),
    "transport": N_("Transport"),
    "warranty_months": N_("Warranty (months)"),
    "timezone": N_("Time zone"),
    "uplink_mbps": N_("Uplink (Mbit/s)"),
    "weekday": N_("Weekday"),
    "start_time": N_("Starts"),
    "end_time": N_("Ends"),
    "start_date": N_("First day"),
    "end_date": N_("Last day"),
    "reason": N_("Reason"),
    "revoked": N_("Revoked"),
    "disabled": N_("Disabled"),
    "target_version": N_("Target version"),
    "strategy": N_("Strategy"),
    "state": N_("State"),
}


def audit_details(document: object) -> list[tuple[str, str]]:
    """An audit record's before/after document as (field, value) pairs to read: codes by their names, yes/no,
    lists joined; the record itself keeps the raw document."""
    if not isinstance(document, dict):
        return [] if document is None else [("", str(document))]
    pairs = []
    for key, value in document.items():
        field = AUDIT_FIELDS.get(key)
        name = gettext(field) if field is not None else _readable(str(key)).capitalize()
        pairs.append((name, _audit_value(value)))
    return pairs


def _audit_value(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return gettext(N_("Yes")) if value else gettext(N_("No"))
    if isinstance(value, str):
        return label(value)
    if isinstance(value, list | tuple):
        return ", ".join(_audit_value(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return "; ".join(f"{_readable(str(k))}: {_audit_value(v)}" for k, v in value.items())
    return str(value)
