#!/usr/bin/env bash
# Where an accept's wall time goes (issue 14): per SMTP step latency seen by the client
# (bench/smtp_steps.py: connect->banner, EHLO, MAIL, RCPT, DATA->354, dot->250, QUIT), for
# each Postern build directory and the Postfix peer (127.0.0.1:10025) in turn, round after
# round, in the same run; with TRACE=1 also what Postern's smtpd and cleanup wait on over
# one more run per build (time inside fdatasync, fsync, rename, futex, reads and waits from
# their tracepoints: bench/syscall_waits.py; `perf sched timehist`: run time, off-CPU wait
# and scheduling delay per command: bench/sched_waits.py).
#
#   BINS="/tmp/a /tmp/b" ROUNDS=2 N=4000 C=8 bench/accept_steps.sh
#   TRACE=1 BINS=target/release ROUNDS=1 bench/accept_steps.sh
#
# One throwaway instance per build, as in accept_cpu.sh; load average printed per run.
. "$(dirname "$0")/lib.sh"
N=${N:-4000}
C=${C:-8}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-2}
BINS=${BINS:-$BIN}
peer_ensure

steps() { # label port
  echo "== $1 c=$C load $(cut -d' ' -f1 /proc/loadavg)"
  python3 bench/smtp_steps.py --port "$2" -n "$N" -c "$C" --size "$SIZE" --label "$1" ${OUT:+--json "$OUT"}
}

declare -A PORTS INSTS
i=0
for b in $BINS; do
  i=$((i+1))
  BIN=$b postern_new
  INSTS[$b]=$INST
  PORTS[$b]=$(free_port)
  BIN=$b pn_set "smtp/inet.listen=127.0.0.1:${PORTS[$b]}" 'smtp/inet.max_conns=200' 'mydestination=["example.test","localhost"]' 'smtp/inet.max_use=1000000' 'cleanup/unix.max_use=1000000'
  BIN=$b pn_user bench bench-pw
  BIN=$b "$b/postern" -c "$INST/etc" start
done
trap 'for b in $BINS; do "$b/postern" -c "${INSTS[$b]}/etc" stop >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] || rm -rf "${INSTS[$b]}"; done' EXIT
sleep 1
for b in $BINS; do
  /usr/sbin/smtp-source -s "$C" -m 300 -l "$SIZE" -f bench@example.test -t bench@example.test "127.0.0.1:${PORTS[$b]}"
done
/usr/sbin/smtp-source -s "$C" -m 300 -l "$SIZE" -f bench@example.test -t bench@example.test 127.0.0.1:10025
sleep 2

for r in $(seq "$ROUNDS"); do
  i=0
  for b in $BINS; do
    i=$((i+1))
    steps "$(echo ABCDEFG | cut -c$i)[$b]" "${PORTS[$b]}"
    sleep 2
  done
  steps Postfix 10025
  sleep 2
done

[ -n "${TRACE:-}" ] || exit 0
i=0
for b in $BINS; do
  i=$((i+1))
  label=$(echo ABCDEFG | cut -c$i)
  # The waits of smtpd and cleanup: the few system calls they block in, recorded by the
  # kernel's tracepoints (perf trace and strace slowed the load 5-30 times here).
  echo "== $label: time inside system calls (perf record of their tracepoints, 4 s of load), load $(cut -d' ' -f1 /proc/loadavg)"
  ev=""
  for c in fdatasync fsync rename futex read recvfrom ppoll epoll_wait openat write sendto; do
    ev="$ev,syscalls:sys_enter_$c,syscalls:sys_exit_$c"
  done
  python3 bench/smtp_steps.py --port "${PORTS[$b]}" -n "$N" -c "$C" --size "$SIZE" --label "$label traced" > "$WORK/traced-$label.txt" & lp=$!
  sleep 1
  perf record -a -e "${ev#,}" -o "$WORK/sys-$label.data" -- sleep 4 >/dev/null 2>&1
  wait $lp || true
  head -1 "$WORK/traced-$label.txt"
  perf script -i "$WORK/sys-$label.data" 2>/dev/null | python3 bench/syscall_waits.py smtpd cleanup
  echo "== $label: perf sched timehist (system-wide, 4 s of load): per command, CPU run time, off-CPU wait, wake-up to run delay"
  python3 bench/smtp_steps.py --port "${PORTS[$b]}" -n "$N" -c "$C" --size "$SIZE" --label "$label sched" >/dev/null & lp=$!
  sleep 1
  perf sched record -a -o "$WORK/sched-$label.data" -- sleep 4 >/dev/null 2>&1
  wait $lp || true
  perf sched timehist -i "$WORK/sched-$label.data" 2>/dev/null | python3 bench/sched_waits.py
done
