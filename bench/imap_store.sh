#!/usr/bin/env bash
# The mailbox store's benchmarks (issue 11): Postern's imapd beside Dovecot 2.3, same
# generator (bench/imap_store.py), same mailbox contents (bench/fill_maildir.py), same
# machine, same run. For each side:
#   - memory per idle session with INBOX selected at each size of SIZES (default 2,000,
#     10,000, 50,000 messages) with CONNS sessions (default 1,000): sum of RSS and PSS of
#     the serving processes (Postern's imapd, Dovecot's imap; both master's trees), before / with the sessions open / SETTLE s after
#     they all closed (is the memory given back?). Opening stops, and the result says so,
#     once the serving processes' PSS passes MAX_SERVER_MB (default 6,000), so a store that keeps
#     megabytes per session cannot take the machine down;
#   - each size starts from freshly started serving processes (Postern: the instance is
#     restarted; Dovecot starts an imap process per session anyway);
#   - at the largest size those sessions (Dovecot: as many as Postern could hold) then all enter IDLE: the server's CPU over
#     IDLE_SECS (20) with nothing arriving, then one message is delivered by the server's
#     own delivery path (Postern: SMTP to the instance's smtpd, through cleanup, qmgr and
#     local; Dovecot: dovecot-lda) and each session's time until `* n EXISTS`;
#   - at the largest size: the time to open OPEN_N (200) sessions, LOGIN+SELECT, 8 at once;
#   - at STEP_N (10,000): LOGIN+SELECT, FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE), STORE 1:*
#     +FLAGS (medians of REPS warm passes, bench/peer/imap_pop_load.py's imap_pass);
#   - stress: STRESS_CLIENTS (10) pipelined clients for STRESS_SECS (30) on a
#     STRESS_MSGS-message INBOX (1,000) doing SELECT, FETCH, STORE, STORE \Deleted +
#     EXPUNGE, APPEND: commands/s and every NO/BAD by command and text.
#     When Dovecot's own tester is on PATH (imaptest, built from its sources against
#     dovecot-dev; not packaged in Debian) its default stress profile runs too:
#       imaptest host=127.0.0.1 port=PORT user=benchbox pass=benchbox-pw \
#         mbox=$WORK/stress.mbox clients=$STRESS_CLIENTS secs=$STRESS_SECS msgs=$STRESS_MSGS
#     and its totals are kept in $WORK/imaptest-LABEL.txt.
#
#   sudo bench/imap_store.sh            # QUICK=1: 2,000 and 10,000 messages, 100 sessions,
#                                       # 5 s phases (a few minutes); PEER=0: Postern only
#   ONLY=stress bench/imap_store.sh     # one part only, for an A/B of one change: stress (the
#                                       # stress mix and imaptest), steps (LOGIN+SELECT, FETCH,
#                                       # STORE at STEP_N) or sessions (the SIZES loop without steps)
#   PN_SET="imapd_folder_keep_time=0" bench/imap_store.sh   # main.toml settings for Postern
#
# Memory after the sessions closed is sampled SETTLE s after they did and again RELEASED_AFTER
# (14) s after: Postern keeps a folder's state imapd_folder_keep_time (10 s by default) after
# its last session, so the first sample shows it kept and the second whether it went.
#
# Both servers log in the system user benchbox with the same yescrypt hash (as
# bench/imap_bench.sh does). Postern is a throwaway instance of the whole etc/ (bench/lib.sh)
# with imap at maxproc 4, max_conns 1000. Results: JSON lines in $OUT; not a test, nothing
# here asserts a timing.
. "$(dirname "$0")/lib.sh"
if [ -n "${QUICK:-}" ]; then
  SIZES=${SIZES:-"2000 10000"} CONNS=${CONNS:-100} IDLE_SECS=${IDLE_SECS:-5} OPEN_N=${OPEN_N:-50}
  STEP_N=${STEP_N:-10000} REPS=${QUICK_REPS:-1} STRESS_SECS=${STRESS_SECS:-10} SETTLE=${SETTLE:-2}
fi
SIZES=${SIZES:-"2000 10000 50000"}
CONNS=${CONNS:-1000}
IDLE_SECS=${IDLE_SECS:-20}
OPEN_N=${OPEN_N:-200}
STEP_N=${STEP_N:-10000}
STRESS_CLIENTS=${STRESS_CLIENTS:-10}
STRESS_SECS=${STRESS_SECS:-30}
STRESS_MSGS=${STRESS_MSGS:-1000}
SETTLE=${SETTLE:-3}
RELEASED_AFTER=${RELEASED_AFTER:-14}
MAX_SERVER_MB=${MAX_SERVER_MB:-6000}
BIG=$(echo "$SIZES" | tr ' ' '\n' | sort -n | tail -n1)
OUT=$(results_file imap_store)
PY=bench/imap_store.py
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

build_release
peer_ensure
bench_mailbox_user

postern_new
inet_port() { # service name: its port in the instance's master.toml
  python3 -c 'import sys, tomllib
for s in tomllib.load(open(sys.argv[1], "rb"))["service"]:
    if s["type"] == "inet" and s["name"] == sys.argv[2]: print(s["listen"].rsplit(":", 1)[1])' "$INST/etc/master.toml" "$1"
}
PORT=$(inet_port imap)
SMTP_PORT=$(inet_port smtp)
pn_set imap/inet.maxproc=4 imap/inet.max_conns=1000 imap/inet.max_use=1000000 \
  "imapd_user_connection_limit=$((CONNS + OPEN_N + STRESS_CLIENTS + 100))"
# shellcheck disable=SC2086 # a list of settings
[ -n "${PN_SET:-}" ] && pn_set $PN_SET
if [ -n "$HASH" ]; then pn_user "$USER_NAME" "$USER_PW" "$HASH"; else pn_user "$USER_NAME" "$USER_PW"; fi
OWNER=$([ "$(id -u)" = 0 ] && echo postern || id -un)
PN_BOX=$INST/var/mail/$USER_NAME
pn_start >/dev/null
INOTIFY_INSTANCES=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)
if [ "$PEER" != 0 ] && [ "$INOTIFY_INSTANCES" -lt "$CONNS" ]; then
  progress "note: fs.inotify.max_user_instances is $INOTIFY_INSTANCES: Dovecot's imap processes of one user past that many fall back to timed checks in IDLE (raise it with sysctl for a like-for-like notification figure; Postern's imapd needs one instance per process)"
fi
emit_json "$OUT" "{\"bench\": \"store_run\", \"inotify_max_user_instances\": $INOTIFY_INSTANCES, \"postern\": \"$(git rev-parse --short HEAD)\", \"uptime\": \"$(uptime)\", \"sizes\": \"$SIZES\", \"conns\": $CONNS, \"pn_set\": \"${PN_SET:-}\"}"

fill() { # label maildir n
  progress "imap_store $1: filling with $3 messages"
  if [ "$1" = postern ]; then
    python3 bench/fill_maildir.py --maildir "$2" -n "$3" >/dev/null
    [ "$OWNER" = postern ] && chown -R postern: "$PN_BOX"
  else
    python3 bench/fill_maildir.py --maildir "$2" -n "$3" --owner "$USER_NAME" >/dev/null
  fi
}

run_side() { # label port pidfile serving-process-name maildir deliver-args...
  local label=$1 port=$2 pidf=$3 comm=$4 box=$5 n
  shift 5
  local common=(--port "$port" --user "$USER_NAME" --password "$USER_PW" --label "$label"
                --json-out "$OUT" --mem-pidfile "$pidf" --mem-comm "$comm" --settle "$SETTLE"
                --released-after "$RELEASED_AFTER")
  local sizes=$SIZES
  case "${ONLY:-}" in
    stress) sizes= ;;
    steps) sizes=$STEP_N ;;
  esac
  for n in $sizes; do
    fill "$label" "$box" "$n"
    # each size starts from fresh serving processes: memory kept from the size before must
    # neither count against MAX_SERVER_MB nor hide what this size costs
    if [ "$label" = postern ]; then pn stop >/dev/null; pn_start >/dev/null; sleep 1; fi
    if [ "${ONLY:-}" = steps ]; then
      :
    elif [ "$n" = "$BIG" ]; then
      local big_n=$CONNS
      # same number of sessions on both sides: Dovecot gets as many as Postern could hold
      if [ "$label" = dovecot ] && [ -n "${PN_BIG_OPEN:-}" ]; then big_n=$PN_BIG_OPEN; fi
      progress "imap_store $label: $big_n sessions at $n, then IDLE ${IDLE_SECS}s and one delivery"
      python3 $PY sessions "${common[@]}" -n "$big_n" --max-server-mb "$MAX_SERVER_MB" --phase idle \
        --idle --cpu-secs "$IDLE_SECS" "$@" | grep RESULT
      [ "$label" = postern ] && PN_BIG_OPEN=$(python3 -c 'import json, sys
r = [json.loads(x) for x in open(sys.argv[1]) if "\"phase\": \"idle\"" in x and "\"postern\"" in x]
print(r[-1]["open"] if r else "")' "$OUT")
      if [ "$label" = postern ]; then pn stop >/dev/null; pn_start >/dev/null; sleep 1; fi
      progress "imap_store $label: opening $OPEN_N sessions at $n"
      python3 $PY sessions "${common[@]}" -n "$OPEN_N" --max-server-mb "$MAX_SERVER_MB" --phase open | grep RESULT
    else
      progress "imap_store $label: $CONNS idle sessions at $n"
      python3 $PY sessions "${common[@]}" -n "$CONNS" --max-server-mb "$MAX_SERVER_MB" | grep RESULT
    fi
    if [ "$n" = "$STEP_N" ] && [ "${ONLY:-}" != sessions ]; then
      progress "imap_store $label: LOGIN+SELECT / FETCH ENVELOPE / STORE at $n, $REPS warm passes"
      python3 $PY steps "${common[@]}" --reps "$REPS" | grep RESULT
    fi
  done
  case "${ONLY:-}" in steps | sessions) return 0 ;; esac
  fill "$label" "$box" "$STRESS_MSGS"
  progress "imap_store $label: stress, $STRESS_CLIENTS clients, ${STRESS_SECS}s"
  python3 $PY stress "${common[@]}" --clients "$STRESS_CLIENTS" --secs "$STRESS_SECS" | grep RESULT
  if command -v imaptest >/dev/null; then
    fill "$label" "$box" "$STRESS_MSGS"
    python3 -c 'import sys; sys.path.insert(0, "bench/peer"); from imap_pop_load import make_msg
import time
with open(sys.argv[1], "wb") as f:
    for i in range(1, 201):
        f.write(b"From bench@example.test " + time.asctime(time.gmtime()).encode() + b"\n" + make_msg(i, 4096).replace(b"\r\n", b"\n") + b"\n")' "$WORK/stress.mbox"
    progress "imap_store $label: imaptest's default stress profile"
    timeout $((STRESS_SECS + 60)) imaptest host=127.0.0.1 "port=$port" "user=$USER_NAME" "pass=$USER_PW" \
      "mbox=$WORK/stress.mbox" "clients=$STRESS_CLIENTS" "secs=$STRESS_SECS" "msgs=$STRESS_MSGS" \
      > "$WORK/imaptest-$label.txt" 2>&1 || true
    tail -n 4 "$WORK/imaptest-$label.txt"
  fi
}

run_side postern "$PORT" "$(pn_pidfile)" '^imapd$' "$PN_BOX" --deliver-smtp "$SMTP_PORT" --rcpt "$USER_NAME@example.test"
if [ "$PEER" != 0 ]; then
  run_side dovecot 10143 "$DOVECOT_PID" '^imap$' "/home/$USER_NAME/Maildir" \
    --deliver-cmd "/usr/lib/dovecot/dovecot-lda -d $USER_NAME -f bench-sender@example.test"
  python3 -c "import sys; sys.path.insert(0, '$PEER_DIR'); import benchlib; benchlib.maildir_clean('/home/$USER_NAME/Maildir')"
fi
progress "imap_store: results in $OUT"
python3 $PY report "$OUT"
