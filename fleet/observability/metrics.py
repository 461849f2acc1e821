"""LabFleet's live Prometheus metrics, built from the specs in `fleet.observability.catalog`.

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
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet.observability import catalog

logger = logging.getLogger(__name__)


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
def _family(spec: catalog.MetricSpec) -> GaugeMetricFamily:
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
        return [_family(spec) for spec in catalog.STATE_METRICS]

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
            cached = self._cached = (
                snap,
                [f for f in self.families(snap) if f.name != catalog.SNAPSHOT_AGE.name],
            )
        yield from cached[1]
        age = _family(catalog.SNAPSHOT_AGE)
        age.add_metric([], max(0.0, self._clock() - snap.taken_at))
        yield age

    def families(self, snap: FleetSnapshot) -> list[GaugeMetricFamily]:
        """The gauge families for one snapshot (subclasses may add their own)."""
        fams = {spec.name: _family(spec) for spec in catalog.STATE_METRICS}

        def add(spec: catalog.MetricSpec, labels: list[str], value: float) -> None:
            fams[spec.name].add_metric(labels, value)

        for p in snap.presence:
            key = [p.school, p.room_kind, p.device_kind]
            add(catalog.DEVICES_IN_SERVICE, key, p.in_service)
            add(catalog.DEVICES_ONLINE, key, p.online)
            add(catalog.DEVICES_EXPECTED_ONLINE, key, p.expected_online)
            add(catalog.DEVICES_UNEXPECTED_OFFLINE, key, p.unexpectedly_offline)
        for s in snap.schools:
            add(catalog.SCHOOL_LESSONS, [s.school], s.lessons_in_progress)
            if s.current_period is not None:
                add(catalog.SCHOOL_PERIOD, [s.school, s.current_period], 1)
            add(catalog.SCHOOL_UPLINK_CAPACITY, [s.school], s.uplink_capacity_bps)
            add(catalog.SCHOOL_ACTIVE_SESSIONS, [s.school], s.active_sessions)
        for h in snap.health:
            add(
                catalog.DEVICES_BY_HEALTH, [h.model, catalog.bounded(h.state, catalog.HEALTH_STATES)], h.count
            )
        for severity, count in snap.open_alerts:
            add(catalog.ALERTS_OPEN, [catalog.bounded(severity, catalog.ALERT_SEVERITIES)], count)
        for f in snap.firmware:
            add(catalog.FIRMWARE_VERSIONS, [f.model, f.version], f.count)
        statuses = dict.fromkeys(sorted(catalog.ROLLOUT_STATUSES), 0)
        for r in snap.rollouts:
            status = catalog.bounded(r.status, catalog.ROLLOUT_STATUSES)
            statuses[status] = statuses.get(status, 0) + 1
            if status not in catalog.ACTIVE_ROLLOUT_STATUSES:
                continue
            for state, count in r.devices_by_state:
                add(
                    catalog.ROLLOUT_DEVICES,
                    [r.rollout, r.model, catalog.bounded(state, catalog.ROLLOUT_DEVICE_STATES)],
                    count,
                )
            add(catalog.ROLLOUT_PAUSED, [r.rollout, r.model], 1 if status == "paused" else 0)
        for status, count in statuses.items():
            add(catalog.ROLLOUTS, [status], count)
        add(catalog.SNAPSHOT_AGE, [], max(0.0, self._clock() - snap.taken_at))
        return list(fams.values())


# --- direct instrumentation ----------------------------------------------------------------------------
UNMATCHED_ROUTE = "unmatched"  # requests that matched no route: one label value, whatever the path or method


def route_label(method: str, route: str) -> str:
    """The `route` label: "<METHOD> <template>", or "unmatched" for requests that matched no route."""
    if route == UNMATCHED_ROUTE:
        return UNMATCHED_ROUTE
    m = method.upper()
    return f"{m if m in catalog.HTTP_METHODS else catalog.OTHER.upper()} {route}"


def _status_class(status: int) -> str:
    return catalog.bounded(f"{status // 100}xx", catalog.HTTP_STATUS_CLASSES)


class FleetMetrics:
    """The event metrics of one process, registered on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # _created series double every counter and histogram and Prometheus ignores them in the text
        # format; client_python only offers a process-wide switch, and our processes expose only these.
        disable_created_metrics()
        self._broker_up = False
        self._broker_lock = threading.Lock()

        def counter(spec: catalog.MetricSpec) -> Counter:
            # client_python appends _total itself.
            return Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=registry)

        def hist(spec: catalog.MetricSpec) -> Histogram:
            return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets or ())

        def gauge(spec: catalog.MetricSpec) -> Gauge:
            return Gauge(spec.name, spec.help, spec.labels, registry=registry)

        self.mqtt_connects = counter(catalog.MQTT_CONNECTS)
        self.mqtt_disconnects = counter(catalog.MQTT_DISCONNECTS)
        self.mqtt_broker_connected = gauge(catalog.MQTT_BROKER_CONNECTED)
        self.mqtt_broker_connection_losses = counter(catalog.MQTT_BROKER_CONNECTION_LOSSES)
        self.enrollments = counter(catalog.ENROLLMENTS)
        self.ingest_messages = counter(catalog.INGEST_MESSAGES)
        self.ingest_batch_size = hist(catalog.INGEST_BATCH_SIZE)
        self.ingest_commit_seconds = hist(catalog.INGEST_COMMIT_SECONDS)
        self.ingest_queue_depth = gauge(catalog.INGEST_QUEUE_DEPTH)
        self.ingest_queue_capacity = gauge(catalog.INGEST_QUEUE_CAPACITY)
        self.ingest_lag_seconds = gauge(catalog.INGEST_LAG_SECONDS)
        self.ingest_dead_letters = counter(catalog.INGEST_DEAD_LETTERS)
        self.command_seconds = hist(catalog.COMMAND_SECONDS)
        self.http_request_seconds = hist(catalog.HTTP_REQUEST_SECONDS)
        self.http_requests = counter(catalog.HTTP_REQUESTS)
        self.school_bytes = counter(catalog.SCHOOL_BYTES)
        self.device_health_transitions = counter(catalog.DEVICE_HEALTH_TRANSITIONS)
        self.alerts_opened = counter(catalog.ALERTS_OPENED)
        self.rollout_device_transitions = counter(catalog.ROLLOUT_DEVICE_TRANSITIONS)
        self.rollout_pauses = counter(catalog.ROLLOUT_PAUSES)

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
        self.mqtt_disconnects.labels(device_kind, catalog.bounded(reason, catalog.DISCONNECT_REASONS)).inc()

    def broker_connection(self, connected: bool, *, lost: bool = True) -> None:
        """Record the broker link state; a drop from connected counts one loss (unless we closed it:
        lost=False)."""
        with self._broker_lock:
            if self._broker_up and not connected and lost:
                self.mqtt_broker_connection_losses.inc()
            self._broker_up = connected
            self.mqtt_broker_connected.set(1 if connected else 0)

    def enrollment(self, result: str) -> None:
        self.enrollments.labels(catalog.bounded(result, catalog.ENROLLMENT_RESULTS)).inc()

    def ingest_message(self, result: str, count: int = 1) -> None:
        self.ingest_messages.labels(catalog.bounded(result, catalog.INGEST_RESULTS)).inc(count)

    def ingest_committed(self, batch_size: int, seconds: float) -> None:
        self.ingest_batch_size.observe(batch_size)
        self.ingest_commit_seconds.observe(seconds)

    def dead_letter(self, reason: str, count: int = 1) -> None:
        self.ingest_dead_letters.labels(catalog.bounded(reason, catalog.DEAD_LETTER_REASONS)).inc(count)

    def command_finished(self, command: str, result: str, seconds: float) -> None:
        self.command_seconds.labels(
            catalog.bounded(command, catalog.COMMAND_NAMES), catalog.bounded(result, catalog.COMMAND_RESULTS)
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
        if direction not in catalog.DIRECTIONS:
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        self.school_bytes.labels(school, direction).inc(nbytes)

    def health_transition(self, model: str, state: str) -> None:
        self.device_health_transitions.labels(model, catalog.bounded(state, catalog.HEALTH_STATES)).inc()

    def alert_opened(self, severity: str) -> None:
        self.alerts_opened.labels(catalog.bounded(severity, catalog.ALERT_SEVERITIES)).inc()

    def rollout_transition(self, model: str, state: str) -> None:
        self.rollout_device_transitions.labels(
            model, catalog.bounded(state, catalog.ROLLOUT_DEVICE_STATES)
        ).inc()

    def rollout_paused(self, reason: str) -> None:
        self.rollout_pauses.labels(catalog.bounded(reason, catalog.ROLLOUT_PAUSE_REASONS)).inc()


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
