"""The OpenAPI document is the contract (issue 16, point 3): every route documents its error statuses with the
one error schema, times carry offsets, exports say text/csv; and a bounded schemathesis run finds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


async def test_every_api_operation_documents_its_errors_with_the_error_schema(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in ops.items():
            responses = op["responses"]
            for status in ("400", "401", "403", "422", "429", "500", "503"):
                assert responses[status]["content"]["application/json"]["schema"] == ERROR_REF, (path, method)
            if method in ("post", "put", "patch", "delete"):
                assert "409" in responses, (path, method)
            if "requestBody" in op:
                assert "413" in responses, (path, method)


async def test_times_carry_offsets_exports_are_files_and_booleans_are_not_integers(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    text = json.dumps(doc)
    assert '"format": "time"' not in text, (
        "a bare time is the school's wall-clock time: a pattern, not RFC 3339"
    )
    exports = doc["paths"]["/api/v1/exports/devices"]["get"]["responses"]["200"]["content"]
    assert "text/csv" in exports and "text/plain" not in exports
    period = doc["components"]["schemas"]["BellPeriodOut"]["properties"]["start_time"]
    assert period["type"] == "string" and "pattern" in period
    patch = doc["components"]["schemas"]["SchoolPatch"]["properties"]
    # A PATCH field its column cannot hold empty is not nullable in the contract (absent = unchanged).
    assert patch["uplink_mbps"]["type"] == "integer" and "anyOf" not in patch["uplink_mbps"]
    assert "default" not in patch["name"]


def test_a_bounded_schemathesis_run_finds_no_failure() -> None:
    """Every operation, `--checks all`, as admin, auditor and a school-scoped
    technician, against a loopback uvicorn; the longer run is benchmarks/schemathesis_run.py."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "schemathesis_run.py"),
            "--max-examples",
            "2",
            # The coverage and stateful phases take minutes under load; the longer run has them.
            "--phases",
            "examples,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] and all(summary[f"{r}_test_cases"] for r in ("admin", "auditor", "technician"))
