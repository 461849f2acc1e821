"""deploy/systemd/: each unit passes `systemd-analyze verify` (Debian: the `systemd` package) with no
warning about the unit, runs as a dedicated user with a restart policy and the hardening options, and its
ExecStart is a command line the `labfleet` CLI accepts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.main import app as cli_app
from tests.conftest import need_external

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
NAMES = ("labfleet-serve.service", "labfleet-ingest@.service", "labfleet-agent.service")
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
    "RestrictAddressFamilies=",
)
INSTALLED_BIN = "/opt/labfleet/.venv/bin/labfleet"


def exec_start(name: str) -> list[str]:
    line = next(ln for ln in (UNITS / name).read_text().splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


@pytest.mark.parametrize("name", NAMES)
def test_a_unit_runs_as_its_own_user_restarts_and_is_hardened(name: str) -> None:
    text = (UNITS / name).read_text()
    user = re.search(r"^User=(\S+)$", text, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"^Restart=(on-failure|always)$", text, re.MULTILINE)
    for option in HARDENING:
        assert re.search(rf"^{re.escape(option)}", text, re.MULTILINE), option
    assert exec_start(name)[0] == INSTALLED_BIN


@pytest.mark.parametrize("name", NAMES)
def test_the_exec_start_is_a_command_the_cli_accepts(name: str) -> None:
    args = [re.sub(r"\$\{\w+\}", "x", a).replace("%i", "0") for a in exec_start(name)[1:]]
    done = CliRunner().invoke(cli_app, [*args, "--help"])
    assert done.exit_code == 0, done.output


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        need_external("systemd-analyze (Debian package systemd)")
    labfleet = Path(sys.executable).with_name("labfleet")
    assert labfleet.exists()
    paths = []
    for name in NAMES:
        # verify checks that ExecStart's binary exists: point it at this checkout's, and instantiate ingest@.
        text = (UNITS / name).read_text().replace(INSTALLED_BIN, str(labfleet))
        target = tmp_path / name.replace("@.", "@0.")
        target.write_text(text)
        paths.append(str(target))
    done = subprocess.run(
        [str(analyze), "verify", *paths], capture_output=True, text=True, check=False, timeout=60
    )
    about_ours = [ln for ln in (done.stdout + done.stderr).splitlines() if str(tmp_path) in ln]
    assert done.returncode == 0 and not about_ours, done.stdout + done.stderr
