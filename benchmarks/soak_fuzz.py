"""Soak every fuzz target for minutes with fresh seeds: the MQTT payload decoders, the serial codecs,
the CSV and XLSX import parser (tests/fuzz/targets.py), and the API through schemathesis
(benchmarks/schemathesis_run.py, as admin, auditor and a school-scoped technician). CI runs each of them
bounded and seeded (`make test`: tests/fuzz/test_fuzz.py and tests/api/test_openapi_contract.py); this is
the long variant.

    .venv/bin/python benchmarks/soak_fuzz.py                       # 10 minutes in all
    .venv/bin/python benchmarks/soak_fuzz.py --minutes 2 --api-examples 5 --seed 7   # shorter, reproducible

The API run goes first; each in-process target then gets an equal share of the time left and runs chunks
of examples, each chunk from a new seed drawn from `--seed`. A failure is recorded with its chunk seed
(rerun that seed with tests.fuzz.targets.run to reproduce it) and the soak goes on. The same-run baseline
per target is the rate of generating its inputs with a check that does nothing: `ratio` is the target's
rate over that, so a slower parser shows as a lower ratio whatever the machine's load. Ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import TARGETS, Counted, Target, run

# Examples per chunk: each chunk has its own seed, so one failure costs at most a chunk of the soak.
CHUNK = 200
# Share of each target's slice spent measuring the generation-only baseline.
BASELINE_SHARE = 0.05


def _noop(example: Any) -> None:
    return None


def soak(target: Target, seconds: float, rng: random.Random) -> dict[str, Any]:
    """Run `target` for about `seconds`; examples, failures (with their seeds), rate and baseline ratio."""
    out: dict[str, Any] = {"examples": 0, "failures": 0, "failed_seeds": [], "errors": []}
    base = Counted(_noop)
    started = time.perf_counter()
    while base.examples == 0 or time.perf_counter() - started < seconds * BASELINE_SHARE:
        run(target, examples=CHUNK // 4, seed_=rng.randrange(2**32), check=base)
    base_s = time.perf_counter() - started
    counted = Counted(target.check)
    started = time.perf_counter()
    deadline = started + seconds * (1 - BASELINE_SHARE)
    while counted.examples == 0 or time.perf_counter() < deadline:  # at least one chunk, however late
        chunk_seed = rng.randrange(2**32)
        try:
            run(target, examples=CHUNK, seed_=chunk_seed, check=counted)
        except Exception as err:  # noqa: BLE001 - a failure is the finding: record it and keep soaking
            out["failures"] += 1
            out["failed_seeds"].append(chunk_seed)
            out["errors"].append(
                f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            )
    elapsed = time.perf_counter() - started
    out["examples"] = counted.examples
    out["seconds"] = round(elapsed, 1)
    out["per_second"] = round(counted.examples / elapsed, 1) if elapsed else None
    base_rate = base.examples / base_s if base_s else 0
    out["baseline_per_second"] = round(base_rate, 1)
    out["ratio"] = round(out["per_second"] / base_rate, 3) if base_rate and out["per_second"] else None
    return out


def api_soak(examples: int, seed: int, seconds: float, exclude_checks: str) -> dict[str, Any]:
    """schemathesis over every operation, all checks, three roles (its own script), `examples` each."""
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "schemathesis_run.py"),
            "--max-examples",
            str(examples),
            "--seed",
            str(seed),
            "--max-time",
            str(max(1, int(seconds / 3))),  # three roles share the API's time
            *(["--exclude-checks", exclude_checks] if exclude_checks else []),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    try:
        summary = json.loads(lines[-1]) if lines else {}
    except ValueError:
        summary = {}
    roles = ("admin", "auditor", "technician")
    return {
        "examples": sum(summary.get(f"{r}_test_cases") or 0 for r in roles),
        "failures": sum(summary.get(f"{r}_failures") or 0 for r in roles) + (proc.returncode != 0),
        "seconds": round(time.perf_counter() - started, 1),
        "max_examples_per_operation": examples,
        "ok": bool(summary.get("ok")) and proc.returncode == 0,
        "excluded_checks": exclude_checks,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="the whole soak, API run included")
    ap.add_argument("--seed", type=int, default=None, help="master seed (default: random, printed)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated in-process targets")
    ap.add_argument(
        "--api-examples",
        type=int,
        default=100,
        help="schemathesis examples per operation (0: no API run), within the API's share of the time",
    )
    ap.add_argument("--api-share", type=float, default=0.4, help="share of the soak for the API run")
    args = ap.parse_args(argv)
    master = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(master)
    names = [n for n in args.targets.split(",") if n]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        ap.error(f"unknown targets {unknown}; there are {sorted(TARGETS)}")
    load_before = os.getloadavg()
    started = time.perf_counter()
    total = args.minutes * 60
    results: dict[str, Any] = {}
    if args.api_examples > 0:
        results["api"] = api_soak(
            args.api_examples,
            rng.randrange(2**31),
            total * args.api_share,
            "",
        )
        print(f"api: {results['api']}", flush=True)
    left = max(total - (time.perf_counter() - started), 1.0)
    for i, name in enumerate(names):
        share = left / (len(names) - i)
        t0 = time.perf_counter()
        results[name] = soak(TARGETS[name], share, rng)
        left -= time.perf_counter() - t0
        print(f"{name}: {results[name]}", flush=True)
    failures = sum(r["failures"] for r in results.values())
    print(
        json.dumps(
            {
                "benchmark": "soak_fuzz",
                "seed": master,
                "minutes": round((time.perf_counter() - started) / 60, 2),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "examples": {name: r["examples"] for name, r in results.items()},
                "failures": {name: r["failures"] for name, r in results.items()},
                "baseline_ratio": {name: r.get("ratio") for name, r in results.items() if name != "api"},
                "failed_seeds": {
                    name: r["failed_seeds"] for name, r in results.items() if r.get("failed_seeds")
                },
                "ok": failures == 0,
            }
        )
    )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
