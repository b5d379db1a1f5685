# bench/lib.sh — what every benchmark script shares; sourced, not run:
#
#   . "$(dirname "$0")/lib.sh"
#
# Sets ROOT (the checkout; also the working directory), WORK (scratch, default
# /tmp/postern-bench), REPS (repetitions, default 3), BIN (Postern's binaries, default
# target/release), PEER (1: measure the Postfix/Dovecot peer too, 0: Postern only) and the
# peers' pid files, and gives:
#
#   build_release [-p PKG ...]   cargo build --release, unless NO_BUILD is set
#   peer_ensure                  Postfix + Dovecot installed and running (bench/peer/peer-setup.sh
#                                when one is missing or stopped); never stops or reloads a running one
#   peer_user NAME PW            a system user with ~/Maildir for Dovecot (idempotent)
#   results_file NAME            $OUT if set, else a new $WORK/results/NAME-DATE.jsonl
#   free_port                    a free TCP port on 127.0.0.1
#   postern_new [ETC]            a throwaway instance: $INST (temporary directory under $WORK),
#                                copy of ETC (default etc/), daemon_directory=$BIN, every inet
#                                service on a free loopback port (so it never meets another
#                                instance); stopped and removed on exit (KEEP=1 keeps it)
#   pn ARGS...                   the postern command on that instance
#   pn_set KEY=VALUE...          postern config set on it
#   pn_user NAME PW [HASH]       a user in its etc/users (HASH: store this hash as it is)
#   pn_start, pn_pidfile         start it; its master's pid file
#   pss_mb PIDFILE...            "MB NPROC": sum of PSS over those masters' process trees, now
#   emit_json FILE JSON          append one result line
#   cpu_of BINDIR COMM...        "COMM utime stime pids" per comm: clock ticks summed over the
#                                live processes with that comm whose executable is in BINDIR
#                                (CPU_TREE=PID: only that process and its descendants)
#
# PF_PORT and PF_PIDFILE name the Postfix the loads measure: the peer (127.0.0.1:10025,
# POSTFIX_PID) unless bench/fs_compare.sh points them at a Postfix instance of its own.
#   progress TEXT                a time-stamped progress line on stderr
#   acct_switch [FILE]           BSD process accounting of exited processes into FILE; off without FILE
#   set_aside PATH...            moves PATH under $WORK/set-aside instead of deleting it
#   empty_dir DIR                empties DIR by setting it aside and making it anew (same owner, mode)
#
# Nothing a run leaves is deleted before the next run: on ext4 without a journal every
# file created in the 60–300 s after a deletion makes the kernel scan past the freed
# inodes (`recently_deleted`, half of a delivery agent's CPU after a big `rm -rf`), so one
# run's clean-up would be paid by the next run, whichever system that is. What is set
# aside is removed when the script ends, or, under run-all.sh (RUN_ALL=1), once after its
# last measurement.
#
# Every helper is bounded in time; everything listens on 127.0.0.1 only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=${WORK:-/tmp/postern-bench}
REPS=${REPS:-3}
BIN=${BIN:-$ROOT/target/release}
PEER=${PEER:-1}
PEER_DIR=$ROOT/bench/peer
POSTFIX_PID=/var/spool/postfix/pid/master.pid
PF_PORT=${PF_PORT:-10025}
PF_PIDFILE=${PF_PIDFILE:-$POSTFIX_PID}
DOVECOT_PID=/run/dovecot/master.pid
INST=
mkdir -p "$WORK/results"

progress() { echo "[$(date +%H:%M:%S)] $*" >&2; }

build_release() {
  [ -n "${NO_BUILD:-}" ] && return 0
  if [ $# = 0 ]; then set -- --workspace; fi
  cargo build --release --quiet "$@"
}

results_file() { echo "${OUT:-$WORK/results/$1-$(date +%Y%m%d-%H%M%S).jsonl}"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

_running() { [ -s "$1" ] && kill -0 "$(head -n1 "$1" | tr -d ' ')" 2>/dev/null; }

peer_ensure() {
  [ "$PEER" = 0 ] && return 0
  if [ ! -x /usr/sbin/postfix ] || [ ! -x /usr/sbin/dovecot ] || ! _running "$POSTFIX_PID" || ! _running "$DOVECOT_PID"; then
    progress "peer: setting up / starting Postfix + Dovecot (bench/peer/peer-setup.sh)"
    bash "$PEER_DIR/peer-setup.sh" >&2
  fi
}

peer_user() { # NAME PW  (the Maildir in the user's home, wherever passwd puts it)
  id "$1" >/dev/null 2>&1 || useradd -m -s /usr/sbin/nologin "$1"
  echo "$1:$2" | chpasswd
  local home
  home=$(getent passwd "$1" | cut -d: -f6)
  for d in cur new tmp; do install -d -o "$1" -g "$1" -m 700 "$home/Maildir/$d"; done
  chown "$1:$1" "$home/Maildir"
  chmod 700 "$home/Maildir"
}

# The mailbox user both servers log in as: sets USER_NAME, USER_PW and HASH (the system
# user's hash, which Postern's user gets too, so both check the same yescrypt hash). Dovecot
# needs the system user, so without root only PEER=0 runs.
bench_mailbox_user() {
  USER_NAME=benchbox
  USER_PW=benchbox-pw
  HASH=
  if [ "$(id -u)" = 0 ]; then
    peer_user "$USER_NAME" "$USER_PW"
    HASH=$(getent shadow "$USER_NAME" | cut -d: -f2)
  elif [ "$PEER" != 0 ]; then
    echo "the Dovecot comparison needs root (PEER=0 for Postern alone)" >&2; exit 1
  fi
}

pn() { "$BIN/postern" -c "$INST/etc" "$@"; }
pn_set() { pn config set "$@" >/dev/null; }
pn_pidfile() { echo "$INST/var/spool/pid/master.pid"; }
pn_start() { pn start; }

pn_user() { # NAME PW [HASH]
  if [ $# -ge 3 ]; then
    (umask 077; echo "$1:$3" >> "$INST/etc/users")
  else
    echo "$2" | pn user add "$1" >/dev/null
  fi
}

acct_switch() { # [FILE]: BSD process accounting (acct(2)) into FILE, or off without one
  python3 -c 'import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.acct(sys.argv[1].encode() if len(sys.argv) > 1 else None) != 0:
    sys.exit("acct: " + os.strerror(ctypes.get_errno()))' "$@"
}

set_aside() { # PATH...
  local slot
  slot=$(mktemp -d "$WORK/set-aside/XXXXXX" 2>/dev/null || { mkdir -p "$WORK/set-aside"; mktemp -d "$WORK/set-aside/XXXXXX"; })
  mv "$@" "$slot/"
}

empty_dir() { # DIR
  [ -d "$1" ] || return 0
  local slot
  slot=$(mktemp -d "$WORK/set-aside/XXXXXX" 2>/dev/null || { mkdir -p "$WORK/set-aside"; mktemp -d "$WORK/set-aside/XXXXXX"; })
  mv "$1" "$slot/"
  mkdir "$1"
  chown --reference="$slot/$(basename "$1")" "$1"
  chmod --reference="$slot/$(basename "$1")" "$1"
}

_bench_cleanup() {
  if [ -n "$INST" ] && [ -d "$INST/etc" ]; then
    pn stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || set_aside "$INST"
  fi
  [ -z "${ACCT_ON:-}" ] || acct_switch || true
  [ -n "${RUN_ALL:-}" ] || rm -rf "$WORK/set-aside"
}

postern_new() { # [ETC]
  INST=$(mktemp -d "$WORK/postern.XXXXXX")
  chmod 755 "$INST"
  cp -r "${1:-etc}" "$INST/etc"
  trap _bench_cleanup EXIT
  local sets=("daemon_directory=$BIN") svc
  for svc in $(python3 -c 'import sys, tomllib
for s in tomllib.load(open(sys.argv[1], "rb")).get("service", []):
    if s.get("type") == "inet": print(s["name"])' "$INST/etc/master.toml"); do
    sets+=("$svc/inet.listen=127.0.0.1:$(free_port)")
  done
  pn_set "${sets[@]}"
}

pss_mb() { # PIDFILE...
  python3 - "$PEER_DIR" "$@" <<'EOT'
import sys
sys.path.insert(0, sys.argv[1])
import benchlib
s = benchlib.MemSampler(pidfiles=sys.argv[2:])
rss, pss, n = s.sample()
print("%.1f %d" % (pss / 1024, n))
EOT
}

emit_json() { echo "$2" >> "$1"; }

cpu_of() { # BINDIR COMM... -> "COMM utime stime pids" summed over the processes with that
  # comm whose executable is in BINDIR (not another instance's or Postfix's smtpd)
  python3 - "$@" <<'EOT'
import os, sys
bindir = os.path.realpath(sys.argv[1]); want = set(sys.argv[2:]); out = {}
tree = os.environ.get("CPU_TREE", "")
def ppid(p):
    try: return open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]
    except OSError: return "0"
def in_tree(p):
    for _ in range(64):
        if p == tree: return True
        if p in ("0", "1"): return False
        p = ppid(p)
    return False
for p in os.listdir("/proc"):
    if not p.isdigit(): continue
    try:
        comm = open(f"/proc/{p}/comm").read().strip()
        if comm not in want or os.path.dirname(os.readlink(f"/proc/{p}/exe")) != bindir: continue
        if tree and not in_tree(p): continue
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        o = out.setdefault(comm, [0, 0, []])
        o[0] += int(f[11]); o[1] += int(f[12]); o[2].append(p)
    except OSError: pass
for c in sorted(want):
    u, k, ps = out.get(c, [0, 0, []])
    print(c, u, k, ",".join(sorted(ps)))
EOT
}

# imap_beside_dovecot USER PASSWORD N [LINES]: a throwaway Postern instance with auth and
# imapd only (LINES added to imapd's service entry, e.g. "max_use = 1"), and the Dovecot
# peer's system user USER (PEER=0: Postern alone), both logging USER in with the same
# yescrypt hash, each INBOX filled with the same N messages (bench/sort_thread_load.py
# fill), Postern started. Sets INST, PORT and PN_MAILDIR.
imap_beside_dovecot() {
  local user=$1 pw=$2 n=$3 lines=${4:-} hash="" owner
  if [ "$(id -u)" = 0 ]; then
    peer_user "$user" "$pw"
    hash=$(getent shadow "$user" | cut -d: -f2)
  elif [ "$PEER" != 0 ]; then
    echo "the Dovecot comparison needs root (PEER=0 for Postern alone)" >&2; exit 1
  fi
  postern_new
  PORT=$(free_port)
  cat > "$INST/etc/master.toml" <<EOT
[[service]]
name = "auth"
type = "unix"
command = "auth"
maxproc = 1
max_use = 1000000

[[service]]
name = "imap"
type = "inet"
listen = "127.0.0.1:$PORT"
command = "imapd"
maxproc = 2
$lines
EOT
  if [ -n "$hash" ]; then pn_user "$user" "$pw" "$hash"; else pn_user "$user" "$pw"; fi
  PN_MAILDIR=$INST/var/mail/$user
  owner=$([ "$(id -u)" = 0 ] && echo postern || id -un)
  python3 bench/sort_thread_load.py fill --maildir "$PN_MAILDIR" -n "$n" --owner "$owner"
  [ "$PEER" = 0 ] || python3 bench/sort_thread_load.py fill --maildir "/home/$user/Maildir" -n "$n" --owner "$user"
  pn_start >/dev/null
  sleep 1
}
