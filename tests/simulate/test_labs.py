"""Lab devices in `labfleet simulate`: robots and kits on real ptys, found, enrolled and bridged by the real
edge agent, show online in the service under their inventory records."""

from __future__ import annotations

from pathlib import Path

import httpx

from fleet.cli.simulate_service import DbReadBack
from simulators.district.labs import hardware_serial
from simulators.district.spec import parse_spec

from .harness import run, service, small_spec


def _spec(labs: int = 1) -> dict:
    spec = small_spec()
    spec["models"]["kit"] = {
        "vendor": "MakerWorks",
        "model_number": "SIM-ESP32",
        "kind": "mcu_kit",
        "transport": "serial",
        "profile_key": "kit-esp32-mpy",
    }
    spec["schools"][0]["rooms"][1]["devices"] = {"robot": 2, "kit": 2}
    spec["schools"][1]["rooms"].append({"kind": "digital_lab", "devices": {"robot": 1}})
    spec["edge"] = {"labs": labs, "health_interval_s": 30}
    return spec


def test_lab_device_serials_are_the_identities_their_drivers_read_back() -> None:
    d = parse_spec(_spec(), "labs.yaml")
    lab = [dev for _s, _r, dev in d.devices() if dev.transport == "serial"]
    assert [dev.serial for dev in lab[:2]] == ["robot-TS1-L01-RR01", "robot-TS1-L01-RR02"]
    assert all(
        dev.serial == hardware_serial("mcu_kit", dev.name) and dev.serial.startswith("mpy-")
        for dev in lab
        if dev.kind == "mcu_kit"
    )
    assert lab[0].asset_tag == "A-TS1-L01-RR01"


async def test_lab_devices_run_through_the_edge_agent_on_ptys_and_show_online(
    sqlite_url: str, tmp_path: Path
) -> None:
    d = parse_spec(_spec(labs=1), "labs.yaml")
    on_pty = [dev.serial for s, r, dev in d.devices() if dev.transport == "serial" and s.code == "TS1"]
    async with service(sqlite_url, tmp_path) as sut:
        assert sut.sessions is not None
        r = await run(sut, d, ("bell-storm",), duration_s=6.0)
        states = await DbReadBack(sut.sessions).device_states(on_pty)
        async with httpx.AsyncClient(
            base_url=sut.api, headers={"Authorization": f"Bearer {sut.token}"}
        ) as http:
            devices = (await http.get("/api/v1/devices", params={"limit": 500})).json()["items"]
    labs = r["labs"]
    # Bounded: only the first lab room gets ptys; the second school's robot is declared and counted only.
    assert labs["rooms_on_ptys"] == ["TS1/Digital lab 1"] and labs["declared"] == 5
    assert labs["on_ptys"] == labs["bridged_by_agent"] == labs["online_at_end"] == 4
    assert labs["messages_ingested"] > 0 and not labs["agent_failures"]
    # Matched to the provisioned inventory records (no kit registered anew), and ingested by the service.
    # (Online is read from the report: it was read before the run ended, when the agents took their kits
    # offline.)
    assert len(devices) == d.count() and {dv["serial_number"] for dv in devices} >= set(on_pty)
    assert set(states) == set(on_pty) and all(s.messages > 0 for s in states.values())
    assert r["accounting"]["lost"] == 0
