"""End to end on a fast clock: the API creates a rollout, the engine drives it, simulated terminals download
over HTTP, install, reboot and report; thresholds advance or pause, abort cancels cleanly."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleet.domain.rollouts import FINAL_STATES
from tests.rollouts.harness import NEW, OLD, lab

# Monday 2026-09-07 17:00 UTC: after school, no periods configured, so every gate is open.
EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)


async def test_canary_succeeds_then_groups_advance_to_completion(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        b = await lb.add_school("S-B")
        await lb.add_terminals(a, 4)
        await lb.add_terminals(b, 4)
        r = await lb.create_rollout(groups={"canary_size": 2, "strategy": "per_school"})
        rid = r["id"]
        assert r["state"] == "running"

        await lb.run(seconds=30 * 60, step=30)
        detail = await lb.get(f"/api/v1/rollouts/{rid}")
        groups = detail["group_progress"]
        assert [g["kind"] for g in groups] == ["canary", "school", "school"]
        assert groups[0]["by_state"] == {"succeeded": 2}
        assert detail["state"] == "completed"
        assert all(g["state"] == "succeeded" for g in groups)
        assert detail["totals"] == {"succeeded": 8}
        assert all(s.version == NEW for s in lb.sims.values())
        # Groups started one after the other, each only once the previous one reached its success threshold
        # (0.9 of its devices succeeded), read from the per-device timeline.
        starts = [datetime.fromisoformat(g["started_at"]) for g in groups]
        assert starts == sorted(starts) and starts[0] < starts[1]
        rows = await lb.device_rows(rid)
        succeeded_at = {e.device_id: e.at for e in await lb.timeline(rid) if e.event == "succeeded"}
        for prev, nxt_start in zip(groups, starts[1:], strict=False):
            members = sorted(succeeded_at[d] for d, row in rows.items() if row.group_id == prev["id"])
            needed = math.ceil(0.9 * prev["total"])
            threshold_at = members[needed - 1].replace(tzinfo=UTC)
            assert nxt_start >= threshold_at, f"{prev['name']} reached its threshold at {threshold_at}"


async def test_canary_runs_alone_until_it_succeeds(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        await lb.add_terminals(a, 6)
        r = await lb.create_rollout(groups={"canary_size": 2, "strategy": "percent", "percents": [50, 100]})
        await lb.tick()  # first step: only the canary gets commands
        rows = await lb.device_rows(r["id"])
        commanded = {d for d, row in rows.items() if row.state != "pending"}
        detail = await lb.get(f"/api/v1/rollouts/{r['id']}")
        canary = detail["group_progress"][0]
        assert canary["kind"] == "canary" and canary["total"] == 2
        assert len(commanded) == 2
        assert detail["group_progress"][1]["state"] == "pending"


async def test_bad_version_at_30_percent_pauses_at_error_threshold_and_next_group_never_starts(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        b = await lb.add_school("S-B")
        ids = await lb.add_terminals(a, 10)
        await lb.add_terminals(b, 5)
        # 30% of school A's terminals fail to boot the new image: 3 of the 10 (ids chosen deterministically).
        for dev in ids[2:][::3][:3]:
            lb.sims[dev].fail_boot = True
        r = await lb.create_rollout(
            groups={"canary_size": 2, "strategy": "per_school"}, error_threshold=0.2, success_threshold=0.9
        )
        rid = r["id"]
        await lb.run(seconds=3 * 3600, step=30)
        detail = await lb.get(f"/api/v1/rollouts/{rid}")
        assert detail["state"] == "paused"
        assert "error threshold" in detail["state_reason"]
        groups = {g["name"]: g for g in detail["group_progress"]}
        school_b = next(g for g in detail["group_progress"] if g["name"] == "school S-B")
        assert school_b["state"] == "pending" and school_b["started_at"] is None
        rows = await lb.device_rows(rid)
        in_b = [row for row in rows.values() if row.group_id == school_b["id"]]
        assert len(in_b) == school_b["total"] >= 4
        assert all(row.state == "pending" and row.scheduled_at is None for row in in_b)
        assert all(
            lb.sims[row.device_id].version == OLD and not lb.sims[row.device_id].requests for row in in_b
        )
        assert groups["canary"]["by_state"] == {"succeeded": 2}
        # The pause came at the error threshold: in the first engine step (30 s apart) after the report that
        # made school A's failures reach 20% of its group, not later.
        school_a = groups["school S-A"]
        rows = await lb.device_rows(rid)
        failed_at = sorted(
            e.at.replace(tzinfo=UTC)
            for e in await lb.timeline(rid)
            if e.event == "rolled_back" and rows[e.device_id].group_id == school_a["id"]
        )
        at_threshold = failed_at[math.ceil(0.2 * school_a["total"]) - 1]
        [pause] = (await lb.get("/api/v1/audit?action=rollout.pause"))["items"]
        paused_at = datetime.fromisoformat(pause["at"]).replace(tzinfo=UTC)
        assert at_threshold <= paused_at <= at_threshold + timedelta(seconds=30)
        failed_by_then = sum(1 for t in failed_at if t <= paused_at)
        assert (
            f"{failed_by_then} of {school_a['total']} devices failed in group school S-A"
            in detail["state_reason"]
        )
        assert failed_by_then / school_a["total"] >= 0.2
        # Rolled-back devices report their old version, and the API shows why.
        rolled = [row for row in rows.values() if row.state == "rolled_back"]
        assert rolled
        for row in rolled:
            assert row.reported_version == OLD
            assert lb.sims[row.device_id].version == OLD
            assert "rolled back to 1.1.0" in (row.reason or "")
        audit = await lb.get("/api/v1/audit?action=rollout.pause")
        assert audit["total"] == 1 and audit["items"][0]["actor"] == "admin:system"


async def test_abort_leaves_no_device_half_way(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        await lb.add_terminals(a, 12)
        r = await lb.create_rollout(
            groups={"canary_size": 4, "strategy": "percent", "percents": [100]}, success_threshold=0.5
        )
        rid = r["id"]
        # Run until devices are spread over states: some installing, some downloaded, some pending.
        for _ in range(40):
            await lb.tick()
            states = {row.state for row in (await lb.device_rows(rid)).values()}
            if "installing" in states and ("pending" in states or "downloaded" in states):
                break
            lb.clock.advance(30)
        assert "installing" in states
        resp = await lb.client.post(f"/api/v1/rollouts/{rid}/abort", headers=await lb.api.admin())
        assert resp.status_code == 200 and resp.json()["state"] == "aborted"
        # Let in-flight installs report, then check every device is final and on a whole version.
        await lb.run(seconds=30 * 60, step=30)
        rows = await lb.device_rows(rid)
        assert {row.state for row in rows.values()} <= {s.value for s in FINAL_STATES}
        assert any(row.state == "cancelled" for row in rows.values())
        for dev, row in rows.items():
            sim = lb.sims[dev]
            assert sim.staged is None and not sim.partial, f"device {dev} kept a half-downloaded image"
            assert sim.state == "idle"
            assert sim.version == (NEW if row.state == "succeeded" else OLD)
        assert (await lb.get(f"/api/v1/rollouts/{rid}"))["state"] == "aborted"


async def test_devices_enrolled_after_the_start_are_included(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        await lb.add_terminals(a, 3)
        r = await lb.create_rollout(groups={"canary_size": 1, "strategy": "per_school"})
        await lb.tick()
        late = await lb.add_terminals(a, 2)
        await lb.run(seconds=40 * 60, step=30)
        rows = await lb.device_rows(r["id"])
        assert set(late) <= set(rows)
        assert all(rows[d].state == "succeeded" for d in late)
        assert all(lb.sims[d].version == NEW for d in late)


async def test_abort_without_an_engine_is_told_to_devices_by_the_next_step(
    sqlite_url: str, tmp_path: Path
) -> None:
    from fleet.domain.permissions import SYSTEM
    from fleet.persistence.db import unit_of_work
    from fleet.services.rollouts import RolloutService

    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        [dev] = await lb.add_terminals(a, 1, link_rate=1)  # a 9-minute download
        r = await lb.create_rollout(groups={"canary_size": 1})
        await lb.tick()
        assert lb.sims[dev].state == "downloading"
        async with unit_of_work(lb.api.sessions) as s:  # what `labfleet rollout abort` does
            await RolloutService(s, SYSTEM, lb.clock.now()).abort(r["id"])
        await lb.run(seconds=120, step=30)
        sim = lb.sims[dev]
        assert sim.state == "idle" and not sim.partial and sim.version == OLD
        events = [e.event for e in await lb.timeline(r["id"])]
        assert events.count("cancel_pending") == 1 and events.count("cancel_sent") == 1


async def test_paused_rollout_is_exposed_for_the_rollout_paused_alert(
    sqlite_url: str, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from fleet.observability.metrics import FleetMetrics, FleetSnapshot, SnapshotHolder
    from fleet.services.rollouts import rollout_states

    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        registry = CollectorRegistry()
        metrics = FleetMetrics(registry)
        lb.engine.metrics = metrics
        a = await lb.add_school("S-A")
        ids = await lb.add_terminals(a, 2)
        for d in ids:
            lb.sims[d].fail_boot = True
        r = await lb.create_rollout(groups={"canary_size": 2}, error_threshold=0.5)
        await lb.run(seconds=30 * 60, step=30, until_state="paused", rollout_id=r["id"])
        async with lb.api.sessions() as s:
            states = await rollout_states(s)
        holder = SnapshotHolder()
        holder.publish(FleetSnapshot(taken_at=0.0, rollouts=states))
        metrics.register_state(holder, clock=lambda: 0.0)
        label = f"{r['id']}:{r['name']}"
        assert (
            registry.get_sample_value(
                "labfleet_rollout_paused", {"rollout": label, "model": "terminal-lt100"}
            )
            == 1
        )
        assert registry.get_sample_value("labfleet_rollout_pauses_total", {"reason": "error_threshold"}) == 1
        assert (
            registry.get_sample_value(
                "labfleet_rollout_device_transitions_total",
                {"model": "terminal-lt100", "state": "rolled_back"},
            )
            == 2
        )
        assert (
            registry.get_sample_value(
                "labfleet_rollout_devices",
                {"rollout": label, "model": "terminal-lt100", "state": "rolled_back"},
            )
            == 2
        )


async def test_resume_after_an_error_pause_forgives_the_old_failures_and_carries_on(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A")
        ids = await lb.add_terminals(a, 5)
        lb.sims[ids[0]].fail_boot = True
        r = await lb.create_rollout(
            groups={"canary_size": 2, "strategy": "percent", "percents": [100]},
            error_threshold=0.5,
            success_threshold=0.5,
        )
        await lb.run(seconds=30 * 60, step=30, until_state="paused", rollout_id=r["id"])
        assert await lb.rollout_state(r["id"]) == "paused"
        resp = await lb.client.post(f"/api/v1/rollouts/{r['id']}/resume", headers=await lb.api.admin())
        assert resp.status_code == 200 and resp.json()["state"] == "running"
        await lb.run(seconds=30 * 60, step=30)
        detail = await lb.get(f"/api/v1/rollouts/{r['id']}")
        assert detail["state"] == "completed"
        assert detail["totals"] == {"rolled_back": 1, "succeeded": 4}
        audit = await lb.get(f"/api/v1/audit?object_type=rollout&object_id={r['id']}")
        assert [e["action"] for e in audit["items"]] == [
            "rollout.create",
            "rollout.start",
            "rollout.pause",
            "rollout.resume",
            "rollout.group_start",
            "rollout.complete",
        ]
