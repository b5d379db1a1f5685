#!/usr/bin/env python3
"""The mailbox store's benchmarks (issue 11), one server at a time; bench/imap_store.sh
runs them for Postern and Dovecot in the same run. Subcommands (each prints one RESULT
line and appends one JSON line to --json-out):

  sessions  open -n sessions (LOGIN + SELECT INBOX, --concurrency at a time, spread over
            --source-ips loopback addresses) and report the time to open them, the sum of
            RSS and PSS of the serving processes (--mem-comm within the --mem-pidfile
            master's tree) before, with them open (per session) and
            --settle seconds after they all closed (is the memory given back?). Opening stops
            early, and says so, when the serving processes' PSS passes --max-server-mb (a mailbox store
            that keeps megabytes per session must not take the machine down). With --idle
            every session then enters IDLE: the serving processes' CPU time over --cpu-secs with
            nothing arriving, then one message is delivered (--deliver-smtp PORT or
            --deliver-cmd CMD) and each session's time until it hears `* n EXISTS` is taken.
  steps     LOGIN+SELECT, FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE) and STORE 1:* +FLAGS,
            --reps warm passes after one cold one (bench/peer/imap_pop_load.py's imap_pass).
  report F  print a markdown table (Postern | Dovecot | ratio) of one run's JSON lines F.
  stress    --clients pipelined clients for --secs: each SELECTs INBOX, then sends batches
            of FETCH (ENVELOPE of a few messages, one body), STORE +FLAGS, STORE \\Deleted,
            EXPUNGE and APPEND (LITERAL+ if offered) in one write, for --batches batches per
            SELECT. Commands per second and every NO/BAD counted by command and text.

    bench/imap_store.py sessions --port 10143 --user benchbox --password benchbox-pw -n 1000 \\
        --mem-pidfile /run/dovecot/master.pid --label dovecot
"""
import argparse
import asyncio
import collections
import os
import random
import re
import resource
import smtplib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer"))
import benchlib  # noqa: E402
from imap_pop_load import imap_pass, make_msg  # noqa: E402

LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
UNTAGGED_NUM = re.compile(rb"^\* (\d+) (EXISTS|EXPUNGE)\b")


async def read_response(reader):
    """One response line with its literals inline (bytes); b"" at end of stream."""
    line = await reader.readline()
    out = line
    while True:
        m = LITERAL.search(line)
        if not m:
            return out
        n = int(m.group(1))
        if n > 64 * 1024 * 1024:
            raise ConnectionError("literal of %d bytes" % n)
        out += await reader.readexactly(n)
        line = await reader.readline()
        out += line


async def command(reader, writer, tag, text):
    """Send one command and read to its tagged reply; returns (status, untagged lines)."""
    writer.write(b"%s %s\r\n" % (tag, text))
    untagged = []
    while True:
        line = await read_response(reader)
        if not line:
            raise ConnectionError("closed")
        if line.startswith(tag + b" "):
            return line[len(tag) + 1:].split(b" ", 1)[0], untagged, line
        untagged.append(line)


# ------------------------------------------------------------------ server processes
class ServingSampler(benchlib.MemSampler):
    """benchlib's sampler over a master's process tree, kept to the processes whose name
    matches `comm` (the ones that serve IMAP sessions: Postern's imapd, Dovecot's imap), so
    that delivery or login processes starting meanwhile are not counted."""

    def __init__(self, roots, pidfiles, comm):
        super().__init__(roots, pidfiles, None)
        self.comm = re.compile(comm) if comm else None

    def pids(self):
        pids = benchlib.resolve_pids(self.roots, self.pidfiles, None)
        if self.comm:
            pids = {p for p in pids if self.comm.search(benchlib._comm(p))}
        return pids

    def sample(self):
        rss = pss = 0
        pids = self.pids()
        for p in pids:
            r, s = benchlib.mem_of(p)
            rss += r
            pss += s
        return rss, pss, len(pids)


def tree_cpu_s(sampler):
    """Summed user+system CPU seconds of the sampler's processes now."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = sampler.pids()
    for p in pids:
        try:
            with open("/proc/%d/stat" % p, "rb") as f:
                s = f.read()
            rest = s[s.rindex(b")") + 2:].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / tick, len(pids)


def mem_mb(sampler, k=3):
    """Median over k samples, 0.5 s apart: (rss MB, pss MB, processes)."""
    rs, ps, n = [], [], 0
    for i in range(k):
        rss, pss, n = sampler.sample()
        rs.append(rss / 1024)
        ps.append(pss / 1024)
        if i + 1 < k:
            time.sleep(0.5)
    return statistics.median(rs), statistics.median(ps), n


# ------------------------------------------------------------------ sessions
class Session:
    def __init__(self, r, w):
        self.r, self.w, self.exists, self.told = r, w, 0, None


async def open_session(a, i):
    ip = "127.0.3.%d" % (i % a.source_ips + 1)
    r, w = await asyncio.open_connection(a.host, a.port, local_addr=(ip, 0))
    try:
        await r.readline()
        st, _, line = await command(r, w, b"a", b"LOGIN %s %s" % (a.user.encode(), a.password.encode()))
        if st != b"OK":
            raise RuntimeError(line.decode(errors="replace").strip())
        st, untagged, line = await command(r, w, b"b", b"SELECT INBOX")
        if st != b"OK":
            raise RuntimeError(line.decode(errors="replace").strip())
        s = Session(r, w)
        for u in untagged:
            m = UNTAGGED_NUM.match(u)
            if m and m.group(2) == b"EXISTS":
                s.exists = int(m.group(1))
        return s
    except BaseException:
        w.close()
        raise


async def open_many(a, n, sampler):
    """Open n sessions; stop early past --max-server-mb. Returns (sessions, errors, capped)."""
    sessions, errors = [], []
    state = {"next": 0, "capped": False}

    async def worker():
        while state["next"] < n and not state["capped"]:
            i = state["next"]
            state["next"] += 1
            try:
                sessions.append(await open_session(a, i))
            except (OSError, ConnectionError, RuntimeError, asyncio.IncompleteReadError) as e:
                errors.append(str(e))
                if len(errors) > 20 and not sessions:
                    state["capped"] = True
            if len(sessions) % 25 == 0 and a.max_server_mb and sampler.sample()[1] / 1024 > a.max_server_mb:
                state["capped"] = True

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(a.concurrency))), a.timeout)
    return sessions, errors, state["capped"]


def deliver(a):
    if a.deliver_smtp:
        with smtplib.SMTP(a.host, a.deliver_smtp, timeout=30) as s:
            s.sendmail("bench-sender@example.test", [a.rcpt], make_msg(999999, 2048))
    else:
        subprocess.run(a.deliver_cmd, shell=True, check=True, input=make_msg(999999, 2048), timeout=60)


async def wait_exists(s, t0, timeout):
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = await read_response(s.r)
                if not line:
                    return
                m = UNTAGGED_NUM.match(line)
                if m and m.group(2) == b"EXISTS" and int(m.group(1)) > s.exists:
                    s.told = time.monotonic() - t0
                    return
    except (TimeoutError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        return


async def idle_phase(a, sessions, sampler, res):
    for s in sessions:
        s.w.write(b"i IDLE\r\n")
    started = 0
    for s in sessions:
        try:
            async with asyncio.timeout(30):
                while True:
                    line = await read_response(s.r)
                    if not line or line.startswith(b"+"):
                        break
            started += 1
        except (TimeoutError, asyncio.TimeoutError):
            pass
    res["idling"] = started
    await asyncio.sleep(2)
    c0, _ = tree_cpu_s(sampler)
    t = time.monotonic()
    await asyncio.sleep(a.cpu_secs)
    c1, nproc = tree_cpu_s(sampler)
    res["idle_cpu_s"] = round(c1 - c0, 3)
    res["idle_cpu_pct"] = round((c1 - c0) * 100 / (time.monotonic() - t), 1)
    if not (a.deliver_smtp or a.deliver_cmd):
        return
    t0 = time.monotonic()
    waits = [asyncio.create_task(wait_exists(s, t0, a.notify_timeout)) for s in sessions]
    await asyncio.to_thread(deliver, a)
    res["deliver_s"] = round(time.monotonic() - t0, 3)
    await asyncio.gather(*waits)
    told = sorted(s.told for s in sessions if s.told is not None)
    res["told"] = len(told)
    res["notify_timeout_s"] = a.notify_timeout
    if told:
        res["notify_median_s"] = round(statistics.median(told), 3)
        res["notify_max_s"] = round(told[-1], 3)
    for s in sessions:
        s.w.write(b"DONE\r\n")


async def sessions_main(a, sampler):
    res = {"bench": "store_sessions", "label": a.label, "phase": a.phase, "n": a.n, "concurrency": a.concurrency,
           "settle": a.settle}
    # the serving processes as started (a server that starts on the first connection: with
    # one session that logged in, selected nothing and logged out)
    r, w = await asyncio.open_connection(a.host, a.port)
    await r.readline()
    await command(r, w, b"a", b"LOGIN %s %s" % (a.user.encode(), a.password.encode()))
    await command(r, w, b"z", b"LOGOUT")
    w.close()
    await asyncio.sleep(0.5)
    _, pss_start, _ = mem_mb(sampler)
    # warm-up: the first SELECT may build the server's index and a server's state of the
    # folder shared by its sessions; not a per-session cost. It stays open while the others
    # are measured (a server that frees the shared state with its last session would
    # otherwise count it against each session), and closes with them.
    t = time.monotonic()
    warm = await open_session(a, 0)
    res["first_select_s"] = round(time.monotonic() - t, 3)
    res["exists"] = warm.exists
    await asyncio.sleep(1)
    rss0, pss0, _ = mem_mb(sampler)
    t = time.monotonic()
    sessions, errors, capped = await open_many(a, a.n, sampler)
    res["open_s"] = round(time.monotonic() - t, 2)
    res["open"] = len(sessions)
    res["failed"] = len(errors)
    res["capped_by_max_server_mb"] = capped and bool(sessions)
    if errors:
        res["first_error"] = errors[0][:200]
    await asyncio.sleep(a.settle)
    rss1, pss1, nproc = mem_mb(sampler)
    res.update(rss_before_mb=round(rss0, 1), pss_before_mb=round(pss0, 1), rss_open_mb=round(rss1, 1),
               pss_open_mb=round(pss1, 1), nproc_open=nproc)
    if sessions:
        res["kb_per_session_pss"] = round((pss1 - pss0) * 1024 / len(sessions), 1)
        res["kb_per_session_rss"] = round((rss1 - rss0) * 1024 / len(sessions), 1)
    if a.idle and sessions:
        await idle_phase(a, sessions, sampler, res)
    sessions.append(warm)
    for s in sessions:
        try:
            s.w.write(b"z LOGOUT\r\n")
        except (OSError, RuntimeError):
            pass
    await asyncio.sleep(0.5)
    for s in sessions:
        s.w.close()
    del sessions
    closed = time.monotonic()
    await asyncio.sleep(a.settle)
    rss2, pss2, nproc = mem_mb(sampler)
    res.update(rss_closed_mb=round(rss2, 1), pss_closed_mb=round(pss2, 1), nproc_closed=nproc,
               pss_start_mb=round(pss_start, 1))
    # once more later: a server that keeps a folder's state a while after its last session
    if a.released_after > a.settle:
        await asyncio.sleep(max(0.0, a.released_after - (time.monotonic() - closed)))
        _, pss3, _ = mem_mb(sampler)
        res.update(pss_released_mb=round(pss3, 1), released_after_s=a.released_after)
    # given back: of what the sessions (the warm-up's shared state too) grew it by
    grown = pss1 - pss_start
    res["returned_pct"] = round((pss1 - pss2) * 100 / grown) if grown > 1 else None
    return res


# ------------------------------------------------------------------ stress
class Stress:
    def __init__(self):
        self.done = collections.Counter()
        self.errors = collections.Counter()
        self.disconnects = 0


NUMS = re.compile(rb"\d+")


async def stress_client(a, idx, deadline, st, literal_plus):
    ip = "127.0.4.%d" % (idx % 200 + 1)
    rnd = random.Random(idx)
    r, w = await asyncio.open_connection(a.host, a.port, local_addr=(ip, 0))
    try:
        await r.readline()
        s, _, line = await command(r, w, b"l", b"LOGIN %s %s" % (a.user.encode(), a.password.encode()))
        if s != b"OK":
            raise RuntimeError(line.decode(errors="replace"))
        n = 0
        while time.monotonic() < deadline:
            s, untagged, line = await command(r, w, b"s%d" % n, b"SELECT INBOX")
            n += 1
            exists = 0
            for u in untagged:
                m = UNTAGGED_NUM.match(u)
                if m and m.group(2) == b"EXISTS":
                    exists = int(m.group(1))
            st.done["SELECT"] += 1
            if s != b"OK":
                st.errors["SELECT %s" % line.split(b" ", 1)[1].decode(errors="replace").strip()] += 1
                continue
            for _ in range(a.batches):
                if time.monotonic() >= deadline:
                    break
                cmds = []
                if exists > 0:
                    lo = rnd.randint(1, exists)
                    hi = min(exists, lo + 9)
                    cmds.append((b"FETCH", b"FETCH %d:%d (UID FLAGS ENVELOPE)" % (lo, hi)))
                    cmds.append((b"FETCH", b"FETCH %d (BODY.PEEK[])" % rnd.randint(1, exists)))
                    lo = rnd.randint(1, exists)
                    cmds.append((b"STORE", b"STORE %d:%d %sFLAGS (\\Seen)" % (lo, min(exists, lo + 4), rnd.choice([b"+", b"-"]))))
                    if exists > a.keep:
                        cmds.append((b"STORE", b"STORE %d +FLAGS.SILENT (\\Deleted)" % rnd.randint(1, exists)))
                        cmds.append((b"EXPUNGE", b"EXPUNGE"))
                msg = make_msg(100000 + idx, 2048)
                if literal_plus:
                    cmds.append((b"APPEND", b"APPEND INBOX {%d+}\r\n%s" % (len(msg), msg)))
                tags = []
                out = b""
                for k, (name, text) in enumerate(cmds):
                    tag = b"t%d.%d" % (n, k)
                    tags.append((tag, name))
                    out += tag + b" " + text + b"\r\n"
                n += 1
                w.write(out)
                pending = dict(tags)
                while pending:
                    line = await read_response(r)
                    if not line:
                        raise ConnectionError("closed")
                    m = UNTAGGED_NUM.match(line)
                    if m:
                        if m.group(2) == b"EXISTS":
                            exists = int(m.group(1))
                        else:
                            exists = max(0, exists - 1)
                        continue
                    tag = line.split(b" ", 1)[0]
                    if tag in pending:
                        name = pending.pop(tag).decode()
                        st.done[name] += 1
                        rest = line[len(tag) + 1:]
                        if not rest.startswith(b"OK"):
                            st.errors["%s %s" % (name, NUMS.sub(b"N", rest.strip()).decode(errors="replace")[:80])] += 1
                if not literal_plus:
                    w.write(b"a%d APPEND INBOX {%d}\r\n" % (n, len(msg)))
                    line = await r.readline()
                    if line.startswith(b"+"):
                        w.write(msg + b"\r\n")
                        s, _, line = await command(r, w, b"a%d" % n, b"NOOP")
                        st.done["NOOP"] += 1
                    st.done["APPEND"] += 1
                    n += 1
        w.write(b"z LOGOUT\r\n")
    except (ConnectionError, asyncio.IncompleteReadError, RuntimeError, OSError) as e:
        st.disconnects += 1
        st.errors["disconnect: %s" % str(e)[:80]] += 1
    finally:
        w.close()


async def stress_main(a):
    # LITERAL+ (RFC 7888) lets APPEND go in the same write as the rest of the batch
    r, w = await asyncio.open_connection(a.host, a.port)
    await r.readline()
    _, untagged, line = await command(r, w, b"c", b"CAPABILITY")
    caps = b" ".join(untagged).upper()
    literal_plus = b"LITERAL+" in caps
    w.write(b"z LOGOUT\r\n")
    w.close()
    st = Stress()
    t0 = time.monotonic()
    deadline = t0 + a.secs
    await asyncio.gather(*(stress_client(a, i, deadline, st, literal_plus) for i in range(a.clients)))
    el = time.monotonic() - t0
    total = sum(st.done.values())
    fetches = st.done["FETCH"]
    fetch_no = sum(v for k, v in st.errors.items() if k.startswith("FETCH"))
    return {"bench": "store_stress", "label": a.label, "clients": a.clients, "secs": round(el, 1),
            "literal_plus": literal_plus, "commands": total, "commands_per_s": round(total / el),
            "by_command": dict(st.done), "errors": sum(st.errors.values()),
            "fetch_failed_pct": round(fetch_no * 100 / fetches, 1) if fetches else None,
            "error_kinds": dict(st.errors.most_common(12)), "disconnects": st.disconnects}


# ------------------------------------------------------------------ report
def report(path):
    """One run's JSON lines -> markdown rows: Postern | Dovecot | ratio (Postern / Dovecot)."""
    import json
    recs = [json.loads(x) for x in open(path) if x.strip()]
    by = collections.defaultdict(dict)
    rows = []

    def row(name, key, p, d, fmt="%s"):
        if key not in rows:
            rows.append(key)
        by[key]["name"] = name
        by[key]["postern" if p else "dovecot"] = d
        by[key]["fmt"] = fmt

    for r in recs:
        lab = r.get("label")
        if lab not in ("postern", "dovecot"):
            continue
        p = lab == "postern"
        if r["bench"] == "store_sessions":
            n, ex = r.get("open"), r.get("exists")
            if r.get("phase") == "open":
                row("time to open %d sessions (LOGIN+SELECT, 8 at once), INBOX of %s, s" % (r["n"], ex),
                    "open%s" % ex, p, r["open_s"])
                continue
            row("sessions held open with INBOX of %s selected" % ex, "n%s" % ex, p,
                "%s%s" % (n, " (capped by MAX_SERVER_MB)" if r.get("capped_by_max_server_mb") else ""))
            row("memory per idle session, INBOX of %s, KB PSS" % ex, "pss%s" % ex, p, r.get("kb_per_session_pss"))
            row("memory per idle session, INBOX of %s, KB RSS" % ex, "rss%s" % ex, p, r.get("kb_per_session_rss"))
            later = ""
            if "pss_released_mb" in r:
                later = " → %s (%s s)" % (r["pss_released_mb"], r["released_after_s"])
            row("PSS of the serving processes, INBOX of %s, MB (started → one session → all open → all closed %s s "
                "→ later)" % (ex, r.get("settle", "?")),
                "ret%s" % ex, p, "%s → %s → %s → %s%s" % (r.get("pss_start_mb", "?"), r["pss_before_mb"],
                                                          r["pss_open_mb"], r["pss_closed_mb"], later))
            if "idle_cpu_s" in r:
                row("sessions in IDLE, INBOX of %s" % ex, "idlen", p, r.get("idling"))
                row("CPU of those sessions' server in IDLE, nothing arriving (CPU s over the phase, % of a core)",
                    "cpu", p, "%s s (%s %%)" % (r["idle_cpu_s"], r["idle_cpu_pct"]))
                row("one delivered message: sessions told / median / slowest, s", "notify", p,
                    "%s of %s / %s / %s" % (r.get("told"), r.get("idling"), r.get("notify_median_s"), r.get("notify_max_s")))
        elif r["bench"] == "store_steps":
            for k, nm in (("login_select_s", "LOGIN+SELECT"), ("fetch_env_s", "FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)"),
                          ("store_s", "STORE 1:* +FLAGS (\\Flagged)")):
                row("%s, %s messages, s (median of warm passes)" % (nm, r["exists"]), k, p, r[k])
        elif r["bench"] == "store_stress":
            row("stress, %d pipelined clients, %s s: commands/s" % (r["clients"], int(r["secs"])), "cps", p, r["commands_per_s"])
            row("stress: NO/BAD answers (FETCHes failed %)", "err", p,
                "%s (%s %%) %s" % (r["errors"], r["fetch_failed_pct"],
                                  "; ".join("%s ×%d" % kv for kv in r["error_kinds"].items())))
    print("| | Postern | Dovecot 2.3 | Postern / Dovecot |")
    print("| --- | --- | --- | --- |")
    for k in rows:
        b = by[k]
        pv, dv = b.get("postern", "—"), b.get("dovecot", "—")
        ratio = ""
        if isinstance(pv, (int, float)) and isinstance(dv, (int, float)) and dv:
            ratio = "%.2f" % (pv / dv)
        print("| %s | %s | %s | %s |" % (b["name"], pv, dv, ratio))


# ------------------------------------------------------------------ main
def main():
    if sys.argv[1:2] == ["report"]:
        return report(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sessions", "steps", "stress"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("-n", type=int, default=1000, help="sessions to open")
    ap.add_argument("--concurrency", type=int, default=8, help="sessions being opened at once")
    ap.add_argument("--source-ips", type=int, default=200, help="loopback client addresses to spread over")
    ap.add_argument("--settle", type=float, default=3)
    ap.add_argument("--released-after", type=float, default=0,
                    help="sessions: sample the memory again this many seconds after they closed (0: not)")
    ap.add_argument("--max-server-mb", type=float, default=6000, help="stop opening past this PSS of the serving processes (0: no bound)")
    ap.add_argument("--phase", default="mem", help="sessions: mem | idle | open (a name kept in the result)")
    ap.add_argument("--idle", action="store_true")
    ap.add_argument("--cpu-secs", type=float, default=20)
    ap.add_argument("--deliver-smtp", type=int, default=None, help="SMTP port that delivers to --rcpt")
    ap.add_argument("--rcpt", default=None)
    ap.add_argument("--deliver-cmd", default=None, help="shell command that delivers the message on its stdin")
    ap.add_argument("--notify-timeout", type=float, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--secs", type=float, default=30)
    ap.add_argument("--batches", type=int, default=20, help="stress: batches per SELECT")
    ap.add_argument("--keep", type=int, default=100, help="stress: no \\Deleted below this many messages")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--label", default="")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--mem-pidfile", action="append", default=[], help="the server master's pid file")
    ap.add_argument("--mem-pid", action="append", default=[], type=int, help="or its pid")
    ap.add_argument("--mem-comm", default=None,
                    help="count only the processes of that tree whose name matches this regex")
    a = ap.parse_args()
    if not 0 < a.n <= 20000 or not 0 < a.source_ips <= 250 or not 0 < a.clients <= 200:
        ap.error("bounds: 0 < n <= 20000, 0 < source-ips <= 250, 0 < clients <= 200")
    if a.deliver_smtp and not a.rcpt:
        ap.error("--deliver-smtp needs --rcpt")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    sampler = ServingSampler(a.mem_pid, a.mem_pidfile, a.mem_comm)
    if a.what == "sessions":
        r = asyncio.run(sessions_main(a, sampler))
    elif a.what == "steps":
        pa = argparse.Namespace(host=a.host, imap_port=a.port, user=a.user, password=a.password, timeout=a.timeout)
        runs = [imap_pass(pa, 0) for _ in range(a.reps + 1)]
        r = {"bench": "store_steps", "label": a.label, "exists": runs[0]["exists"], "reps": a.reps,
             "cold": {k: round(runs[0][k], 4) for k in ("login_select_s", "fetch_env_s", "store_s")}}
        for k in ("login_select_s", "fetch_env_s", "store_s"):
            r[k] = round(statistics.median(x[k] for x in runs[1:]), 4)
    else:
        r = asyncio.run(stress_main(a))
    benchlib.emit(a.json_out, r)
    print("RESULT store_%s label=%s %s" % (a.what, a.label, " ".join(
        "%s=%s" % (k, v) for k, v in r.items() if k not in ("bench", "label"))), flush=True)


if __name__ == "__main__":
    main()
