"""promtool check config, check rules and test rules over monitoring/prometheus (a real promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import need_external
from tests.monitoring.promql_names import (
    PROM_DIR,
    PROMTOOL_TESTS,
    RULE_FILES,
    alerts,
    dashboard_exprs,
    substitute_grafana_vars,
)

pytestmark = pytest.mark.external
# 60 s: the whole rule test suite takes about a second; a hang means promtool is broken.
PROMTOOL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        need_external("promtool (Debian package prometheus)")
    assert path is not None
    return path


def _run(promtool: str, *args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S, check=False
    )


def test_promtool_check_config(promtool: str) -> None:
    result = _run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules(promtool: str) -> None:
    assert RULE_FILES
    result = _run(promtool, "check", "rules", *(str(p) for p in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    assert PROMTOOL_TESTS
    result = _run(promtool, "test", "rules", *(p.name for p in PROMTOOL_TESTS), cwd=PROM_DIR / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule_so_the_checks_above_mean_something(
    promtool: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - record: a:b:c\n        expr: sum(rate(x[1m])\n")
    assert _run(promtool, "check", "rules", str(bad)).returncode != 0


def test_every_alert_has_a_firing_and_a_not_firing_promtool_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in PROMTOOL_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a not-firing case"


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool has no offline query parser, so each dashboard query becomes a recording rule to check.
    checked = [
        {"record": f"dashboard:check:q{i}", "expr": substitute_grafana_vars(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    assert checked
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": checked}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
