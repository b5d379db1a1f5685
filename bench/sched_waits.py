#!/usr/bin/env python3
"""Sums `perf sched timehist` output (one line per switch-in: time, cpu, task[tid], wait
time, scheduling delay, run time, in ms) per command: switches, CPU run time, off-CPU wait
(sleeping) and wake-up-to-run delay (waiting for a CPU). Reads the timehist text on stdin.

    perf sched timehist -i perf.data | bench/sched_waits.py [TOP]
"""
import re
import sys

LINE = re.compile(r"\s*[\d.]+\s+\[\d+\]\s+(.+?)\[[\d/]+\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
top = int(sys.argv[1]) if len(sys.argv) > 1 else 14
agg = {}
for line in sys.stdin:
    m = LINE.match(line)
    if not m:
        continue
    a = agg.setdefault(m.group(1).strip(), [0, 0.0, 0.0, 0.0])
    a[0] += 1
    a[1] += float(m.group(2))
    a[2] += float(m.group(3))
    a[3] += float(m.group(4))
print(f"{'command':<16} {'switches':>9} {'run ms':>9} {'wait ms':>10} {'sched delay ms':>15} {'delay/switch us':>16}")
for c, (n, w, d, r) in sorted(agg.items(), key=lambda kv: -kv[1][3])[:top]:
    print(f"{c:<16} {n:9d} {r:9.1f} {w:10.1f} {d:15.1f} {d / n * 1000:16.1f}")
