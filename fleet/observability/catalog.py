"""The catalogue of LabFleet's Prometheus metrics: each metric's name, type, labels and meaning, defined once,
and the closed label vocabularies that keep every label bounded. `fleet.observability.metrics` builds the
live metrics from these; docs/metrics.md is generated from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fleet.domain.rollouts import DeviceUpdateState, RolloutStatus
from fleet.domain.wire import CommandName

PREFIX = "labfleet_"

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its exposed name, type, label names and meaning (the docs table is built from these)."""

    name: str  # as exposed; counters end in _total
    type: MetricType
    labels: tuple[str, ...]
    help: str
    source: Literal["event", "state"]
    buckets: tuple[float, ...] | None = None


# --- closed label vocabularies -------------------------------------------------------------------------
# Values outside these sets are folded into OTHER by `bounded()`, so a buggy or hostile caller cannot grow
# the series count. Schools, models, routes and commands are bounded by configuration, not by these sets.
OTHER = "other"
# lwt: the broker published the device's Last Will (its link dropped without DISCONNECT); heartbeat_timeout:
# the presence sweep's backstop found it silent.
DISCONNECT_REASONS = frozenset(
    {
        "clean",
        "keepalive_timeout",
        "protocol_error",
        "auth_failed",
        "taken_over",
        "server_shutdown",
        "network",
        "lwt",
        "heartbeat_timeout",
    }
)
ENROLLMENT_RESULTS = frozenset(
    {
        "ok",
        "bad_token",
        "expired_token",
        "exhausted_token",
        "unknown_serial",
        "wrong_school",
        "invalid",
        "error",
        "rate_limited",
    }
)
INGEST_RESULTS = frozenset(
    {
        "ok",
        "invalid_json",
        "invalid_schema",
        "too_large",
        "unknown_device",
        "duplicate",
        "dropped_overload",
        "error",
    }
)
DEAD_LETTER_REASONS = frozenset(
    {"invalid_json", "invalid_schema", "too_large", "unknown_device", "commit_failed", "overload"}
)
COMMAND_RESULTS = frozenset({"ok", "error", "timeout", "expired", "rejected", "cancelled"})
# The protocol's command catalogue (fleet.domain.wire.CommandName); a misspelt name becomes "other".
COMMAND_NAMES = frozenset(c.value for c in CommandName)
# HTTP methods a route can have; the method is a client-chosen token, so anything else becomes "OTHER".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DIRECTIONS = frozenset({"up", "down"})
HEALTH_STATES = frozenset({"ok", "degraded", "fault", "unknown"})
ALERT_SEVERITIES = frozenset({"info", "warning", "critical"})
# Rollout and device-update states come from the domain's enums: a new state is a new label value, not a
# silent "other".
ROLLOUT_STATUSES = frozenset(s.value for s in RolloutStatus)
ROLLOUT_DEVICE_STATES = frozenset(s.value for s in DeviceUpdateState)
ROLLOUT_PAUSE_REASONS = frozenset({"error_threshold", "manual"})
HTTP_STATUS_CLASSES = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx"})
# Rollouts in these states are exposed one series per rollout; finished ones only as counts, so the
# per-rollout series stay bounded by the handful of rollouts running at once.
ACTIVE_ROLLOUT_STATUSES = frozenset({RolloutStatus.RUNNING.value, RolloutStatus.PAUSED.value})


def bounded(value: str, allowed: frozenset[str]) -> str:
    """The value when it belongs to the closed set, else OTHER."""
    return value if value in allowed else OTHER


# --- histogram buckets (each with its reason) ----------------------------------------------------------
# Ingest batches run from one message on a quiet evening to a few thousand at the 08:00 bell storm.
BATCH_SIZE_BUCKETS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)
# One batched commit is ~1-50 ms on SQLite WAL; seconds mean the database is in trouble.
COMMIT_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Commands round-trip in ~100 ms on a LAN; reboots and flashes take tens of seconds; 60 s is past timeout.
# Seven buckets: a quantile only needs to tell "LAN-fast", "slow" and "device busy for a while" apart.
COMMAND_SECONDS_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
# API calls should answer in tens of ms; 0.25 s is slow; CSV imports of 10,000 rows and reports take seconds.
# Six buckets, not ten: with ~80 route templates each bucket costs 80 series, and p95 per route only has to
# say which side of 25 ms / 100 ms / 250 ms a route is on.
HTTP_SECONDS_BUCKETS = (0.01, 0.025, 0.1, 0.25, 1.0, 5.0)


def _c(name: str, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(PREFIX + name, "counter", labels, help, "event")


def _h(name: str, labels: tuple[str, ...], help: str, buckets: tuple[float, ...]) -> MetricSpec:
    return MetricSpec(PREFIX + name, "histogram", labels, help, "event", buckets)


def _g(
    name: str, labels: tuple[str, ...], help: str, source: Literal["event", "state"] = "state"
) -> MetricSpec:
    return MetricSpec(PREFIX + name, "gauge", labels, help, source)


# --- direct instrumentation (events, per process) ------------------------------------------------------
MQTT_CONNECTS = _c(
    "mqtt_connects_total",
    ("device_kind",),
    "MQTT sessions established: devices by kind, and this process's own broker connection as "
    "device_kind=service.",
)
MQTT_DISCONNECTS = _c(
    "mqtt_disconnects_total",
    ("device_kind", "reason"),
    "MQTT sessions ended, by reason: devices by kind, and this process's own broker connection as "
    "device_kind=service.",
)
MQTT_BROKER_CONNECTED = _g(
    "mqtt_broker_connected",
    (),
    "1 while this process holds its connection to the MQTT broker, else 0.",
    "event",
)
MQTT_BROKER_CONNECTION_LOSSES = _c(
    "mqtt_broker_connection_losses_total", (), "Times this process lost its MQTT broker connection."
)
ENROLLMENTS = _c(
    "enrollments_total", ("result",), "Device enrollment attempts (claim-token trades), by result."
)
INGEST_MESSAGES = _c("ingest_messages_total", ("result",), "Telemetry messages handled by ingest, by result.")
INGEST_BATCH_SIZE = _h("ingest_batch_size", (), "Messages per ingest database commit.", BATCH_SIZE_BUCKETS)
INGEST_COMMIT_SECONDS = _h(
    "ingest_commit_seconds", (), "Time to commit one ingest batch to the database.", COMMIT_SECONDS_BUCKETS
)
INGEST_QUEUE_DEPTH = _g(
    "ingest_queue_depth", (), "Messages waiting in this worker's bounded ingest queue.", "event"
)
INGEST_QUEUE_CAPACITY = _g("ingest_queue_capacity", (), "Size limit of this worker's ingest queue.", "event")
INGEST_LAG_SECONDS = _g(
    "ingest_lag_seconds",
    (),
    "Age of the oldest received but uncommitted message (0 when the queue is empty).",
    "event",
)
INGEST_DEAD_LETTERS = _c(
    "ingest_dead_letters_total", ("reason",), "Messages set aside as dead letters, by reason."
)
COMMAND_SECONDS = _h(
    "command_duration_seconds",
    ("command", "result"),
    "Time from command sent to its result, by command and result.",
    COMMAND_SECONDS_BUCKETS,
)
HTTP_REQUEST_SECONDS = _h(
    "http_request_duration_seconds",
    ("route",),
    "HTTP request latency by method and route template (e.g. GET /api/v1/devices/{device_id}), never the raw "
    "path.",
    HTTP_SECONDS_BUCKETS,
)
HTTP_REQUESTS = _c(
    "http_requests_total",
    ("route", "status_class"),
    "HTTP requests by method and route template and status class (2xx, 4xx, 5xx).",
)
SCHOOL_BYTES = _c(
    "school_bytes_total",
    ("school", "direction"),
    "Bytes carried for a school's devices: direction=up (device to cloud) or down (cloud to device).",
)
DEVICE_HEALTH_TRANSITIONS = _c(
    "device_health_transitions_total", ("model", "state"), "Devices entering a health state, by model."
)
ALERTS_OPENED = _c("alerts_opened_total", ("severity",), "Alerts opened (after deduplication), by severity.")
ROLLOUT_DEVICE_TRANSITIONS = _c(
    "rollout_device_transitions_total", ("model", "state"), "Devices entering a rollout state, by model."
)
ROLLOUT_PAUSES = _c("rollout_pauses_total", ("reason",), "Rollouts paused, by reason.")

# --- state read at scrape time (service process only) --------------------------------------------------
_PRESENCE = ("school", "room_kind", "device_kind")
DEVICES_IN_SERVICE = _g("devices_in_service", _PRESENCE, "Devices in service.")
DEVICES_ONLINE = _g("devices_online", _PRESENCE, "Devices online now.")
DEVICES_EXPECTED_ONLINE = _g(
    "devices_expected_online",
    _PRESENCE,
    "Devices the timetable expects online now (their room has a lesson).",
)
DEVICES_UNEXPECTED_OFFLINE = _g(
    "devices_unexpectedly_offline", _PRESENCE, "Devices expected online that are offline."
)
SCHOOL_LESSONS = _g("school_lessons_in_progress", ("school",), "Rooms with a lesson in progress now.")
SCHOOL_PERIOD = _g(
    "school_current_period",
    ("school", "period"),
    "1 for the school's current bell period (absent between periods); join on it to label by period.",
)
SCHOOL_UPLINK_CAPACITY = _g(
    "school_uplink_capacity_bits_per_second", ("school",), "The school's configured uplink capacity."
)
SCHOOL_ACTIVE_SESSIONS = _g(
    "school_active_sessions", ("school",), "Terminal sessions (a student signed in) active now."
)
DEVICES_BY_HEALTH = _g("devices_health", ("model", "state"), "Devices per health state, by model.")
ALERTS_OPEN = _g("alerts_open", ("severity",), "Open (unresolved) alerts, by severity.")
FIRMWARE_VERSIONS = _g("firmware_devices", ("model", "version"), "Devices running each firmware version.")
ROLLOUTS = _g("rollouts", ("status",), "Rollouts per status.")
ROLLOUT_DEVICES = _g(
    "rollout_devices",
    ("rollout", "model", "state"),
    "Devices per rollout state, for running and paused rollouts.",
)
ROLLOUT_PAUSED = _g("rollout_paused", ("rollout", "model"), "1 for each paused rollout.")
SNAPSHOT_AGE = _g("state_snapshot_age_seconds", (), "Age of the fleet state snapshot served by this scrape.")

EVENT_METRICS: tuple[MetricSpec, ...] = (
    MQTT_CONNECTS,
    MQTT_DISCONNECTS,
    MQTT_BROKER_CONNECTED,
    MQTT_BROKER_CONNECTION_LOSSES,
    ENROLLMENTS,
    INGEST_MESSAGES,
    INGEST_BATCH_SIZE,
    INGEST_COMMIT_SECONDS,
    INGEST_QUEUE_DEPTH,
    INGEST_QUEUE_CAPACITY,
    INGEST_LAG_SECONDS,
    INGEST_DEAD_LETTERS,
    COMMAND_SECONDS,
    HTTP_REQUEST_SECONDS,
    HTTP_REQUESTS,
    SCHOOL_BYTES,
    DEVICE_HEALTH_TRANSITIONS,
    ALERTS_OPENED,
    ROLLOUT_DEVICE_TRANSITIONS,
    ROLLOUT_PAUSES,
)
STATE_METRICS: tuple[MetricSpec, ...] = (
    DEVICES_IN_SERVICE,
    DEVICES_ONLINE,
    DEVICES_EXPECTED_ONLINE,
    DEVICES_UNEXPECTED_OFFLINE,
    SCHOOL_LESSONS,
    SCHOOL_PERIOD,
    SCHOOL_UPLINK_CAPACITY,
    SCHOOL_ACTIVE_SESSIONS,
    DEVICES_BY_HEALTH,
    ALERTS_OPEN,
    FIRMWARE_VERSIONS,
    ROLLOUTS,
    ROLLOUT_DEVICES,
    ROLLOUT_PAUSED,
    SNAPSHOT_AGE,
)
ALL_METRICS: tuple[MetricSpec, ...] = EVENT_METRICS + STATE_METRICS


def exposed_sample_names() -> frozenset[str]:
    """Every sample name these metrics can put in an exposition (histogram _bucket/_sum/_count included)."""
    names: set[str] = set()
    for spec in ALL_METRICS:
        if spec.type == "histogram":
            names.update(spec.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(spec.name)
    return frozenset(names)


def markdown_table(specs: Iterable[MetricSpec] = ALL_METRICS) -> str:
    """The metrics table for docs/metrics.md, built from the specs so docs and code agree."""
    rows = ["| name | type | labels | source | meaning |", "|---|---|---|---|---|"]
    for s in specs:
        labels = ", ".join(s.labels) if s.labels else "—"
        rows.append(f"| `{s.name}` | {s.type} | {labels} | {s.source} | {s.help} |")
    return "\n".join(rows)
