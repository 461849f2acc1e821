"""A rollout's own bandwidth cap: downloads are told the lower of the school's budget and the rollout's cap,
shared by the school's download slots; without a cap, the school's budget alone. And the API's preview is
the plan the start then makes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.rollouts.harness import lab

# Monday 2026-09-07 17:00 UTC: after school, no periods configured, so every gate is open.
EVENING = datetime(2026, 9, 7, 17, 0, tzinfo=UTC)
# 100 Mbit/s uplink, the default 20 % share: 2.5 MB/s for updates; 20 download slots by default.
SCHOOL_BUDGET = 100_000_000 // 8 // 5
SLOTS = 20


async def rates(sqlite_url: str, tmp_path: Path, **body: object) -> set[int]:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        a = await lb.add_school("S-A", uplink_mbps=100)
        await lb.add_terminals(a, 3)
        await lb.create_rollout(groups={"canary_size": 3}, **body)
        await lb.engine.step(lb.clock.now())  # commands stay in the inbox: no terminal takes them
        return {
            int(cmd.args["max_bytes_per_second"])
            for inbox in lb.link.inbox.values()
            for cmd in inbox
            if cmd.args.get("phase") == "download"
        }


async def test_a_rollout_cap_below_the_school_budget_lowers_each_download_rate(
    sqlite_url: str, tmp_path: Path
) -> None:
    assert await rates(sqlite_url, tmp_path / "a", max_bytes_per_second=400_000) == {400_000 // SLOTS}


async def test_without_a_cap_downloads_share_the_school_budget(sqlite_url: str, tmp_path: Path) -> None:
    assert await rates(sqlite_url, tmp_path / "b") == {SCHOOL_BUDGET // SLOTS}


async def test_a_cap_above_the_school_budget_changes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    assert await rates(sqlite_url, tmp_path / "c", max_bytes_per_second=100_000_000) == {
        SCHOOL_BUDGET // SLOTS
    }


async def test_a_cap_out_of_range_is_refused_naming_the_field(sqlite_url: str, tmp_path: Path) -> None:
    async with lab(sqlite_url, tmp_path, EVENING) as lb:
        r = await lb.client.post(
            "/api/v1/rollouts",
            json={"name": "x", "model_id": lb.model, "target_version": "1.2.0", "max_bytes_per_second": 10},
            headers=await lb.api.admin(),
        )
        assert r.status_code == 422, r.text
        assert "max_bytes_per_second" in r.text
