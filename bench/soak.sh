#!/usr/bin/env bash
# The full soak of issue 6 ("no loss under crashes"): tests/tests/soak_chaos.rs with
# 5,000 messages from 32 concurrent SMTP sessions to local users, a relay sink and a
# deferring sink, while every daemon master runs is killed with SIGKILL at random every
# few hundred milliseconds and master itself is killed and restarted once. Everything runs
# on loopback in a temporary directory; the summary line ("soak summary: ...") gives the
# kills per daemon, messages accepted, lost (must be 0) and duplicates.
#   bench/soak.sh                    # N=5000, release build
#   N=1000 SEED=12345 bench/soak.sh  # fewer messages; SEED repeats a run's kill moments
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-5000}
PROFILE=${PROFILE:-release}
flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build "${flag[@]}" --workspace
export SOAK_MESSAGES="$N"
[ -n "${SEED:-}" ] && export SOAK_SEED="$SEED"
log=$(mktemp)
status=0
cargo test "${flag[@]}" -p postern-tests --test soak_chaos -- --nocapture 2>&1 | tee "$log" || status=$?
grep '^soak summary:' "$log" || true
rm -f "$log"
exit "$status"
