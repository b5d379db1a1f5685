#!/usr/bin/env bash
# Relay benchmark (issue 4): messages per second handed on to a sink (Postfix's
# smtp-sink on 127.0.0.1:10026, started by bench/peer/relay_load.py) through the SMTP
# client, Postern beside Postfix, same generator, same machine, same run.
#   sudo bench/relay.sh            # REPS=3 N=2000 C=32
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/postern-bench}
PORT=${PORT:-30025}
REPS=${REPS:-3}
N=${N:-2000}
C=${C:-32}
mkdir -p "$WORK/results"
OUT=$WORK/results/relay-$(date +%Y%m%d-%H%M%S).jsonl
[ -n "${NO_BUILD:-}" ] || cargo build --release --workspace --quiet
[ -x /usr/sbin/postfix ] || bash bench/peer/peer-setup.sh
pgrep -f /usr/lib/postfix/sbin/master >/dev/null || postfix start >/dev/null 2>&1 || true
P=$ROOT/target/release/postern
INST=$WORK/postern
[ -d "$INST/etc" ] && "$P" -c "$INST/etc" stop >/dev/null 2>&1 || true
rm -rf "$INST"; mkdir -p "$INST"; chmod 755 "$INST"; cp -r etc "$INST/etc"
"$P" -c "$INST/etc" config set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' \
  'relayhost=[127.0.0.1]:10026' >/dev/null
"$P" -c "$INST/etc" start
trap '"$P" -c "$INST/etc" stop >/dev/null 2>&1 || true' EXIT
for engine in smtp-source py; do
  python3 bench/peer/relay_load.py --port 10025 --to user@sink.test -n "$N" -c "$C" --engine $engine \
    --reps "$REPS" --label postfix --json-out "$OUT" --mem-pidfile /var/spool/postfix/pid/master.pid | grep RESULT
  python3 bench/peer/relay_load.py --port "$PORT" --to user@sink.test -n "$N" -c "$C" --engine $engine \
    --reps "$REPS" --label postern --json-out "$OUT" --mem-pidfile "$INST/var/spool/pid/master.pid" | grep RESULT
done
