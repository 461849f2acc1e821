"""Print a report's HTML page to PDF: headless Chromium (~1.5 CPU-s to start, then ~2.5-3.5 CPU-s per 1,000
ten-column table rows, untagged) or WeasyPrint (~12-16 CPU-s per 1,000 rows, too slow for the 10,000-device
year's tables).

Both print the same markup as format=html: A4, `@page` margin boxes for the running header and page numbers,
`thead` repeated on continued pages. Chromium's PDF backend (Skia) embeds CFF-outline fonts such as
Debian's Noto Sans CJK only as nameless Type 3 glyphs, so the CJK face is subset to the report's characters,
converted to TrueType outlines (fontTools) and given to the page as an `@font-face`: the PDF then embeds a
named CID TrueType subset (`pdffonts`: NotoSansCJKsc-Regular) and the text stays extractable.

The engine: `LABFLEET_REPORTS__PDF_ENGINE=auto|chromium|weasyprint` (auto: Chromium when installed, else
WeasyPrint); the browser is `LABFLEET_REPORTS__CHROMIUM_PATH` or `chromium` on PATH. The browser runs with no
network and a fresh profile, in its own process group, killed by pid after `CHROMIUM_TIMEOUT_S`.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from fleet.errors import FeatureUnavailable

ENGINES = ("auto", "chromium", "weasyprint")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_TIMEOUT_S = 300.0
INSTALL_HINT = (
    "PDF reports need Chromium (Debian: apt-get install chromium) or WeasyPrint (pip install "
    "'labfleet[reports]'). format=html always works."
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-pdf-header-footer",  # the page's own @page margin boxes are the header and footer
    # No tagged (structure-tree) PDF: the tags were one StructElem per table cell, 14x the file size
    # (500 rows: 1.76 MB vs 126 KB) and ~2 CPU-s per 1,000 rows of accessibility-tree work.
    "--disable-pdf-tagging",
    # No crash reporter: its handler daemonises into its own session, so the group kill misses it, and it
    # kept the browser's stderr open, so a read to end of file waited until the timeout.
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--proxy-server=127.0.0.1:9",  # no network: the page is self-contained
    "--proxy-bypass-list=<-loopback>",
)


def engine() -> str:
    """The configured engine (validated like the settings field)."""
    value = os.environ.get("LABFLEET_REPORTS__PDF_ENGINE", "auto").strip().lower() or "auto"
    return value if value in ENGINES else "auto"


def chromium_path() -> str | None:
    configured = os.environ.get("LABFLEET_REPORTS__CHROMIUM_PATH", "").strip()
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _weasyprint() -> Any:
    try:
        from weasyprint import HTML
    except (ImportError, OSError):  # OSError: the Pango libraries are missing
        return None
    return HTML


def unavailable() -> FeatureUnavailable:
    return FeatureUnavailable(
        INSTALL_HINT,
        details={
            "install": "apt-get install chromium, or pip install 'labfleet[reports]'",
            "alternative": "format=html",
        },
    )


def print_pdf(page: str, cjk_font: str | None) -> bytes:
    """The HTML page as PDF by the configured engine; 501 (FeatureUnavailable) naming what to install."""
    chosen = engine()
    browser = chromium_path() if chosen in ("auto", "chromium") else None
    if browser is not None:
        if cjk_font is not None and not _has_fonttools():
            raise unavailable()  # the CJK face is embedded through fontTools, part of the `reports` extra
        return chromium_pdf(browser, page, cjk_font)
    weasy = _weasyprint() if chosen in ("auto", "weasyprint") else None
    if weasy is None:
        raise unavailable()
    return bytes(weasy(string=page).write_pdf())


def _has_fonttools() -> bool:
    try:
        import fontTools.subset  # noqa: F401
    except ImportError:
        return False
    return True


def _face_index(path: str) -> int:
    """The Simplified-Chinese sans face of a font collection (0 for a single font)."""
    if not path.lower().endswith((".ttc", ".otc")):
        return 0
    from fontTools.ttLib import TTCollection

    faces = TTCollection(path, lazy=True).fonts
    names = [str(f["name"].getDebugName(1) or "") for f in faces]
    for i, name in enumerate(names):
        if name.endswith(" SC") and "Mono" not in name:
            return i
    return 0


def truetype_subset(path: str, text: str) -> tuple[bytes, str]:
    """The font at `path` cut down to the glyphs of `text`, with TrueType outlines; and its family name."""
    from fontTools import subset
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import TTFont, newTable

    font = TTFont(path, fontNumber=_face_index(path), lazy=True)
    family = str(font["name"].getDebugName(1) or "LabFleet CJK")
    options = subset.Options()
    options.name_IDs = ["*"]
    options.notdef_outline = True
    options.hinting = False
    # No OpenType layout or vertical metrics: a report is horizontal text in table cells, and the closure over
    # Noto CJK's GSUB/GPOS is most of the subsetting time (one face: 0.64 -> 0.38 CPU-s).
    options.layout_features = []
    options.drop_tables += ["GSUB", "GPOS", "GDEF", "BASE", "vhea", "vmtx", "VORG"]
    sub = subset.Subsetter(options)
    sub.populate(text=text + "0123456789")
    sub.subset(font)
    if "CFF " in font:  # CFF outlines -> quadratic TrueType outlines (fontTools' otf2ttf recipe)
        order = font.getGlyphOrder()
        glyphs = font.getGlyphSet()
        quad = {}
        for name in order:
            pen = TTGlyphPen(glyphs)
            glyphs[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
            quad[name] = pen.glyph()
        glyf = newTable("glyf")
        glyf.glyphOrder = order
        glyf.glyphs = quad
        font["loca"] = newTable("loca")
        font["glyf"] = glyf
        del font["CFF "]
        if "VORG" in font:
            del font["VORG"]
        glyf.compile(font)
        hmtx = font["hmtx"]
        for name, g in quad.items():
            advance, _lsb = hmtx.metrics[name]
            hmtx.metrics[name] = (advance, getattr(g, "xMin", 0))
        maxp = newTable("maxp")
        maxp.tableVersion = 0x00010000
        for field in (
            "maxZones",
            "maxTwilightPoints",
            "maxStorage",
            "maxFunctionDefs",
            "maxInstructionDefs",
            "maxStackElements",
            "maxSizeOfInstructions",
            "maxComponentElements",
        ):
            setattr(maxp, field, 1 if field == "maxZones" else 0)
        font["maxp"] = maxp
        maxp.compile(font)
        post = font["post"]
        post.formatType = 2.0
        post.extraNames = []
        post.mapping = {}
        post.glyphOrder = order
        font.sfntVersion = "\x00\x01\x00\x00"
    buf = io.BytesIO()
    font.save(buf)
    return buf.getvalue(), family


def _with_font(page: str, cjk_font: str) -> str:
    """The page with the CJK face (and its bold sibling, when installed) as embedded TrueType subsets: a face
    Chromium would otherwise synthesise or take from fontconfig prints as Type 3 glyphs, slower and larger."""
    faces = []
    bold = cjk_font.replace("Regular", "Bold")
    for path, weight in ((cjk_font, "normal"), (bold, "bold")):
        if weight == "bold" and (bold == cjk_font or not os.path.exists(bold)):
            continue
        data, family = truetype_subset(path, page)
        b64 = base64.b64encode(data).decode()
        faces.append(
            f'@font-face{{font-family:"{family}";font-weight:{weight};'
            f'src:url(data:font/ttf;base64,{b64}) format("truetype")}}'
        )
    return page.replace("</head>", "<style>" + "".join(faces) + "</style></head>", 1)


def chromium_pdf(browser: str, page: str, cjk_font: str | None, timeout: float = CHROMIUM_TIMEOUT_S) -> bytes:
    """Chromium's print-to-PDF of the page, in a throwaway profile; the process group is killed on timeout."""
    if cjk_font is not None:
        page = _with_font(page, cjk_font)
    with tempfile.TemporaryDirectory(prefix="labfleet-pdf-") as tmp:
        src, out, log = Path(tmp) / "report.html", Path(tmp) / "report.pdf", Path(tmp) / "stderr.log"
        src.write_text(page, encoding="utf-8")
        argv = [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp}/profile",
            f"--print-to-pdf={out}",
            src.as_uri(),
        ]
        # stderr goes to a file and the browser process is waited for, not the pipe's end: a helper that
        # outlives the browser (and holds the descriptor) cannot keep the report waiting.
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"Chromium did not print the report within {timeout:.0f} s") from None
            finally:
                try:  # helpers (zygote, renderer) left behind by a crash: same group, same pid
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc.returncode != 0 or not out.exists():
            tail = log.read_bytes().decode(errors="replace")[-500:]
            raise RuntimeError(f"Chromium failed to print the report (exit {proc.returncode}): {tail}")
        return out.read_bytes()
