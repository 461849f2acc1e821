"""`labfleet rollout ...`, `labfleet artifacts ...` and `labfleet profiles check` as a user runs them."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cli.test_cli import env, run  # noqa: F401  (env is a fixture)


def test_rollout_lifecycle_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    env = {**env, "LABFLEET_ROLLOUTS__ARTIFACT_DIR": str(tmp_path / "artifacts")}
    run(env, "seed", "demo")
    assert "imported" in run(env, "artifacts", "import").stdout
    assert "0 imported" in run(env, "artifacts", "import").stdout  # idempotent: content-addressed
    assert "terminal-lt100" in run(env, "artifacts", "list").stdout
    out = run(
        env,
        "rollout",
        "create",
        "--model",
        "1",
        "--version",
        "1.2.0",
        "--name",
        "lt100-autumn",
        "--canary",
        "3",
        "--strategy",
        "percent",
        "--percents",
        "50,100",
    ).stdout
    assert "rollout 1" in out and "running" in out
    shown = run(env, "rollout", "show", "1", "--devices").stdout
    assert "canary" in shown and "pending" in shown
    assert "lt100-autumn" in run(env, "rollout", "list").stdout
    assert "paused" in run(env, "rollout", "pause", "1").stdout
    assert "running" in run(env, "rollout", "resume", "1").stdout
    assert "aborted" in run(env, "rollout", "abort", "1").stdout
    bad = run(env, "rollout", "resume", "1", ok=False)
    assert bad.returncode == 1 and "aborted" in bad.stderr
    missing = run(env, "rollout", "create", "--model", "1", "--version", "9.9.9", ok=False)
    assert missing.returncode == 1 and "9.9.9" in missing.stderr


def test_profiles_check_passes_on_shipped_profiles_and_names_the_broken_key(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    ok = run(env, "profiles", "check").stdout
    assert "terminal-lt100.yaml: OK" in ok
    broken = tmp_path / "terminal-lt100.yaml"
    text = (Path(__file__).resolve().parents[2] / "firmware_profiles" / "terminal-lt100.yaml").read_text()
    broken.write_text(text.replace("sha256: 7e53e5b6", "sha256: zz53e5b6", 1))
    bad = run(env, "profiles", "check", str(broken), ok=False)
    assert bad.returncode == 1 and "terminal-lt100.yaml: versions[1].sha256" in bad.stderr


def test_rollout_tour_takes_names_shows_progress_and_explains_mistakes(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    env = {**env, "LABFLEET_ROLLOUTS__ARTIFACT_DIR": str(tmp_path / "artifacts"), "COLUMNS": "160"}
    run(env, "seed", "demo")
    shipped = (
        Path(__file__).resolve().parents[2] / "firmware_profiles" / "artifacts" / "terminal-lt100-1.2.0.img"
    )
    # Uploading one image: it must be the bytes its profile version declares.
    added = run(
        env, "artifacts", "add", str(shipped), "--profile", "terminal-lt100", "--version", "1.2.0"
    ).stdout
    assert "stored: terminal-lt100 1.2.0, 562 bytes" in added
    wrong = run(
        env, "artifacts", "add", str(shipped), "--profile", "terminal-lt100", "--version", "1.1.0", ok=False
    )
    assert wrong.returncode == 1 and "declares 562 bytes with sha256 7e53e5b6" in wrong.stderr
    unknown = run(
        env, "artifacts", "add", str(shipped), "--profile", "terminal-lt100", "--version", "7.0", ok=False
    )
    assert "it lists 1.0.0, 1.1.0, 1.2.0" in unknown.stderr

    # Models by profile key, schools by code; groups are named after schools; the totals line and bars show.
    out = run(
        env,
        "rollout",
        "create",
        "--model",
        "terminal-lt100",
        "--version",
        "1.2.0",
        "--school",
        "north-primary",
        "--canary",
        "2",
    ).stdout
    assert "rollout 1 terminal-lt100 to 1.2.0" in out and "running" in out
    assert "school north-primary" in out and "0/" in out and "succeeded" in out
    assert "labfleet rollout show 1 --watch" in out
    busy = run(env, "rollout", "create", "--model", "1", "--version", "1.2.0", ok=False)
    assert busy.returncode == 1 and "rollout 1 of model terminal-lt100 is running" in busy.stderr
    nope = run(env, "rollout", "create", "--model", "LT100", "--version", "1.2.0", ok=False)
    assert nope.returncode == 1 and "models: 1 LT-100 (terminal-lt100)" in nope.stderr
    devices = run(env, "rollout", "show", "1", "--devices").stdout
    first = re.search(r"│ (\d+)\s+│ 1\s+│", devices)
    assert first, devices
    timeline = run(env, "rollout", "show", "1", "--device", first.group(1)).stdout
    assert "pending" in timeline and "group canary" in timeline
    stranger = run(env, "rollout", "show", "1", "--device", "99999", ok=False)
    assert stranger.returncode == 1 and "device 99999 is not in rollout 1" in stranger.stderr

    # The school's update policy: windows in words, caps in Mbit/s, unset options kept.
    pol = run(
        env,
        "rollout",
        "policy",
        "north-primary",
        "--window",
        "mon-fri 16:30-22:00",
        "--max-mbps",
        "20",
        "--max-concurrent",
        "4",
    ).stdout
    assert "mon-fri 16:30-22:00" in pol and "downloads at once: 4" in pol and "20.0 Mbit/s" in pol
    kept = run(env, "rollout", "policy", "north-primary", "--max-concurrent", "6").stdout
    assert "mon-fri 16:30-22:00" in kept and "downloads at once: 6" in kept
    badwin = run(env, "rollout", "policy", "north-primary", "--window", "weekends", ok=False)
    assert badwin.returncode == 2 and "DAYS HH:MM-HH:MM" in badwin.stderr
    aborted = run(env, "rollout", "abort", "1").stdout
    assert "aborted" in aborted and "told to drop it" in aborted
