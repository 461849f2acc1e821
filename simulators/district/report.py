"""The load report: one JSON document, a text summary, and a static one-page HTML file with inline SVG
charts."""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fleet.i18n import _
from simulators.district.engine import Simulation, percentile
from simulators.district.fleetlink import AlertRow, DeviceState

REPORT_VERSION = 1


def counts(table: dict[str, Any] | None, missing: str = "n/a") -> str:
    """A table of counts as text: "none" (translated) when empty, never `{}`; `missing` when not read."""
    if table is None:
        return missing
    if not table:
        return _("none")
    return ", ".join(f"{k} {v}" for k, v in sorted(table.items(), key=lambda kv: (-_num(kv[1]), kv[0])))


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else 0.0


# What the two message rates count, printed beside them so "ingested above acked" is not a puzzle.
RATES_NOTE = (
    "acked = sequenced messages (telemetry, heartbeats, events) the broker acknowledged to the simulated "
    "terminals; ingested = new sequenced messages the service stored, from every device (lab devices behind "
    "edge agents too), so ingested runs above acked by the labs' traffic, and while the service drains a "
    "backlog"
)


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def build(
    sim: Simulation,
    *,
    service_clock_is_sim: bool,
    dead_letters_before: dict[str, int] | None = None,
    dead_letters_after: dict[str, int] | None = None,
    alerts: list[AlertRow] | None = None,
    wall_s: float | None = None,
) -> dict[str, Any]:
    st = sim.stats
    terms = sim.terminals
    n_terms = len(terms)
    # ---- enrollment
    reasons = Counter(v for v in sim.enroll_results.values() if v != "ok")
    enrolled_now = sum(1 for v in sim.enroll_results.values() if v == "ok")
    requested = len(sim.enroll_results)
    expected_terms = sim.district.count(transport="mqtt")
    enrollment = {
        "terminals": expected_terms,
        "had_credentials": expected_terms - requested,
        "requested": requested,
        "succeeded": enrolled_now,
        "failed": dict(reasons),
        "success_ratio": _r(
            (expected_terms - requested + enrolled_now) / expected_terms if expected_terms else 1.0, 4
        ),
        "seconds": _r(sim.enroll_seconds, 2),
        "retries": getattr(sim.enroller, "retries", 0),
        "per_s": _r(requested / sim.enroll_seconds, 1) if sim.enroll_seconds > 0 and requested else None,
        # Stored credentials the broker refused (an earlier run against another database), enrolled afresh.
        "stored_refused": len(sim.reenroll_results),
        "reenrolled": sum(v == "ok" for v in sim.reenroll_results.values()),
        "reenroll_failed": dict(Counter(v for v in sim.reenroll_results.values() if v != "ok")),
    }
    # ---- connections
    first = sorted(st.connack_mono.values())
    storm_wall = (first[-1] - st.started_mono) if first else None
    per_sec = Counter(int(t) for t in st.connect_times)
    connects_series = [per_sec.get(i, 0) for i in range(int(max(st.connect_times, default=0)) + 1)]
    states: dict[str, DeviceState] = sim.outcome.get("states") or {}
    to_online: list[float] = []
    for t in terms:
        s = states.get(t.serial)
        c = st.connack_mono.get(t.serial)
        if s is None or c is None or s.online_changed_at is None or t.counters.connects != 1 or not s.online:
            continue
        if service_clock_is_sim:
            a = sim.clock.anchor
            on_mono = a.mono_start + (s.online_changed_at - a.sim_start.timestamp()) / a.speed
        else:
            on_mono = time.monotonic() - (time.time() - s.online_changed_at)
        to_online.append(max(0.0, on_mono - c))
    connections = {
        "terminals": n_terms,
        "connected": len(first),
        "connected_ratio": _r(len(first) / n_terms if n_terms else 1, 4),
        "connects_total": st.connects,
        "connect_failures": st.connect_failures,
        "connack_refused": st.connack_refused,
        "connack_codes": {str(k): v for k, v in st.connack_codes.items()},
        "disconnects": st.disconnects,
        "storm_wall_s": _r(storm_wall, 2),
        "connects_per_s_mean": _r(len(first) / storm_wall, 1) if storm_wall else None,
        "connects_per_s_peak": max(connects_series, default=0),
        "connack_p50_s": _r(percentile(st.connect_latency, 50)),
        "connack_p99_s": _r(percentile(st.connect_latency, 99)),
        "connect_to_online_samples": len(to_online),
        "connect_to_online_p50_s": _r(percentile(to_online, 50)),
        "connect_to_online_p99_s": _r(percentile(to_online, 99)),
        "connects_per_s_series": connects_series[:600],
    }
    # ---- sequence accounting
    accounting: dict[str, Any] | None = None
    if states or sim.readback is not None:
        sent = acked = ingested = lost = dup = redeliv = 0
        lost_devices = []
        for t in terms:
            s = states.get(t.serial)
            b = sim.baseline.get(t.serial)
            got = (s.messages if s else 0) - (b.messages if b else 0)
            red = (s.duplicates if s else 0) - (b.duplicates if b else 0)
            sent += t.counters.sent
            acked += t.counters.acked
            ingested += got
            redeliv += red
            if got < t.counters.acked:
                lost += t.counters.acked - got
                lost_devices.append(t.serial)
            if got > t.counters.sent:
                dup += got - t.counters.sent
        accounting = {
            "sent": sent,
            "acked_by_broker": acked,
            "ingested": ingested,
            "lost": lost,
            "duplicated": dup,
            "redeliveries_absorbed": redeliv,
            "unacked_at_end": sent - acked,
            "devices_with_loss": lost_devices[:20],
        }
    # ---- latency
    latency = {
        "samples": len(st.probe_latency),
        "late": st.probe_late,
        "p50_s": _r(percentile(st.probe_latency, 50)),
        "p95_s": _r(percentile(st.probe_latency, 95)),
        "p99_s": _r(percentile(st.probe_latency, 99)),
        "max_s": _r(max(st.probe_latency, default=None) or None),
    }
    # ---- bandwidth
    schools: list[dict[str, Any]] = []
    for school in sim.district.schools:
        minutes = st.bytes_by_school.get(school.code, {})
        peak = max(minutes.values(), default=0)
        mbps = peak * 8 / 60 / 1e6
        schools.append(
            {
                "school": school.code,
                "uplink_mbps": school.uplink_mbps,
                "peak_mbps": round(mbps, 2),
                "utilisation": round(mbps / school.uplink_mbps, 3),
                "bytes_total": sum(minutes.values()),
            }
        )
    schools.sort(key=lambda x: -x["utilisation"])
    # ---- resources
    res: dict[str, Any] = {}
    series = st.series
    for key in sorted({k[:-4] for p in series for k in p if k.endswith("_cpu")}):
        cpu = [p[f"{key}_cpu"] for p in series if f"{key}_cpu" in p]
        rss = [p[f"{key}_rss_mb"] for p in series if f"{key}_rss_mb" in p]
        res[key] = {
            "cpu_mean": _r(sum(cpu) / len(cpu) if cpu else None),
            "cpu_max": _r(max(cpu, default=None)),
            "rss_max_mb": _r(max(rss, default=None), 1),
        }
    service_cpu = sum((v["cpu_mean"] or 0) for k, v in res.items() if k != "sim")
    res["generator_vs_service_cpu"] = (
        _r(res.get("sim", {}).get("cpu_mean", 0) / service_cpu, 3) if service_cpu else None
    )
    load = load_section(series, sim.speed)
    # ---- dead letters, alerts
    dl = None
    if dead_letters_after is not None:
        before = dead_letters_before or {}
        dl = {k: v - before.get(k, 0) for k, v in dead_letters_after.items() if v - before.get(k, 0)}
    alert_summary = None
    if alerts is not None:
        by_rule = Counter(a.rule for a in alerts)
        rooms = Counter(f"{a.school_code}/{a.room}" for a in alerts if a.rule == "unexpected_offline")
        alert_summary = {
            "opened_by_rule": dict(by_rule),
            "still_open": sum(1 for a in alerts if a.status != "resolved"),
            "unexpected_offline_by_room": dict(rooms.most_common(20)),
        }
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "district": sim.district.name,
        "spec": sim.district.source,
        "scenarios": list(sim.scenarios),
        "scenario_notes": sim.scenario_notes,
        "speed": sim.speed,
        "duration_s": sim.duration_s,
        "wall_s": _r(wall_s, 1),
        "simulated": {"start": sim.start_local.isoformat(), "minutes": _r(sim.clock.monotonic() / 60, 1)},
        "fleet": {
            "schools": len(sim.district.schools),
            "terminals": expected_terms,
            "lab_devices": sim.lab_devices,
        },
        "labs": labs_section(sim),
        "enrollment": enrollment,
        "connections": connections,
        "messages": {
            "published": st.published,
            "acked": st.acked,
            "garbage_sent": dict(st.garbage),
            "error_replies": dict(st.error_replies),
            "commands": dict(st.commands),
        },
        "accounting": accounting,
        "publish_to_state": latency,
        "bandwidth": {"schools": schools},
        "updates": {
            "progress_reports": dict(sim.updates.reports),
            "firmware": dict(Counter(t.firmware for t in terms).most_common()),
        },
        "load": load,
        "resources": res,
        "dead_letters": dl,
        "alerts": alert_summary,
        "events": st.events,
        "series": series,
        "outcome": {k: v for k, v in sim.outcome.items() if k not in ("states", "alerts", "dead_letters")},
    }
    report["verdict"] = verdict(sim, report)
    return report


def labs_section(sim: Simulation) -> dict[str, Any]:
    """Lab devices: declared, on ptys behind an edge agent, bridged by it, and what the service saw of
    them."""
    labs = sim.labs
    states: dict[str, DeviceState] = sim.outcome.get("lab_states") or {}
    on_pty = labs.serials
    online = [s for s in on_pty if states.get(s) is not None and states[s].online]
    return {
        "declared": labs.declared,
        "on_ptys": len(on_pty),
        "rooms_on_ptys": [f"{r.school}/{r.room}" for r in labs.rooms],
        "bridged_by_agent": len(labs.bridged()),
        "online_at_end": len(online),
        "online_ratio": _r(len(online) / len(on_pty), 4) if on_pty else None,
        "messages_ingested": sum(states[s].messages for s in on_pty if s in states),
        "offline_at_end": sorted(set(on_pty) - set(online))[:20],
        "agent_failures": labs.failed,
    }


def verdict(sim: Simulation, r: dict[str, Any]) -> dict[str, Any]:
    v = sim.district.verdict
    checks: list[dict[str, Any]] = []

    def check(name: str, value: Any, limit: Any, ok: bool | None) -> None:
        checks.append(
            {
                "check": name,
                "value": value,
                "threshold": limit,
                "result": "skipped" if ok is None else ("pass" if ok else "fail"),
            }
        )

    e = r["enrollment"]
    check(
        "enrollment success",
        e["success_ratio"],
        f">= {v.min_enroll_success}",
        e["success_ratio"] >= v.min_enroll_success,
    )
    c = r["connections"]
    check(
        "terminals connected",
        c["connected_ratio"],
        f">= {v.min_connected_share}",
        c["connected_ratio"] >= v.min_connected_share,
    )
    a = r["accounting"]
    check(
        "lost sequence numbers",
        None if a is None else a["lost"],
        f"<= {v.max_lost}",
        None if a is None else a["lost"] <= v.max_lost,
    )
    check(
        "duplicated sequence numbers",
        None if a is None else a["duplicated"],
        f"<= {v.max_duplicated}",
        None if a is None else a["duplicated"] <= v.max_duplicated,
    )
    p99 = c["connect_to_online_p99_s"]
    check(
        "p99 connect-to-online (s)",
        p99,
        f"<= {v.max_p99_connect_to_online_s}",
        None if p99 is None else p99 <= v.max_p99_connect_to_online_s,
    )
    lat = r["publish_to_state"]["p99_s"]
    check(
        "p99 publish-to-state (s)",
        lat,
        f"<= {v.max_p99_publish_to_state_s}",
        None if lat is None else lat <= v.max_p99_publish_to_state_s,
    )
    schools = r["bandwidth"]["schools"]
    top = schools[0]["utilisation"] if schools else None
    check(
        "peak uplink utilisation",
        top,
        f"<= {v.max_uplink_utilisation}",
        None if top is None else top <= v.max_uplink_utilisation,
    )
    failed = [x["check"] for x in checks if x["result"] == "fail"]
    return {"result": "fail" if failed else "pass", "failed": failed, "checks": checks}


# ---------------------------------------------------------------- text


def _labs_line(r: dict[str, Any]) -> str:
    lb = r.get("labs") or {}
    if not lb.get("on_ptys"):
        return f"  labs: {lb.get('declared', 0)} lab devices declared, none on ptys (no edge agent)"
    return (
        f"  labs: {lb['on_ptys']} of {lb['declared']} lab devices on ptys in "
        f"{', '.join(lb['rooms_on_ptys'])}; "
        f"bridged by the edge agent {lb['bridged_by_agent']}, online at the end {lb['online_at_end']}, "
        f"messages ingested {lb['messages_ingested']}"
        f"{'; agent failures ' + str(lb['agent_failures']) if lb['agent_failures'] else ''}"
    )


def load_section(series: list[dict[str, float]], speed: float) -> dict[str, Any]:
    """Offered load against what the broker acknowledged and the service ingested, after the storm.

    The steady part is every sample with no connects; `real_clock_msg_per_s` is the same traffic on a real
    clock (offered / speed), the rate the district itself would offer at this profile.
    """
    steady = [p for p in series if not p.get("connects_per_s") and p.get("online")] or series

    def mean(key: str) -> float | None:
        xs = [p[key] for p in steady if key in p]
        return _r(sum(xs) / len(xs), 1) if xs else None

    offered = mean("published_per_s")
    backlog = [p["backlog"] for p in steady if "backlog" in p]
    lags = [p["loop_lag_s"] for p in series if "loop_lag_s" in p]
    return {
        "steady_samples": len(steady),
        "offered_msg_per_s": offered,
        "real_clock_msg_per_s": _r(offered / speed, 1) if offered is not None else None,
        "acked_msg_per_s": mean("acked_per_s"),
        "ingested_msg_per_s": mean("ingested_per_s"),
        "backlog_max": max(backlog, default=None),
        "backlog_end": backlog[-1] if backlog else None,
        "loop_lag_max_s": _r(max(lags, default=None)),
        "loop_lag_p99_s": _r(percentile(lags, 99)),
    }


def _load_line(r: dict[str, Any]) -> str:
    ld = r.get("load") or {}
    return (
        f"  load after the storm ({ld.get('steady_samples')} s): offered {ld.get('offered_msg_per_s')} msg/s "
        f"(on a real clock {ld.get('real_clock_msg_per_s')} msg/s), acked {ld.get('acked_msg_per_s')}/s, "
        f"ingested {ld.get('ingested_msg_per_s')}/s, ingest backlog max {ld.get('backlog_max')} "
        f"(end {ld.get('backlog_end')}); generator loop lag max {ld.get('loop_lag_max_s')} s, "
        f"p99 {ld.get('loop_lag_p99_s')} s"
    )


def text(r: dict[str, Any]) -> str:
    e, c, a, lat = r["enrollment"], r["connections"], r["accounting"], r["publish_to_state"]
    lines = [
        (
            f"LabFleet load report: {r['district']} ({r['spec']}), scenarios "
            f"{', '.join(r['scenarios']) or 'none'}"
        ),
        (
            f"  run: {r['wall_s']} s real, x{r['speed']:g}, "
            f"{r['simulated']['minutes']} simulated minutes from {r['simulated']['start']}"
        ),
        (
            f"  fleet: {r['fleet']['schools']} schools, {r['fleet']['terminals']} terminals, "
            f"{r['fleet']['lab_devices']} lab devices"
        ),
        _labs_line(r),
        (
            f"  enrollment: {e['succeeded']}/{e['requested']} new ({e['had_credentials']} had credentials), "
            f"success {e['success_ratio']:.2%}, {e['per_s'] or '-'} /s, failures {counts(e['failed'])}"
        ),
        (
            f"  stored credentials refused by the broker: {e.get('stored_refused', 0)}, re-enrolled "
            f"{e.get('reenrolled', 0)}, could not re-enroll: {counts(e.get('reenroll_failed') or {})}"
        ),
        (
            f"  connections: {c['connected']}/{c['terminals']} connected; storm {c['storm_wall_s']} s, "
            f"{c['connects_per_s_mean']} connects/s mean, {c['connects_per_s_peak']} peak; CONNACK p99 "
            f"{c['connack_p99_s']} s; connect-to-online p50 {c['connect_to_online_p50_s']} s, p99 "
            f"{c['connect_to_online_p99_s']} s"
        ),
    ]
    if a is not None:
        lines.append(
            f"  sequence accounting: sent {a['sent']}, acked {a['acked_by_broker']}, ingested "
            f"{a['ingested']}, lost {a['lost']}, duplicated {a['duplicated']} (redeliveries absorbed "
            f"{a['redeliveries_absorbed']})"
        )
    lines.append(
        f"  publish-to-state: p50 {lat['p50_s']} s, p99 {lat['p99_s']} s over {lat['samples']} probes"
    )
    lines.append(_load_line(r))
    lines.append(f"    ({RATES_NOTE})")
    top = r["bandwidth"]["schools"][:3]
    lines.append(
        "  peak bandwidth: "
        + "; ".join(f"{s['school']} {s['peak_mbps']} of {s['uplink_mbps']} Mbit/s" for s in top)
    )
    for k, v in r["resources"].items():
        if isinstance(v, dict):
            lines.append(
                f"  {k}: CPU mean {v['cpu_mean']} cores, max {v['cpu_max']}; RSS max {v['rss_max_mb']} MB"
            )
    if r["resources"].get("generator_vs_service_cpu") is not None:
        lines.append(f"  generator CPU / service CPU: {r['resources']['generator_vs_service_cpu']}")
    if r["dead_letters"] is not None:
        lines.append(f"  dead letters this run: {counts(r['dead_letters'])}")
    if r["alerts"] is not None:
        lines.append(
            f"  alerts opened by rule: {counts(r['alerts']['opened_by_rule'])} "
            f"({r['alerts']['still_open']} still open)"
        )
    for name, note in r["scenario_notes"].items():
        lines.append(f"  scenario {name}: {note}")
    v = r["verdict"]
    lines.append(
        f"  verdict: {v['result'].upper()}" + (f" ({', '.join(v['failed'])})" if v["failed"] else "")
    )
    for ch in v["checks"]:
        lines.append(f"    [{ch['result']:>7}] {ch['check']}: {ch['value']} (threshold {ch['threshold']})")
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML

W, H, PAD = 640, 200, 36


def _line_chart(title: str, xs: list[float], series: dict[str, list[float]], unit: str) -> str:
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    ymax = max([max(v, default=0) for v in series.values()] + [1e-9])
    xmax = max(xs, default=1) or 1
    parts = [
        (
            f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="{W}" height="{H + 30}" '
            f'viewBox="0 0 {W} {H + 30}" xmlns="http://www.w3.org/2000/svg">'
        ),
        f'<text x="{PAD}" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H}" x2="{W - 10}" y2="{H}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="22" x2="{PAD}" y2="{H}" stroke="#999"/>',
        f'<text x="2" y="30" font-size="10">{ymax:.3g}</text><text x="2" y="{H}" font-size="10">0</text>',
        f'<text x="{W - 80}" y="{H + 14}" font-size="10">{xmax:.0f} s ({html.escape(unit)})</text>',
    ]
    for i, (name, ys) in enumerate(series.items()):
        pts = " ".join(
            f"{PAD + x / xmax * (W - PAD - 10):.1f},{H - y / ymax * (H - 24):.1f}"
            for x, y in zip(xs, ys, strict=False)
        )
        color = colors[i % len(colors)]
        parts.append(
            f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>'
        )
        parts.append(
            f'<text x="{PAD + 10 + i * 150}" y="{H + 26}" font-size="11" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart(title: str, rows: list[tuple[str, float, float]]) -> str:
    """Horizontal bars: value against capacity (utilisation), one row per school."""
    h = 18 * len(rows) + 30
    parts = [
        (
            f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="{W}" height="{h}" '
            f'viewBox="0 0 {W} {h}" xmlns="http://www.w3.org/2000/svg">'
        ),
        f'<text x="4" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    span = W - 200
    for i, (label, value, cap) in enumerate(rows):
        y = 24 + i * 18
        frac = value / cap if cap else 0
        color = "#d62728" if frac > 0.8 else "#1f77b4"
        parts.append(f'<text x="4" y="{y + 12}" font-size="11">{html.escape(label)}</text>')
        parts.append(
            f'<rect class="bar" x="90" y="{y}" width="{min(frac, 1.2) * span:.1f}" height="13" '
            f'fill="{color}"/>'
        )
        parts.append(
            f'<line x1="{90 + span}" y1="{y - 2}" x2="{90 + span}" y2="{y + 15}" stroke="#333" '
            'stroke-dasharray="2,2"/>'
        )
        parts.append(
            f'<text x="{90 + span + 6}" y="{y + 12}" font-size="11">{value:.1f} / {cap:g} Mbit/s</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def to_html(r: dict[str, Any]) -> str:
    s = r["series"]
    xs = [p["t"] for p in s]
    v = r["verdict"]
    e, c, a, lat = r["enrollment"], r["connections"], r["accounting"], r["publish_to_state"]
    res_keys = sorted(k for k in {k[:-4] for p in s for k in p if k.endswith("_cpu")})
    charts = [
        _line_chart(
            "Terminals online and connects per second",
            xs,
            {
                "online": [p.get("online", 0) for p in s],
                "connects/s": [p.get("connects_per_s", 0) for p in s],
            },
            "real time",
        ),
        _line_chart(
            "Messages per second (published, acknowledged, ingested)",
            xs,
            {
                "published/s": [p.get("published_per_s", 0) for p in s],
                "acked/s": [p.get("acked_per_s", 0) for p in s],
                "ingested/s": [p.get("ingested_per_s", 0) for p in s],
            },
            "real time",
        ),
        _line_chart(
            "CPU (cores): generator against the system under test",
            xs,
            {f"{k} CPU": [p.get(f"{k}_cpu", 0) for p in s] for k in res_keys},
            "real time",
        ),
        _bar_chart(
            "Peak bandwidth per school against its uplink (top 15)",
            [(x["school"], x["peak_mbps"], x["uplink_mbps"]) for x in r["bandwidth"]["schools"][:15]],
        ),
    ]
    checks = "".join(
        f'<tr class="{ch["result"]}"><td>{html.escape(ch["check"])}</td><td>{html.escape(str(ch["value"]))}'
        f"</td><td>{html.escape(str(ch['threshold']))}</td><td>{ch['result']}</td></tr>"
        for ch in v["checks"]
    )
    summary = _table(
        [
            ("scenarios", ", ".join(r["scenarios"]) or "none"),
            ("run", f"{r['wall_s']} s real at x{r['speed']:g}"),
            (
                "fleet",
                (
                    f"{r['fleet']['schools']} schools, {r['fleet']['terminals']} terminals, "
                    f"{r['fleet']['lab_devices']} lab devices"
                ),
            ),
            ("labs", _labs_line(r).removeprefix("  labs: ")),
            ("enrollment", f"{e['success_ratio']:.2%} ({e['succeeded']} new, {e['had_credentials']} reused)"),
            (
                "connected",
                (
                    f"{c['connected']} / {c['terminals']}; storm {c['storm_wall_s']} s, "
                    f"{c['connects_per_s_mean']} connects/s"
                ),
            ),
            ("connect-to-online p99", f"{c['connect_to_online_p99_s']} s"),
            (
                "sent / ingested / lost / duplicated",
                "n/a" if a is None else f"{a['sent']} / {a['ingested']} / {a['lost']} / {a['duplicated']}",
            ),
            ("publish-to-state p50 / p99", f"{lat['p50_s']} s / {lat['p99_s']} s ({lat['samples']} probes)"),
            ("load after the storm", _load_line(r).split(": ", 1)[1]),
            ("dead letters", counts(r["dead_letters"])),
            ("alerts opened by rule", counts((r["alerts"] or {}).get("opened_by_rule"))),
            ("acked and ingested", RATES_NOTE),
        ]
        + [
            (f"{k} CPU / RSS", f"{x['cpu_mean']} cores mean, {x['rss_max_mb']} MB max")
            for k, x in r["resources"].items()
            if isinstance(x, dict)
        ]
    )
    notes = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(n)}</li>" for k, n in r["scenario_notes"].items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LabFleet load report: {html.escape(r["district"])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:16px;max-width:1320px;color:#222}}
h1{{font-size:20px;margin:0 0 4px}}
.verdict{{font-size:18px;font-weight:bold;padding:4px 10px;display:inline-block}}
.verdict.pass{{background:#d4f4d4}} .verdict.fail{{background:#f8d0d0}}
.grid{{display:grid;grid-template-columns:1fr 1fr;gap:8px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} tr.fail td{{background:#f8d0d0}}
tr.pass td{{background:#eef9ee}} .chart{{border:1px solid #eee}}
</style></head><body>
<h1>LabFleet load report: {html.escape(r["district"])}</h1>
<div id="verdict" class="verdict {v["result"]}">Verdict: {v["result"].upper()}</div>
<div class="grid"><div id="summary">{summary}<ul>{notes}</ul></div>
<div><table id="checks">
<tr><th>check</th><th>value</th><th>threshold</th><th>result</th></tr>{checks}</table></div>
{"".join(f"<div>{ch}</div>" for ch in charts)}</div>
</body></html>
"""


def write(r: dict[str, Any], json_path: Path, html_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(r, indent=1, default=str))
    html_path.write_text(to_html(r))
