#!/usr/bin/env python3
"""Draws benchmarks/results/training-chain.svg from training-chain.csv: Stack_D2 FP16 success of
the shipped model's training chain against training samples seen, with Wilson 95 % intervals.

Plain SVG, so it needs nothing beyond Python's standard library.
Usage: python3 benchmarks/training_chain_plot.py
"""
import csv
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "results", "training-chain.csv")
DST = os.path.join(HERE, "results", "training-chain.svg")


def wilson(k, n, z=1.96):
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def point(out, x, y, lo, hi, colour, title=""):
    """A success rate at (x, y) with its interval from lo to hi (SVG coordinates)."""
    out.append(f'<line x1="{x}" x2="{x}" y1="{lo}" y2="{hi}" stroke="{colour}" stroke-width="1.5"/>')
    tip = f"<title>{title}</title>" if title else ""
    out.append(f'<circle cx="{x}" cy="{y}" r="4" fill="{colour}">{tip}</circle>' if tip else f'<circle cx="{x}" cy="{y}" r="4" fill="{colour}"/>')


def legend(out, x, y, colour, text):
    out.append(f'<circle cx="{x}" cy="{y}" r="4" fill="{colour}"/><text x="{x + 8}" y="{y + 4}">{text}</text>')


def save(out, dst):
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")
    print(f"wrote {dst}")


def main():
    rows = list(csv.DictReader(open(SRC)))
    w, h, ml, mr, mt, mb = 680, 360, 60, 80, 30, 50
    xmax = max(int(r["samples_seen"]) for r in rows) * 1.05
    ymax = 0.6
    sx = lambda x: ml + (w - ml - mr) * x / xmax
    sy = lambda y: h - mb - (h - mt - mb) * y / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w/2}" y="18" text-anchor="middle" font-size="13">Stack_D2 success (FP16, 200-step limit) along the training chain</text>']
    for i in range(0, 7):
        y = i * 0.1
        out.append(f'<line x1="{ml}" x2="{w-mr}" y1="{sy(y)}" y2="{sy(y)}" stroke="#ddd"/>')
        out.append(f'<text x="{ml-6}" y="{sy(y)+4}" text-anchor="end">{int(y*100)} %</text>')
    step = 500_000
    for i in range(0, int(xmax // step) + 1):
        x = i * step
        out.append(f'<text x="{sx(x)}" y="{h-mb+16}" text-anchor="middle">{x/1e6:.1f} M</text>')
    out.append(f'<text x="{(w+ml)/2}" y="{h-12}" text-anchor="middle">training samples seen (cumulative over leases)</text>')
    out.append(f'<line x1="{ml}" x2="{w-mr}" y1="{sy(0)}" y2="{sy(0)}" stroke="black"/>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{sy(0)}" stroke="black"/>')
    pts = []
    for i, r in enumerate(rows):
        x, k, n = int(r["samples_seen"]), int(r["successes"]), int(r["episodes"])
        lo, hi = wilson(k, n)
        colour = {"executed": "#c0392b", "intended-d4": "#1e8449"}.get(r["labels"], "#2471a3")
        shipped = "not shipped" not in r["stage"]
        point(out, sx(x), sy(k / n), sy(lo), sy(hi), colour if shipped else "#aaa")
        # Alternate above and below: the early points sit close together.
        dy = (-8 if i % 2 == 0 else 16) if k else -8 - 12 * (i % 2)
        if shipped:  # the branch's points sit among the chain's: their labels would overlap
            out.append(f'<text x="{sx(x)+5}" y="{sy(k/n)+dy}" font-size="9">{k}/{n}, {int(r["demos_so_far"])//1000} k demos</text>')
        # A branch that was not shipped is not part of the line: the next lease started from
        # the shipped weights before it.
        if shipped:
            pts.append(f"{sx(x)},{sy(k/n)}")
    out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="#888" stroke-dasharray="4 3"/>')
    legend(out, ml + 20, mt + 14, "#c0392b", "executed (noisy) labels")
    legend(out, ml + 20, mt + 30, "#2471a3", "intended labels, Stack_D4 + Stack_Lang demos")
    legend(out, ml + 20, mt + 46, "#1e8449", "intended labels, Stack_D4 demos only")
    legend(out, ml + 20, mt + 62, "#aaa", "a branch that was not shipped")
    save(out, DST)


if __name__ == "__main__":
    main()
