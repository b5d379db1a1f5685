#!/usr/bin/env bash
# Same-run A/B of SMTP accept with Postfix beside it (issue 14, cleanup group commit):
# smtp-source (one message per connection) against Postern build directory A, then B,
# then the Postfix peer (127.0.0.1:10025), round after round, per session count.
#
#   BINS="/tmp/a /tmp/b" ROUNDS=3 N=3000 CONCS="8 32" bench/accept_ab.sh
#
# Postern's lines come from bench/accept_cpu.sh (msg/s and CPU per message of smtpd and
# cleanup); Postfix's line is msg/s only. Both deliver what they accept to the bench
# user's mailbox meanwhile, as in accept_cpu.sh. Load average printed per round.
. "$(dirname "$0")/lib.sh"
N=${N:-3000}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}
CONCS=${CONCS:-8 32}
BINS=${BINS:?set BINS to two build directories}
PF_RCPT=${PF_RCPT:-bench@example.test}  # Postfix's recipient (PF_PORT, PF_PIDFILE: bench/lib.sh)
peer_ensure

postfix_one() { # conc
  local t0 t1
  /usr/sbin/smtp-source -s "$1" -m 200 -l "$SIZE" -f bench@example.test -t "$PF_RCPT" "127.0.0.1:$PF_PORT"
  sleep 1
  t0=$(date +%s.%N)
  nice -n "${NICE:-0}" /usr/sbin/smtp-source -s "$1" -m "$N" -l "$SIZE" -f bench@example.test -t "$PF_RCPT" "127.0.0.1:$PF_PORT"
  t1=$(date +%s.%N)
  python3 -c "import sys; print(f'Postfix c={sys.argv[1]}: {int(sys.argv[2]) / (float(sys.argv[4]) - float(sys.argv[3])):.0f} msg/s')" "$1" "$N" "$t0" "$t1"
}

for r in $(seq "$ROUNDS"); do
  for c in $CONCS; do
    echo "round $r c=$c load $(cut -d' ' -f1 /proc/loadavg)"
    N=$N C=$c SIZE=$SIZE ROUNDS=1 BINS="$BINS" bash "$(dirname "$0")/accept_cpu.sh" 2>/dev/null | grep 'msg/s'
    postfix_one "$c"
    sleep 3
  done
done
