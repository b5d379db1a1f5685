#!/usr/bin/env bash
# COMPRESS=DEFLATE benchmark (issue 12): Postern's imapd beside Dovecot (with its imap_zlib
# plugin, bench/peer/peer-setup.sh), same messages, same machine, same run. Both INBOXes
# get the same N messages (bench/sort_thread_load.py's threaded mail: From, To, Subject
# with Re:/Fwd:/[list] and RFC 2047 words, Date, Message-ID, References); then per server
# one untimed FETCH (the envelopes into the server's cache), then ROUNDS rounds (the two
# servers in turn) of two new sessions, one plain and one after COMPRESS DEFLATE, each sending
#   FETCH 1:N ENVELOPE
# and counting the bytes of its answer: read from the socket (TCP payload; compressed in
# the second session) and, compressed, what they inflate to; and the time from the
# command to its tagged OK (bench/compress_load.py; Python's zlib, level 6, as both
# servers compress at). Medians, and Postern/Dovecot ratios of the same run.
#
#   sudo bench/imap_compress.sh [N] [ROUNDS]   # N=2000 ROUNDS=7 PEER=0 NO_BUILD=1 BIN=...
#
# Both servers log in the system user zipbench (created here, password zipbench-pw),
# Postern with the same yescrypt hash. Not a test: nothing here asserts a figure.
# Results: JSON lines in $OUT, and a table on stdout.
. "$(dirname "$0")/lib.sh"
N=${1:-${N:-2000}}
ROUNDS=${2:-${ROUNDS:-7}}
OUT=$(results_file imap_compress)

build_release -p master -p postern -p auth -p imapd
peer_ensure
USER_NAME=zipbench
USER_PW=zipbench-pw
progress "imap_compress: $N messages into both mailboxes"
imap_beside_dovecot "$USER_NAME" "$USER_PW" "$N"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
SERVERS=(--server "postern=$PORT")
[ "$PEER" = 0 ] || SERVERS+=(--server dovecot=10143)
progress "imap_compress: $ROUNDS rounds, the servers in turn"
python3 bench/compress_load.py run "${SERVERS[@]}" --user "$USER_NAME" --password "$USER_PW" \
  --rounds "$ROUNDS" --range "1:$N" --json-out "$OUT"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
emit_json "$OUT" "{\"bench\": \"load\", \"before\": \"$LOAD_BEFORE\", \"after\": \"$LOAD_AFTER\", \"cores\": $(nproc)}"
python3 bench/compress_load.py table "$OUT"
echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER ($(nproc) cores); results: $OUT"
[ "$PEER" = 0 ] || python3 -c "import sys; sys.path.insert(0, '$PEER_DIR'); import benchlib; benchlib.maildir_clean('/home/$USER_NAME/Maildir')"
