#!/usr/bin/env python3
"""Where an SMTP accept's wall time goes, seen by the client: C sessions (one process each,
blocking sockets, no pipelining), one message per connection, and for every message the
time of each step from the request's last byte sent to its reply's last byte read:
connect -> banner, EHLO, MAIL, RCPT, DATA -> 354, content + final dot -> 250, QUIT -> 221.

    smtp_steps.py --port 25 -n 4000 -c 8 [--size 4096] [--label Postern] [--json FILE]

Prints msg/s and, per step, p50 / p90 / p99 / mean in milliseconds and the step's share of
the mean total; with --json appends one JSON line with the same figures. Every socket has
a timeout; loopback only (the host must be 127.0.0.1 or ::1).
"""
import argparse
import json
import multiprocessing as mp
import socket
import sys
import time

STEPS = ["connect->banner", "EHLO", "MAIL", "RCPT", "DATA->354", "dot->250", "QUIT->221", "total"]


def read_reply(sock, buf):
    """Reads one whole (possibly multi-line) reply; returns (code, rest of buffer)."""
    while True:
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            if len(line) >= 4 and line[3:4] != b"-":
                return int(line[:3]), buf[nl + 1:]
            start = nl + 1
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk


def message(i, size):
    head = (f"From: <bench@example.test>\r\nTo: <bench@example.test>\r\n"
            f"Subject: steps {i}\r\nMessage-ID: <steps{i}.{time.time_ns()}@example.test>\r\n\r\n")
    line = b"x" * 76 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head.encode() + body + b".\r\n"


def worker(args, wid, count, out):
    res = {s: [] for s in STEPS}
    fails = 0
    ns = time.perf_counter_ns
    for k in range(count):
        msg = message(wid * 1_000_000 + k, args.size)
        try:
            steps = []
            t0 = ns()
            s = socket.create_connection((args.host, args.port), timeout=args.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code, buf = read_reply(s, b"")
            steps.append(ns() - t0)
            ok = code == 220
            for req, want in ((b"EHLO steps.example.test\r\n", 250),
                              (f"MAIL FROM:<{args.sender}>\r\n".encode(), 250),
                              (f"RCPT TO:<{args.to}>\r\n".encode(), 250),
                              (b"DATA\r\n", 354), (msg, 250), (b"QUIT\r\n", 221)):
                if not ok:
                    break
                s.sendall(req)
                # timed from the request handed to the kernel (the client's own copy of
                # a 4 KB message is not the server's time) to the reply's last byte
                t1 = ns()
                code, buf = read_reply(s, buf)
                steps.append(ns() - t1)
                ok = code == want
            s.close()
        except OSError:
            ok = False
        if not ok:
            fails += 1
            continue
        for name, d in zip(STEPS, steps):
            res[name].append(d)
        res["total"].append(ns() - t0)
    out.put((res, fails))


def pct(v, p):
    if not v:
        return 0.0
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("-c", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sender", default="bench@example.test")
    ap.add_argument("--to", default="bench@example.test")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("loopback only")
    q = mp.Queue()
    per = [a.n // a.c + (1 if i < a.n % a.c else 0) for i in range(a.c)]
    procs = [mp.Process(target=worker, args=(a, i, per[i], q)) for i in range(a.c)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    res = {s: [] for s in STEPS}
    fails = 0
    for _ in procs:
        r, f = q.get(timeout=a.timeout * max(per) + 60)
        fails += f
        for s in STEPS:
            res[s].extend(r[s])
    for p in procs:
        p.join()
    wall = time.monotonic() - t0
    ok = len(res["total"])
    mean_total = sum(res["total"]) / max(1, ok) / 1e6
    print(f"{a.label}: {ok} messages ({fails} failed) over {a.c} sessions in {wall:.2f} s: {ok / wall:.0f} msg/s")
    print(f"{'step':<16} {'p50':>7} {'p90':>7} {'p99':>7} {'mean':>7}  share of mean total (ms)")
    row = {"label": a.label, "c": a.c, "n": ok, "fails": fails, "msg_s": ok / wall, "steps": {}}
    for s in STEPS:
        v = res[s]
        mean = sum(v) / max(1, len(v)) / 1e6
        figs = [pct(v, 50), pct(v, 90), pct(v, 99), mean]
        share = mean / mean_total * 100 if mean_total else 0
        print(f"{s:<16} {figs[0]:7.3f} {figs[1]:7.3f} {figs[2]:7.3f} {figs[3]:7.3f}  {share:5.1f} %")
        row["steps"][s] = {"p50": figs[0], "p90": figs[1], "p99": figs[2], "mean": figs[3]}
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
