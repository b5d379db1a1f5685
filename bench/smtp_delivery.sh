#!/usr/bin/env bash
# End-to-end benchmark (issue 4): messages per second from SMTP accepted to a file in the
# recipient's Maildir, and the peak memory (sum of PSS over the whole process tree), for
# Postern beside Postfix: same generator (bench/peer/smtp_load.py), same machine, same run.
#
#   sudo bench/smtp_delivery.sh          # REPS=3 N=2000 by default
#
# Optional: SIZES="4096 102400" and CONCS="1 8 32" pick the cases; BIN=DIR runs Postern's
# binaries from DIR instead of target/release (daemon_directory too), LABEL names them in
# the results (default postern), ETC=DIR is the configuration to copy (default etc/, which
# must match the binaries), SET="key=value ..." adds `postern config set` arguments, and
# PEER=0 skips Postfix — for A/B runs of two builds:
#   NO_BUILD=1 PEER=0 BIN=/tmp/old LABEL=old bench/smtp_delivery.sh
#
# Postern: a throwaway instance of this checkout's release build in $WORK/postern
# (SMTP 127.0.0.1:$PORT, user bench, Maildir $WORK/postern/var/mail/bench). Postfix: the
# peer from bench/peer/peer-setup.sh (127.0.0.1:10025, /home/bench/Maildir).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/postern-bench}
PORT=${PORT:-30025}
REPS=${REPS:-3}
N=${N:-2000}
SIZES=${SIZES:-4096 102400}
CONCS=${CONCS:-1 8 32}
BIN=${BIN:-$ROOT/target/release}
LABEL=${LABEL:-postern}
PEER=${PEER:-1}
ETC=${ETC:-etc}
SET=${SET:-}
mkdir -p "$WORK/results"
OUT=$WORK/results/smtp_delivery-$(date +%Y%m%d-%H%M%S).jsonl

[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace --quiet
[ -x /usr/sbin/postfix ] || bash bench/peer/peer-setup.sh
pgrep -f /usr/lib/postfix/sbin/master >/dev/null || postfix start >/dev/null 2>&1 || true

P=$BIN/postern
INST=$WORK/postern
[ -d "$INST/etc" ] && "$P" -c "$INST/etc" stop >/dev/null 2>&1 || true
rm -rf "$INST"; mkdir -p "$INST"; chmod 755 "$INST"; cp -r "$ETC" "$INST/etc"
"$P" -c "$INST/etc" config set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' "daemon_directory=$BIN" $SET >/dev/null
echo bench-pw | "$P" -c "$INST/etc" user add bench >/dev/null
"$P" -c "$INST/etc" start
trap '"$P" -c "$INST/etc" stop >/dev/null 2>&1 || true' EXIT
# The first delivery creates the Maildir; make it exist so the generator can count it.
python3 bench/smtp_accept.py --port "$PORT" -n 1 -c 1 --reps 1 --label warmup >/dev/null
sleep 1

for size in $SIZES; do
  for c in $CONCS; do
    [ "$PEER" = 0 ] || python3 bench/peer/smtp_load.py --port 10025 --to bench@example.test --maildir /home/bench/Maildir \
      -n "$N" -c "$c" --size $size --reps "$REPS" --label postfix --json-out "$OUT" --timeout 240 \
      --mem-pidfile /var/spool/postfix/pid/master.pid | grep RESULT
    python3 bench/peer/smtp_load.py --port "$PORT" --to bench@example.test --maildir "$INST/var/mail/bench" \
      -n "$N" -c "$c" --size $size --reps "$REPS" --label "$LABEL" --json-out "$OUT" --timeout 240 \
      --mem-pidfile "$INST/var/spool/pid/master.pid" | grep RESULT
  done
done
python3 bench/peer/make_table.py "$OUT" 2>/dev/null || true
