#!/usr/bin/env python3
"""How long normal clients wait while Postern holds many abusive connections.

A benchmark, not a test (tests/tests/abuse.rs is the test). It builds a throwaway
instance in a temporary directory from the shipped etc/ (free loopback ports, the built
binaries of target/release or target/debug, whichever is newer), adds two users,
starts master, then:

1. baseline: ROUNDS normal clients, one after another, each doing a whole SMTP
   transaction (EHLO, MAIL, RCPT, DATA, 250, QUIT), an IMAP LOGIN + SELECT + LOGOUT and a
   POP3 USER/PASS + STAT + QUIT, timed from connect to the last reply;
2. opens CONNECTIONS abusive connections, split evenly over smtpd, imapd and pop3d, from
   loopback addresses 127.0.2.1-250 (so smtpd's per-client limits are not what refuses
   them), half idle and half dribbling one byte a second without a line end; each waits
   for the greeting, so all are really served;
3. the same ROUNDS normal clients again, while the abusive connections stay open;
4. reports min / median / max of each protocol's time, with and without the load, and
   how many abusive connections were still open at the end; stops master.

Everything stays on loopback and ends by itself (each client has a 60 s timeout).

    bench/abuse.py [--connections 1000] [--rounds 20] [--bin-dir target/release]
                   [--max-use N]

--max-use sets max_use of the smtp, imap and pop3 services (default: as shipped). Note:
an event-driven daemon that has accepted max_use connections stops accepting but lives
on (and counts against maxproc) until its last connection ends, so with the shipped
maxproc = 4 and max_use = 100 more than ~400 long-lived connections to one service leave
no process to serve a newcomer until the abusive ones time out.
"""

import argparse
import asyncio
import imaplib
import os
import poplib
import resource
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = {"alice": "Alice-Bench-1", "bob": "Bob-Bench-1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postern(bin_dir, etc, *args, stdin=None):
    out = subprocess.run([os.path.join(bin_dir, "postern"), "-c", etc, *args],
                         input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("postern %s failed: %s" % (" ".join(args), out.stderr.strip()))
    return out


def make_instance(bin_dir, max_use):
    root = tempfile.mkdtemp(prefix="postern-abuse-")
    os.chmod(root, 0o755)
    etc = os.path.join(root, "etc")
    os.mkdir(etc)
    shutil.copy(os.path.join(ROOT, "etc/main.toml"), etc)
    ports = {k: free_port() for k in ("smtp", "submission", "pop3", "imap")}
    with open(os.path.join(ROOT, "etc/master.toml")) as f:
        master = f.read()
    for fixed, key in (("127.0.0.1:2525", "smtp"), ("127.0.0.1:2587", "submission"),
                       ("127.0.0.1:1110", "pop3"), ("127.0.0.1:1143", "imap")):
        master = master.replace(fixed, "127.0.0.1:%d" % ports[key])
    with open(os.path.join(etc, "master.toml"), "w") as f:
        f.write(master)
    settings = ["relayhost=[127.0.0.1]:%d" % free_port()]
    if max_use:
        settings += ["%s/inet.max_use=%d" % (s, max_use) for s in ("smtp", "imap", "pop3")]
    postern(bin_dir, etc, "config", "set", *settings)
    for user, pw in USERS.items():
        postern(bin_dir, etc, "user", "add", user, stdin=pw + "\n")
    mail = os.path.join(root, "var/mail")
    for user in USERS:
        for d in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(mail, user, d), exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postern:", mail], check=True)
    return root, etc, ports


def smtp_client(ports, n):
    with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=60) as s:
        s.ehlo("normal.test")
        msg = ("From: bob@example.test\r\nSubject: bench %d\r\n\r\nnormal client\r\n" % n).encode()
        s.sendmail("bob@example.test", ["alice@example.test"], msg)


def imap_client(ports, n):
    m = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=60)
    m.login("alice", USERS["alice"])
    m.select("INBOX")
    m.logout()


def pop3_client(ports, n):
    p = poplib.POP3("127.0.0.1", ports["pop3"], timeout=60)
    p.user("bob")
    p.pass_(USERS["bob"])
    p.stat()
    p.quit()


def normal_round(ports, n):
    """One normal client of each protocol; their durations in seconds (None: failed)."""
    times = {}
    for name, client in (("smtp", smtp_client), ("imap", imap_client), ("pop3", pop3_client)):
        t = time.monotonic()
        try:
            client(ports, n)
            times[name] = time.monotonic() - t
        except (OSError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto) as e:
            print("  %s client failed: %s" % (name, e), file=sys.stderr)
            times[name] = None
    return times


def rounds(ports, count):
    out = {"smtp": [], "imap": [], "pop3": []}
    for n in range(count):
        for k, v in normal_round(ports, n).items():
            out[k].append(v)
    return out


class Load:
    """The abusive connections, on an asyncio loop in a thread of its own."""

    def __init__(self, ports, total):
        self.ports, self.total = ports, total
        self.conns, self.failed = [], 0

    async def one(self, port, i):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.2.%d" % (i % 250 + 1), 0)), 60)
            await asyncio.wait_for(r.readline(), 60)
            self.conns.append((r, w, i % 2 == 1))
        except (OSError, asyncio.TimeoutError):
            self.failed += 1

    async def open(self):
        targets = [self.ports[k] for k in ("smtp", "imap", "pop3")]
        await asyncio.gather(*(self.one(targets[i % 3], i) for i in range(self.total)))

    async def dribble(self, stop):
        n = 0
        while not stop.is_set():
            for _, w, d in self.conns:
                if d and not w.is_closing():
                    w.write(b"NOOP"[n % 4:n % 4 + 1])
            n += 1
            await asyncio.sleep(1)

    async def still_open(self):
        count = 0
        for r, w, _ in self.conns:
            try:
                if await asyncio.wait_for(r.read(1 << 16), 0.01):
                    count += 1
            except asyncio.TimeoutError:
                count += 1
            except OSError:
                pass
            w.close()
        return count


def summary(name, values):
    ok = [v for v in values if v is not None]
    failed = len(values) - len(ok)
    if not ok:
        return "%-5s  all %d failed" % (name, failed)
    return "%-5s  min %7.1f ms  median %7.1f ms  max %7.1f ms  (n=%d, failed %d)" % (
        name, 1000 * min(ok), 1000 * statistics.median(ok), 1000 * max(ok), len(ok), failed)


async def under_load(ports, total, count):
    load = Load(ports, total)
    started = time.monotonic()
    await load.open()
    opened = time.monotonic() - started
    stop = asyncio.Event()
    task = asyncio.create_task(load.dribble(stop))
    loop = asyncio.get_running_loop()
    try:
        loaded = await loop.run_in_executor(None, rounds, ports, count)
    finally:
        stop.set()
        await task
    held = await load.still_open()
    return load, opened, loaded, held


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--bin-dir", default="")
    ap.add_argument("--max-use", type=int, default=0)
    a = ap.parse_args()
    # The newer build of the two, so a stale release build is not measured by mistake.
    built = [d for d in (os.path.join(ROOT, "target/release"), os.path.join(ROOT, "target/debug"))
             if os.path.exists(os.path.join(d, "master"))]
    bin_dir = a.bin_dir or max(built, key=lambda d: os.path.getmtime(os.path.join(d, "postern")), default="")
    if not bin_dir:
        sys.exit("no built binaries: cargo build --release first")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, a.connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    root, etc, ports = make_instance(bin_dir, a.max_use)
    try:
        postern(bin_dir, etc, "start")
        base = rounds(ports, a.rounds)
        load, opened, loaded, held = asyncio.run(under_load(ports, a.connections, a.rounds))
        print("binaries: %s" % bin_dir)
        print("abusive connections: %d asked, %d greeted in %.1f s, %d refused or failed, %d still open at the end"
              % (a.connections, len(load.conns), opened, load.failed, held))
        print("\nnormal clients, no load:")
        for k in ("smtp", "imap", "pop3"):
            print("  " + summary(k, base[k]))
        print("\nnormal clients, with %d abusive connections open:" % len(load.conns))
        for k in ("smtp", "imap", "pop3"):
            print("  " + summary(k, loaded[k]))
    finally:
        subprocess.run([os.path.join(bin_dir, "postern"), "-c", etc, "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
