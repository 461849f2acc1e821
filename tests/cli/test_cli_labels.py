"""`labfleet labels` as a technician runs it: a delivery imported from a file, its labels printed to a PDF
whose QR codes decode to exactly that delivery's devices; a bad option is a message and exit 1."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.cli.test_cli import env, run  # noqa: F401  (env is a fixture)
from tests.csvgen import delivery_csv
from tests.labels.qr import decode_pdf, need_tools, pdf_text


def test_labels_of_a_delivery_from_the_cli(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    need_tools()
    run(env, "db", "upgrade")
    run(env, "seed", "demo")
    csv = tmp_path / "delivery.csv"
    csv.write_text(delivery_csv(7, school_code="north-primary", room="Classroom 1", prefix="CLI"))
    run(env, "import", "devices", str(csv))
    exported = tmp_path / "audit.csv"
    run(env, "audit", "export", "--out", str(exported))
    lines = [
        line for line in exported.read_text(encoding="utf-8-sig").splitlines() if "import.devices" in line
    ]
    assert len(lines) == 1
    delivery = lines[0].split(",")[1]  # columns: seq, id, at, actor, action, ...
    assert delivery.isdigit()

    out = tmp_path / "labels.pdf"
    proc = run(
        env, "labels", "--delivery", delivery, "--layout", "2x7", "--content", "tag", "--out", str(out)
    )
    assert "7 labels, 1 page (2x7)" in proc.stdout
    found = decode_pdf(out.read_bytes(), tmp_path)
    assert Counter(f.text for f in found) == Counter(f"CLI-TAG-{i:06d}" for i in range(1, 8))
    assert "CLI-000003" in pdf_text(out.read_bytes(), tmp_path)

    one = tmp_path / "one.pdf"
    run(
        env,
        "labels",
        "--serial",
        "CLI-000002",
        "--layout",
        "roll50x30",
        "--base-url",
        "https://lf.example",
        "--out",
        str(one),
    )
    (tmp_path / "one").mkdir()
    [code] = decode_pdf(one.read_bytes(), tmp_path / "one")
    assert re.fullmatch(r"https://lf\.example/devices/[0-9]+", code.text), code

    bad = run(env, "labels", "--school", "1", "--layout", "4x10", "--out", str(tmp_path / "no.pdf"), ok=False)
    assert bad.returncode == 1 and "layout must be one of 3x8, 2x7, roll50x30" in bad.stderr
    assert not (tmp_path / "no.pdf").exists()
