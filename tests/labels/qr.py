"""Read a printed label PDF back as a person would: rasterise each page (poppler's pdftoppm) and decode every
QR code on it (zxing-cpp), with where on the page (in mm) each code sits; pdftotext for the printed words."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import need_external

# 200 dpi: a 1 mm QR module is ~8 pixels, what a cheap office scanner gives; decoding stays fast.
DPI = 200
MM_PER_INCH = 25.4


@dataclass(frozen=True)
class Found:
    page: int  # from 0
    text: str
    x_mm: float  # the code's centre on the page
    y_mm: float


def need_tools() -> None:
    for tool in ("pdftoppm", "pdftotext", "pdfinfo"):
        if shutil.which(tool) is None:
            need_external(f"{tool} (Debian poppler-utils)")


def decode_pdf(pdf: bytes, workdir: Path) -> list[Found]:
    import zxingcpp
    from PIL import Image

    src = workdir / "labels.pdf"
    src.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", str(DPI), "-png", str(src), str(workdir / "page")], check=True, timeout=300
    )
    found = []
    pages = sorted(workdir.glob("page-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    for number, png in enumerate(pages):
        for code in zxingcpp.read_barcodes(Image.open(png), formats=zxingcpp.BarcodeFormat.QRCode):
            p = code.position
            xs = (p.top_left.x, p.top_right.x, p.bottom_left.x, p.bottom_right.x)
            ys = (p.top_left.y, p.top_right.y, p.bottom_left.y, p.bottom_right.y)
            scale = MM_PER_INCH / DPI
            found.append(Found(number, code.text, sum(xs) / 4 * scale, sum(ys) / 4 * scale))
    return found


def pdf_text(pdf: bytes, workdir: Path) -> str:
    src = workdir / "text.pdf"
    src.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-layout", str(src), "-"], capture_output=True, text=True, check=True, timeout=120
    ).stdout


def page_size_pts(pdf: bytes, workdir: Path) -> tuple[float, float]:
    src = workdir / "info.pdf"
    src.write_bytes(pdf)
    info = subprocess.run(
        ["pdfinfo", str(src)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    line = next(x for x in info.splitlines() if x.startswith("Page size:"))
    w, _x, h = line.split(":", 1)[1].split()[:3]
    return float(w), float(h)
