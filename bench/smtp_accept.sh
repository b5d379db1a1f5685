#!/usr/bin/env bash
# SMTP accept benchmark (issue 3): messages accepted per second and the latency of the
# 250 after DATA, Postern beside Postfix, same load generator, same machine, same run.
#
#   sudo bench/smtp_accept.sh            # needs root once: installs the Postfix peer
#   REPS=5 N=4000 bench/smtp_accept.sh   # SIZES="4096" CONCS="1 8" pick cases; PEER=0: Postern only
#
# Postern runs from this checkout's target/release on a throwaway config (bench/lib.sh;
# SMTP on a free loopback port, fsync on as always). Postfix is the peer set up by
# bench/peer/peer-setup.sh on 127.0.0.1:10025. Results: one JSON line per run in $OUT
# (default $WORK/results/smtp_accept-DATE.jsonl) and a table with the Postern/Postfix
# ratio on stdout.
. "$(dirname "$0")/lib.sh"
N=${N:-2000}
SIZES=${SIZES:-4096 102400}
CONCS=${CONCS:-1 8 32}
OUT=$(results_file smtp_accept)

build_release
peer_ensure
postern_new
PORT=$(free_port)
pn_set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' 'mydestination=["example.test","localhost"]'
pn_user bench bench-pw
pn_start

load() { # label port size conc
  progress "smtp_accept $1 size=$3 sessions=$4 n=$N reps=$REPS"
  python3 bench/smtp_accept.py --port "$2" --to bench@example.test --size "$3" -c "$4" -n "$N" \
    --reps "$REPS" --label "$1" --json-out "$OUT" --timeout 240
}
for size in $SIZES; do
  for c in $CONCS; do
    [ "$PEER" = 0 ] || load postfix 10025 "$size" "$c"
    load postern "$PORT" "$size" "$c"
    # both systems deliver what they accept; empty the mailboxes between configurations
    for d in "$INST/var/mail/bench" /home/bench/Maildir; do empty_dir "$d/new"; empty_dir "$d/cur"; done
  done
done
python3 bench/ratio_table.py "$OUT"
