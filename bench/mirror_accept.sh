#!/usr/bin/env bash
# Two-node durability benchmark (issue 16): SMTP accept rate and the latency of the 250
# after DATA with the queue mirror on (the 250 waits for the peer's fsynced copy) and off,
# same load generator, same machine, same run, the two cases interleaved.
#
#   bench/mirror_accept.sh                  # REPS=3 N=2000 SIZES="4096 102400" CONCS="1 8 32"
#   NO_BUILD=1 REPS=1 N=500 CONCS="1 8" bench/mirror_accept.sh
#
# Three throwaway Postern instances from target/release on loopback (bench/lib.sh's
# conventions, free ports): ON accepts with queue_mirror_peer pointing at PEER's mirror
# service; PEER only keeps the copies (qmgr on ON tells it to drop them as ON delivers);
# OFF is the same configuration without the mirror. All three share this machine's disk
# and CPUs, so the mirror's second fsync lands on the same device as the first — on a real
# pair each node fsyncs its own disk and the cost is one network round trip plus the
# peer's fsync. Results: one JSON line per run in $OUT (default
# $WORK/results/mirror_accept-DATE.jsonl) and a table on stdout.
. "$(dirname "$0")/lib.sh"
N=${N:-2000}
SIZES=${SIZES:-4096 102400}
CONCS=${CONCS:-1 8 32}
OUT=$(results_file mirror_accept)

build_release -p master -p postern -p smtpd -p cleanup -p trivial-rewrite -p qmgr -p local -p smtp \
  -p bounce -p anvil -p auth -p pickup -p pop3d -p imapd -p mirror

INSTS=()
_mirror_cleanup() {
  local d
  for d in "${INSTS[@]}"; do
    "$BIN/postern" -c "$d/etc" stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$d"
  done
}
trap _mirror_cleanup EXIT

# new_inst NAME: a copy of etc/ with every inet service on a free loopback port; prints its directory.
new_inst() {
  local d sets=("daemon_directory=$BIN" 'mydestination=["example.test","localhost"]') svc
  d=$(mktemp -d "$WORK/mirror-$1.XXXXXX")
  chmod 755 "$d"
  cp -r etc "$d/etc"
  for svc in $(python3 -c 'import sys, tomllib
for s in tomllib.load(open(sys.argv[1], "rb")).get("service", []):
    if s.get("type") == "inet": print(s["name"])' "$d/etc/master.toml"); do
    sets+=("$svc/inet.listen=127.0.0.1:$(free_port)")
  done
  "$BIN/postern" -c "$d/etc" config set "${sets[@]}" 'smtp/inet.max_conns=200' >/dev/null
  echo bench-pw | "$BIN/postern" -c "$d/etc" user add bench >/dev/null
  echo "$d"
}
# add_mirror DIR [LISTEN]: the mirror services (inet only with LISTEN) and the shared secret.
add_mirror() {
  if [ -n "${2:-}" ]; then
    printf '\n[[service]]\nname = "mirror"\ntype = "inet"\nlisten = "%s"\ncommand = "mirror"\nmaxproc = 1\nmax_conns = 256\nmax_use = 1000000\nmax_idle = "1d"\n' "$2" >>"$1/etc/master.toml"
  fi
  printf '\n[[service]]\nname = "mirror"\ntype = "unix"\ncommand = "mirror"\nmaxproc = 1\nmax_conns = 256\nmax_use = 1000000\nmax_idle = "1d"\n' >>"$1/etc/master.toml"
  (umask 077; echo "bench-mirror-secret-0123456789abcdef" >"$1/etc/mirror-secret")
}
smtp_port() {
  python3 -c 'import sys, tomllib
for s in tomllib.load(open(sys.argv[1], "rb"))["service"]:
    if s["name"] == "smtp" and s["type"] == "inet":
        l = s["listen"]
        print((l if isinstance(l, str) else l[0]).rsplit(":", 1)[1])' "$1/etc/master.toml"
}

MPORT=$(free_port)
PEER_I=$(new_inst peer); INSTS+=("$PEER_I")
add_mirror "$PEER_I" "127.0.0.1:$MPORT"
"$BIN/postern" -c "$PEER_I/etc" config set queue_mirror_secret_file=mirror-secret >/dev/null
ON=$(new_inst on); INSTS+=("$ON")
add_mirror "$ON"
"$BIN/postern" -c "$ON/etc" config set "queue_mirror_peer=127.0.0.1:$MPORT" \
  queue_mirror_secret_file=mirror-secret queue_mirror_unreachable=defer >/dev/null
OFF=$(new_inst off); INSTS+=("$OFF")
for d in "$PEER_I" "$ON" "$OFF"; do "$BIN/postern" -c "$d/etc" start --quiet; done
PORT_ON=$(smtp_port "$ON")
PORT_OFF=$(smtp_port "$OFF")
progress "mirror_accept: ON smtp 127.0.0.1:$PORT_ON -> PEER mirror 127.0.0.1:$MPORT; OFF smtp 127.0.0.1:$PORT_OFF"

load() { # label port size conc
  progress "mirror_accept $1 size=$3 sessions=$4 n=$N reps=$REPS"
  python3 bench/smtp_accept.py --port "$2" --to bench@example.test --size "$3" -c "$4" -n "$N" \
    --reps "$REPS" --label "$1" --json-out "$OUT" --timeout 240
}
for size in $SIZES; do
  for c in $CONCS; do
    load mirror-off "$PORT_OFF" "$size" "$c"
    load mirror-on "$PORT_ON" "$size" "$c"
    # Both deliver what they accept; empty the mailboxes between configurations.
    find "$ON/var/mail/bench" "$OFF/var/mail/bench" \( -path '*/new/*' -o -path '*/cur/*' \) -type f -delete 2>/dev/null || true
  done
done
# Every copy the peer held is dropped once ON has delivered the message.
for _ in $(seq 60); do
  left=$(find "$PEER_I/var/spool/mirror" -maxdepth 1 -type f ! -name '.*' | wc -l)
  [ "$left" = 0 ] && break
  sleep 1
done
progress "copies still held by the peer at the end: $left"
python3 - "$OUT" <<'EOF'
import collections, json, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["size"], r["c"], r["label"])].append(r)
med = lambda rs, k: statistics.median([r[k] for r in rs if r.get(k) is not None] or [0])  # noqa: E731
print("| size | sessions | off msg/s | on msg/s | on/off | off p50/p99 ms | on p50/p99 ms | failed (on) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for s, c in sorted({(s, c) for (s, c, _) in rows}):
    off, on = rows.get((s, c, "mirror-off"), []), rows.get((s, c, "mirror-on"), [])
    a, b = med(off, "rate"), med(on, "rate")
    print("| %d KB | %d | %s | %s | %s | %s / %s | %s / %s | %d |" % (
        s // 1024, c, a, b, "%.2f" % (b / a) if a else "-", med(off, "p50_ms"), med(off, "p99_ms"),
        med(on, "p50_ms"), med(on, "p99_ms"), sum(r.get("failed", 0) for r in on)))
EOF
