"""broker-restart against managed mosquitto: terminals reconnect and no sequence number is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import need_external

from .harness import district, run, service


async def test_broker_restart_mid_lesson_reconnects_everyone_and_loses_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        need_external("mosquitto")
    async with service(sqlite_url, tmp_path, broker="mosquitto") as sut:
        if not shutil.which("mosquitto"):
            sut.broker.binary = "/usr/sbin/mosquitto"
        r = await run(sut, district(restart_at_s=60), ("bell-storm", "broker-restart"), duration_s=6.0)
    events = [e for _, e in r["events"]]
    assert "broker-restart: broker is back" in events
    c = r["connections"]
    assert c["connects_total"] >= 2 * c["terminals"]  # everyone connected twice: before and after the restart
    assert r["accounting"]["lost"] == 0 and r["accounting"]["duplicated"] == 0
