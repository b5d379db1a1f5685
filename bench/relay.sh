#!/usr/bin/env bash
# Relay benchmark (issue 4): messages per second handed on to a sink (Postfix's
# smtp-sink on 127.0.0.1:10026, started by bench/peer/relay_load.py) through the SMTP
# client, Postern beside Postfix, same generator, same machine, same run; memory is the
# sum of PSS over each whole system (Postfix + Dovecot for the peer).
#   sudo bench/relay.sh            # REPS=3 N=2000 C=32; ENGINES="smtp-source py"; PEER=0
. "$(dirname "$0")/lib.sh"
N=${N:-2000}
C=${C:-32}
ENGINES=${ENGINES:-smtp-source py}
OUT=$(results_file relay)

build_release
peer_ensure
postern_new
PORT=$(free_port)
pn_set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' 'relayhost=[127.0.0.1]:10026'
pn_start
for engine in $ENGINES; do
  if [ "$PEER" != 0 ]; then
    progress "relay postfix engine=$engine n=$N sessions=$C reps=$REPS"
    python3 bench/peer/relay_load.py --port 10025 --to user@sink.test -n "$N" -c "$C" --engine "$engine" \
      --reps "$REPS" --label postfix --json-out "$OUT" --mem-pidfile "$POSTFIX_PID" --mem-pidfile "$DOVECOT_PID" | grep RESULT
  fi
  progress "relay postern engine=$engine n=$N sessions=$C reps=$REPS"
  python3 bench/peer/relay_load.py --port "$PORT" --to user@sink.test -n "$N" -c "$C" --engine "$engine" \
    --reps "$REPS" --label postern --json-out "$OUT" --mem-pidfile "$(pn_pidfile)" | grep RESULT
done
