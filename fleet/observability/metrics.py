"""Every LabFleet Prometheus metric, defined once.

Two kinds live here:
- events (connects, messages, commits, commands, requests, bytes) use direct instrumentation on
  `FleetMetrics`, built against a registry that is passed in (never the global one);
- fleet state (devices online, lessons in progress, health, alerts, firmware, rollouts) is read at scrape
  time by `FleetStateCollector` from an in-memory `FleetSnapshot`, never from the database.

Labels come from bounded sets only (school, room kind, device kind, model, reason, result, command, route,
severity, state). No device id, serial number, user or student ever becomes a label value: ten thousand
devices would otherwise be ten thousand series per metric.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet.domain.wire import CommandName

logger = logging.getLogger(__name__)

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
ROLLOUT_STATUSES = frozenset({"draft", "running", "paused", "completed", "aborted"})
ROLLOUT_DEVICE_STATES = frozenset(
    {
        "pending",
        "scheduled",
        "downloading",
        "downloaded",
        "installing",
        "succeeded",
        "failed",
        "rolled_back",
        "cancelled",
    }
)
ROLLOUT_PAUSE_REASONS = frozenset({"error_threshold", "manual"})
HTTP_STATUS_CLASSES = frozenset({"1xx", "2xx", "3xx", "4xx", "5xx"})
# Rollouts in these states are exposed one series per rollout; finished ones only as counts, so the
# per-rollout series stay bounded by the handful of rollouts running at once.
ACTIVE_ROLLOUT_STATUSES = frozenset({"running", "paused"})


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


# --- the snapshot the MQTT runtime fills ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PresenceCount:
    """Presence counts for one (school, room kind, device kind) cell."""

    school: str
    room_kind: str
    device_kind: str
    in_service: int
    online: int
    expected_online: int
    unexpectedly_offline: int


@dataclass(frozen=True, slots=True)
class SchoolState:
    """Per-school figures; `current_period` is None between periods and outside school hours."""

    school: str
    lessons_in_progress: int
    current_period: str | None
    uplink_capacity_bps: float
    active_sessions: int


@dataclass(frozen=True, slots=True)
class HealthCount:
    model: str
    state: str
    count: int


@dataclass(frozen=True, slots=True)
class FirmwareCount:
    model: str
    version: str
    count: int


@dataclass(frozen=True, slots=True)
class RolloutState:
    """One rollout: its status and, while it runs or is paused, its devices per state."""

    rollout: str  # the rollout's name or id: bounded by the rollouts running at once
    model: str
    status: str
    devices_by_state: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Everything the state collector exposes, captured at `taken_at` (unix seconds)."""

    taken_at: float
    presence: tuple[PresenceCount, ...] = ()
    schools: tuple[SchoolState, ...] = ()
    health: tuple[HealthCount, ...] = ()
    open_alerts: tuple[tuple[str, int], ...] = ()  # (severity, count)
    firmware: tuple[FirmwareCount, ...] = ()
    rollouts: tuple[RolloutState, ...] = ()


class SnapshotSource(Protocol):
    """Anything that can hand the collector the latest fleet snapshot from memory, cheaply."""

    def snapshot(self) -> FleetSnapshot | None: ...


@dataclass(slots=True)
class SnapshotHolder:
    """A SnapshotSource the runtime publishes into; the swap is one reference assignment."""

    _current: FleetSnapshot | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, snapshot: FleetSnapshot) -> None:
        with self._lock:
            self._current = snapshot

    def snapshot(self) -> FleetSnapshot | None:
        with self._lock:
            return self._current


# --- the scrape-time collector -------------------------------------------------------------------------
def _family(spec: MetricSpec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))


class FleetStateCollector(Collector):
    """Reads a FleetSnapshot from memory at scrape time and exposes the state gauges."""

    def __init__(self, source: SnapshotSource, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock
        self._failing = False
        # The families of the last snapshot served: a snapshot is immutable and replaced every ~15 s, so
        # scrapes in between (Prometheus HA pairs, `labfleet top`, a human with curl) reuse them.
        self._cached: tuple[FleetSnapshot, list[GaugeMetricFamily]] | None = None

    def describe(self) -> Iterable[Metric]:
        # Describing without samples keeps registration from calling the source.
        return [_family(spec) for spec in STATE_METRICS]

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self._source.snapshot()
        except Exception:
            # A broken source must not turn /metrics into a 500 and hide every event metric with it.
            if not self._failing:
                logger.exception("fleet state snapshot source failed; state gauges omitted")
            self._failing = True
            return
        if self._failing:
            logger.info("fleet state snapshot source recovered")
            self._failing = False
        if snap is None:
            return
        cached = self._cached
        if cached is None or cached[0] is not snap:
            cached = self._cached = (snap, [f for f in self.families(snap) if f.name != SNAPSHOT_AGE.name])
        yield from cached[1]
        age = _family(SNAPSHOT_AGE)
        age.add_metric([], max(0.0, self._clock() - snap.taken_at))
        yield age

    def families(self, snap: FleetSnapshot) -> list[GaugeMetricFamily]:
        """The gauge families for one snapshot (subclasses may add their own)."""
        fams = {spec.name: _family(spec) for spec in STATE_METRICS}

        def add(spec: MetricSpec, labels: list[str], value: float) -> None:
            fams[spec.name].add_metric(labels, value)

        for p in snap.presence:
            key = [p.school, p.room_kind, p.device_kind]
            add(DEVICES_IN_SERVICE, key, p.in_service)
            add(DEVICES_ONLINE, key, p.online)
            add(DEVICES_EXPECTED_ONLINE, key, p.expected_online)
            add(DEVICES_UNEXPECTED_OFFLINE, key, p.unexpectedly_offline)
        for s in snap.schools:
            add(SCHOOL_LESSONS, [s.school], s.lessons_in_progress)
            if s.current_period is not None:
                add(SCHOOL_PERIOD, [s.school, s.current_period], 1)
            add(SCHOOL_UPLINK_CAPACITY, [s.school], s.uplink_capacity_bps)
            add(SCHOOL_ACTIVE_SESSIONS, [s.school], s.active_sessions)
        for h in snap.health:
            add(DEVICES_BY_HEALTH, [h.model, bounded(h.state, HEALTH_STATES)], h.count)
        for severity, count in snap.open_alerts:
            add(ALERTS_OPEN, [bounded(severity, ALERT_SEVERITIES)], count)
        for f in snap.firmware:
            add(FIRMWARE_VERSIONS, [f.model, f.version], f.count)
        statuses = dict.fromkeys(sorted(ROLLOUT_STATUSES), 0)
        for r in snap.rollouts:
            status = bounded(r.status, ROLLOUT_STATUSES)
            statuses[status] = statuses.get(status, 0) + 1
            if status not in ACTIVE_ROLLOUT_STATUSES:
                continue
            for state, count in r.devices_by_state:
                add(ROLLOUT_DEVICES, [r.rollout, r.model, bounded(state, ROLLOUT_DEVICE_STATES)], count)
            add(ROLLOUT_PAUSED, [r.rollout, r.model], 1 if status == "paused" else 0)
        for status, count in statuses.items():
            add(ROLLOUTS, [status], count)
        add(SNAPSHOT_AGE, [], max(0.0, self._clock() - snap.taken_at))
        return list(fams.values())


# --- direct instrumentation ----------------------------------------------------------------------------
UNMATCHED_ROUTE = "unmatched"  # requests that matched no route: one label value, whatever the path or method


def route_label(method: str, route: str) -> str:
    """The `route` label: "<METHOD> <template>", or "unmatched" for requests that matched no route."""
    if route == UNMATCHED_ROUTE:
        return UNMATCHED_ROUTE
    m = method.upper()
    return f"{m if m in HTTP_METHODS else OTHER.upper()} {route}"


def _status_class(status: int) -> str:
    return bounded(f"{status // 100}xx", HTTP_STATUS_CLASSES)


class FleetMetrics:
    """The event metrics of one process, registered on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # _created series double every counter and histogram and Prometheus ignores them in the text
        # format; client_python only offers a process-wide switch, and our processes expose only these.
        disable_created_metrics()
        self._broker_up = False
        self._broker_lock = threading.Lock()

        def counter(spec: MetricSpec) -> Counter:
            # client_python appends _total itself.
            return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)

        def hist(spec: MetricSpec) -> Histogram:
            return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets or ())

        def gauge(spec: MetricSpec) -> Gauge:
            return Gauge(spec.name, spec.help, spec.labels, registry=registry)

        self.mqtt_connects = counter(MQTT_CONNECTS)
        self.mqtt_disconnects = counter(MQTT_DISCONNECTS)
        self.mqtt_broker_connected = gauge(MQTT_BROKER_CONNECTED)
        self.mqtt_broker_connection_losses = counter(MQTT_BROKER_CONNECTION_LOSSES)
        self.enrollments = counter(ENROLLMENTS)
        self.ingest_messages = counter(INGEST_MESSAGES)
        self.ingest_batch_size = hist(INGEST_BATCH_SIZE)
        self.ingest_commit_seconds = hist(INGEST_COMMIT_SECONDS)
        self.ingest_queue_depth = gauge(INGEST_QUEUE_DEPTH)
        self.ingest_queue_capacity = gauge(INGEST_QUEUE_CAPACITY)
        self.ingest_lag_seconds = gauge(INGEST_LAG_SECONDS)
        self.ingest_dead_letters = counter(INGEST_DEAD_LETTERS)
        self.command_seconds = hist(COMMAND_SECONDS)
        self.http_request_seconds = hist(HTTP_REQUEST_SECONDS)
        self.http_requests = counter(HTTP_REQUESTS)
        self.school_bytes = counter(SCHOOL_BYTES)
        self.device_health_transitions = counter(DEVICE_HEALTH_TRANSITIONS)
        self.alerts_opened = counter(ALERTS_OPENED)
        self.rollout_device_transitions = counter(ROLLOUT_DEVICE_TRANSITIONS)
        self.rollout_pauses = counter(ROLLOUT_PAUSES)

    def register_state(
        self, source: SnapshotSource, clock: Callable[[], float] = time.time
    ) -> FleetStateCollector:
        """Register the scrape-time state collector on the same registry (service process only)."""
        collector = FleetStateCollector(source, clock)
        self.registry.register(collector)
        return collector

    # Helpers that fold unknown values of closed vocabularies into "other" before they become labels.
    def mqtt_connected(self, device_kind: str) -> None:
        self.mqtt_connects.labels(device_kind).inc()

    def mqtt_disconnected(self, device_kind: str, reason: str) -> None:
        self.mqtt_disconnects.labels(device_kind, bounded(reason, DISCONNECT_REASONS)).inc()

    def broker_connection(self, connected: bool, *, lost: bool = True) -> None:
        """Record the broker link state; a drop from connected counts one loss (unless we closed it:
        lost=False)."""
        with self._broker_lock:
            if self._broker_up and not connected and lost:
                self.mqtt_broker_connection_losses.inc()
            self._broker_up = connected
            self.mqtt_broker_connected.set(1 if connected else 0)

    def enrollment(self, result: str) -> None:
        self.enrollments.labels(bounded(result, ENROLLMENT_RESULTS)).inc()

    def ingest_message(self, result: str, count: int = 1) -> None:
        self.ingest_messages.labels(bounded(result, INGEST_RESULTS)).inc(count)

    def ingest_committed(self, batch_size: int, seconds: float) -> None:
        self.ingest_batch_size.observe(batch_size)
        self.ingest_commit_seconds.observe(seconds)

    def dead_letter(self, reason: str, count: int = 1) -> None:
        self.ingest_dead_letters.labels(bounded(reason, DEAD_LETTER_REASONS)).inc(count)

    def command_finished(self, command: str, result: str, seconds: float) -> None:
        self.command_seconds.labels(
            bounded(command, COMMAND_NAMES), bounded(result, COMMAND_RESULTS)
        ).observe(seconds)

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """`route` must be the route template, never the raw path (which would carry ids).

        The method is folded into the route label ("GET /api/v1/devices/{device_id}"): a route template has
        one or two methods, so a separate label only multiplied the series by combinations that never occur.
        """
        label = route_label(method, route)
        self.http_request_seconds.labels(label).observe(seconds)
        self.http_requests.labels(label, _status_class(status)).inc()

    def school_traffic(self, school: str, direction: str, nbytes: int) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        self.school_bytes.labels(school, direction).inc(nbytes)

    def health_transition(self, model: str, state: str) -> None:
        self.device_health_transitions.labels(model, bounded(state, HEALTH_STATES)).inc()

    def alert_opened(self, severity: str) -> None:
        self.alerts_opened.labels(bounded(severity, ALERT_SEVERITIES)).inc()

    def rollout_transition(self, model: str, state: str) -> None:
        self.rollout_device_transitions.labels(model, bounded(state, ROLLOUT_DEVICE_STATES)).inc()

    def rollout_paused(self, reason: str) -> None:
        self.rollout_pauses.labels(bounded(reason, ROLLOUT_PAUSE_REASONS)).inc()


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """This process's ingest figures, read from its own metrics (for `GET /api/v1/stats/live`)."""

    broker_connected: bool
    messages: dict[str, float]  # result -> total since start
    dead_letters: float
    queue_depth: float
    queue_capacity: float
    lag_seconds: float


def _samples(metric: Counter | Gauge, suffix: str = "") -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for fam in metric.collect() for s in fam.samples if s.name.endswith(suffix)]


def ingest_summary(metrics: FleetMetrics) -> IngestSummary:
    """Totals of the ingest metrics of this process (cheap: a handful of series, not the whole registry)."""
    messages: dict[str, float] = {}
    for labels, value in _samples(metrics.ingest_messages, "_total"):
        messages[labels["result"]] = value
    return IngestSummary(
        broker_connected=bool(_samples(metrics.mqtt_broker_connected)[0][1]),
        messages=messages,
        dead_letters=sum(v for _, v in _samples(metrics.ingest_dead_letters, "_total")),
        queue_depth=_samples(metrics.ingest_queue_depth)[0][1],
        queue_capacity=_samples(metrics.ingest_queue_capacity)[0][1],
        lag_seconds=_samples(metrics.ingest_lag_seconds)[0][1],
    )


def markdown_table(specs: Iterable[MetricSpec] = ALL_METRICS) -> str:
    """The metrics table for docs/metrics.md, built from the specs so docs and code agree."""
    rows = ["| name | type | labels | source | meaning |", "|---|---|---|---|---|"]
    for s in specs:
        labels = ", ".join(s.labels) if s.labels else "—"
        rows.append(f"| `{s.name}` | {s.type} | {labels} | {s.source} | {s.help} |")
    return "\n".join(rows)
