#!/usr/bin/env bash
# SORT and THREAD benchmark (issue 12): Postern's imapd beside Dovecot, same generator,
# same messages, same machine, same run. On an N-message INBOX of threaded mail
# (bench/sort_thread_load.py: threads of 1 to 12 messages with References chains, some
# broken or In-Reply-To only, subjects with Re:/Fwd:/[list] and RFC 2047 words, Date:
# headers in several time zones, arrival order shuffled), each of
#   SORT (DATE) UTF-8 ALL,  SORT (SUBJECT) UTF-8 ALL,  THREAD REFERENCES UTF-8 ALL
# is timed
#   cold: the first command after LOGIN+SELECT of a new session (a new server process on
#         both sides: Postern's imap service has max_use = 1, Dovecot runs one imap process
#         per connection), with the server's index and cache files removed first
#         (Postern's postern-headers and postern-cache; Dovecot's dovecot.index,
#         dovecot.index.log and dovecot.index.cache, where it also keeps its sort order
#         extensions), UID lists kept, so the headers are read from the message files
#         (which are in the page cache on both sides);
#   warm: the same command again in that session, WARM times;
# REPS cold sessions per command and server; the medians are reported, and Postern/Dovecot
# ratios. The answers are compared with each number written as its message's Message-ID
# (the servers may number the same files differently).
#
#   sudo bench/imap_sort_thread.sh [N] [REPS]   # N=10000 REPS=5 WARM=5 PEER=0 NO_BUILD=1
#
# Both servers log in the system user sortbench (created here, password sortbench-pw),
# Postern with the same yescrypt hash. Not a test: nothing here asserts timings. Results:
# JSON lines in $OUT, and a table on stdout.
. "$(dirname "$0")/lib.sh"
N=${1:-${N:-10000}}
REPS=${2:-${REPS_SORT:-5}}
WARM=${WARM:-5}
OUT=$(results_file imap_sort_thread)

build_release -p master -p postern -p auth -p imapd
peer_ensure
USER_NAME=sortbench
USER_PW=sortbench-pw
progress "imap_sort_thread: $N threaded messages into both mailboxes"
imap_beside_dovecot "$USER_NAME" "$USER_PW" "$N" "max_use = 1"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
ARGS=(--user "$USER_NAME" --password "$USER_PW" --reps "$REPS" --warm "$WARM" --json-out "$OUT")
progress "imap_sort_thread postern: $REPS cold sessions per command, $WARM warm repeats"
python3 bench/sort_thread_load.py run --label postern --port "$PORT" --cache "$PN_MAILDIR/postern-headers,$PN_MAILDIR/postern-cache" "${ARGS[@]}"
if [ "$PEER" != 0 ]; then
  progress "imap_sort_thread dovecot: the same"
  DM=/home/$USER_NAME/Maildir
  python3 bench/sort_thread_load.py run --label dovecot --port 10143 --cache "$DM/dovecot.index,$DM/dovecot.index.log,$DM/dovecot.index.cache" "${ARGS[@]}"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
emit_json "$OUT" "{\"bench\": \"load\", \"before\": \"$LOAD_BEFORE\", \"after\": \"$LOAD_AFTER\", \"cores\": $(nproc)}"
python3 bench/sort_thread_load.py table "$OUT"
echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER ($(nproc) cores); results: $OUT"
[ "$PEER" = 0 ] || python3 -c "import sys; sys.path.insert(0, '$PEER_DIR'); import benchlib; benchlib.maildir_clean('/home/$USER_NAME/Maildir')"
