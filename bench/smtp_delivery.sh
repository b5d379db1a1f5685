#!/usr/bin/env bash
# End-to-end benchmark (issue 4): messages per second from SMTP accepted to a file in the
# recipient's Maildir, and memory (sum of PSS over each whole system's processes: Postern's
# master and everything below it; Postfix's and Dovecot's masters and everything below
# them) at the peak of each load and idle afterwards, Postern beside Postfix: same generator
# (bench/peer/smtp_load.py), same machine, same run.
#
#   sudo bench/smtp_delivery.sh          # REPS=3 N=2000 by default
#
# Optional: SIZES="4096 102400" and CONCS="1 8 32" pick the cases; BIN=DIR runs Postern's
# binaries from DIR instead of target/release (daemon_directory too), LABEL names them in
# the results (default postern), ETC=DIR is the configuration to copy (default etc/, which
# must match the binaries), SET="key=value ..." adds `postern config set` arguments, and
# IDLE_WAIT=S is the pause before the idle memory is sampled (default 110 s, past both
# systems' max_idle), and PEER=0 skips Postfix — for A/B runs of two builds:
#   NO_BUILD=1 PEER=0 BIN=/tmp/old LABEL=old bench/smtp_delivery.sh
#
# Postern: a throwaway instance (bench/lib.sh) of the release build (SMTP on a free
# loopback port, user bench). Postfix: the peer from bench/peer/peer-setup.sh
# (127.0.0.1:10025, /home/bench/Maildir). Results: JSON lines in $OUT.
. "$(dirname "$0")/lib.sh"
N=${N:-2000}
SIZES=${SIZES:-4096 102400}
CONCS=${CONCS:-1 8 32}
LABEL=${LABEL:-postern}
ETC=${ETC:-etc}
SET=${SET:-}
IDLE_WAIT=${IDLE_WAIT:-110}
OUT=$(results_file smtp_delivery)

build_release
peer_ensure
postern_new "$ETC"
PORT=$(free_port)
# shellcheck disable=SC2086  # SET is a list of arguments
pn_set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' $SET
pn_user bench bench-pw
pn_start
PEER_MEM="--mem-pidfile $POSTFIX_PID --mem-pidfile $DOVECOT_PID"
PN_MEM="--mem-pidfile $(pn_pidfile)"

# The first delivery creates Postern's Maildir; make it exist so the generator can count it.
python3 bench/smtp_accept.py --port "$PORT" -n 1 -c 1 --reps 1 --label warmup >/dev/null
sleep 1

for size in $SIZES; do
  for c in $CONCS; do
    if [ "$PEER" != 0 ]; then
      progress "smtp_delivery postfix size=$size sessions=$c n=$N reps=$REPS"
      # shellcheck disable=SC2086
      python3 bench/peer/smtp_load.py --port 10025 --to bench@example.test --maildir /home/bench/Maildir \
        -n "$N" -c "$c" --size "$size" --reps "$REPS" --label postfix --json-out "$OUT" --timeout 240 \
        $PEER_MEM | grep RESULT
    fi
    progress "smtp_delivery $LABEL size=$size sessions=$c n=$N reps=$REPS"
    # shellcheck disable=SC2086
    python3 bench/peer/smtp_load.py --port "$PORT" --to bench@example.test --maildir "$INST/var/mail/bench" \
      -n "$N" -c "$c" --size "$size" --reps "$REPS" --label "$LABEL" --json-out "$OUT" --timeout 240 \
      $PN_MEM | grep RESULT
  done
done

# Idle memory of each whole system, IDLE_WAIT seconds after the last load: longer than both
# systems' max_idle (100 s), so each is down to the processes it keeps when nothing happens.
progress "idle memory: waiting ${IDLE_WAIT}s after the last load"
sleep "$IDLE_WAIT"
idle() { # label pidfile...
  local l=$1 mb np
  shift
  read -r mb np < <(pss_mb "$@")
  emit_json "$OUT" "{\"bench\": \"idle_mem\", \"label\": \"$l\", \"pss_mb\": $mb, \"nproc\": $np, \"wait_s\": $IDLE_WAIT}"
  progress "idle memory $l: $mb MB PSS over $np processes"
}
idle "$LABEL" "$(pn_pidfile)"
[ "$PEER" = 0 ] || idle postfix "$POSTFIX_PID" "$DOVECOT_PID"
python3 bench/peer/make_table.py "$OUT" 2>/dev/null || true
