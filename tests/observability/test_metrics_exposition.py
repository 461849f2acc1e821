"""Who may read /metrics, and how it is rendered."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from fleet.observability.exposition import MetricsAccess, render
from fleet.observability.metrics import FleetMetrics


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_reads_without_a_token(host: str) -> None:
    assert MetricsAccess().allows(host, None)


@pytest.mark.parametrize("host", ["10.1.2.3", "192.168.0.5", "2001:db8::1", "localhost", "testclient", None])
def test_other_hosts_are_refused_without_a_token(host: str | None) -> None:
    assert not MetricsAccess(token="s3cret").allows(host, None)


def test_an_allowed_network_from_settings_reads_without_a_token() -> None:
    access = MetricsAccess.from_settings(["10.20.0.0/16", " "], token=None)
    assert access.allows("10.20.3.4", None)
    assert not access.allows("10.21.0.1", None)
    assert not access.allows("127.0.0.1", None)  # an explicit list replaces the loopback default


def test_empty_network_list_falls_back_to_loopback() -> None:
    assert MetricsAccess.from_settings([], token="").allows("127.0.0.1", None)


def test_bad_cidr_fails_at_startup() -> None:
    with pytest.raises(ValueError):
        MetricsAccess.from_settings(["10.0.0.0/33"], token=None)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer wrong", False),
        ("Basic s3cret", False),
        ("Bearer ", False),
        ("s3cret", False),
        ("", False),
    ],
)
def test_remote_scrape_needs_the_bearer_token(header: str, ok: bool) -> None:
    assert MetricsAccess(token="s3cret").allows("10.1.2.3", header) is ok


def test_without_a_configured_token_remote_scrapes_are_always_refused() -> None:
    assert not MetricsAccess(token=None).allows("10.1.2.3", "Bearer anything")


def test_render_picks_text_or_openmetrics_from_accept() -> None:
    registry = CollectorRegistry()
    FleetMetrics(registry).enrollment("ok")
    body, ctype = render(registry)
    assert ctype.startswith("text/plain; version=0.0.4")
    assert b'labfleet_enrollments_total{result="ok"} 1.0' in body
    body, ctype = render(registry, "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
