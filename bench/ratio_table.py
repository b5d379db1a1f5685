#!/usr/bin/env python3
"""Turns smtp_accept.py JSON lines into a Markdown table: per (size, sessions) the median
rate and latencies of Postern and Postfix from the same run, and the rate ratio."""
import collections
import json
import statistics
import sys

rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["size"], r["c"], r["label"])].append(r)
keys = sorted({(s, c) for (s, c, _) in rows})
print("| size | sessions | Postern msg/s | Postfix msg/s | ratio | Postern p50/p99 ms | Postfix p50/p99 ms |")
print("| --- | --- | --- | --- | --- | --- | --- |")
med = lambda rs, k: statistics.median([r[k] for r in rs if r.get(k) is not None] or [0])  # noqa: E731
for s, c in keys:
    pn, pf = rows.get((s, c, "postern"), []), rows.get((s, c, "postfix"), [])
    a, b = med(pn, "rate"), med(pf, "rate")
    ratio = "%.2f" % (a / b) if b else "-"
    print("| %d KB | %d | %s | %s | %s | %s / %s | %s / %s |" % (s // 1024, c, a, b, ratio, med(pn, "p50_ms"),
          med(pn, "p99_ms"), med(pf, "p50_ms"), med(pf, "p99_ms")))
