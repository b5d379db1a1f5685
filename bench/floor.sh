#!/usr/bin/env bash
# The least work per message (issue 14): bench/floor.c — one process that accepts each
# message over loopback SMTP, makes it durable before the 250 and delivers it to a
# Maildir-style directory (two durable writes and two directory fsyncs per message, no
# daemons, no IPC, no logging), with its own C client as the load. What it reaches on
# this machine is what any mail system that keeps both durable writes can at best reach;
# its CPU per message is the kernel's and the client's share that no design avoids.
#
#   bench/floor.sh                       # N=5000 CONCS="8 32" SIZE=4096 REPS=3
#   OUT=FILE bench/floor.sh              # also one JSON line per run (bench "floor")
#
# WORK must be on the file system to measure. Needs gcc (build-essential).
. "$(dirname "$0")/lib.sh"
N=${N:-5000}
CONCS=${CONCS:-8 32}
SIZE=${SIZE:-4096}
command -v gcc >/dev/null || { echo "floor.sh: gcc is needed" >&2; exit 1; }
mkdir -p "$WORK"
EXE=$WORK/floor-$$
gcc -O2 -Wall -pthread -o "$EXE" "$ROOT/bench/floor.c"
trap 'rm -rf "$EXE" "$WORK/floor-dir-$$"; [ -n "${RUN_ALL:-}" ] || rm -rf "$WORK/set-aside"' EXIT
for rep in $(seq "$REPS"); do
  for c in $CONCS; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    line=$("$EXE" "$WORK/floor-dir-$$" "$N" "$c" "$SIZE")
    set_aside "$WORK/floor-dir-$$"
    echo "$line (load $load)"
    [ -z "${OUT:-}" ] || python3 - "$line" "$c" "$SIZE" "$N" "$load" >> "$OUT" <<'EOT'
import json, re, sys
line, c, size, n, load = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
m = re.search(r": (\d+) msg/s, mail system ([\d.]+) ms CPU/msg, client ([\d.]+) ms", line)
print(json.dumps({"bench": "floor", "label": "floor", "c": c, "size": size, "n": n, "load": load,
                  "rate": float(m.group(1)), "cpu_ms": float(m.group(2)), "client_ms": float(m.group(3))}))
EOT
    sleep 2
  done
done
