"""Generates delivery CSVs for tests and benchmarks."""

from __future__ import annotations

from fleet.services.imports import DEVICE_COLUMNS


def delivery_csv(
    n: int,
    *,
    school_code: str = "school-a",
    room: str = "Room 1",
    vendor: str = "EduTech",
    model_number: str = "LT-100",
    prefix: str = "DLV",
) -> str:
    lines = [",".join(DEVICE_COLUMNS)]
    for i in range(1, n + 1):
        lines.append(
            f"{prefix}-{i:06d},{prefix}-TAG-{i:06d},{vendor},{model_number},{school_code},{room},received,"
            f"PO-2026-{1 + i // 1000:03d},2026-08-{1 + i % 28:02d},329.00,AI education grant,"
            f"{'leased' if i % 7 == 0 else 'owned'}"
        )
    return "\n".join(lines) + "\n"
