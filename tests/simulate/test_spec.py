"""District spec loading: the shipped specs expand to the planned fleet; bad specs name file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.district.spec import SpecError, load_spec, parse_scenarios, parse_spec

from .harness import small_spec

DISTRICTS = Path(__file__).resolve().parents[2] / "simulators" / "districts"


def test_rollout_2027_is_500_classrooms_of_20_terminals_and_50_labs() -> None:
    d = load_spec(DISTRICTS / "rollout-2027.yaml")
    rooms = [r for s in d.schools for r in s.rooms]
    assert sum(r.kind == "smart_classroom" for r in rooms) == 500
    assert sum(r.kind == "digital_lab" for r in rooms) == 50
    assert d.count("terminal") == 10_000
    assert d.count("robot") > 0 and d.count("mcu_kit") > 0
    assert len({dev.serial for _, _, dev in d.devices()}) == len(d.devices())


def test_demo_spec_is_small() -> None:
    d = load_spec(DISTRICTS / "demo.yaml")
    assert 0 < d.count("terminal") <= 100


def test_schools_keep_their_own_names_not_a_device_label() -> None:
    """Issue 20: a loop variable overwrote the school's name with its last device label (DEMO1-L01-KK06)."""
    demo = load_spec(DISTRICTS / "demo.yaml")
    assert [s.name for s in demo.schools] == ["Demo Primary School", "Demo Middle School"]
    rollout = load_spec(DISTRICTS / "rollout-2027.yaml")
    assert rollout.schools[0].name == f"Rollout School {rollout.schools[0].code}"


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        (
            {"schools": [{"code": "A/B", "uplink_mbps": 10, "rooms": [{"kind": "smart_classroom"}]}]},
            "schools.0.code",
        ),
        (
            {"schools": [{"code": "S1", "uplink_mbps": 0, "rooms": [{"kind": "smart_classroom"}]}]},
            "schools.0.uplink_mbps",
        ),
        (
            {
                "schools": [
                    {
                        "code": "S1",
                        "uplink_mbps": 5,
                        "rooms": [{"kind": "smart_classroom", "devices": {"phone": 2}}],
                    }
                ]
            },
            "schools.0.rooms.0.devices.phone",
        ),
        (
            {"timetables": {"standard": {"periods": [{"name": "P1", "start": "09:00", "end": "08:00"}]}}},
            "timetables.standard.periods.0",
        ),
        ({"traffic": {"terminal": {"telemetry_interval_s": 1}}}, "traffic.terminal.telemetry_interval_s"),
        ({"verdict": {"max_lost": -1}}, "verdict.max_lost"),
        ({"speed": "fast"}, "speed"),
    ],
)
def test_bad_spec_errors_name_the_file_and_key_path(patch: dict, where: str) -> None:
    data = {**small_spec(), **patch}
    with pytest.raises(SpecError) as err:
        parse_spec(data, "district.yaml")
    assert f"district.yaml: {where}" in str(err.value)


def test_unreadable_yaml_and_unknown_scenarios_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("district: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="unknown scenario"):
        parse_scenarios("bell-storm,meteor-strike")
    assert parse_scenarios("bell-storm, lesson-peak,bell-storm") == ("bell-storm", "lesson-peak")


def test_labfleet_simulate_refuses_a_bad_spec_or_scenario_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fleet.cli.main import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndistrict: X\nstart: '2026-09-07T07:58:00'\ntimetables: {}\nmodels: {}\n")
    runner = CliRunner()
    r = runner.invoke(app, ["simulate", str(bad), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert "bad.yaml" in r.output and "needs at least one of schools" in r.output
    r = runner.invoke(
        app,
        ["simulate", str(DISTRICTS / "demo.yaml"), "--scenario", "meteor", "--out", str(tmp_path / "out")],
    )
    assert r.exit_code == 2 and "unknown scenario" in r.output
