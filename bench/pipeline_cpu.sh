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
# plus the children of that master that exited meanwhile, by name, from BSD process
# accounting switched on for the load (acct(2); Postfix's daemons exit after max_use = 100
# connections, Postern's are given a large max_use here; ACCT=0: off), and "exited": what
# the master reaped (its cutime + cstime) that accounting did not name.
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
COMMS="smtpd cleanup qmgr local trivial-rewrite master"
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
  local pacct=$WORK/pacct-$$
  : > "$pacct"
  [ "${ACCT:-1}" = 0 ] || { acct_switch "$pacct"; ACCT_ON=1; }
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
  [ "${ACCT:-1}" = 0 ] || { acct_switch; ACCT_ON=; }
  python3 - "$label" "$N" "$t0" "$t1" "$t2" "$(getconf CLK_TCK)" "$before" "$after" "$mb" "$ma" \
    "$jlabel" "$C" "$SIZE" "$got" "${OUT:-}" "$pacct" "$mpid" <<'EOT'
import json, struct, sys
label, n = sys.argv[1], int(sys.argv[2])
t0, t1, t2 = map(float, sys.argv[3:6]); hz = int(sys.argv[6])
def parse(s):
    r = {}
    for l in s.splitlines():
        w = l.split() + [""]
        r[w[0]] = (int(w[1]) + int(w[2]), set(w[3].split(",")) - {""})
    return r
b, a = parse(sys.argv[7]), parse(sys.argv[8])
# Children of this master that exited during the load, from BSD process accounting
# (struct acct_v3: utime and stime as comp_t in AHZ = 100 ticks/s, the whole life of the
# process): their CPU per comm, so Postfix's daemons, which exit after max_use
# connections, are split by daemon too.
def comp_t(x):
    return (x & 0x1FFF) << (3 * (x >> 13))
dead = {}
try:
    raw = open(sys.argv[16], "rb").read()
except OSError:
    raw = b""
for i in range(0, len(raw) - 63, 64):
    f = struct.unpack_from("<BBHIIIIIIfHHHHHHHH16s", raw, i)
    if f[1] != 3 or str(f[7]) != sys.argv[17]:
        continue
    comm = f[18].split(b"\0", 1)[0].decode(errors="replace")
    dead[comm] = dead.get(comm, 0.0) + (comp_t(f[10]) + comp_t(f[11])) / 100
parts, total, cpu = [], 0.0, {}
for c in sorted(set(b) | set(dead)):
    # live processes: ticks over the load (one that exited loses its ticks from before the
    # load here and is counted whole among the dead)
    live = (a[c][0] - b[c][0]) * 1000 / hz / n if c in b else 0.0
    gone = b[c][1] - a[c][1] if c in b else set()
    ms = live + dead.get(c, 0.0) * 1000 / n
    cpu[c] = round(ms, 4)
    total += ms
    parts.append(f"{c} {ms:.3f}" + (f" ({len(gone)} exited)" if gone else ""))
# what the master reaped that accounting did not name (0 when it named every child)
ex = (int(sys.argv[10]) - int(sys.argv[9])) * 1000 / hz / n - sum(dead.values()) * 1000 / n
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
  rm -f "$pacct"
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
