#!/usr/bin/env bash
# bench/run-all.sh — the whole comparison on this machine, written to BENCHMARKS.md.
#
#   sudo bench/run-all.sh               # default: 3 repetitions, full sizes (30-60 minutes on 2 cores)
#   sudo QUICK=1 bench/run-all.sh       # 1 repetition, fewer messages and 250 idle IMAP
#                                       # connections: under 10 minutes once built
#   sudo REPS=5 bench/run-all.sh        # another number of repetitions
#
# As root. Installs and starts the peers if they are missing or stopped
# (bench/peer/peer-setup.sh: Postfix + Dovecot from Debian's packages, loopback only; a
# running peer is never stopped or reloaded), builds the release binaries once, then
# measures Postern and the peer in the same run, each step REPS times:
#   1. the disk's durable-write ceiling (fsyncs/s; bench/peer/phys_limit.py)
#   2. SMTP accept rate and 250 latency p50/p99, 1/8/32 sessions × 4 KB/100 KB (bench/smtp_accept.sh)
#   3. SMTP → Maildir delivery rate, 1/8/32 × 4 KB/100 KB, with the whole system's memory
#      (sum of PSS) idle and at the peak of each load (bench/smtp_delivery.sh)
#   3b. SMTP → Maildir with smtp-source, 32 and 8 sessions (5,000 messages; 1,000 with QUICK=1),
#      Postern and Postfix alternating, with CPU per message per daemon (bench/pipeline_cpu.sh)
#   3c. the least work per message on this machine: one C process that accepts and delivers
#      with both durable writes, at 8 and 32 sessions (bench/floor.sh, bench/floor.c)
#   4. relay to Postfix's smtp-sink, 32 sessions in (bench/relay.sh)
#   5. IMAP (LOGIN+SELECT, FETCH envelopes, FETCH bodies, SEARCH HEADER, SEARCH BODY, STORE),
#      POP3 (LIST, UIDL, RETR of all), logins/s at 8 clients with the same yescrypt hash on
#      both sides, and memory per idle IMAP connection with 1,000 open (bench/imap_bench.sh)
# then writes BENCHMARKS.md (bench/report.py): medians with the spread (min–max), ratios
# Postern/peer, the machine (CPUs, kernel, filesystem, load average before and after),
# the date, the git commit and this command. Progress goes to stderr; the full output of
# every step to $WORK/run-DATE/log, the raw results to $WORK/run-DATE/results/*.jsonl.
#
# Environment: QUICK=1, REPS=N, WORK=DIR (scratch, default /tmp/postern-bench; must be on
# the filesystem to measure), BENCHMARKS=FILE (default BENCHMARKS.md in the checkout),
# NO_BUILD=1 (use target/release as it is). Every load is bounded in count and time.
REPS_GIVEN=${REPS:-}
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "run-all.sh: run as root (it installs and starts the peers)" >&2; exit 1; }
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  REPS=${REPS_GIVEN:-1}; N_SMTP=300; N_RELAY=300; N_PIPE=1000; N_IMAP=2000; LOGINS=120; IDLE=250; PHYS="--count 1000 --max-seconds 2"
else
  REPS=${REPS_GIVEN:-3}; N_SMTP=2000; N_RELAY=2000; N_PIPE=5000; N_IMAP=10000; LOGINS=400; IDLE=1000; PHYS="--count 3000 --max-seconds 5"
fi
IDLE_CONNS=${IDLE_CONNS:-$IDLE}
BENCHMARKS=${BENCHMARKS:-$ROOT/BENCHMARKS.md}
COMMAND=bench/run-all.sh
[ -z "$REPS_GIVEN" ] || COMMAND="REPS=$REPS_GIVEN $COMMAND"
[ "$QUICK" != 1 ] || COMMAND="QUICK=1 $COMMAND"
RUN=$WORK/run-$(date +%Y%m%d-%H%M%S)
RES=$RUN/results
LOG=$RUN/log
mkdir -p "$RES"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
progress "run-all: REPS=$REPS QUICK=$QUICK, results in $RUN (load average $LOAD_BEFORE)"

peer_ensure
progress "building the release binaries"
build_release
BUILD_S=$(( $(date +%s) - T0 ))
export NO_BUILD=1 REPS WORK RUN_ALL=1

FAILED=()
step() { # name command...
  local name=$1; shift
  progress "step $name"
  echo "=== $name: $*" >> "$LOG"
  if ! "$@" >> "$LOG" 2> >(tee -a "$LOG" >&2); then
    FAILED+=("$name")
    progress "step $name FAILED (see $LOG)"
  fi
}
step phys python3 "$PEER_DIR/phys_limit.py" --dir "$WORK/phys" --reps "$REPS" $PHYS --label machine \
  --json-out "$RES/phys.jsonl"
OUT=$RES/smtp_accept.jsonl N=$N_SMTP step smtp_accept bench/smtp_accept.sh
OUT=$RES/smtp_delivery.jsonl N=$N_SMTP step smtp_delivery bench/smtp_delivery.sh
OUT=$RES/pipeline.jsonl N=$N_PIPE C=32 ROUNDS=$REPS BINS=$BIN step pipeline bench/pipeline_cpu.sh
OUT=$RES/pipeline.jsonl N=$N_PIPE C=8 ROUNDS=$REPS BINS=$BIN step pipeline8 bench/pipeline_cpu.sh
OUT=$RES/floor.jsonl N=$N_PIPE CONCS="8 32" step floor bench/floor.sh
OUT=$RES/relay.jsonl N=$N_RELAY C=32 step relay bench/relay.sh
OUT=$RES/imap_bench.jsonl N=$N_IMAP LOGINS=$LOGINS IDLE_CONNS=$IDLE_CONNS step imap bench/imap_bench.sh

rm -rf "$WORK/set-aside"  # what the runs set aside (bench/lib.sh), once nothing is measured any more
progress "writing $BENCHMARKS"
fs_desc() {
  local src type opts journal=""
  read -r src type opts < <(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$WORK")
  if [ "${type#ext}" != "$type" ] && command -v dumpe2fs >/dev/null; then
    if dumpe2fs -h "$src" 2>/dev/null | grep -q 'features:.*has_journal'; then journal=", with a journal"
    else journal=", without a journal"; fi
  fi
  echo "$type on $src ($opts)$journal"
}
META_DATE=$(date -u '+%Y-%m-%d %H:%M') \
META_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
META_DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo 1 || echo 0) \
META_COMMAND=$COMMAND META_REPS=$REPS META_QUICK=$QUICK \
META_NPROC=$(nproc) \
META_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') \
META_MEM="$(awk '/MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo)" \
META_KERNEL="$(uname -sr)" META_FS="$(fs_desc)" \
META_LOAD_BEFORE=$LOAD_BEFORE META_LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)" \
META_POSTFIX="Postfix $(postconf -h mail_version 2>/dev/null)" \
META_DOVECOT="Dovecot $(dovecot --version 2>/dev/null | cut -d' ' -f1)" \
META_MINUTES=$(( ($(date +%s) - T0 + 30) / 60 )) META_BUILD_MINUTES=$(( (BUILD_S + 30) / 60 )) \
META_SIZES="SMTP $N_SMTP messages per run and configuration, relay $N_RELAY, IMAP/POP3 mailbox $N_IMAP messages, $LOGINS logins per pass, $IDLE_CONNS idle IMAP connections" \
META_FAILED="${FAILED[*]}" META_RESULTS=$RES \
python3 - "$RUN/meta.json" <<'EOT'
import json, os, sys
m = {k[5:].lower(): v for k, v in os.environ.items() if k.startswith("META_")}
m["dirty"] = m["dirty"] == "1"
m["quick"] = m["quick"] == "1"
m["failed_steps"] = m["failed"].split()
json.dump(m, open(sys.argv[1], "w"), indent=1)
EOT
python3 bench/report.py "$RES" "$RUN/meta.json" > "$BENCHMARKS.tmp"
mv "$BENCHMARKS.tmp" "$BENCHMARKS"
progress "done in $(( ($(date +%s) - T0) / 60 )) min: $BENCHMARKS${FAILED:+ (failed steps: ${FAILED[*]})}"
