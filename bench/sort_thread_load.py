#!/usr/bin/env python3
"""The generator and client of bench/imap_sort_thread.sh (SORT/THREAD beside Dovecot).

    sort_thread_load.py fill --maildir DIR -n N [--owner USER]
        empties DIR (messages and index files) and writes N threaded messages into new/
        (the same bytes for the same N: fixed seed)
    sort_thread_load.py run --label L --port P --user U --password PW --cache FILE
                            --reps R --warm W --json-out OUT
        per command: R new sessions, FILE (comma-separated files) removed before each; times the first command
        after SELECT (cold) and W repeats in the session (warm); JSON lines into OUT
    sort_thread_load.py table OUT
        medians per server and command, Postern/Dovecot ratios, and whether the answers agree
"""
import argparse
import base64
import hashlib
import json
import os
import pwd
import random
import re
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer"))
import benchlib  # noqa: E402

COMMANDS = ["SORT (DATE) UTF-8 ALL", "SORT (SUBJECT) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL"]
WORDS = "alpha beta gamma delta report meeting budget release plan review notes update".split()
ZONES = ["+0000", "+0100", "-0500", "+0530", "-0800", "+0900"]


def messages(n):
    rnd = random.Random(12)
    out = []
    topic = 0
    while len(out) < n:
        topic += 1
        base = "%s %s %d" % (rnd.choice(WORDS), rnd.choice(WORDS), topic)
        size = min(rnd.randint(1, 12), n - len(out))
        ids = []
        paths = []
        t0 = 1_600_000_000 + rnd.randint(0, 365 * 86400)
        for j in range(size):
            mid = "<t%d.%d@bench.test>" % (topic, j)
            subject = base
            refs = []
            irt = None
            if j:
                parent = rnd.randrange(j)
                path = paths[parent] + [ids[parent]]
                r = rnd.random()
                if r < 0.1 and len(path) > 1:
                    refs = path[:-2] + path[-1:]  # a broken chain: one hop missing
                elif r < 0.15:
                    irt = path[-1]  # In-Reply-To only
                else:
                    refs = path
                subject = rnd.choice(["Re: ", "RE: ", "Re: Re: ", "Fwd: ", "[list] Re: ", "Re[2]: "]) + base
            else:
                path = []
            if rnd.random() < 0.1:
                subject = "=?UTF-8?B?%s?=" % base64.b64encode(subject.encode()).decode()
            ids.append(mid)
            paths.append(path)
            t = t0 + j * rnd.randint(60, 86400)
            zone = rnd.choice(ZONES)
            date = time.strftime("%a, %d %b %Y %H:%M:%S ", time.gmtime(t)) + zone
            h = [
                "From: %s <%s@bench.test>" % (rnd.choice(WORDS).title(), rnd.choice(WORDS)),
                "To: list@bench.test",
                "Subject: " + subject,
                "Date: " + date,
                "Message-ID: " + mid,
            ]
            if refs:
                h.append("References: " + " ".join(refs))
            if irt:
                h.append("In-Reply-To: " + irt)
            body = "\n".join(" ".join(rnd.choice(WORDS) for _ in range(12)) for _ in range(20))
            out.append(("\n".join(h) + "\n\n" + body + "\n").encode())
    rnd.shuffle(out)
    return out


def fill(a):
    pw = pwd.getpwnam(a.owner) if a.owner else None
    for d in ("", "new", "cur", "tmp"):
        os.makedirs(os.path.join(a.maildir, d), mode=0o700, exist_ok=True)
        if pw:
            os.chown(os.path.join(a.maildir, d), pw.pw_uid, pw.pw_gid)
    benchlib.maildir_clean(a.maildir)
    base = int(time.time())
    for i, msg in enumerate(messages(a.n), 1):
        path = os.path.join(a.maildir, "new", "%d.M%dP%d.sort,S=%d" % (base, i, os.getpid(), len(msg)))
        with open(path, "wb") as f:
            f.write(msg)
        if pw:
            os.chown(path, pw.pw_uid, pw.pw_gid)


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=600)
        self.f = self.s.makefile("rb")
        self.n = 0
        self.f.readline()

    def cmd(self, text):
        self.n += 1
        tag = b"b%d" % self.n
        self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("connection closed")
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1:].startswith(b"OK"):
                    raise RuntimeError("%s: %r" % (text, line))
                return lines
            lines.append(line)


def msgids(c):
    """Sequence number -> Message-ID, from the envelopes (the two servers may number the
    same files differently, so answers are compared by Message-ID)."""
    out = {}
    for line in c.cmd("FETCH 1:* (ENVELOPE)"):
        m = re.match(rb'\* (\d+) FETCH .*"(<t[0-9.]+@bench\.test>)"\)\)', line)
        if m:
            out[m.group(1).decode()] = m.group(2).decode()
    return out


def run(a):
    names = None
    for command in COMMANDS:
        cold, warm, digest = [], [], None
        for _ in range(a.reps):
            for path in a.cache.split(","):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            c = Client(a.port)
            c.cmd("LOGIN %s %s" % (a.user, a.password))
            c.cmd("SELECT INBOX")
            t = time.perf_counter()
            lines = c.cmd(command)
            cold.append(time.perf_counter() - t)
            if names is None:
                names = msgids(c)
            answer = b"".join(lines).strip().upper()
            named = re.sub(rb"\d+", lambda m: names.get(m.group(0).decode(), "?").encode(), answer)
            digest = hashlib.sha256(named).hexdigest()[:16]
            for _ in range(a.warm):
                t = time.perf_counter()
                c.cmd(command)
                warm.append(time.perf_counter() - t)
            c.cmd("LOGOUT")
        r = {
            "bench": "sort_thread", "label": a.label, "command": command,
            "cold_ms": [round(x * 1000, 2) for x in cold], "warm_ms": [round(x * 1000, 2) for x in warm],
            "cold_median_ms": round(statistics.median(cold) * 1000, 2),
            "warm_median_ms": round(statistics.median(warm) * 1000, 2),
            "answer_sha256": digest, "answer_bytes": len(answer),
            "numbering_sha256": hashlib.sha256(json.dumps(sorted(names.items())).encode()).hexdigest()[:16],
        }
        print("RESULT %s %s: cold %.1f ms, warm %.1f ms (%d-byte answer)" % (
            a.label, command, r["cold_median_ms"], r["warm_median_ms"], len(answer)))
        with open(a.json_out, "a") as f:
            f.write(json.dumps(r) + "\n")


def table(a):
    rows = [json.loads(line) for line in open(a.out)]
    by = {(r["label"], r["command"]): r for r in rows if r.get("bench") == "sort_thread"}
    print("| command | Postern cold ms | Dovecot cold ms | cold ratio P/D | Postern warm ms "
          "| Dovecot warm ms | warm ratio P/D | same answer (by Message-ID) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for command in COMMANDS:
        p, d = by.get(("postern", command)), by.get(("dovecot", command))
        if not p:
            continue
        if d:
            print("| %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %s |" % (
                command, p["cold_median_ms"], d["cold_median_ms"], p["cold_median_ms"] / d["cold_median_ms"],
                p["warm_median_ms"], d["warm_median_ms"], p["warm_median_ms"] / d["warm_median_ms"],
                "yes" if p["answer_sha256"] == d["answer_sha256"] else
                "no" if p["numbering_sha256"] == d["numbering_sha256"] else "no (numbered differently: ties differ)"))
        else:
            print("| %s | %.1f | - | - | %.1f | - | - | - |" % (command, p["cold_median_ms"], p["warm_median_ms"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--maildir", required=True)
    f.add_argument("-n", type=int, default=10000)
    f.add_argument("--owner")
    r = sub.add_parser("run")
    for k in ("--label", "--user", "--password", "--cache", "--json-out"):
        r.add_argument(k, required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--warm", type=int, default=5)
    t = sub.add_parser("table")
    t.add_argument("out")
    a = ap.parse_args()
    {"fill": fill, "run": run, "table": table}[a.what](a)


if __name__ == "__main__":
    main()
