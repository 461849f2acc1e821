"""The Chromium printer as a service uses it: a helper process that outlives the browser cannot hold a report
until the timeout, and the PDF carries no per-cell structure tree (it made long tables 14x larger and slower).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import time
from pathlib import Path

from fleet.services.reports import pdf as printer
from tests.conftest import need_external

# A stand-in for the browser (a third-party program): it starts a helper in its own session that keeps the
# browser's stderr open for a minute, as Chromium's crash reporter did, writes the PDF and exits.
FAKE_BROWSER = """#!/bin/sh
for arg in "$@"; do
  case "$arg" in --print-to-pdf=*) out="${arg#--print-to-pdf=}" ;; esac
done
setsid sh -c 'echo $$ > "$0"; exec sleep 60' "{pidfile}" &
printf '%%PDF-1.4 stand-in' > "$out"
exit 0
"""


def test_a_helper_that_outlives_the_browser_does_not_hold_the_report(tmp_path: Path) -> None:
    pidfile = tmp_path / "helper.pid"
    browser = tmp_path / "browser"
    browser.write_text(FAKE_BROWSER.replace("{pidfile}", str(pidfile)))
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    t0 = time.monotonic()
    try:
        data = printer.chromium_pdf(str(browser), "<html><body>x</body></html>", None, timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        for _ in range(50):  # the helper writes its pid as it starts
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        if pidfile.exists() and pidfile.read_text().strip():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert data.startswith(b"%PDF")
    assert elapsed < 10, f"the report waited {elapsed:.1f} s for a helper's stderr"


def test_chromium_prints_an_untagged_pdf_with_no_crash_reporter(tmp_path: Path) -> None:
    browser = printer.chromium_path()
    if browser is None or shutil.which("pdfinfo") is None:
        need_external("chromium and poppler-utils")
    assert browser is not None
    rows = "".join(f"<tr><td>AT-{i:04d}</td><td>School {i % 7}</td><td>{i}</td></tr>" for i in range(300))
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><table><thead><tr><th>Asset tag</th>"
        f"<th>School</th><th>Devices</th></tr></thead><tbody>{rows}</tbody></table></body></html>"
    )
    data = printer.chromium_pdf(browser, page, None)
    assert data.startswith(b"%PDF")
    # A tagged PDF has a structure tree with one element per cell (900 here); untagged, none.
    assert b"/StructTreeRoot" not in data and b"/StructElem" not in data
    assert "--disable-crash-reporter" in printer.CHROMIUM_FLAGS
