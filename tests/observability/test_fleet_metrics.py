"""FleetMetrics and FleetStateCollector against a fresh CollectorRegistry."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fleet.observability import catalog
from fleet.observability.catalog import ALL_METRICS
from fleet.observability.metrics import (
    FirmwareCount,
    FleetMetrics,
    FleetSnapshot,
    HealthCount,
    PresenceCount,
    RolloutState,
    SchoolState,
    SnapshotHolder,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def fm(registry: CollectorRegistry) -> FleetMetrics:
    return FleetMetrics(registry)


def test_metrics_register_on_the_passed_registry_not_the_global_one(fm: FleetMetrics) -> None:
    from prometheus_client import REGISTRY

    fm.enrollment("ok")
    assert fm.registry.get_sample_value("labfleet_enrollments_total", {"result": "ok"}) == 1
    assert REGISTRY.get_sample_value("labfleet_enrollments_total", {"result": "ok"}) is None


def test_two_fleet_metrics_on_separate_registries_do_not_clash() -> None:
    a, b = FleetMetrics(CollectorRegistry()), FleetMetrics(CollectorRegistry())
    a.ingest_message("ok", 3)
    assert a.registry.get_sample_value("labfleet_ingest_messages_total", {"result": "ok"}) == 3
    assert b.registry.get_sample_value("labfleet_ingest_messages_total", {"result": "ok"}) is None


def test_unknown_reason_is_folded_into_other(fm: FleetMetrics, registry: CollectorRegistry) -> None:
    fm.mqtt_disconnected("terminal", "keepalive_timeout")
    fm.mqtt_disconnected("terminal", "some-device-specific-string-1234")
    fm.dead_letter("not-a-reason")
    assert (
        registry.get_sample_value(
            "labfleet_mqtt_disconnects_total", {"device_kind": "terminal", "reason": "keepalive_timeout"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "labfleet_mqtt_disconnects_total", {"device_kind": "terminal", "reason": "other"}
        )
        == 1
    )
    assert registry.get_sample_value("labfleet_ingest_dead_letters_total", {"reason": "other"}) == 1


def test_ingest_commit_feeds_batch_size_and_latency_histograms(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    fm.ingest_committed(200, 0.004)
    fm.ingest_committed(3000, 0.3)
    assert registry.get_sample_value("labfleet_ingest_batch_size_count") == 2
    assert registry.get_sample_value("labfleet_ingest_batch_size_sum") == 3200
    assert registry.get_sample_value("labfleet_ingest_batch_size_bucket", {"le": "250.0"}) == 1
    assert registry.get_sample_value("labfleet_ingest_commit_seconds_bucket", {"le": "0.005"}) == 1
    assert registry.get_sample_value("labfleet_ingest_commit_seconds_bucket", {"le": "+Inf"}) == 2


def test_http_latency_is_labelled_by_method_and_route_template_and_counted_by_status_class(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    fm.http_request("get", "/api/v1/devices/{device_id}", 404, 0.02)
    fm.http_request("GET", "/api/v1/devices/{device_id}", 200, 0.02)
    route = {"route": "GET /api/v1/devices/{device_id}"}
    assert registry.get_sample_value("labfleet_http_request_duration_seconds_count", route) == 2
    assert registry.get_sample_value("labfleet_http_requests_total", {**route, "status_class": "4xx"}) == 1
    assert registry.get_sample_value("labfleet_http_requests_total", {**route, "status_class": "2xx"}) == 1


def test_http_method_and_command_names_come_from_closed_sets(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    # A client picks the method token freely (a 405 still matches the route): it must not become a label
    # value.
    for method in ("BREW", "PROPFIND", "X" * 40):
        fm.http_request(method, "/api/v1/devices", 405, 0.001)
    fm.http_request("PUT", "unmatched", 404, 0.001)
    assert (
        registry.get_sample_value(
            "labfleet_http_request_duration_seconds_count", {"route": "OTHER /api/v1/devices"}
        )
        == 3
    )
    assert (
        registry.get_sample_value("labfleet_http_request_duration_seconds_count", {"route": "unmatched"}) == 1
    )
    fm.command_finished("self_destruct", "ok", 0.1)
    assert (
        registry.get_sample_value(
            "labfleet_command_duration_seconds_count", {"command": "other", "result": "ok"}
        )
        == 1
    )


def test_command_latency_per_command_and_result(fm: FleetMetrics, registry: CollectorRegistry) -> None:
    fm.command_finished("reboot", "timeout", 30.0)
    fm.command_finished("reboot", "ok", 2.0)
    assert (
        registry.get_sample_value(
            "labfleet_command_duration_seconds_count", {"command": "reboot", "result": "timeout"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "labfleet_command_duration_seconds_sum", {"command": "reboot", "result": "ok"}
        )
        == 2.0
    )


def test_school_bytes_count_up_and_down_and_reject_other_directions(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    fm.school_traffic("s001", "up", 1500)
    fm.school_traffic("s001", "up", 500)
    fm.school_traffic("s001", "down", 100)
    assert (
        registry.get_sample_value("labfleet_school_bytes_total", {"school": "s001", "direction": "up"})
        == 2000
    )
    assert (
        registry.get_sample_value("labfleet_school_bytes_total", {"school": "s001", "direction": "down"})
        == 100
    )
    with pytest.raises(ValueError):
        fm.school_traffic("s001", "sideways", 1)


def test_broker_connection_loss_is_counted_once_per_drop(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    fm.broker_connection(False)  # never connected yet: not a loss
    fm.broker_connection(True)
    fm.broker_connection(False)
    fm.broker_connection(False)
    assert registry.get_sample_value("labfleet_mqtt_broker_connected") == 0
    assert registry.get_sample_value("labfleet_mqtt_broker_connection_losses_total") == 1


def test_no_created_series_are_exposed(fm: FleetMetrics, registry: CollectorRegistry) -> None:
    fm.enrollment("ok")
    assert b"_created" not in generate_latest(registry)


def _snapshot() -> FleetSnapshot:
    return FleetSnapshot(
        taken_at=1000.0,
        presence=(
            PresenceCount("s001", "smart_classroom", "terminal", 100, 90, 95, 5),
            PresenceCount("s002", "ai_lab", "robot", 5, 0, 0, 0),
        ),
        schools=(
            SchoolState("s001", 7, "P2", 200e6, 160),
            SchoolState("s002", 0, None, 100e6, 0),
        ),
        health=(HealthCount("terminal-lt100", "ok", 98), HealthCount("terminal-lt100", "fault", 2)),
        open_alerts=(("critical", 1), ("warning", 4)),
        firmware=(FirmwareCount("terminal-lt100", "1.2.0", 60), FirmwareCount("terminal-lt100", "1.3.0", 40)),
        rollouts=(
            RolloutState("r-7", "terminal-lt100", "paused", (("succeeded", 30), ("failed", 12))),
            RolloutState("r-8", "kit-esp32-mpy", "running", (("pending", 5),)),
            RolloutState("r-1", "terminal-lt100", "completed", (("succeeded", 100),)),
        ),
    )


def test_state_collector_exposes_snapshot_values(fm: FleetMetrics, registry: CollectorRegistry) -> None:
    holder = SnapshotHolder()
    holder.publish(_snapshot())
    fm.register_state(holder, clock=lambda: 1012.5)
    g = registry.get_sample_value
    cell = {"school": "s001", "room_kind": "smart_classroom", "device_kind": "terminal"}
    assert g("labfleet_devices_online", cell) == 90
    assert g("labfleet_devices_expected_online", cell) == 95
    assert g("labfleet_devices_unexpectedly_offline", cell) == 5
    assert g("labfleet_devices_in_service", cell) == 100
    assert g("labfleet_school_lessons_in_progress", {"school": "s001"}) == 7
    assert g("labfleet_school_current_period", {"school": "s001", "period": "P2"}) == 1
    assert g("labfleet_school_uplink_capacity_bits_per_second", {"school": "s002"}) == 100e6
    assert g("labfleet_school_active_sessions", {"school": "s001"}) == 160
    assert g("labfleet_devices_health", {"model": "terminal-lt100", "state": "fault"}) == 2
    assert g("labfleet_alerts_open", {"severity": "warning"}) == 4
    assert g("labfleet_firmware_devices", {"model": "terminal-lt100", "version": "1.3.0"}) == 40
    assert g("labfleet_rollouts", {"status": "paused"}) == 1
    assert g("labfleet_rollouts", {"status": "completed"}) == 1
    assert g("labfleet_rollouts", {"status": "aborted"}) == 0
    assert g("labfleet_rollout_paused", {"rollout": "r-7", "model": "terminal-lt100"}) == 1
    assert g("labfleet_rollout_paused", {"rollout": "r-8", "model": "kit-esp32-mpy"}) == 0
    assert (
        g("labfleet_rollout_devices", {"rollout": "r-7", "model": "terminal-lt100", "state": "failed"}) == 12
    )
    assert g("labfleet_state_snapshot_age_seconds") == 12.5


def test_school_between_periods_has_no_current_period_series(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    holder = SnapshotHolder()
    holder.publish(_snapshot())
    fm.register_state(holder)
    period_samples = [
        sample
        for fam in registry.collect()
        if fam.name == "labfleet_school_current_period"
        for sample in fam.samples
    ]
    assert [sample.labels["school"] for sample in period_samples] == ["s001"]


def test_finished_rollouts_get_no_per_rollout_series(fm: FleetMetrics, registry: CollectorRegistry) -> None:
    holder = SnapshotHolder()
    holder.publish(_snapshot())
    fm.register_state(holder)
    assert (
        registry.get_sample_value(
            "labfleet_rollout_devices", {"rollout": "r-1", "model": "terminal-lt100", "state": "succeeded"}
        )
        is None
    )


def test_collector_reads_the_latest_published_snapshot_at_scrape_time(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    holder = SnapshotHolder()
    fm.register_state(holder)
    assert registry.get_sample_value("labfleet_state_snapshot_age_seconds") is None  # nothing published yet
    holder.publish(_snapshot())
    cell = {"school": "s001", "room_kind": "smart_classroom", "device_kind": "terminal"}
    assert registry.get_sample_value("labfleet_devices_online", cell) == 90
    holder.publish(
        FleetSnapshot(
            taken_at=1.0, presence=(PresenceCount("s001", "smart_classroom", "terminal", 100, 99, 95, 0),)
        )
    )
    assert registry.get_sample_value("labfleet_devices_online", cell) == 99


class _Broken:
    def snapshot(self) -> FleetSnapshot | None:
        raise RuntimeError("state store gone")


def test_broken_snapshot_source_omits_state_but_keeps_event_metrics(
    fm: FleetMetrics, registry: CollectorRegistry
) -> None:
    fm.register_state(_Broken())
    fm.enrollment("ok")
    text = generate_latest(registry).decode()
    assert 'labfleet_enrollments_total{result="ok"} 1.0' in text
    assert "labfleet_devices_online{" not in text


def test_registering_the_collector_does_not_read_the_source(fm: FleetMetrics) -> None:
    calls = []

    class Counting:
        def snapshot(self) -> FleetSnapshot | None:
            calls.append(1)
            return None

    fm.register_state(Counting())
    assert calls == []


def test_no_metric_has_a_device_identifying_label() -> None:
    forbidden = {
        "device",
        "device_id",
        "serial",
        "serial_number",
        "asset_tag",
        "client_id",
        "user",
        "student",
    }
    for spec in ALL_METRICS:
        assert not forbidden & set(spec.labels), spec.name


def test_metric_names_are_unique_and_prefixed() -> None:
    names = [s.name for s in ALL_METRICS]
    assert len(names) == len(set(names))
    assert all(n.startswith("labfleet_") for n in names)
    assert all(s.name.endswith("_total") == (s.type == "counter") for s in ALL_METRICS)


def test_every_exposed_family_is_declared_in_the_specs(fm: FleetMetrics, registry: CollectorRegistry) -> None:
    from fleet.observability.synthetic import district_snapshot, exercise_event_metrics

    holder = SnapshotHolder()
    holder.publish(district_snapshot())
    fm.register_state(holder)
    exercise_event_metrics(fm)
    sample_names = {s.name for fam in registry.collect() for s in fam.samples}
    assert sample_names <= catalog.exposed_sample_names()


def test_docs_list_every_metric_with_type_and_labels() -> None:
    text = DOCS.read_text()
    assert catalog.markdown_table() in text, "docs/metrics.md is out of date: paste markdown_table() output"
