#!/usr/bin/env bash
# bench/redundant_throughput.sh — the cost of the copy (issue 15): messages per second
# accepted, and delivered to BOTH mailbox servers, through the two hubs of the redundant
# cluster (examples/redundant: pst-mh1 and pst-mh2 copying every message to pst-mba and
# pst-mbb), beside one single-node Postern (SMTP -> Maildir on loopback) on the same
# machine, same generator, same message size, count and concurrency, in the same run,
# alternating: cluster, single, cluster, single, ...
#
#   bench/redundant_throughput.sh                  # N=2000 C=16 SIZE=4096 ROUNDS=2, as root
#   N=1000 ROUNDS=3 NO_BUILD=1 bench/redundant_throughput.sh
#
# Load: Postfix's smtp-source. Cluster: run inside the client namespace (ip netns exec),
# two smtp-source at once, N/2 messages with C/2 sessions each, one against mh1's
# 198.18.0.21:25 and one against mh2's 198.18.0.22:25, all to alice@example.test.
# Single node: one smtp-source, N messages, C sessions, to a throwaway instance of etc/
# (bench/lib.sh postern_new) on a free loopback port, smtpd maxproc 8 like each hub.
# Accepted/s: N over the time until every smtp-source has finished. Delivered/s: N over
# the time from the first connection until the last message is a file in the Maildir(s):
# for the cluster, in alice's Maildir (new/ + cur/) on A AND on B (file counts; the
# copies carry the same name on both, see cluster-design); afterwards each Maildir must
# hold exactly N new files (checked: no message lost or doubled).
#
# The cluster is built fresh for every cluster run by examples/redundant/up.sh and removed
# with down.sh --purge, under its own namespace prefix (PST_PREFIX, default pst-bn-) and
# work directory (PST_DIR, default $WORK/redundant), with the release binaries
# (POSTERN_BIN=$BIN; up.sh alone would take the newer of the release and debug builds).
# Each run starts with a warm-up of 100 messages that must reach both Maildirs.
# Prints one line per run and, at the end, the medians; one JSON line per run in $OUT
# (default $WORK/results/redundant_throughput-DATE.jsonl), with the load average.
. "$(dirname "$0")/lib.sh"
N=${N:-2000}
C=${C:-16}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-2}
export PST_PREFIX=${PST_PREFIX:-pst-bn-}
export PST_DIR=${PST_DIR:-$WORK/redundant}
export POSTERN_BIN=$BIN
EX=$ROOT/examples/redundant
CLIENT_NS=${PST_PREFIX}client
OUTF=$(results_file redundant_throughput)
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
[ $((N % 2)) = 0 ] && [ $((C % 2)) = 0 ] || { echo "N and C must be even (split over two hubs)" >&2; exit 1; }

build_release
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# wait_files TARGET TIMEOUT MAILDIR...: until every MAILDIR holds TARGET files in new/ +
# cur/; prints the time it was reached (or "timeout") and the counts.
wait_files() {
  python3 - "$@" <<'EOT'
import os, sys, time
target, timeout, dirs = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
def count(md):
    n = 0
    for sub in ("new", "cur"):
        try:
            n += len(os.listdir(os.path.join(md, sub)))
        except FileNotFoundError:
            pass
    return n
end = time.time() + timeout
while True:
    c = [count(d) for d in dirs]
    if min(c) >= target:
        print("%.6f" % time.time(), *c)
        break
    if time.time() > end:
        print("timeout", *c)
        break
    time.sleep(0.02)
EOT
}

# report LABEL T0 T1 DONE_LINE BASE LOAD_BEFORE: the run's line and JSON record.
report() {
  python3 - "$@" "$N" "$C" "$SIZE" "$(loadavg)" "$OUTF" <<'EOT'
import json, sys
label, t0, t1, done, base, lb, n, c, size, la, out = sys.argv[1:]
t0, t1, n, base = float(t0), float(t1), int(n), int(base)
w = done.split()
counts = [int(x) - base for x in w[1:]]
t2 = None if w[0] == "timeout" else float(w[0])
rec = {"bench": "redundant_throughput", "label": label, "n": n, "c": c, "size": int(size),
       "accept_rate": round(n / (t1 - t0), 1),
       "deliver_rate": round(n / (t2 - t0), 1) if t2 else None,
       "delivered": counts, "exact": all(x == n for x in counts),
       "load_before": lb, "load_after": la}
print("%-8s accepted %6.1f/s  delivered%s %s/s  files %s  load %s -> %s" % (
    label, rec["accept_rate"], " to both" if len(counts) == 2 else "",
    rec["deliver_rate"], counts, lb, la), flush=True)
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
EOT
}

cluster_down() { sh "$EX/down.sh" --purge >/dev/null 2>&1 || true; }

run_cluster() {
  progress "cluster: up.sh ($PST_PREFIX*, $PST_DIR)"
  sh "$EX/up.sh" >/dev/null
  trap 'cluster_down; _bench_cleanup' EXIT
  local mda=$PST_DIR/mba/var/mail/alice mdb=$PST_DIR/mbb/var/mail/alice
  local half=$((N / 2)) hc=$((C / 2)) fin base t0 t1 lb h
  # warm-up: both hubs answer, both copies of each arrive
  for h in 21 22; do
    for _ in $(seq 100); do
      ip netns exec "$CLIENT_NS" python3 -c "import socket; socket.create_connection(('198.18.0.$h', 25), 1).recv(100)" 2>/dev/null && break
      sleep 0.2
    done
    ip netns exec "$CLIENT_NS" /usr/sbin/smtp-source -s 2 -m 50 -l "$SIZE" -f bench@example.test \
      -t alice@example.test "198.18.0.$h:25"
  done
  fin=$(wait_files 100 120 "$mda" "$mdb")
  case "$fin" in timeout*) echo "cluster warm-up not delivered: $fin" >&2; exit 1 ;; esac
  sleep 2
  base=$(wait_files 0 1 "$mda" "$mdb" | awk '{ print ($2 < $3 ? $3 : $2) }')
  lb=$(loadavg)
  t0=$(date +%s.%N)
  ip netns exec "$CLIENT_NS" /usr/sbin/smtp-source -s "$hc" -m "$half" -l "$SIZE" -f bench@example.test \
    -t alice@example.test 198.18.0.21:25 &
  local p1=$!
  ip netns exec "$CLIENT_NS" /usr/sbin/smtp-source -s "$hc" -m "$half" -l "$SIZE" -f bench@example.test \
    -t alice@example.test 198.18.0.22:25 &
  local p2=$!
  wait "$p1"; wait "$p2"
  t1=$(date +%s.%N)
  fin=$(wait_files $((base + N)) 600 "$mda" "$mdb")
  # let late duplicates (if any) show up before the exactly-once count
  sleep 3
  fin="$(echo "$fin" | cut -d' ' -f1) $(wait_files 0 1 "$mda" "$mdb" | cut -d' ' -f2-)"
  report cluster "$t0" "$t1" "$fin" "$base" "$lb"
  cluster_down
  trap _bench_cleanup EXIT
}

run_single() {
  postern_new
  local port md fin base t0 t1 lb
  port=$(free_port)
  pn_set "smtp/inet.listen=127.0.0.1:$port" 'smtp/inet.maxproc=8' 'mydestination=["example.test","localhost"]'
  pn_user alice alice-pw
  pn_start >/dev/null
  md=$INST/var/mail/alice
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).recv(100)" 2>/dev/null && break
    sleep 0.2
  done
  /usr/sbin/smtp-source -s 2 -m 100 -l "$SIZE" -f bench@example.test -t alice@example.test "127.0.0.1:$port"
  fin=$(wait_files 100 120 "$md")
  case "$fin" in timeout*) echo "single-node warm-up not delivered: $fin" >&2; exit 1 ;; esac
  sleep 2
  base=$(wait_files 0 1 "$md" | awk '{ print $2 }')
  lb=$(loadavg)
  t0=$(date +%s.%N)
  /usr/sbin/smtp-source -s "$C" -m "$N" -l "$SIZE" -f bench@example.test -t alice@example.test "127.0.0.1:$port"
  t1=$(date +%s.%N)
  fin=$(wait_files $((base + N)) 600 "$md")
  sleep 3
  fin="$(echo "$fin" | cut -d' ' -f1) $(wait_files 0 1 "$md" | cut -d' ' -f2-)"
  report single "$t0" "$t1" "$fin" "$base" "$lb"
  _bench_cleanup
  INST=
}

progress "redundant_throughput N=$N C=$C SIZE=$SIZE ROUNDS=$ROUNDS BIN=$BIN; load $(loadavg)"
for r in $(seq "$ROUNDS"); do
  run_cluster
  run_single
done
python3 - "$OUTF" <<'EOT'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for label in ("cluster", "single"):
    rs = [r for r in recs if r["label"] == label]
    acc = statistics.median(r["accept_rate"] for r in rs)
    dl = [r["deliver_rate"] for r in rs if r["deliver_rate"]]
    print("median %-8s accepted %6.1f/s  delivered %s/s  (%d runs, all exact: %s)" % (
        label, acc, round(statistics.median(dl), 1) if dl else None, len(rs), all(r["exact"] for r in rs)))
EOT
echo "results: $OUTF"
