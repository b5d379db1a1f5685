#!/usr/bin/env python3
"""Write BENCHMARKS.md from one bench/run-all.sh run: the JSON lines its steps wrote
(every *.jsonl in RESULTS_DIR) and the facts about the machine and the run (META, a JSON
object run-all.sh writes).

Each figure is the median of the run's repetitions with the spread (min–max); ratios are
Postern/peer of the medians. Anything that failed in the run (refused messages, deliveries
that did not all arrive in time, connections that did not open) is listed at the end.

    bench/report.py RESULTS_DIR META.json > BENCHMARKS.md
"""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict

PEER_MTA = "postfix"
PEER_IMAP = "dovecot"


def load(results_dir):
    recs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    recs.append(json.loads(line))
    return recs


def values(recs, key):
    return [r[key] for r in recs if r.get(key) is not None]


def med(vals):
    return statistics.median(vals) if vals else None


def num(x, digits=None):
    if x is None:
        return "–"
    if digits is None and isinstance(x, int):
        digits = 0
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return "{:,.{d}f}".format(x, d=digits)


def spread(vals, scale=1.0, digits=None):
    """'median (min–max)' of vals × scale; just the value for one run; '–' for none."""
    if not vals:
        return "–"
    v = [x * scale for x in vals] if scale != 1.0 else list(vals)
    m = num(statistics.median(v), digits)
    if len(v) == 1:
        return m
    return "%s (%s–%s)" % (m, num(min(v), digits), num(max(v), digits))


def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "–"


def pairs(recs, fields, peer):
    """[(key, Postern's records, the peer's records)] for each distinct value of fields."""
    def key(r):
        return tuple(r[f] for f in fields)
    return [(k, [r for r in recs if key(r) == k and r["label"] == "postern"],
             [r for r in recs if key(r) == k and r["label"] == peer]) for k in sorted({key(r) for r in recs})]


def compare(pn, peer, key, scale=1.0):
    """Postern's spread, the peer's spread, and the ratio of the medians, for one metric."""
    a, b = values(pn, key), values(peer, key)
    return spread(a, scale), spread(b, scale), ratio(med(a), med(b))


class Report:
    def __init__(self, recs, meta):
        self.recs, self.meta = recs, meta
        self.out = []
        self.problems = []

    def p(self, *lines):
        self.out.extend(lines)

    def table(self, header, rows):
        self.p("| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        for r in rows:
            self.p("| " + " | ".join(r) + " |")
        self.p("")

    def of(self, bench, **kw):
        return [r for r in self.recs if r.get("bench") == bench and all(r.get(k) == v for k, v in kw.items())]

    # ------------------------------------------------------------------ sections
    def header(self):
        m = self.meta
        self.p("# Benchmarks", "",
               "Written by `bench/run-all.sh` (do not edit by hand; run it again). Postern beside",
               "Postfix + Dovecot from Debian's packages on the same machine, loaded by the same",
               "generators (`bench/peer/`) in the same run, everything on loopback, both sides",
               "fsyncing. " + ("Each figure is from **one repetition** (no spread);" if str(m["reps"]) == "1" else
                               "Each figure is the **median of %s repetitions, with the spread (min–max)**;"
                               % m["reps"]),
               "ratios are Postern/peer of the medians. The machine is small and was shared, so",
               "read the ratios more than the absolute figures.", "")
        if m.get("quick"):
            self.p("**This is a QUICK run** (`QUICK=1`: fewer messages, a 2,000-message mailbox and",
                   "250 idle connections instead of 2,000, 10,000 and 1,000; one repetition unless",
                   "REPS is given). The default mode gives the full sizes.", "")
        self.p("## The machine and the run", "")
        rows = [
            ("date (UTC)", m["date"]),
            ("command", "`%s`" % m["command"]),
            ("git commit", "`%s`%s" % (m["commit"], " (with uncommitted changes)" if m.get("dirty") else "")),
            ("CPU", "%s × %s" % (m["nproc"], m["cpu"])),
            ("memory", m["mem"]),
            ("kernel", m["kernel"]),
            ("filesystem of the queues and mailboxes", m["fs"]),
            ("load average (1/5/15 min) before → after", "%s → %s" % (m["load_before"], m["load_after"])),
            ("peers", "%s, %s" % (m["postfix"], m["dovecot"])),
            ("duration", "%s min, of which %s min building and setting up the peers"
             % (m["minutes"], m.get("build_minutes", "?"))),
            ("sizes", m["sizes"]),
        ]
        self.table(["", ""], [(a, b) for a, b in rows])

    def phys(self):
        recs = self.of("phys")
        if not recs:
            return
        self.p("## The disk's durable-write ceiling (`bench/peer/phys_limit.py`)", "",
               "What the hardware allows a mail system that makes every message durable:",
               "", )
        names = [("fsync_append_4k_ops_s", "4 KB write + fsync, 1 thread", "/s"),
                 ("maildir_deliver_t1_ops_s", "Maildir-style create+write+fsync+rename, 1 thread", "/s"),
                 ("maildir_deliver_t8_ops_s", "the same, 8 threads", "/s"),
                 ("maildir_deliver_dirsync_t1_ops_s", "the same + directory fsync, 1 thread", "/s"),
                 ("tcp_bulk_MB_s", "loopback TCP, bulk", "MB/s"),
                 ("tcp_rtt_us", "loopback TCP, round trip", "µs"),
                 ("tcp_connect_per_s", "loopback TCP, connect+accept+close", "/s")]
        rows = []
        for key, what, unit in names:
            v = [r["value"] for r in recs if r["test"] == key]
            if v:
                rows.append((what, spread(v), unit))
        self.table(["test", "median (min–max)", "unit"], rows)

    def smtp_accept(self):
        recs = self.of("smtp_accept")
        if not recs:
            return
        self.p("## SMTP accept (`bench/smtp_accept.sh`)", "",
               "Messages accepted per second (250 after DATA, which both systems send only once the",
               "queue file is on disk) and the latency of that 250, one message per connection",
               "(`bench/smtp_accept.py`). Ratio > 1: Postern accepts faster.", "")
        rows = []
        for (size, c), pn, pf in pairs(recs, ("size", "c"), PEER_MTA):
            self.check_failed(pn + pf, "smtp_accept")
            rows.append(("%d KB" % (size // 1024), str(c)) + compare(pn, pf, "rate") + (
                         "%s / %s" % (num(med(values(pn, "p50_ms")), 1), num(med(values(pn, "p99_ms")), 1)),
                         "%s / %s" % (num(med(values(pf, "p50_ms")), 1), num(med(values(pf, "p99_ms")), 1))))
        self.table(["size", "sessions", "Postern msg/s", "Postfix msg/s", "ratio",
                    "Postern p50 / p99 ms", "Postfix p50 / p99 ms"], rows)

    def delivery(self):
        recs = self.of("smtp_load")
        if not recs:
            return
        self.p("## SMTP to Maildir (`bench/smtp_delivery.sh`)", "",
               "Messages per second from the first connection until the last message is a file in",
               "the recipient's Maildir (`bench/peer/smtp_load.py`, one message per connection), and",
               "the peak memory during the run: the sum of PSS over each whole system (Postern's",
               "master and all below it; Postfix's and Dovecot's masters and all below them).",
               "Delivery ratio > 1: Postern faster; memory ratio < 1: Postern smaller.", "")
        rows = []
        for (size, c), pn, pf in pairs(recs, ("size", "c"), PEER_MTA):
            for r in pn + pf:
                if r.get("failed") or r.get("deliver_rate") is None:
                    self.problems.append("delivery %s %d KB × %d: %s accepted, %s failed, %s delivered in time"
                                         % (r["label"], size // 1024, c, r["accepted"], r["failed"], r["delivered"]))
            rows.append(("%d KB" % (size // 1024), str(c)) + compare(pn, pf, "deliver_rate")
                        + compare(pn, pf, "peak_pss_mb"))
        self.table(["size", "sessions", "Postern delivered/s", "Postfix delivered/s", "ratio",
                    "Postern peak PSS MB", "Postfix+Dovecot peak PSS MB", "ratio"], rows)

    def relay(self):
        recs = self.of("relay")
        if not recs:
            return
        r0 = recs[0]
        self.p("## Relay to a sink (`bench/relay.sh`)", "",
               "Messages for a relayed domain handed on through the SMTP client to Postfix's",
               "`smtp-sink` on loopback (%d sessions in, %d KB, `bench/peer/relay_load.py`); rate from"
               % (r0["c"], r0["size"] // 1024),
               "the first connection until the sink has them all. Peak memory as above.", "")
        rows = []
        for (eng,), pn, pf in pairs(recs, ("engine",), PEER_MTA):
            for r in pn + pf:
                if r.get("failed") or r.get("relay_rate") is None:
                    self.problems.append("relay %s %s: %s accepted, %s failed, %s reached the sink in time"
                                         % (r["label"], eng, r["accepted"], r["failed"], r["sink_got"]))
            rows.append((eng,) + compare(pn, pf, "relay_rate") + compare(pn, pf, "peak_pss_mb"))
        self.table(["generator", "Postern relayed/s", "Postfix relayed/s", "ratio", "Postern peak PSS MB",
                    "Postfix+Dovecot peak PSS MB", "ratio"], rows)

    def pipeline(self):
        recs = self.of("pipeline")
        if not recs:
            return
        self.p("## SMTP to Maildir with `smtp-source`, CPU per message (`bench/pipeline_cpu.sh`)", "",
               "%d messages of %d KB, one per connection, from Postfix's `smtp-source` to one local"
               % (recs[0]["n"], recs[0]["size"] // 1024),
               "Maildir user, Postern and Postfix alternating (A B A B, one run each per repetition).",
               "Accepted/s: until `smtp-source` is done (both systems deliver meanwhile); delivered/s:",
               "until the last message is a file in the Maildir. CPU: utime + stime per message, summed",
               "over each system's processes (Postfix's daemons exit after 100 connections: those are",
               "named by BSD process accounting during the load). Disk share: two durable",
               "writes per delivered message against the 8-thread Maildir-style ceiling above.", "")
        ceiling = med([r["value"] for r in self.of("phys") if r.get("test") == "maildir_deliver_t8_ops_s"])
        rows = []
        for (c,), pn, pf in pairs(recs, ("c",), PEER_MTA):
            for r in pn + pf:
                if r.get("deliver_rate") is None:
                    self.problems.append("pipeline %s × %d: %s of %s delivered in time"
                                         % (r["label"], c, r["delivered"], r["n"]))
            share = "–"
            d = med(values(pn, "deliver_rate"))
            if ceiling and d:
                share = "%.0f %%" % (200 * d / ceiling)
            rows.append((str(c),) + compare(pn, pf, "accept_rate") + compare(pn, pf, "deliver_rate")
                        + (share,) + compare(pn, pf, "total_ms")[:2])
        self.table(["sessions", "Postern accepted/s", "Postfix accepted/s", "ratio", "Postern delivered/s",
                    "Postfix delivered/s", "ratio", "Postern's disk share", "Postern CPU ms/msg",
                    "Postfix CPU ms/msg"], rows)
        daemons = sorted({d for r in recs if r["label"] in ("postern", PEER_MTA) for d in r["cpu_ms"]})
        rows = []
        for (c,), pn, pf in pairs(recs, ("c",), PEER_MTA):
            for name, rs in (("Postern", pn), ("Postfix", pf)):
                rows.append((name, str(c)) + tuple(spread([r["cpu_ms"].get(d, 0.0) for r in rs], digits=3)
                                                   for d in daemons)
                            + (spread([r.get("exited_ms", 0.0) for r in rs], digits=3),))
        if daemons:
            self.p("CPU per message and daemon, ms (processes that exited during the load are counted",
                   "by name from BSD process accounting, which rounds each process's user and system time",
                   "down to 10 ms; \"unnamed\": what the master reaped that accounting did not name, mostly",
                   "that rounding):", "")
            self.table(["system", "sessions"] + daemons + ["unnamed"], rows)

    def floor(self):
        recs = self.of("floor")
        if not recs:
            return
        self.p("## The least work per message on this machine (`bench/floor.sh`)", "",
               "`bench/floor.c`: one process that answers each SMTP command over loopback, makes the",
               "message durable before the 250 (create a queue file, write, fdatasync, fsync its",
               "directory) and delivers it (create a Maildir file, write, fdatasync, rename into new/,",
               "fsync new/, remove the queue file), with no daemons, IPC, parsing or logging, loaded",
               "by its own C client (one message per connection, like `smtp-source`). Its rate is about",
               "the most a straightforward durable design reaches here; its CPU per message is what the",
               "kernel takes for that work. \"Floor / Postfix\" is the highest accept ratio such a design",
               "could show against Postfix's `smtp-source` accepted/s above (same sessions, same run);",
               "Postern avoids part of that work (queue files reused from spare/, directory fsyncs",
               "shared between messages), so it is not a hard bound for Postern.", "")
        pipe = self.of("pipeline")
        rows = []
        for c in sorted({r["c"] for r in recs}):
            mine = [r for r in recs if r["c"] == c]
            pf = med([r["accept_rate"] for r in pipe if r["c"] == c and r["label"] == PEER_MTA
                      and r.get("accept_rate")])
            pn = med([r["accept_rate"] for r in pipe if r["c"] == c and r["label"] == "postern"
                      and r.get("accept_rate")])
            fl = med(values(mine, "rate"))
            rows.append((str(c), spread(values(mine, "rate")), spread(values(mine, "cpu_ms"), digits=3),
                         spread(values(mine, "client_ms"), digits=3), ratio(fl, pf), ratio(pn, pf)))
        self.table(["sessions", "floor msg/s", "floor CPU ms/msg", "client CPU ms/msg",
                    "floor / Postfix accepted", "Postern / Postfix accepted"], rows)

    def memory(self):
        idle = self.of("idle_mem")
        load = self.of("smtp_load")
        if not idle and not load:
            return
        self.p("## Memory of the whole system", "",
               "Sum of PSS over every process of each system (shared pages divided among the",
               "processes that share them). Idle: %s s after the last SMTP-to-Maildir load (past"
               % num(med(values(idle, "wait_s")), 0),
               "both systems' `max_idle` of 100 s), no client connected. Under load: the peak",
               "during the SMTP-to-Maildir runs with the most sessions.",
               "Ratio < 1: Postern smaller.", "")
        rows = []
        for _, pn, pf in pairs(idle, (), PEER_MTA):
            a, b, r = compare(pn, pf, "pss_mb")
            rows.append(("idle", "%s (%s processes)" % (a, num(med(values(pn, "nproc")), 0)),
                         "%s (%s processes)" % (b, num(med(values(pf, "nproc")), 0)), r))
        top = max((r["c"] for r in load), default=None)
        for (size, c), pn, pf in pairs(load, ("size", "c"), PEER_MTA):
            if c == top:
                rows.append(("SMTP to Maildir, %d sessions, %d KB" % (c, size // 1024),)
                            + compare(pn, pf, "peak_pss_mb"))
        self.table(["state", "Postern MB", "Postfix+Dovecot MB", "ratio"], rows)

    IMAP_STEPS = [("login_select_s", "connect + LOGIN + SELECT"),
                  ("fetch_env_s", "FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)"),
                  ("fetch_body_s", "FETCH 1:* BODY.PEEK[]"),
                  ("search_hdr_s", "SEARCH HEADER SUBJECT"),
                  ("search_body_s", "SEARCH BODY"),
                  ("store_s", "STORE 1:* +FLAGS (\\Flagged)")]
    POP_STEPS = [("pop_login_s", "connect + USER/PASS"), ("pop_list_s", "LIST"), ("pop_uidl_s", "UIDL"),
                 ("pop_retr_s", "RETR of every message")]

    def imap_pop(self):
        recs = [r for r in self.of("imap_pop") if r.get("rep") != "cold"]
        if not recs:
            return
        pn = [r for r in recs if r["label"] == "postern"]
        dv = [r for r in recs if r["label"] == PEER_IMAP]
        n = recs[0]["n"]
        mb = med(values(recs, "fetch_body_mb"))
        self.p("## IMAP and POP3 (`bench/imap_bench.sh`)", "",
               "One INBOX of %s messages of about 4 KB (%s MB), filled directly into each server's"
               % (num(n, 0), num(mb, 0)),
               "Maildir (owned by the user each server reads it as) and read by the same generator",
               "(`bench/peer/imap_pop_load.py`); warm passes (a first, cold pass after filling is",
               "left out). Times in ms; ratio = Postern/Dovecot time, < 1: Postern faster.", "")
        for r in pn + dv:
            if r.get("exists") != n or (r.get("pop_msgs") is not None and r["pop_msgs"] != n):
                self.problems.append("imap_pop %s pass %s: %s messages over IMAP, %s over POP3 (of %d)"
                                     % (r["label"], r["rep"], r.get("exists"), r.get("pop_msgs"), n))
        rows = [("IMAP " + what,) + compare(pn, dv, key, 1000) for key, what in self.IMAP_STEPS]
        rows += [("POP3 " + what,) + compare(pn, dv, key, 1000) for key, what in self.POP_STEPS
                 if values(pn + dv, key)]
        self.table(["step", "Postern ms", "Dovecot ms", "ratio (time)"], rows)

        hp = [r.get("params") for r in self.of("hash", label="postern")]
        hd = [r.get("params") for r in self.of("hash", label=PEER_IMAP)]
        fails = sum(r.get("logins_fail", 0) for r in pn + dv)
        if fails:
            self.problems.append("IMAP login storm: %d failed logins" % fails)
        self.p("IMAP logins per second, 8 clients each doing connect + LOGIN + LOGOUT, the same",
               "system user on both sides: Dovecot checks its `/etc/shadow` hash through PAM and",
               "Postern's `etc/users` holds that very hash (`%s` on Postern, `%s` on Dovecot)."
               % (hp[0] if hp else "?", hd[0] if hd else "?"),
               "Ratio > 1: Postern logs in faster.", "")
        self.table(["", "Postern", "Dovecot", "ratio"],
                   [("logins/s",) + compare(pn, dv, "logins_per_s")])

    def idle_conns(self):
        recs = self.of("idle_conns")
        if not recs:
            return
        pn = [r for r in recs if r["label"] == "postern"]
        dv = [r for r in recs if r["label"] == PEER_IMAP]
        n = recs[0]["n"]
        self.p("## Memory per idle IMAP connection (`bench/idle_imap.py`)", "",
               "%s connections, each logged in with INBOX selected, then left idle; the growth of" % num(n, 0),
               "the server's PSS sum divided by the connections open (Dovecot: an `imap` process",
               "each; Postern: sessions inside imapd's event loops). Ratio < 1: Postern smaller.", "")
        for r in recs:
            if r["open"] != r["n"]:
                self.problems.append("idle IMAP %s: %d of %d connections opened" % (r["label"], r["open"], r["n"]))
        rows = []
        for what, key in [("KB per idle connection", "kb_per_conn"), ("PSS before, MB", "pss_before_mb"),
                          ("PSS with the connections open, MB", "pss_after_mb"), ("connections open", "open"),
                          ("processes", "nproc_after")]:
            a, b, r = compare(pn, dv, key)
            rows.append((what, a, b, r if key == "kb_per_conn" else ""))
        self.table(["", "Postern", "Dovecot", "ratio"], rows)

    def check_failed(self, recs, what):
        for r in recs:
            if r.get("failed"):
                self.problems.append("%s %s %d KB × %d: %d refused or failed"
                                     % (what, r["label"], r["size"] // 1024, r["c"], r["failed"]))

    def footer(self):
        self.p("## Problems in this run", "")
        self.problems[:0] = ["step `%s` failed (see `log` in the run directory): its figures are missing or"
                             " partial" % step for step in self.meta.get("failed_steps", [])]
        if self.problems:
            self.p(*("- " + x for x in self.problems))
        else:
            self.p("None: every message was accepted and arrived, every connection opened.")
        self.p("", "## Running it", "",
               "```sh",
               "sudo bench/run-all.sh            # REPS=3 repetitions, full sizes (30-60 minutes on 2 cores)",
               "sudo QUICK=1 bench/run-all.sh    # 1 repetition, fewer messages: under 10 minutes once built",
               "```", "",
               "Each step is also a script of its own (`bench/smtp_accept.sh`, `smtp_delivery.sh`,",
               "`relay.sh`, `imap_bench.sh`) sharing `bench/lib.sh`; the raw JSON lines of this run",
               "were in `%s`." % self.meta["results"])

    def render(self):
        self.header()
        self.phys()
        self.smtp_accept()
        self.delivery()
        self.pipeline()
        self.floor()
        self.relay()
        self.memory()
        self.imap_pop()
        self.idle_conns()
        self.footer()
        return "\n".join(self.out) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: report.py RESULTS_DIR META.json > BENCHMARKS.md")
    with open(sys.argv[2]) as f:
        meta = json.load(f)
    sys.stdout.write(Report(load(sys.argv[1]), meta).render())


if __name__ == "__main__":
    main()
