"""The load report: JSON with the figures, and a static HTML page whose structure holds charts and a verdict."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

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


async def test_report_json_and_static_html_have_the_figures_charts_and_verdict(sqlite_url: str,
                                                                               tmp_path: Path) -> None:
    async with service(sqlite_url, tmp_path) as sut:
        r = await run(sut, district(), ("bell-storm",), duration_s=3.0)
    reports.write(r, tmp_path / "r.json", tmp_path / "r.html")
    data = json.loads((tmp_path / "r.json").read_text())
    for key in ("enrollment", "connections", "accounting", "publish_to_state", "bandwidth", "resources", "verdict"):
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
