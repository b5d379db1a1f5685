#!/usr/bin/env bash
# Same-run A/B of whole builds (issue 13: "SMTP accept, IMAP steps and idle memory per
# connection unchanged or better"): for each round, for each binary directory of BINS in
# turn (A B A B ...), with the load average before each part:
#   - SMTP accept: bench/accept_cpu.sh, one round (smtp-source, N messages, C sessions;
#     msg/s and smtpd/cleanup CPU per message);
#   - IMAP steps: bench/imap_store.sh ONLY=steps (LOGIN+SELECT, FETCH 1:* envelopes,
#     STORE 1:* +FLAGS on a STEP_N-message INBOX, medians of REPS warm passes);
#   - idle memory: bench/imap_store.sh ONLY=sessions at SIZES=IDLE_SIZE (CONNS sessions
#     logged in with INBOX selected: PSS per session of the imapd processes).
# Postern only (PEER=0), release builds given, nothing built here:
#
#   BINS="/tmp/old/target/release /tmp/new/target/release" ROUNDS=2 bash bench/ab_issue13.sh
#
# Each part runs from this checkout's bench/ and etc/ with the binaries of BINS, so both
# builds meet the same configuration (the old one must accept this etc/). Output: one block
# per round and build; the RESULT lines of imap_store.py and accept_cpu.sh's line.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BINS:?BINS: the binary directories to compare}"
ROUNDS=${ROUNDS:-2}
N=${N:-2000}
C=${C:-8}
STEP_N=${STEP_N:-10000}
REPS=${REPS:-3}
IDLE_SIZE=${IDLE_SIZE:-2000}
CONNS=${CONNS:-200}
PARTS=${PARTS:-"accept steps idle"}
export NO_BUILD=1 PEER=0

load() { cut -d' ' -f1-3 /proc/loadavg; }

for r in $(seq "$ROUNDS"); do
  i=0
  for b in $BINS; do
    i=$((i + 1))
    label="round $r build $i ($b)"
    for part in $PARTS; do
      echo "== $label: $part, load $(load)"
      case $part in
        accept) BINS=$b ROUNDS=1 N=$N C=$C bash bench/accept_cpu.sh 2>&1 | grep -E 'msg/s' || echo "accept: failed" ;;
        steps) BIN=$b ONLY=steps STEP_N=$STEP_N REPS=$REPS bash bench/imap_store.sh 2>/dev/null | grep RESULT || echo "steps: failed" ;;
        idle) BIN=$b ONLY=sessions SIZES=$IDLE_SIZE CONNS=$CONNS IDLE_SECS=3 OPEN_N=20 SETTLE=2 \
          bash bench/imap_store.sh 2>/dev/null | grep 'RESULT store_sessions' | grep -v 'phase=open' || echo "idle: failed" ;;
      esac
    done
  done
done
echo "== done, load $(load)"
