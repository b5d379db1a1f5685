#!/bin/sh
# IMAP benchmark of imapd on a 10,000-message INBOX, with ../shared/bench/imap_pop_load.py
# (the same steps it runs against Dovecot), then POP3 LIST/UIDL/RETR of every message: LOGIN+SELECT, FETCH 1:* (FLAGS RFC822.SIZE
# ENVELOPE), FETCH 1:* BODY.PEEK[], SEARCH HEADER SUBJECT, SEARCH BODY, STORE 1:*, and a
# login storm. Builds release binaries, runs master with auth + imap in a temporary
# directory on loopback, fills the Maildir directly (as a delivery would), prints the
# figures, and stops everything. Not a test: nothing here asserts timings.
#
#   bench/imap_bench.sh [N] [REPS]
set -eu
N=${1:-10000}
REPS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=${IMAP_POP_LOAD:-$ROOT/bench/peer/imap_pop_load.py}
cargo build --release -q -p master -p postern -p auth -p imapd -p pop3d --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
DIR=$(mktemp -d /tmp/imap-bench.XXXXXX)
chmod 755 "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
POP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$DIR/etc"
cp "$ROOT/etc/main.toml" "$DIR/etc/"
cat > "$DIR/etc/master.toml" <<EOT
[[service]]
name = "auth"
type = "unix"
command = "$BIN/auth"
maxproc = 1
max_use = 1000000

[[service]]
name = "imap"
type = "inet"
listen = "127.0.0.1:$PORT"
command = "$BIN/imapd"
maxproc = 4
max_use = 1000000

[[service]]
name = "pop3"
type = "inet"
listen = "127.0.0.1:$POP_PORT"
command = "$BIN/pop3d"
maxproc = 4
max_use = 1000000
EOT
P="$BIN/postern -c $DIR/etc"
trap '$P stop >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
echo 'bench-pw' | $P user add bench >/dev/null
MD="$DIR/var/mail/bench"
mkdir -p "$MD/new" "$MD/cur" "$MD/tmp"
python3 - "$LOAD" "$MD/new" "$N" <<'EOT'
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("load", sys.argv[1])
load = importlib.util.module_from_spec(spec)
sys.path.insert(0, os.path.dirname(sys.argv[1]))
spec.loader.exec_module(load)
newd, n = sys.argv[2], int(sys.argv[3])
base = int(time.time())
for i in range(1, n + 1):
    msg = load.make_msg(i, 4096).replace(b"\r\n", b"\n")
    with open(os.path.join(newd, "%d.M%dP%d.bench,S=%d" % (base, i, os.getpid(), len(msg))), "wb") as f:
        f.write(msg)
EOT
if [ "$(id -u)" = 0 ]; then chown -R postern: "$DIR/var/mail"; fi
$P start
python3 "$LOAD" --imap-port "$PORT" --pop-port "$POP_PORT" --user bench --password bench-pw --populate none \
    -n "$N" --reps "$REPS" --label postern
