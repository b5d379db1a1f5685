#!/usr/bin/env bash
# bench/replica_catchup.sh — how long a mailbox server that was down takes to catch up
# (issue 15): two Postern instances on loopback running only the replicator (inet for
# the peer, unix for the local Sync request), one user. Both start in step with BASE
# messages; B is stopped; A gets N new messages (hub copies) and flag changes on N of
# the messages B has; B is started again and one Sync request through B's
# private/replicator is timed until B is in step (checked: same UIDs, names and flags in
# both Maildirs).
#
#   bench/replica_catchup.sh              N=10000 BASE=10000, release build
#   N=2000 BASE=2000 bench/replica_catchup.sh
#   NO_BUILD=1 BIN=target/debug bench/replica_catchup.sh
#
# Prints one JSON line (also appended to $WORK/results/replica_catchup-*.jsonl):
#   {"bench":"replica_catchup","missed_messages":N,"flag_changes":N,"seconds":S,...}
. "$(dirname "$0")/lib.sh"
N=${N:-10000}
BASE=${BASE:-$N}
SIZE=${SIZE:-2000}
build_release -p replicator -p postern -p master
OUTF=$(results_file replica_catchup)
DIR=$(mktemp -d "$WORK/replica.XXXXXX")
chmod 755 "$DIR"
cleanup() {
  for n in a b; do "$BIN/postern" -c "$DIR/$n/etc" stop >/dev/null 2>&1 || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT

PA=$(free_port); PB=$(free_port)
make_node() { # NAME OWN_PORT PEER_PORT
  local d=$DIR/$1
  mkdir -p "$d/etc" "$d/var/mail"
  cp etc/main.toml "$d/etc/main.toml"
  cat > "$d/etc/master.toml" <<EOF
[[service]]
name = "replicator"
type = "inet"
listen = "127.0.0.1:$2"
command = "replicator"
maxproc = 4

[[service]]
name = "replicator"
type = "unix"
command = "replicator"
maxproc = 1
max_use = 1000000
max_idle = "1d"
EOF
  (umask 077; echo "bench-replica-shared-secret-0123456789" > "$d/etc/replica.secret")
  "$BIN/postern" -c "$d/etc" config set "daemon_directory=$BIN" "queue_directory=$d/var/spool" \
    "virtual_mailbox_base=$d/var/mail" "maillog_file=$d/var/maillog" "replica_name=node-$1" \
    "replica_peers=[\"127.0.0.1:$3\"]" "replica_secret_file=replica.secret" \
    "replica_sync_interval=1h" "replica_timeout=120s" >/dev/null
}
make_node a "$PA" "$PB"
make_node b "$PB" "$PA"

# fill MAILDIR FIRST COUNT: hub copies (the same names on both servers)
fill() {
  python3 - "$1" "$2" "$3" "$SIZE" <<'EOT'
import os, sys
md, first, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for d in ("tmp", "new", "cur"):
    os.makedirs(os.path.join(md, d), exist_ok=True)
body = ("x" * 76 + "\r\n") * max(1, size // 78)
for k in range(first, first + count):
    name = "%d.G%032x.replica" % (1765000000 + k, k)
    with open(os.path.join(md, "new", name), "w") as f:
        f.write("Message-ID: <%d@bench>\r\nSubject: message %d\r\n\r\n%s" % (k, k, body))
EOT
}
# flag MAILDIR COUNT: \Seen on the first COUNT messages of cur/ (a rename, as imapd does)
flag() {
  python3 - "$1" "$2" <<'EOT'
import os, sys
cur = os.path.join(sys.argv[1], "cur")
names = sorted(n for n in os.listdir(cur) if ":2," in n and "S" not in n.split(":2,")[1])
for n in names[: int(sys.argv[2])]:
    os.rename(os.path.join(cur, n), os.path.join(cur, n + "S" if n.endswith(":2,") else n.replace(":2,", ":2,S")))
EOT
}
# sync NODE: one Sync request; prints the reply
sync() {
  python3 - "$DIR/$1/var/spool/private/replicator" <<'EOT'
import json, socket, struct, sys
def frame(o):
    b = json.dumps(o).encode()
    return struct.pack(">IB", len(b), 77) + b
def read(s, n):
    out = b""
    while len(out) < n:
        c = s.recv(n - len(out))
        if not c:
            raise SystemExit("replicator closed the connection")
        out += c
    return out
s = socket.socket(socket.AF_UNIX)
s.settimeout(3600)
s.connect(sys.argv[1])
s.sendall(frame({"protocol": "replica", "version": 1}) + frame({"type": "sync", "user": "alice"}))
for _ in range(2):
    n, k = struct.unpack(">IB", read(s, 5))
    msg = json.loads(read(s, n))
print(json.dumps(msg))
EOT
}
# state NODE: a digest of UIDs, names and flags of the user's INBOX
state() {
  python3 - "$DIR/$1/var/mail/alice" <<'EOT'
import hashlib, os, sys
md = sys.argv[1]
files = {}
for d in ("new", "cur"):
    for n in os.listdir(os.path.join(md, d)):
        b, _, f = n.partition(":2,")
        files[b] = f
lines = open(os.path.join(md, "dovecot-uidlist")).read().splitlines()[1:]
out = []
for l in lines:
    head, _, base = l.partition(":")
    if base in files:
        out.append("%s %s %s" % (head.split()[0], base, files[base]))
print(len(out), hashlib.sha256("\n".join(out).encode()).hexdigest()[:16])
EOT
}
owner() { if [ "$(id -u)" = 0 ]; then chown -R postern: "$DIR/a/var/mail" "$DIR/b/var/mail"; fi; }

progress "filling both replicas with $BASE messages"
fill "$DIR/a/var/mail/alice" 0 "$BASE"
fill "$DIR/b/var/mail/alice" 0 "$BASE"
owner
"$BIN/postern" -c "$DIR/a/etc" start >/dev/null
"$BIN/postern" -c "$DIR/b/etc" start >/dev/null
for n in a b; do
  for _ in $(seq 100); do [ -S "$DIR/$n/var/spool/private/replicator" ] && break; sleep 0.1; done
done
progress "first contact: $(sync a)"
[ "$(state a)" = "$(state b)" ] || { echo "not in step after the first sync" >&2; exit 1; }
"$BIN/postern" -c "$DIR/b/etc" stop >/dev/null
progress "B stopped; A gets $N messages and $N flag changes"
fill "$DIR/a/var/mail/alice" "$BASE" "$N"
flag "$DIR/a/var/mail/alice/" "$N"
owner
"$BIN/postern" -c "$DIR/b/etc" start >/dev/null
for _ in $(seq 100); do [ -S "$DIR/b/var/spool/private/replicator" ] && break; sleep 0.1; done
progress "B started; timing its catch-up"
T0=$(date +%s.%N)
REPLY=$(sync b)
T1=$(date +%s.%N)
SA=$(state a); SB=$(state b)
[ "$SA" = "$SB" ] || { echo "not in step: A $SA, B $SB; $REPLY" >&2; exit 1; }
SECS=$(python3 -c "print(round($T1 - $T0, 2))")
LINE=$(printf '{"bench":"replica_catchup","missed_messages":%d,"flag_changes":%d,"base_messages":%d,"message_bytes":%d,"seconds":%s,"build":"%s","reply":%s}' \
  "$N" "$N" "$BASE" "$SIZE" "$SECS" "$(basename "$BIN")" "$REPLY")
echo "$LINE" | tee -a "$OUTF"
