#!/usr/bin/env python3
"""Memory per idle IMAP connection: open N connections that each LOGIN and SELECT INBOX,
then leave them idle, and compare the sum of PSS over the server's processes before and
after (bench/peer/benchlib.py's sampler). Prints one RESULT line and appends one JSON line
({"bench": "idle_conns", ...}) to --json-out.

Connections come from --source-ips loopback addresses (127.0.3.1, 127.0.3.2, ...) in turn,
because Dovecot allows only mail_max_userip_connections (10) sessions per user and client
address. Logins run --login-concurrency at a time; the whole run is bounded by --timeout,
and RLIMIT_NOFILE is raised to what N needs.

    bench/idle_imap.py --port 10143 --user benchbox --password benchbox-pw -n 1000 \
        --mem-pidfile /run/dovecot/master.pid --label dovecot
"""
import argparse
import asyncio
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer"))
import benchlib  # noqa: E402


async def expect_tagged(reader, tag):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line.startswith(tag + b" "):
            if not line[len(tag) + 1:].startswith(b"OK"):
                raise RuntimeError(line.decode(errors="replace").strip())
            return


async def open_one(a, i, sem, conns, errors):
    async with sem:
        ip = "127.0.3.%d" % (i % a.source_ips + 1)
        try:
            r, w = await asyncio.open_connection(a.host, a.port, local_addr=(ip, 0))
        except OSError as e:
            errors.append(str(e))
            return
        try:
            await r.readline()
            w.write(b"a LOGIN %s %s\r\n" % (a.user.encode(), a.password.encode()))
            await expect_tagged(r, b"a")
            w.write(b"b SELECT INBOX\r\n")
            await expect_tagged(r, b"b")
            conns.append((r, w))
        except (ConnectionError, RuntimeError, OSError) as e:
            errors.append(str(e))
            w.close()


def sample_pss_mb(sampler, k=3):
    vals = []
    for _ in range(k):
        vals.append(sampler.sample()[1] / 1024)
        time.sleep(0.5)
    return statistics.median(vals)


async def run(a):
    sampler = benchlib.MemSampler(a.mem_pid, a.mem_pidfile, a.mem_match)
    before = sample_pss_mb(sampler)
    sem = asyncio.Semaphore(a.login_concurrency)
    conns, errors = [], []
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(open_one(a, i, sem, conns, errors) for i in range(a.n))), a.timeout)
    except asyncio.TimeoutError:
        errors.append("not all open within %s s" % a.timeout)
    open_s = time.monotonic() - t0
    await asyncio.sleep(a.settle)
    after = sample_pss_mb(sampler)
    nproc = sampler.sample()[2]
    for r, w in conns:
        w.write(b"z LOGOUT\r\n")
    for r, w in conns:
        w.close()
    await asyncio.sleep(0.5)
    return before, after, len(conns), errors, open_s, nproc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("-n", type=int, default=1000, help="connections to hold open")
    ap.add_argument("--source-ips", type=int, default=200, help="loopback client addresses to spread over")
    ap.add_argument("--login-concurrency", type=int, default=8)
    ap.add_argument("--settle", type=float, default=3, help="seconds idle before sampling")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--label", default="")
    ap.add_argument("--json-out", default=None)
    benchlib.add_mem_args(ap)
    a = ap.parse_args()
    if not 0 < a.n <= 20000 or not 0 < a.source_ips <= 250:
        ap.error("bounds: 0 < n <= 20000, 0 < source-ips <= 250")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    before, after, opened, errors, open_s, nproc = asyncio.run(run(a))
    per_kb = (after - before) * 1024 / opened if opened else None
    r = benchlib.emit(a.json_out, {"bench": "idle_conns", "label": a.label, "n": a.n, "open": opened,
                                   "failed": len(errors), "open_s": round(open_s, 2),
                                   "pss_before_mb": round(before, 1), "pss_after_mb": round(after, 1),
                                   "nproc_after": nproc, "kb_per_conn": round(per_kb, 1) if per_kb else None})
    if errors:
        print("  first error: %s" % errors[0])
    print("RESULT idle_conns label=%s open=%d/%d in %.1fs | PSS %.1f -> %.1f MB (%d processes) | %s KB per connection"
          % (a.label, opened, a.n, open_s, before, after, nproc, r["kb_per_conn"]))


if __name__ == "__main__":
    main()
