#!/usr/bin/env python3
"""Prints throughput and ratio to denokv_sqlite per workload from saved `cargo bench` output.

Usage: python3 ratios.py bench-output.txt   (several runs in one file are reported separately:
a run ends when a benchmark id repeats). Uses criterion's median time estimate.
"""
import re
import sys

UNIT = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
OPS = {"write1_64writers": 64}  # atomic writes per iteration; every other workload: 1
BASE = "denokv_sqlite"

runs, cur, name = [], None, None
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    m = re.match(r"^([a-z0-9_]+)/([a-z_\-]+)\s*(time:.*)?$", line)
    if m:
        name = (m.group(1), m.group(2))
        if m.group(3) is None:
            continue
        line = " " + m.group(3)
    t = re.match(r"^\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
    if t and name:
        if cur is None or name in cur:
            cur = {}
            runs.append(cur)
        cur[name] = float(t.group(1)) * UNIT[t.group(2)]
        name = None

for i, run in enumerate(runs, 1):
    print(f"run {i}")
    for group in dict.fromkeys(g for g, _ in run):
        rates = {e: OPS.get(group, 1) / s for (g, e), s in run.items() if g == group}
        base = rates.get(BASE)
        cells = [f"{e}={r:,.0f}/s" + (f" ({r / base:.2f}x)" if base else "") for e, r in rates.items()]
        print(f"  {group:18} " + "  ".join(cells))
