#!/usr/bin/env python3
"""Draws issue 8's study (training demos × epochs × success) from the `study.tsv` that
`gpu-train.sh all` writes with STUDY_SUBSETS: Stack_D2 FP16 success against epochs, one line per
number of training demos, with Wilson 95 % intervals.

Plain SVG, standard library only.
Usage: python3 benchmarks/study_plot.py STUDY.tsv OUT.svg [START] [TITLE]
START (e.g. 18/50): the starting checkpoint's successes over the same seeds, drawn at epoch 0.
"""
import csv
import sys

from training_chain_plot import legend, point, save, wilson

COLOURS = ["#c0392b", "#d68910", "#2471a3", "#1e8449", "#7d3c98"]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    start = tuple(int(x) for x in sys.argv[3].split("/")) if len(sys.argv) > 3 and sys.argv[3] else None
    title = sys.argv[4] if len(sys.argv) > 4 else "Stack_D2 success (FP16) by training demos and epochs"
    rows = [r for r in csv.DictReader(open(src), delimiter="\t") if r["successes"]]
    if not rows:
        sys.exit(f"{src}: no benched cells")
    by_demos = {}
    for r in rows:
        by_demos.setdefault(int(r["demos"]), []).append((int(r["epoch"]), int(r["successes"]), int(r["episodes"])))
    w, h, ml, mr, mt, mb = 560, 340, 60, 150, 30, 50
    emax = max(e for v in by_demos.values() for e, _, _ in v)
    ymax = max(0.5, max(wilson(k, n)[1] for v in by_demos.values() for _, k, n in v))
    ymax = min(1.0, round(ymax + 0.05, 1))
    sx = lambda e: ml + (w - ml - mr) * (e + 0.5) / (emax + 1)
    sy = lambda y: h - mb - (h - mt - mb) * y / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{(w - mr + ml) / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>']
    for i in range(0, int(ymax * 10) + 1):
        y = i / 10
        out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{sy(y)}" y2="{sy(y)}" stroke="#ddd"/>')
        out.append(f'<text x="{ml - 6}" y="{sy(y) + 4}" text-anchor="end">{int(round(y * 100))} %</text>')
    for e in range(0, emax + 1):
        out.append(f'<text x="{sx(e)}" y="{h - mb + 16}" text-anchor="middle">{e}</text>')
    out.append(f'<text x="{(w - mr + ml) / 2}" y="{h - 12}" text-anchor="middle">epochs over the demos</text>')
    out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{sy(0)}" y2="{sy(0)}" stroke="black"/>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{sy(0)}" stroke="black"/>')
    for i, (demos, cells) in enumerate(sorted(by_demos.items())):
        colour = COLOURS[i % len(COLOURS)]
        # Side by side within an epoch, so the intervals do not hide each other.
        dx = (i - (len(by_demos) - 1) / 2) * 6
        pts = []
        for e, k, n in sorted(cells):
            lo, hi = wilson(k, n)
            x = sx(e) + dx
            point(out, x, sy(k / n), sy(lo), sy(hi), colour, f"{demos} demos, epoch {e}: {k}/{n}")
            pts.append(f"{x},{sy(k / n)}")
        out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" stroke-dasharray="4 3"/>')
        legend(out, w - mr + 16, mt + 14 + 16 * i, colour, f"{demos} demos")
    if start:
        k, n = start
        lo, hi = wilson(k, n)
        point(out, sx(0), sy(k / n), sy(lo), sy(hi), "#555", f"the starting model: {k}/{n}")
        legend(out, w - mr + 16, mt + 14 + 16 * len(by_demos), "#555", f"start ({k}/{n})")
    save(out, dst)


if __name__ == "__main__":
    main()
