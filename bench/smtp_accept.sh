#!/usr/bin/env bash
# SMTP accept benchmark (issue 3): messages accepted per second and the latency of the
# 250 after DATA, Postern beside Postfix, same load generator, same machine, same run.
#
#   sudo bench/smtp_accept.sh            # needs root once: installs the Postfix peer
#   REPS=5 N=4000 bench/smtp_accept.sh
#
# Postern runs from this checkout's target/release on a throwaway config in
# $WORK/postern (SMTP on 127.0.0.1:$PORT, fsync on as always). Postfix is the peer set up
# by bench/peer/peer-setup.sh on 127.0.0.1:10025. Results: $WORK/results/*.jsonl and a
# table with the Postern/Postfix ratio on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/postern-bench}
PORT=${PORT:-30025}
REPS=${REPS:-3}
N=${N:-2000}
mkdir -p "$WORK/results"
OUT=$WORK/results/smtp_accept-$(date +%Y%m%d-%H%M%S).jsonl

[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace --quiet
[ -x /usr/sbin/postfix ] || bash bench/peer/peer-setup.sh
pgrep -f /usr/lib/postfix/sbin/master >/dev/null || postfix start >/dev/null 2>&1 || true

# A Postern instance of its own.
P=$ROOT/target/release/postern
INST=$WORK/postern
[ -d "$INST/etc" ] && "$P" -c "$INST/etc" stop >/dev/null 2>&1 || true
rm -rf "$INST"; mkdir -p "$INST"; chmod 755 "$INST"; cp -r etc "$INST/etc"
"$P" -c "$INST/etc" config set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' \
  'mydestination=["example.test","localhost"]' >/dev/null
echo bench-pw | "$P" -c "$INST/etc" user add bench >/dev/null
"$P" -c "$INST/etc" start
trap '"$P" -c "$INST/etc" stop >/dev/null 2>&1 || true' EXIT

load() { # label port size conc
  python3 bench/smtp_accept.py --port "$2" --to bench@example.test --size "$3" -c "$4" -n "$N" \
    --reps "$REPS" --label "$1" --json-out "$OUT" --timeout 240
}
for size in 4096 102400; do
  for c in 1 8 32; do
    load postfix 10025 $size $c
    load postern "$PORT" $size $c
    # both systems deliver what they accept; empty the mailboxes between configurations
    find "$INST/var/mail/bench" /home/bench/Maildir -path '*/new/*' -type f -delete 2>/dev/null || true
    find "$INST/var/mail/bench" /home/bench/Maildir -path '*/cur/*' -type f -delete 2>/dev/null || true
  done
done
python3 bench/ratio_table.py "$OUT"
