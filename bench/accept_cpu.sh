#!/usr/bin/env bash
# CPU and syscalls per accepted message, per daemon (smtpd, cleanup), issue 14.
#
#   bench/accept_cpu.sh                 # N=2000 C=8 SIZE=4096, Postern from $BIN
#   BINS="/tmp/a /tmp/b" ROUNDS=2 bench/accept_cpu.sh   # same-run A/B: A B A B ...
#   STRACE=1 N=300 bench/accept_cpu.sh  # also syscalls per message (strace -f -c on each)
#   PERF=1 ...                          # syscalls, fsyncs, fdatasyncs per process counted by perf stat (cheap)
#   NICE=-15 ...                        # run Postern and the load at this priority (a busy machine)
#
# One throwaway instance per binary directory; Postfix's smtp-source is the load (one
# message per connection). Before and after the fixed load, utime+stime of every process
# whose comm is smtpd or cleanup is summed over /proc (those daemons are long-lived
# multi-connection processes; one that exits mid-load would be missed, and is reported).
# Prints one line per run: label, msg/s, CPU ms per message for smtpd and cleanup.
. "$(dirname "$0")/lib.sh"
N=${N:-2000}
C=${C:-8}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-2}
BINS=${BINS:-$BIN}
PEER=0

run_one() { # label bindir
  local label=$1 bin=$2
  BIN=$bin postern_new
  local inst=$INST
  PORT=$(free_port)
  BIN=$bin pn_set "smtp/inet.listen=127.0.0.1:$PORT" 'smtp/inet.max_conns=200' 'mydestination=["example.test","localhost"]' 'smtp/inet.max_use=1000000' 'cleanup/unix.max_use=1000000'
  BIN=$bin pn_user bench bench-pw
  BIN=$bin nice -n "${NICE:-0}" "$bin/postern" -c "$INST/etc" start
  sleep 1
  /usr/sbin/smtp-source -s "$C" -m 200 -l "$SIZE" -f bench@example.test -t bench@example.test "127.0.0.1:$PORT"
  sleep 1
  local before after t0 t1 st=()
  before=$(cpu_of "$bin" smtpd cleanup)
  if [ -n "${STRACE:-}" ]; then
    for p in $(echo "$before" | awk '{print $4}' | tr ',' ' '); do
      strace -f -c -o "$WORK/strace-${label%%[*}-$(cat /proc/$p/comm)-$p.txt" -p "$p" 2>/dev/null & st+=($!)
    done
    sleep 1
  elif [ -n "${PERF:-}" ]; then
    # Counted in the kernel (no ptrace stop per call, unlike strace): every system call,
    # fsync and fdatasync of each smtpd/cleanup process over the load.
    for p in $(echo "$before" | awk '{print $4}' | tr ',' ' '); do
      perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync \
        -o "$WORK/perf-${label%%[*}-$(cat /proc/$p/comm)-$p.txt" -p "$p" 2>/dev/null & st+=($!)
    done
    sleep 1
  fi
  t0=$(date +%s.%N)
  nice -n "${NICE:-0}" /usr/sbin/smtp-source -s "$C" -m "$N" -l "$SIZE" -f bench@example.test -t bench@example.test "127.0.0.1:$PORT"
  t1=$(date +%s.%N)
  after=$(cpu_of "$bin" smtpd cleanup)
  if [ ${#st[@]} -gt 0 ]; then kill -INT "${st[@]}"; wait "${st[@]}" 2>/dev/null || true; fi
  python3 - "$label" "$N" "$t0" "$t1" "$(getconf CLK_TCK)" "$before" "$after" <<'EOT'
import sys
label, n, t0, t1, hz = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
def parse(s):
    r = {}
    for l in s.splitlines():
        w = l.split() + [""]
        r[w[0]] = (int(w[1]), int(w[2]), set(w[3].split(",")) - {""})
    return r
b, a = parse(sys.argv[6]), parse(sys.argv[7])
parts = []
for c in ("smtpd", "cleanup"):
    gone = b[c][2] - a[c][2]
    us = (a[c][0] - b[c][0]) * 1000 / hz / n
    sy = (a[c][1] - b[c][1]) * 1000 / hz / n
    parts.append(f"{c} {us + sy:.3f} ms/msg (user {us:.3f} sys {sy:.3f}; {len(a[c][2])} procs{', %d exited!' % len(gone) if gone else ''})")
print(f"{label}: {n / (t1 - t0):.0f} msg/s  " + "  ".join(parts), flush=True)
EOT
  BIN=$bin pn stop >/dev/null 2>&1 || true
  set_aside "$inst"; INST=
}

for r in $(seq "$ROUNDS"); do
  i=0
  for b in $BINS; do
    i=$((i+1))
    run_one "$(echo ABCDEFG | cut -c$i)[$b] c=$C" "$b"
  done
done
