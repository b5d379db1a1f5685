#!/usr/bin/env bash
# IMAP and POP3 benchmark (issue 5): Postern's imapd and pop3d beside Dovecot, same
# generator (bench/peer/imap_pop_load.py), same mailbox, same machine, same run. Steps on
# an N-message INBOX: LOGIN+SELECT, FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE), FETCH 1:*
# BODY.PEEK[], SEARCH HEADER SUBJECT, SEARCH BODY, STORE 1:* +FLAGS, logins per second
# from 8 clients, POP3 LIST/UIDL/RETR of every message; then the memory per idle IMAP
# connection with IDLE_CONNS connections logged in (bench/idle_imap.py).
#
#   sudo bench/imap_bench.sh [N] [REPS]       # N=10000 REPS=3; LOGINS=400 IDLE_CONNS=1000 PEER=0
#
# Both servers log in the same system user, benchbox (created here, password benchbox-pw):
# Dovecot checks its /etc/shadow hash through PAM, and Postern's etc/users is given that
# very hash, so logins cost the same on both sides. Each mailbox is filled directly (as a
# delivery would, bench/fill_maildir.py) and owned by the user its server reads it as.
# Postern runs master with auth, imap and pop3 only, from a throwaway instance
# (bench/lib.sh). Not a test: nothing here asserts timings. Results: JSON lines in $OUT.
. "$(dirname "$0")/lib.sh"
N=${1:-${N:-10000}}
REPS=${2:-$REPS}
LOGINS=${LOGINS:-400}
IDLE_CONNS=${IDLE_CONNS:-1000}
OUT=$(results_file imap_bench)
LOAD=$PEER_DIR/imap_pop_load.py
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

build_release -p master -p postern -p auth -p imapd -p pop3d
peer_ensure
bench_mailbox_user

postern_new
PORT=$(free_port)
POP_PORT=$(free_port)
cat > "$INST/etc/master.toml" <<EOT
[[service]]
name = "auth"
type = "unix"
command = "auth"
maxproc = 1
max_use = 1000000

[[service]]
name = "imap"
type = "inet"
listen = "127.0.0.1:$PORT"
command = "imapd"
maxproc = 4
max_use = 1000000
max_conns = 1000

[[service]]
name = "pop3"
type = "inet"
listen = "127.0.0.1:$POP_PORT"
command = "pop3d"
maxproc = 4
max_use = 1000000
EOT
pn_set "imapd_user_connection_limit=$((IDLE_CONNS + 100))"
if [ -n "$HASH" ]; then pn_user "$USER_NAME" "$USER_PW" "$HASH"; else pn_user "$USER_NAME" "$USER_PW"; fi
# the scheme and cost of each side's hash (the hash without its salt and value)
params() { sed 's/\$[^$]*\$[^$]*$//'; }
emit_json "$OUT" "{\"bench\": \"hash\", \"label\": \"postern\", \"params\": \"$(grep "^$USER_NAME:" "$INST/etc/users" | cut -d: -f2 | params)\"}"
[ "$PEER" = 0 ] || emit_json "$OUT" "{\"bench\": \"hash\", \"label\": \"dovecot\", \"params\": \"$(echo "$HASH" | params)\"}"

OWNER=$([ "$(id -u)" = 0 ] && echo postern || id -un)
progress "imap_bench: filling Postern's mailbox with $N messages"
python3 bench/fill_maildir.py --maildir "$INST/var/mail/$USER_NAME" -n "$N"
[ "$OWNER" = postern ] && chown -R postern: "$INST/var/mail"
pn_start

measure() { # label imap-port pop-port pidfile
  progress "imap_bench $1: IMAP/POP3 steps over $N messages, $REPS warm passes, $LOGINS logins"
  python3 "$LOAD" --imap-port "$2" --pop-port "$3" --user "$USER_NAME" --password "$USER_PW" --populate none \
    -n "$N" --reps "$REPS" -c 8 --logins "$LOGINS" --label "$1" --json-out "$OUT" --mem-pidfile "$4" | grep RESULT
  progress "imap_bench $1: $IDLE_CONNS idle IMAP connections"
  python3 bench/idle_imap.py --port "$2" --user "$USER_NAME" --password "$USER_PW" -n "$IDLE_CONNS" \
    --label "$1" --json-out "$OUT" --mem-pidfile "$4" | grep -E 'RESULT|error'
}
measure postern "$PORT" "$POP_PORT" "$(pn_pidfile)"

if [ "$PEER" != 0 ]; then
  progress "imap_bench: filling Dovecot's mailbox with $N messages"
  python3 bench/fill_maildir.py --maildir "/home/$USER_NAME/Maildir" -n "$N" --owner "$USER_NAME"
  measure dovecot 10143 10110 "$DOVECOT_PID"
  python3 -c "import sys; sys.path.insert(0, '$PEER_DIR'); import benchlib; benchlib.maildir_clean('/home/$USER_NAME/Maildir')"
fi
