#!/usr/bin/env bash
# bench/queue_tools.sh — how long the queue tools take on a big queue (issue 17): a queue
# of N deferred messages (default 20,000) written with lib's queue file writer
# (postqueue/examples/fill_queue.rs), each with a defer log, and a mail log with every
# message's lines (about 140,000 lines for 20,000 messages). The instance is not started:
# the tools read the files. Times (wall clock, best of REPS):
#
#   postqueue --shape deferred                      qshape over the whole queue
#   postqueue -p | tail -1                          the full listing
#   postsuper -d ALL --reason refused --dry-run     a selection over the whole queue
#   postern log ID                                  the last message's timeline (whole log read)
#   postern log --message-id ID                     the same by Message-ID (two passes)
#
#   bench/queue_tools.sh                  release build (NO_BUILD=1 BIN=target/debug: as built)
#   N=50000 REPS=5 bench/queue_tools.sh
. "$(dirname "$0")/lib.sh"
N=${N:-20000}
if [ -z "${NO_BUILD:-}" ]; then
  build_release -p postqueue -p postsuper -p postern
  cargo build --release --quiet -p postqueue --example fill_queue
  FILL=$ROOT/target/release/examples/fill_queue
else
  FILL=${FILL:-$BIN/examples/fill_queue}
fi
postern_new
Q=$INST/var/spool
LOG=$INST/var/log/maillog
mkdir -p "$Q" "$(dirname "$LOG")"
progress "writing $N queue files and the log"
start=$(date +%s.%N)
"$FILL" "$Q" "$LOG" "$N"
progress "filled in $(echo "$(date +%s.%N) - $start" | bc) s: $(find "$Q/deferred" -type f | wc -l) messages, $(wc -l < "$LOG") log lines"
LAST=$(grep -o 'postern/cleanup\[[0-9]*\]: [A-Za-z0-9]*: message-id=<[^>]*>' "$LOG" | tail -n1)
LAST_ID=$(echo "$LAST" | awk '{print $2}' | tr -d ':')
LAST_MID=$(echo "$LAST" | sed 's/.*message-id=<\(.*\)>/\1/')

best() { # NAME CMD... : best wall time of REPS runs, in seconds
  local name=$1 b=
  shift
  for _ in $(seq "$REPS"); do
    local s e t
    s=$(date +%s.%N)
    "$@" > /dev/null
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; fi
  done
  printf '%-48s %6.2f s\n' "$name" "$b"
}
echo "queue of $N messages ($(du -sh "$Q" | cut -f1)), log of $(wc -l < "$LOG") lines, BIN=$BIN, best of $REPS"
best "postqueue --shape deferred" "$BIN/postqueue" -c "$INST/etc" --shape deferred
best "postqueue -p" "$BIN/postqueue" -c "$INST/etc" -p
best "postsuper -d ALL --reason refused --dry-run" "$BIN/postsuper" -c "$INST/etc" -d ALL --reason refused --dry-run
best "postern log ID (the last message)" pn log "$LAST_ID"
best "postern log --message-id (the last message)" pn log --message-id "$LAST_MID"
"$BIN/postqueue" -c "$INST/etc" --shape deferred | head -n 5
