#!/usr/bin/env bash
# SMTP → Maildir: delivered/s and CPU per message per daemon over the whole pipeline, issue 14.
#
#   bench/pipeline_cpu.sh                     # N=3000 C=32 SIZE=4096, Postern from $BIN
#   BINS="/tmp/a /tmp/b" ROUNDS=3 bench/pipeline_cpu.sh   # same-run A/B: A B A B ...
#   PEER=0 bench/pipeline_cpu.sh              # without Postfix (bench/peer), which runs after A in each round
#   NICE=-15 ...                              # Postern and the load at this priority
#   STRACE="qmgr local" PEER=0 ...            # also system calls per message of those Postern
#                                             # daemons (strace -c -f; slows them, so the rates
#                                             # of such a run are not comparable)
#
# Postfix's smtp-source is the load (one message per connection, to one local Maildir user:
# for Postfix a system user of its own, PF_USER (default pipebench), whose Maildir no other
# bench touches); the rate runs from the first connection until the last message is a file
# in the Maildir.
# CPU = utime + stime of each daemon, summed over /proc before and after the load, for the
# live processes whose executable is in the measured build (Postfix: /usr/lib/postfix/sbin),
# plus "exited": what the master reaped meanwhile (its cutime + cstime; Postfix's daemons
# exit after max_use = 100 connections, Postern's are given a large max_use here).
# Prints one line per run: label, accepted/s, delivered/s, CPU ms per message per daemon; with
# OUT=FILE also appends one JSON line per run (bench "pipeline"; bench/report.py's table).
. "$(dirname "$0")/lib.sh"
N=${N:-3000}
C=${C:-32}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-2}
BINS=${BINS:-$BIN}
PEER_RUN=$PEER
PEER=0
COMMS="smtpd cleanup qmgr local trivial-rewrit master"
PF_SBIN=/usr/lib/postfix/sbin
PF_USER=${PF_USER:-pipebench}

master_children_ticks() { # PID -> cutime+cstime of that process
  awk '{ sub(/.*\) /, ""); print $14 + $15 }' "/proc/$1/stat"
}

measure() { # label bindir port maildir_new masterpid rcpt json_label
  local label=$1 bin=$2 port=$3 md=$4 mpid=$5 rcpt=$6 jlabel=$7 base before after mb ma t0 t1 t2 got
  base=$(find "$md" -maxdepth 1 -type f | wc -l)
  export CPU_TREE=$mpid  # this instance's processes only (not another run's of the same build)
  before=$(cpu_of "$bin" $COMMS)
  mb=$(master_children_ticks "$mpid")
  local spids= comm
  if [ -n "${STRACE:-}" ] && [ "$bin" != "$PF_SBIN" ]; then
    for comm in $STRACE; do
      strace -c -f -o "$WORK/strace-$$-$comm.txt" \
        $(cpu_of "$bin" "$comm" | awk '{ print $4 }' | tr ',' '\n' | sed 's/^/-p /') 2>/dev/null &
      spids="$spids $!"
    done
    sleep 1
  fi
  t0=$(date +%s.%N)
  nice -n "${NICE:-0}" /usr/sbin/smtp-source -s "$C" -m "$N" -l "$SIZE" -f bench@example.test -t "$rcpt" "127.0.0.1:$port"
  t1=$(date +%s.%N)
  local deadline=$((SECONDS + 300))
  while [ "$(find "$md" -maxdepth 1 -type f | wc -l)" -lt $((base + N)) ] && [ $SECONDS -lt $deadline ]; do sleep 0.02; done
  t2=$(date +%s.%N)
  got=$(( $(find "$md" -maxdepth 1 -type f | wc -l) - base ))
  if [ -n "$spids" ]; then
    for p in $spids; do kill -INT "$p"; wait "$p" || true; done
    for comm in $STRACE; do
      echo "system calls per message, $comm (strace -c -f of its processes at the start, $N messages):"
      awk -v n="$N" '$1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ { printf "  %-18s %8.2f\n", $NF, $4 / n }' "$WORK/strace-$$-$comm.txt"
      rm -f "$WORK/strace-$$-$comm.txt"
    done
  fi
  after=$(cpu_of "$bin" $COMMS)
  ma=$(master_children_ticks "$mpid")
  python3 - "$label" "$N" "$t0" "$t1" "$t2" "$(getconf CLK_TCK)" "$before" "$after" "$mb" "$ma" \
    "$jlabel" "$C" "$SIZE" "$got" "${OUT:-}" <<'EOT'
import json, sys
label, n = sys.argv[1], int(sys.argv[2])
t0, t1, t2 = map(float, sys.argv[3:6]); hz = int(sys.argv[6])
def parse(s):
    r = {}
    for l in s.splitlines():
        w = l.split() + [""]
        r[w[0]] = (int(w[1]) + int(w[2]), set(w[3].split(",")) - {""})
    return r
b, a = parse(sys.argv[7]), parse(sys.argv[8])
parts, total, cpu = [], 0.0, {}
for c in b:
    ms = (a[c][0] - b[c][0]) * 1000 / hz / n
    cpu[c] = round(ms, 4)
    # a process that exited is counted in "exited"; its ticks before the load are not
    gone = b[c][1] - a[c][1]
    total += ms
    parts.append(f"{c} {ms:.3f}" + (f" ({len(gone)} exited)" if gone else ""))
ex = (int(sys.argv[10]) - int(sys.argv[9])) * 1000 / hz / n
total += ex
print(f"{label}: accept {n / (t1 - t0):.0f}/s delivered {n / (t2 - t0):.0f}/s  CPU ms/msg: "
      + ", ".join(parts) + f", exited {ex:.3f}; total {total:.3f}", flush=True)
jlabel, conc, size, got, out = sys.argv[11], int(sys.argv[12]), int(sys.argv[13]), int(sys.argv[14]), sys.argv[15]
if out:
    rec = {"bench": "pipeline", "label": jlabel, "c": conc, "size": size, "n": n, "delivered": got,
           "accept_rate": round(n / (t1 - t0), 1),
           "deliver_rate": round(n / (t2 - t0), 1) if got >= n else None,
           "cpu_ms": cpu, "exited_ms": round(ex, 4), "total_ms": round(total, 4)}
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
EOT
}

run_postern() { # label bindir json_label
  local label=$1 bin=$2
  BIN=$bin postern_new
  local inst=$INST
  PORT=$(free_port)
  BIN=$bin pn_set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' 'mydestination=["example.test","localhost"]' \
    'smtp/inet.max_use=1000000' 'cleanup/unix.max_use=1000000' 'local/unix.max_use=1000000' 'rewrite/unix.max_use=1000000'
  BIN=$bin pn_user bench bench-pw
  BIN=$bin nice -n "${NICE:-0}" "$bin/postern" -c "$INST/etc" start
  sleep 1
  /usr/sbin/smtp-source -s 4 -m 100 -l "$SIZE" -f bench@example.test -t bench@example.test "127.0.0.1:$PORT"
  sleep 2
  measure "$label" "$bin" "$PORT" "$INST/var/mail/bench/new" "$(head -n1 "$INST/var/spool/pid/master.pid" | tr -d ' ')" bench@example.test "$3"
  BIN=$bin pn stop >/dev/null 2>&1 || true
  set_aside "$inst"; INST=
}

run_postfix() {
  PEER=1 peer_ensure
  peer_user "$PF_USER" "$PF_USER-pw"
  local md
  md=$(getent passwd "$PF_USER" | cut -d: -f6)/Maildir/new
  empty_dir "$md"
  measure "postfix c=$C" "$PF_SBIN" "$PF_PORT" "$md" "$(head -n1 "$PF_PIDFILE" | tr -d ' ')" "$PF_USER@example.test" postfix
}

for r in $(seq "$ROUNDS"); do
  i=0
  for b in $BINS; do
    i=$((i+1))
    jl=postern
    [ "$(echo $BINS | wc -w)" = 1 ] || jl="postern-$(echo ABCDEFG | cut -c$i)"
    run_postern "$(echo ABCDEFG | cut -c$i)[$b] c=$C" "$b" "$jl"
    [ "$PEER_RUN" = 0 ] || [ "$i" != 1 ] || run_postfix
  done
done
