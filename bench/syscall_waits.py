#!/usr/bin/env python3
"""Time spent inside chosen system calls, per command, from `perf script` output of a
`perf record -e syscalls:sys_enter_X,syscalls:sys_exit_X ...` (enter and exit paired per
thread): calls, total, mean, p50, p90, max in ms. Cheaper than `perf trace` or strace
(the kernel records only the few calls asked for).

    perf record -a -e syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync -o f.data -- sleep 4
    perf script -i f.data | bench/syscall_waits.py [COMM...]
"""
import re
import sys

LINE = re.compile(r"\s*(\S.*?)\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):")
want = set(sys.argv[1:])
open_ = {}
agg = {}
for line in sys.stdin:
    m = LINE.match(line)
    if not m:
        continue
    comm, tid, t, kind, call = m.group(1), m.group(2), float(m.group(3)), m.group(4), m.group(5)
    if want and comm not in want:
        continue
    if kind == "enter":
        open_[tid] = (call, t)
    elif tid in open_ and open_[tid][0] == call:
        _, t0 = open_.pop(tid)
        agg.setdefault((comm, call), []).append((t - t0) * 1000)
print(f"{'command':<10} {'syscall':<14} {'calls':>7} {'total ms':>9} {'mean ms':>8} {'p50 ms':>7} {'p90 ms':>7} {'max ms':>7}")
for (c, s), v in sorted(agg.items(), key=lambda kv: -sum(kv[1])):
    v.sort()
    n = len(v)
    print(f"{c:<10} {s:<14} {n:7d} {sum(v):9.1f} {sum(v) / n:8.3f} {v[n // 2]:7.3f} {v[min(n - 1, n * 9 // 10)]:7.3f} {v[-1]:7.3f}")
