"""`labfleet rollout ...`, `labfleet artifacts ...` and `labfleet profiles check` as a user runs them."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import env, run  # noqa: F401  (env is a fixture)


def test_rollout_lifecycle_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    env = {**env, "LABFLEET_ROLLOUTS__ARTIFACT_DIR": str(tmp_path / "artifacts")}
    run(env, "seed", "demo")
    assert "imported" in run(env, "artifacts", "import").stdout
    assert "0 imported" in run(env, "artifacts", "import").stdout  # idempotent: content-addressed
    assert "terminal-lt100" in run(env, "artifacts", "list").stdout
    out = run(env, "rollout", "create", "--model", "1", "--version", "1.2.0", "--name", "lt100-autumn",
              "--canary", "3", "--strategy", "percent", "--percents", "50,100").stdout
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


def test_profiles_check_passes_on_shipped_profiles_and_names_the_broken_key(env: dict[str, str],  # noqa: F811
                                                                           tmp_path: Path) -> None:
    ok = run(env, "profiles", "check").stdout
    assert "terminal-lt100.yaml: OK" in ok
    broken = tmp_path / "terminal-lt100.yaml"
    text = (Path(__file__).resolve().parents[2] / "firmware_profiles" / "terminal-lt100.yaml").read_text()
    broken.write_text(text.replace("sha256: 7e53e5b6", "sha256: zz53e5b6", 1))
    bad = run(env, "profiles", "check", str(broken), ok=False)
    assert bad.returncode == 1 and "terminal-lt100.yaml: versions[1].sha256" in bad.stderr
