"""The load report: JSON with the figures, and a static HTML page whose structure holds charts and a
verdict."""

from __future__ import annotations

import asyncio
import html
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import httpx

from fleet.cli.simulate import report_paths
from fleet.i18n import use_locale
from simulators.district import report as reports

from .harness import district, run, service


class _Shape(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.svgs = 0
        self.polylines = 0
        self.bars = 0
        self.scripts = 0
        self.stack: list[str] = []
        self.balanced = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        self.svgs += tag == "svg"
        self.polylines += tag == "polyline"
        self.bars += tag == "rect"
        self.scripts += tag == "script"
        if tag not in ("meta", "line", "polyline", "rect", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("meta", "line", "polyline", "rect", "br"):
            return
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False


async def test_report_json_and_static_html_have_the_figures_charts_and_verdict(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with service(sqlite_url, tmp_path) as sut:
        r = await run(sut, district(), ("bell-storm",), duration_s=3.0)
    reports.write(r, tmp_path / "r.json", tmp_path / "r.html")
    data = json.loads((tmp_path / "r.json").read_text())
    for key in (
        "enrollment",
        "connections",
        "accounting",
        "publish_to_state",
        "bandwidth",
        "resources",
        "verdict",
    ):
        assert key in data
    assert data["connections"]["connects_per_s_series"]
    assert {"sent", "ingested", "lost", "duplicated"} <= set(data["accounting"])
    assert data["bandwidth"]["schools"][0]["uplink_mbps"] == 1000
    shape = _Shape()
    shape.feed((tmp_path / "r.html").read_text())
    assert shape.balanced
    assert {"verdict", "summary", "checks"} <= shape.ids
    assert shape.svgs == 4 and shape.polylines >= 4 and shape.bars == 2
    assert shape.scripts == 0  # static: no JavaScript
    text = reports.text(r)
    assert "sequence accounting" in text and "verdict:" in text
    # Offered against ingested, read back from the service while the run went on.
    assert data["load"]["offered_msg_per_s"] is not None and data["load"]["ingested_msg_per_s"] is not None
    assert all(p["backlog"] >= 0 and "loop_lag_s" in p for p in data["series"] if "backlog" in p)
    assert "load after the storm" in text
    # Issue 20: empty tables said `{}`; every figure is named, and acked vs ingested is explained.
    html_text = (tmp_path / "r.html").read_text()
    assert "{}" not in text and "{}" not in html_text
    assert "dead letters this run: none" in text or data["dead_letters"]
    assert reports.RATES_NOTE in text and html.escape(reports.RATES_NOTE) in html_text


def test_empty_tables_say_none_translated_and_counts_read_as_text() -> None:
    assert reports.counts({}) == "none"
    assert reports.counts(None) == "n/a"
    assert reports.counts({"bad_seq": 2, "unknown": 5}) == "unknown 5, bad_seq 2"
    with use_locale("zh_CN"):
        assert reports.counts({}) == "无"


def test_each_run_writes_its_own_report_files(tmp_path: Path) -> None:
    """Issue 20: a second run overwrote the first run's report (same file name)."""
    at = datetime(2027, 9, 1, 8, 0, 5, tzinfo=UTC)
    first = report_paths(tmp_path, "demo-day", at)
    first[0].write_text("{}")
    first[1].write_text("<html></html>")
    second = report_paths(tmp_path, "demo-day", at)  # same second: a counter, not the same file
    later = report_paths(tmp_path, "demo-day", datetime(2027, 9, 1, 9, 0, tzinfo=UTC))
    assert first[0].name == "demo-day-20270901T080005Z.json"
    assert second[0].name == "demo-day-20270901T080005Z-2.json"
    assert later[0].name == "demo-day-20270901T090000Z.json"
    assert len({first, second, later}) == 3
    assert first[1].read_text() == "<html></html>"  # the earlier run's report is untouched


def test_load_section_sets_offered_against_ingested_after_the_storm_and_on_a_real_clock() -> None:
    series = [
        {
            "online": 5,
            "connects_per_s": 5,
            "published_per_s": 50,
            "acked_per_s": 40,
            "ingested_per_s": 10,
            "backlog": 30,
            "loop_lag_s": 0.5,
        },  # the storm: left out of the steady figures
        {
            "online": 10,
            "connects_per_s": 0,
            "published_per_s": 200,
            "acked_per_s": 200,
            "ingested_per_s": 150,
            "backlog": 80,
            "loop_lag_s": 0.01,
        },
        {
            "online": 10,
            "connects_per_s": 0,
            "published_per_s": 100,
            "acked_per_s": 100,
            "ingested_per_s": 130,
            "backlog": 50,
            "loop_lag_s": 0.02,
        },
    ]
    ld = reports.load_section(series, speed=20)
    assert ld["steady_samples"] == 2
    assert (ld["offered_msg_per_s"], ld["real_clock_msg_per_s"]) == (150.0, 7.5)
    assert (ld["acked_msg_per_s"], ld["ingested_msg_per_s"]) == (150.0, 140.0)
    assert (ld["backlog_max"], ld["backlog_end"]) == (80, 50)
    assert ld["loop_lag_max_s"] == 0.5  # the loop's lag counts over the whole run


async def test_refused_stored_credentials_are_enrolled_afresh_and_reported(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Issue 20: a state file from a run against another database: 0/60 connected, 360 CONNECT refused, and
    the report did not say why. The simulator now enrolls such terminals afresh and counts them."""
    d = district()
    serials = [dev.serial for _s, _r, dev in d.devices() if dev.transport == "mqtt"]
    state = tmp_path / "demo.state.json"
    state.write_text(
        json.dumps({"district": d.name, "devices": {s: {"password": "stale", "seq": 7} for s in serials}})
    )
    async with service(sqlite_url, tmp_path) as sut:
        r = await run(sut, d, (), duration_s=4.0, state_file=state)
    e, c = r["enrollment"], r["connections"]
    assert e["had_credentials"] == len(serials)
    assert e["stored_refused"] == len(serials) and e["reenrolled"] == len(serials), (e, c["connack_codes"])
    assert e["reenroll_failed"] == {}
    assert c["connected"] == c["terminals"] == len(serials)
    assert (
        f"stored credentials refused by the broker: {len(serials)}, re-enrolled {len(serials)}"
        in reports.text(r)
    )


async def test_top_watching_the_service_a_simulation_started_sees_its_fleet(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Issue 20: `top --url` on the service `simulate` starts showed online "—": no snapshot reached it."""
    async with service(sqlite_url, tmp_path, snapshot_interval_s=0.5) as sut:
        await run(sut, district(), (), duration_s=3.0)
        await asyncio.sleep(1.5)
        async with httpx.AsyncClient(
            base_url=sut.api, headers={"Authorization": f"Bearer {sut.token}"}
        ) as http:
            live = (await http.get("/api/v1/stats/live")).json()
    assert live["snapshot_age_seconds"] is not None
    assert all(s["online"] is not None for s in live["schools"])
