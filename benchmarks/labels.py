"""Benchmark: printing asset labels, the largest job (2,000 labels) and a delivery-sized one, on each layout.

What is measured is the print itself: the HTML page of the labels (segno QR codes) and the configured PDF
printer (`fleet.services.reports.pdf`: Chromium, WeasyPrint as fallback, Noto CJK subset embedded), as wall
time and as CPU time of this process and the printer's child processes. Baseline in the same run: one
label, which is mostly the printer's start-up. Chinese school names throughout. Prints the load average and
ends with one JSON line.

    .venv/bin/python benchmarks/labels.py [--counts 240 2000] [--layouts 3x8 2x7 roll50x30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from fleet.domain.asset_labels import SHEETS
from fleet.i18n import use_locale
from fleet.services.asset_labels import Label, _print, labels_html


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def labels(n: int) -> list[Label]:
    return [
        Label(
            i,
            f"HD-2026-{i:06d}",
            f"C02XK{i:07d}",
            "北京市海淀区第一实验小学",
            f"创客实验室 {i % 12 + 1}",
            f"https://fleet.example.edu.cn/devices/{i}",
        )
        for i in range(1, n + 1)
    ]


def run(n: int, layout: str) -> dict[str, float]:
    wall, cpu = time.perf_counter(), _cpu()
    pdf = _print(labels_html(labels(n), SHEETS[layout]))
    return {
        "labels": n,
        "pages": SHEETS[layout].pages(n),
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(_cpu() - cpu, 2),
        "pdf_kb": round(len(pdf) / 1024),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[240, 2000])
    ap.add_argument("--layouts", nargs="+", default=list(SHEETS), choices=list(SHEETS))
    args = ap.parse_args()
    out: dict[str, object] = {"benchmark": "labels", "load_before": os.getloadavg()[0]}
    with use_locale("zh_CN"):
        base = run(1, "3x8")
        print(f"baseline: 1 label   wall {base['wall_s']} s   cpu {base['cpu_s']} s")
        results = []
        for layout in args.layouts:
            for n in args.counts:
                r = run(n, layout)
                r["ratio_wall"] = round(r["wall_s"] / max(base["wall_s"], 0.01), 1)
                results.append({"layout": layout, **r})
                print(
                    f"{layout:>10} {n:>5} labels {r['pages']:>5} pages   wall {r['wall_s']:>6} s   "
                    f"cpu {r['cpu_s']:>6} s   {r['pdf_kb']} kB   x{r['ratio_wall']} baseline"
                )
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    out.update(baseline=base, results=results, load_after=load[0])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
