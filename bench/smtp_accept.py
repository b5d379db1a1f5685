#!/usr/bin/env python3
"""SMTP accept rate and 250 latency: N messages over C concurrent sessions against one
server; for every message the time from the end of DATA ('.') to the 250 reply is
recorded. Prints one RESULT line and appends a JSON line per repetition to --json-out.

Each session sends --per-conn messages (default 1: connect, EHLO, MAIL, RCPT, DATA, QUIT
per message, like smtp_load.py). Bounded by -n and --timeout; loopback only.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer"))
from smtp_load import make_message, read_reply  # noqa: E402


async def session(a, state, lat, tag):
    while state["next"] < a.n:
        try:
            r, w = await asyncio.open_connection(a.host, a.port)
        except OSError:
            state["fail"] += 1
            state["next"] += 1
            continue
        try:
            await read_reply(r)
            w.write(b"EHLO bench.example.test\r\n")
            await read_reply(r)
            sent = 0
            while state["next"] < a.n and (a.per_conn == 0 or sent < a.per_conn):
                i = state["next"]
                state["next"] += 1
                sent += 1
                msg = make_message(i, a.size, a.sender, a.to, tag)
                w.write(b"MAIL FROM:<%s>\r\n" % a.sender.encode())
                if (await read_reply(r))[0] != 250:
                    state["fail"] += 1
                    continue
                w.write(b"RCPT TO:<%s>\r\n" % a.to.encode())
                if (await read_reply(r))[0] != 250:
                    state["fail"] += 1
                    w.write(b"RSET\r\n")
                    await read_reply(r)
                    continue
                w.write(b"DATA\r\n")
                if (await read_reply(r))[0] != 354:
                    state["fail"] += 1
                    continue
                w.write(msg)
                await w.drain()
                t0 = time.monotonic()
                code, _ = await read_reply(r)
                if code == 250:
                    lat.append(time.monotonic() - t0)
                    state["ok"] += 1
                else:
                    state["fail"] += 1
            w.write(b"QUIT\r\n")
            await read_reply(r)
        except (ConnectionError, OSError, RuntimeError):
            state["fail"] += 1
        finally:
            w.close()


async def run_once(a, rep):
    state = {"next": 0, "ok": 0, "fail": 0}
    lat = []
    t0 = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(session(a, state, lat, "r%d" % rep) for _ in range(a.concurrency))), a.timeout)
    dt = time.monotonic() - t0
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None  # noqa: E731
    return {"bench": "smtp_accept", "label": a.label, "port": a.port, "n": a.n, "c": a.concurrency,
            "size": a.size, "rep": rep, "accepted": state["ok"], "failed": state["fail"],
            "rate": round(state["ok"] / dt, 1), "p50_ms": q(0.50), "p99_ms": q(0.99),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--from", dest="sender", default="loadgen@example.test")
    ap.add_argument("--to", default="bench@example.test")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--per-conn", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--label", default="")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    if not 0 < a.n <= 1_000_000 or not 0 < a.concurrency <= 1000:
        ap.error("bounds: 0 < n <= 1e6, 0 < c <= 1000")
    runs = []
    for rep in range(a.reps):
        r = asyncio.run(run_once(a, rep))
        runs.append(r)
        if a.json_out:
            with open(a.json_out, "a") as f:
                f.write(json.dumps(r) + "\n")
    med = lambda k: statistics.median([r[k] for r in runs if r[k] is not None] or [0])  # noqa: E731
    print("RESULT smtp_accept label=%s c=%d size=%d n=%d | msg/s median=%s (min %s max %s) | 250 latency ms p50=%s p99=%s | failed=%d"
          % (a.label, a.concurrency, a.size, a.n, med("rate"), min(r["rate"] for r in runs),
             max(r["rate"] for r in runs), med("p50_ms"), med("p99_ms"), sum(r["failed"] for r in runs)))


if __name__ == "__main__":
    main()
