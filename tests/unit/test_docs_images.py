"""Every picture the README and the docs show exists, every guide screenshot is shown somewhere, and a guide
page shows the console in its own language (`guide-*.zh.png` on the .zh.md pages, the English ones on the
others)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.(?:png|jpe?g|svg|gif))\)|\]\((docs/images/[^)\s]+)\)")


def pictures(md: Path) -> list[Path]:
    found = []
    for m in IMAGE.finditer(md.read_text(encoding="utf-8")):
        ref = m.group(1) or m.group(2)
        if not re.match(r"^[a-z]+://", ref):
            found.append((md.parent / ref).resolve())
    return found


def markdown() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_referenced_image_exists() -> None:
    missing = [
        f"{md.relative_to(ROOT)}: {p.relative_to(ROOT)}"
        for md in markdown()
        for p in pictures(md)
        if not p.exists()
    ]
    assert not missing, missing
    assert any(p.name.startswith("guide-") for md in markdown() for p in pictures(md))


def test_every_guide_screenshot_is_shown_and_in_the_pages_language() -> None:
    shown = {p for md in markdown() for p in pictures(md)}
    orphans = sorted(
        p.name for p in (ROOT / "docs" / "images").glob("guide-*.png") if p.resolve() not in shown
    )
    assert not orphans, f"screenshots no page shows: {orphans}"
    wrong = []
    for md in sorted((ROOT / "docs" / "guide").glob("*.md")):
        zh_page = md.name.endswith(".zh.md")
        for p in pictures(md):
            if p.name.startswith("guide-") and p.name.endswith(".zh.png") != zh_page:
                wrong.append(f"{md.name}: {p.name}")
    assert not wrong, f"a guide page showing the console in the other language: {wrong}"
