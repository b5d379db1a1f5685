#!/usr/bin/env bash
# Retry wave for a dead relay (issue 14): N messages (default 20,000, 4 KB, one per
# connection, Postfix's smtp-source as the generator) are sent to a relay on loopback where
# nothing listens; once all are deferred, every retry time (the queue files' modification
# times, in both systems) is set to a minute ago, and the queue manager's deferred queue
# run meets all N due at once while the relay is still known dead. Measured over the wave,
# for Postern's qmgr and, beside it in the same run, Postfix's qmgr:
#   - CPU of qmgr (utime + stime from /proc/PID/stat) and of the whole system (master,
#     its children, and the children it reaped meanwhile);
#   - qmgr's RSS before, at its peak (sampled every 20 ms) and 3 s after;
#   - the most messages in active/ at once (sampled), and the wave's wall time.
# The wave is over when every file in deferred/ has a new retry time and active/ is empty.
# FRESH=1: qmgr is restarted (SIGTERM to that instance's qmgr, then a trigger on its socket
# so that master starts a new one) before the wave, so it meets the wave without knowing
# the relay is dead, as after a restart or once the dead time has run out: a few probes,
# then the destination is found dead again.
# CPU time, not wall time, is the figure to compare on a busy machine.
#
# Postfix runs as a throwaway instance of its own (config, queue and log in a temporary
# directory, smtpd on a free loopback port, no chroot), so the shared peer on 10025 is
# neither reconfigured nor filled; it needs the postfix package (bench/peer/peer-setup.sh
# installs it). PEER=0 measures Postern only.
#   sudo bench/retry_wave.sh          # N=20000 C=16 SIZE=4096 FRESH=0; NO_BUILD=1; KEEP=1
. "$(dirname "$0")/lib.sh"
N=${N:-20000}
C=${C:-16}
SIZE=${SIZE:-4096}
TIMEOUT=${TIMEOUT:-900}
OUT=$(results_file retry_wave)
PW=

build_release
[ -x /usr/sbin/postfix ] || { [ "$PEER" = 0 ] || progress "no Postfix installed: measuring Postern only"; PEER=0; }
DEAD=$(free_port) # nothing listens there: connections are refused

send() { # PORT
  if [ -x /usr/sbin/smtp-source ]; then
    timeout "$TIMEOUT" /usr/sbin/smtp-source -s "$C" -m "$N" -l "$SIZE" -f bench@example.test -t user@dead.test "127.0.0.1:$1"
  else
    python3 bench/peer/smtp_load.py --port "$1" --to user@dead.test -n "$N" -c "$C" --size "$SIZE" --reps 1 \
      --timeout "$TIMEOUT" >/dev/null
  fi
}

# The measurement: waits for N deferred, makes them due, samples until the wave is over.
measure() { # LABEL MASTER_PIDFILE QUEUE_DIR
  python3 - "$1" "$2" "$3" "$N" "$TIMEOUT" "$OUT" <<'EOT'
import json, os, signal, socket, sys, time
label, pidfile, qdir, n, timeout, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
HZ = os.sysconf("SC_CLK_TCK")

def children(pid):
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            out += [int(p) for p in open("/proc/%d/task/%s/children" % (pid, t)).read().split()]
        except OSError:
            pass
    return out

def comm(pid):
    try:
        return open("/proc/%d/comm" % pid).read().strip()
    except OSError:
        return ""

def ticks(pid, reaped=False):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if reaped else 0)

def rss_kb(pid, key="VmRSS"):
    try:
        for l in open("/proc/%d/status" % pid):
            if l.startswith(key + ":"):
                return int(l.split()[1])
    except OSError:
        sys.exit("%s: qmgr (pid %d) is gone" % (label, pid))
    return 0

def files(d):
    return [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(qdir, d)) for f in fs]

master = int(open(pidfile).read().split()[0])
def system_ticks():
    return ticks(master, reaped=True) + sum(ticks(c) for c in children(master))

deadline = time.time() + timeout
while not (len(files("deferred")) == n and not files("active") and not files("incoming")):
    if time.time() > deadline:
        sys.exit("%s: %d deferred, %d active, %d incoming after %ds" % (
            label, len(files("deferred")), len(files("active")), len(files("incoming")), timeout))
    time.sleep(1)
time.sleep(3)
qmgr = [c for c in children(master) if comm(c) == "qmgr"][0]
fresh = os.environ.get("FRESH") == "1"
if fresh:
    os.kill(qmgr, signal.SIGTERM)
    old = qmgr
    while qmgr == old:
        if time.time() > deadline:
            sys.exit("%s: no new qmgr" % label)
        time.sleep(0.5)
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(os.path.join(qdir, "public", "qmgr"))
            s.send(b"A")
            s.close()
        except OSError:
            pass
        qmgr = ([c for c in children(master) if comm(c) == "qmgr"] + [old])[0]
    time.sleep(3)
rss0, q0, s0, t0 = rss_kb(qmgr), ticks(qmgr), system_ticks(), time.time()
for p in files("deferred"):
    try:
        os.utime(p, (t0 - 60, t0 - 60))
    except FileNotFoundError:  # taken in already
        pass
peak, most, last_check = rss0, 0, 0.0
while True:
    now = time.time()
    if now > deadline:
        sys.exit("%s: the wave did not end within %ds" % (label, timeout))
    peak = max(peak, rss_kb(qmgr))
    most = max(most, len(files("active")))
    if now - last_check > 0.5:
        last_check = now
        d = files("deferred")
        try:
            if len(d) == n and not files("active") and all(os.stat(p).st_mtime > t0 for p in d):
                break
        except FileNotFoundError:  # moved meanwhile: not over yet
            pass
    time.sleep(0.02)
wall = time.time() - t0
q1, s1 = ticks(qmgr), system_ticks()
time.sleep(3)
r = {"bench": "retry_wave", "label": label, "n": n, "fresh": fresh, "qmgr_cpu_s": (q1 - q0) / HZ,
     "system_cpu_s": (s1 - s0) / HZ, "qmgr_rss_kb_before": rss0, "qmgr_rss_kb_peak": peak,
     "qmgr_rss_kb_after": rss_kb(qmgr), "max_active": most, "wave_s": round(wall, 2),
     "load_avg": open("/proc/loadavg").read().split()[0]}
print("RESULT " + json.dumps(r))
with open(out, "a") as f:
    f.write(json.dumps(r) + "\n")
EOT
}

pf_stop() {
  if [ -n "$PW" ] && [ -d "$PW/etc" ]; then
    postfix -c "$PW/etc" stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$PW"
  fi
}

pf_new() { # a Postfix instance of its own, relaying everything to the dead port
  PW=$(mktemp -d "$WORK/postfix-wave.XXXXXX")
  chmod 755 "$PW"
  mkdir -p "$PW/etc" "$PW/data" "$PW/spool"
  chown postfix "$PW/data"
  PFPORT=$(free_port)
  cat > "$PW/etc/main.cf" <<EOT
queue_directory = $PW/spool
data_directory = $PW/data
maillog_file = $PW/maillog
maillog_file_prefixes = $WORK
myhostname = wave.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$DEAD
alias_maps =
alias_database =
minimal_backoff_time = 3600s
maximal_backoff_time = 3600s
queue_run_delay = 5s
compatibility_level = 3.6
EOT
  # Debian's master.cf without chroot, smtpd on the free port only.
  awk -v port="$PFPORT" '
    /^[a-z0-9]/ && $1 == "smtp" && $2 == "inet" { print "127.0.0.1:" port " inet n - n - - smtpd"; next }
    /^[a-z0-9]/ && NF >= 8 { $5 = "n"; print; next }
    { print }' /etc/postfix/master.cf > "$PW/etc/master.cf"
  postfix -c "$PW/etc" start >&2
}

postern_new
PORT=$(free_port)
pn_set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' "relayhost=[127.0.0.1]:$DEAD" \
  'minimal_backoff_time=3600s' 'maximal_backoff_time=3600s' 'queue_run_delay=5s'
pn_start
if [ "$PEER" != 0 ]; then
  pf_new
  trap 'pf_stop; _bench_cleanup' EXIT
fi

progress "retry wave postern: sending $N to a dead relay"
send "$PORT" >/dev/null
measure postern "$(pn_pidfile)" "$INST/var/spool" | grep RESULT
if [ "$PEER" != 0 ]; then
  progress "retry wave postfix: sending $N to a dead relay"
  send "$PFPORT" >/dev/null
  measure postfix "$PW/spool/pid/master.pid" "$PW/spool" | grep RESULT
fi
