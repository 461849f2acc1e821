"""Firmware profiles: every shipped profile loads, and broken ones name file, key path and problem."""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

import firmware_profiles
from firmware_profiles import (
    DEFAULT_PROFILE_DIR,
    FirmwareProfile,
    ProfileError,
    check_all,
    check_profiles_command,
    load_all,
    load_profile,
    load_profile_key,
)

DEMO_MODELS = {
    "terminal-lt100",
    "terminal-lt200",
    "robot-edubot-r2",
    "kit-esp32-mpy",
    "kit-uno-firmata",
    "sensor-air-s1",
}
GOOD = DEFAULT_PROFILE_DIR / "terminal-lt100.yaml"


def test_every_shipped_profile_loads_with_verified_artifacts() -> None:
    profiles = load_all(verify_artifacts=True)
    assert set(profiles) == DEMO_MODELS
    assert check_all() == []


def test_shipped_profiles_declare_expected_kinds_and_transports() -> None:
    p = load_all()
    assert (p["terminal-lt100"].kind, p["terminal-lt100"].transport) == ("terminal", "mqtt")
    assert (p["terminal-lt200"].kind, p["terminal-lt200"].transport) == ("terminal", "mqtt")
    assert (p["robot-edubot-r2"].kind, p["robot-edubot-r2"].transport) == ("robot", "serial")
    assert p["robot-edubot-r2"].serial is not None and p["robot-edubot-r2"].serial.protocol == "robot"
    assert (p["kit-esp32-mpy"].kind, p["kit-esp32-mpy"].transport) == ("mcu_kit", "serial")
    assert (p["kit-uno-firmata"].kind, p["kit-uno-firmata"].transport) == ("mcu_kit", "serial")
    assert p["kit-uno-firmata"].serial is not None and p["kit-uno-firmata"].serial.baud == 57600
    assert (p["sensor-air-s1"].kind, p["sensor-air-s1"].transport) == ("sensor", "mqtt")


def test_profile_models_are_frozen() -> None:
    profile = load_profile(GOOD)
    with pytest.raises(pydantic.ValidationError):
        profile.target_version = "1.0.0"
    with pytest.raises(pydantic.ValidationError):
        profile.versions[0].sha256 = "0" * 64
    assert isinstance(profile.versions, tuple)
    assert isinstance(profile.settings.allowed_apps, tuple)


def test_target_is_resolved_to_its_version() -> None:
    profile = load_profile(GOOD)
    assert profile.target.version == "1.2.0"
    assert profile.target.min_hardware_revision == 2
    with pytest.raises(KeyError):
        profile.version("9.9.9")


def test_withdrawn_versions_are_read_with_their_reason_and_date() -> None:
    p = load_profile(GOOD)
    assert set(p.withdrawn_versions) == {"1.0.0"}
    assert p.withdrawn_versions["1.0.0"].since == date(2026, 3, 2)
    assert "certificate" in p.withdrawn_versions["1.0.0"].reason
    assert load_profile_key("robot-edubot-r2").withdrawn == ()  # optional: none withdrawn


def test_fault_error_codes_are_the_fault_severity_ones() -> None:
    assert load_profile(GOOD).health.fault_error_codes == ("E_DISPLAY",)


def test_load_profile_key_reads_the_named_profile_from_the_folder() -> None:
    assert load_profile_key("kit-uno-firmata").serial is not None
    assert load_profile_key("terminal-lt100") == load_profile(GOOD)


@pytest.mark.parametrize(
    "key", ["../terminal-lt100", "terminal-lt100.yaml", "/etc/passwd", "", "no-such-model"]
)
def test_load_profile_key_refuses_path_like_or_unknown_keys(key: str) -> None:
    with pytest.raises(ProfileError):
        load_profile_key(key)


def test_the_library_imports_nothing_from_fleet() -> None:
    for path in Path(firmware_profiles.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "fleet" for a in node.names), path
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "fleet", path


# --- broken profiles ---------------------------------------------------------------------------------
def _good() -> dict[str, Any]:
    return yaml.safe_load(GOOD.read_text())


def _mut(fn: Callable[[dict[str, Any]], None]) -> str:
    data = copy.deepcopy(_good())
    fn(data)
    return yaml.safe_dump(data, sort_keys=False)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        node: Any = data
        parts = path.replace("[", ".").replace("]", "").split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return apply


_DELETE = object()
_GOOD_TEXT = GOOD.read_text()

BROKEN: list[tuple[str, str, str]] = [
    # (case id, profile text, expected error line)
    (
        "sha256 not hex",
        _mut(_set("versions[2].sha256", "zz" * 32)),
        "terminal-lt100.yaml: versions[2].sha256: not a hex digest (64 lowercase hex characters)",
    ),
    (
        "sha256 too short",
        _mut(_set("versions[0].sha256", "abc123")),
        "terminal-lt100.yaml: versions[0].sha256: not a hex digest (64 lowercase hex characters)",
    ),
    (
        "target not a version",
        _mut(_set("target_version", "9.0.0")),
        "terminal-lt100.yaml: target_version: 9.0.0 is not one of the versions (1.0.0, 1.1.0, 1.2.0)",
    ),
    (
        "version not semver",
        _mut(_set("versions[1].version", "v1.1")),
        "terminal-lt100.yaml: versions[1].version: not a semantic version (e.g. 1.2.0)",
    ),
    (
        "version as YAML float",
        _GOOD_TEXT.replace("version: 1.1.0", "version: 1.1"),
        "terminal-lt100.yaml: versions[1].version: Input should be a valid string",
    ),
    (
        "duplicate version",
        _mut(_set("versions[2].version", "1.0.0")),
        "terminal-lt100.yaml: versions: version 1.0.0 appears at [0] and [2]",
    ),
    (
        "no versions",
        _mut(_set("versions", [])),
        "terminal-lt100.yaml: versions: Tuple should have at least 1 item after validation, not 0",
    ),
    (
        "size zero",
        _mut(_set("versions[0].size", 0)),
        "terminal-lt100.yaml: versions[0].size: Input should be greater than or equal to 1",
    ),
    (
        "artifact escapes folder",
        _mut(_set("versions[0].artifact", "../../etc/passwd")),
        "terminal-lt100.yaml: versions[0].artifact: must be a relative path inside the profiles folder",
    ),
    (
        "artifact absolute",
        _mut(_set("versions[0].artifact", "/etc/passwd")),
        "terminal-lt100.yaml: versions[0].artifact: must be a relative path inside the profiles folder",
    ),
    (
        "release notes missing",
        _mut(_set("versions[1].release_notes", _DELETE)),
        "terminal-lt100.yaml: versions[1].release_notes: required",
    ),
    (
        "unknown key",
        _mut(_set("health.battery_low_pct", 10)),
        "terminal-lt100.yaml: health.battery_low_pct: unknown key",
    ),
    (
        "battery over 99",
        _mut(_set("health.battery_low_percent", 150)),
        "terminal-lt100.yaml: health.battery_low_percent: Input should be less than or equal to 99",
    ),
    (
        "battery critical not below low",
        _mut(_set("health.battery_critical_percent", 20)),
        "terminal-lt100.yaml: health.battery_critical_percent: must be below battery_low_percent (15)",
    ),
    (
        "temperature critical not above high",
        _mut(_set("health.temperature_critical_c", 50)),
        "terminal-lt100.yaml: health.temperature_critical_c: must be above temperature_high_c (50)",
    ),
    (
        "reboot count of one",
        _mut(_set("health.repeated_reboots.count", 1)),
        "terminal-lt100.yaml: health.repeated_reboots.count: Input should be greater than or equal to 2",
    ),
    (
        "error code lowercase",
        _mut(_set("health.error_codes[1].code", "wifi")),
        (
            "terminal-lt100.yaml: health.error_codes[1].code: "
            "not an error code (UPPER_SNAKE, e.g. E_MOTOR_STALL)"
        ),
    ),
    (
        "error code severity",
        _mut(_set("health.error_codes[0].severity", "bad")),
        "terminal-lt100.yaml: health.error_codes[0].severity: Input should be 'degraded' or 'fault'",
    ),
    (
        "duplicate error code",
        _mut(_set("health.error_codes[1].code", "E_DISPLAY")),
        "terminal-lt100.yaml: health.error_codes: duplicate error code E_DISPLAY",
    ),
    (
        "session longer than day",
        _mut(_set("settings.screen_time.per_day_minutes", 30)),
        (
            "terminal-lt100.yaml: settings.screen_time.per_day_minutes: "
            "must be at least per_session_minutes (40)"
        ),
    ),
    (
        "terminal without screen time",
        _mut(_set("settings.screen_time", _DELETE)),
        "terminal-lt100.yaml: settings: screen_time is required for terminals (myopia-prevention defaults)",
    ),
    (
        "bad app id",
        _mut(_set("settings.allowed_apps[2]", "Coding App")),
        (
            "terminal-lt100.yaml: settings.allowed_apps[2]: "
            "not an app id (reverse-DNS, e.g. org.labfleet.reader)"
        ),
    ),
    (
        "duplicate app",
        _mut(_set("settings.allowed_apps[3]", "org.labfleet.reader")),
        "terminal-lt100.yaml: settings.allowed_apps: duplicate app org.labfleet.reader",
    ),
    (
        "telemetry interval zero",
        _mut(_set("settings.telemetry_interval_seconds", 0)),
        (
            "terminal-lt100.yaml: settings.telemetry_interval_seconds: "
            "Input should be greater than or equal to 1"
        ),
    ),
    (
        "unknown kind",
        _mut(_set("kind", "drone")),
        "terminal-lt100.yaml: kind: Input should be 'terminal', 'robot', 'mcu_kit' or 'sensor'",
    ),
    (
        "mqtt block missing",
        _mut(_set("mqtt", _DELETE)),
        "terminal-lt100.yaml: mqtt: required for transport mqtt",
    ),
    (
        "serial block with mqtt",
        _mut(_set("serial", {"protocol": "firmata", "baud": 57600})),
        "terminal-lt100.yaml: serial: not allowed with transport mqtt",
    ),
    ("qos 2", _mut(_set("mqtt.qos", 2)), "terminal-lt100.yaml: mqtt.qos: Input should be 0 or 1"),
    (
        "model does not match file",
        _mut(_set("model", "terminal-lt300")),
        "terminal-lt100.yaml: model: 'terminal-lt300' does not match the file name (terminal-lt100.yaml)",
    ),
    (
        "withdrawn version not a version",
        _mut(_set("withdrawn", [{"version": "1.0", "reason": "bad"}])),
        "terminal-lt100.yaml: withdrawn[0].version: not a semantic version (e.g. 1.2.0)",
    ),
    (
        "withdrawn without a reason",
        _mut(_set("withdrawn", [{"version": "1.0.0"}])),
        "terminal-lt100.yaml: withdrawn[0].reason: required",
    ),
    (
        "withdrawn twice",
        _mut(_set("withdrawn", [{"version": "1.0.0", "reason": "a"}, {"version": "1.0.0", "reason": "b"}])),
        "terminal-lt100.yaml: withdrawn: version 1.0.0 is withdrawn twice, at [0] and [1]",
    ),
    (
        "target withdrawn",
        _mut(_set("withdrawn", [{"version": "1.2.0", "reason": "display bug"}])),
        (
            "terminal-lt100.yaml: withdrawn: the target version 1.2.0 is withdrawn; set target_version to a "
            "version devices may run"
        ),
    ),
    (
        "withdrawn as a plain list",
        _mut(_set("withdrawn", ["1.0.0"])),
        (
            "terminal-lt100.yaml: withdrawn[0]: Input should be a valid dictionary or instance of "
            "WithdrawnVersion"
        ),
    ),
    (
        "model not a slug",
        _mut(_set("model", "Terminal LT100")),
        "terminal-lt100.yaml: model: must be lowercase letters, digits, '-' or '_' (e.g. terminal-lt100)",
    ),
    (
        "python object tag",
        _GOOD_TEXT.replace(
            "name: LT100 adaptive-learning terminal", "name: !!python/object/apply:os.system ['true']"
        ),
        "terminal-lt100.yaml: name: line 4: YAML tag !!python/object/apply:os.system is not allowed",
    ),
    (
        "binary tag in a list",
        _GOOD_TEXT.replace("    sha256: 7e53", "    sha256: !!binary 7e53"),
        "terminal-lt100.yaml: versions[1].sha256: line 23: YAML tag !!binary is not allowed",
    ),
    (
        "anchor and alias",
        _GOOD_TEXT.replace("  screen_time:\n", "  screen_time: &st\n") + "extra_policy: *st\n",
        "terminal-lt100.yaml: settings.screen_time: line 35: YAML anchors and aliases",
    ),
    ("two documents", _GOOD_TEXT + "---\nmodel: x\n", "only one YAML document is allowed"),
    (
        "not a mapping",
        "- just\n- a list\n",
        "terminal-lt100.yaml: a profile must be a mapping of keys to values",
    ),
    ("syntax error", "model: [unclosed\n", "terminal-lt100.yaml: line 2: invalid YAML"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BROKEN], ids=[c for c, _, _ in BROKEN])
def test_broken_profile_names_file_path_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "terminal-lt100.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    lines = [str(issue) for issue in info.value.issues]
    assert any(expected in line for line in lines), lines


def _copy_profiles(dest: Path) -> None:
    (dest / "artifacts").mkdir()
    for p in DEFAULT_PROFILE_DIR.glob("*.yaml"):
        (dest / p.name).write_text(p.read_text())
    for p in (DEFAULT_PROFILE_DIR / "artifacts").iterdir():
        (dest / "artifacts" / p.name).write_bytes(p.read_bytes())


def test_artifact_with_wrong_content_is_reported_by_check_all(tmp_path: Path) -> None:
    _copy_profiles(tmp_path)
    art = tmp_path / "artifacts" / "terminal-lt100-1.1.0.img"
    data = bytearray(art.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    art.write_bytes(bytes(data))
    assert check_all(tmp_path) == [
        (
            "terminal-lt100.yaml: versions[1].sha256: "
            "does not match the content of artifacts/terminal-lt100-1.1.0.img"
        )
    ]


def test_missing_and_truncated_artifacts_are_reported(tmp_path: Path) -> None:
    _copy_profiles(tmp_path)
    (tmp_path / "artifacts" / "kit-uno-firmata-2.5.0.hex").unlink()
    (tmp_path / "artifacts" / "sensor-air-s1-1.0.0.img").write_bytes(b"short")
    assert check_all(tmp_path) == [
        "kit-uno-firmata.yaml: versions[0].artifact: file not found: artifacts/kit-uno-firmata-2.5.0.hex",
        "sensor-air-s1.yaml: versions[1].size: 561 but artifacts/sensor-air-s1-1.0.0.img has 5 bytes",
    ]


def test_load_all_reports_every_broken_file_not_just_the_first(tmp_path: Path) -> None:
    _copy_profiles(tmp_path)
    for name in ("terminal-lt200.yaml", "sensor-air-s1.yaml"):
        p = tmp_path / name
        p.write_text(p.read_text().replace("telemetry_interval_seconds:", "telemetry_interval_secs:"))
    with pytest.raises(ProfileError) as info:
        load_all(tmp_path)
    files = sorted({i.file for i in info.value.issues})
    assert files == ["sensor-air-s1.yaml", "terminal-lt200.yaml"]


def test_check_profiles_command_ok_on_shipped_profiles() -> None:
    ok, lines = check_profiles_command()
    assert ok
    assert lines[-1] == "6 profile(s) OK"
    assert (
        "terminal-lt100.yaml: OK (terminal, mqtt, driver terminal-mqtt, 3 version(s), target 1.2.0)" in lines
    )


def test_check_profiles_command_fails_with_lines_for_a_broken_folder(tmp_path: Path) -> None:
    _copy_profiles(tmp_path)
    p = tmp_path / "robot-edubot-r2.yaml"
    p.write_text(p.read_text().replace("baud: 115200", "baud: 12345"))
    ok, lines = check_profiles_command(tmp_path)
    assert not ok
    assert lines[0].startswith("robot-edubot-r2.yaml: serial.baud: unsupported baud rate 12345")
    assert lines[-1] == f"1 problem(s) in {tmp_path}"


def test_check_profiles_command_on_one_file_and_on_a_missing_path(tmp_path: Path) -> None:
    ok, lines = check_profiles_command(GOOD)
    assert ok and lines[0].startswith("terminal-lt100.yaml: OK")
    ok, lines = check_profiles_command(tmp_path / "nope")
    assert not ok and lines == [f"{tmp_path / 'nope'}: no such file or folder"]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    assert check_all(tmp_path) == [f"{tmp_path}: no *.yaml profiles found"]


def test_oversized_profile_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "terminal-lt100.yaml"
    path.write_text("# " + "x" * (300 * 1024) + "\n")
    with pytest.raises(ProfileError, match="over the 262144 limit"):
        load_profile(path)


def test_profile_parsed_from_text_equals_loaded_profile() -> None:
    assert firmware_profiles.parse_profile(GOOD.read_text(), "x.yaml") == load_profile(GOOD)
    assert isinstance(load_profile(GOOD), FirmwareProfile)
