#!/usr/bin/env bash
# Postern beside Postfix on three file systems (issue 14): an ext4 image WITH a journal on a
# loop device of its own (what production hosts have), a tmpfs of its own (no disk: our CPU
# apart from the disk's) and the root file system (ext4 without a journal here) for reference.
#
#   ROUNDS=3 bench/fs_compare.sh          # 4 KB messages: N=3000 per accept run, PIPE_N=5000
#                                         # per SMTP -> Maildir run; Postern from $BIN
#   FSES="journal tmpfs" IMG_SIZE=4G N=5000 NO_BUILD=1 BIN=/tmp/x bench/fs_compare.sh
#
# On each file system both systems keep their queue AND their mailboxes there: Postern as a
# throwaway instance under WORK=<fs>/work (bench/lib.sh postern_new, through the scripts
# below), Postfix as a second instance of its own (postmulti: postfix-fsbench, its
# queue_directory and data_directory on the file system, its own loopback port, local
# delivery to the system user fsbench whose home, and so Maildir, is moved onto that file
# system). The main Postfix peer on 127.0.0.1:10025 is never stopped or reloaded (postmulti
# -e init and create edit its main.cf's instance lists, which the cleanup takes out again).
# The loads are the other scripts', run unchanged with PF_PORT/PF_PIDFILE/PF_RCPT/PF_USER
# pointing at the second instance:
#   accept at 8 and 32 sessions   bench/accept_ab.sh   (Postern, then Postfix, per round)
#   SMTP -> Maildir at 32         bench/pipeline_cpu.sh (delivered/s and CPU ms per message
#                                 of every daemon of each system, exited ones included)
# smtp-source is the generator (one message per connection). Raw output and the table
# (medians of ROUNDS with min-max, ratio of the medians, load before and after each block)
# go to $WORK/results/fs_compare-DATE.{log,md}, the Postfix instance's log beside them
# (-postfix.log); images and mounts live under FS_BASE (default /var/tmp/postern-fsbench.PID).
# Everything it made (mounts, loop device, image, Postfix instance, user fsbench, postmulti's
# entries in the main main.cf) is removed on exit, also when interrupted.
. "$(dirname "$0")/lib.sh"
N=${N:-3000}
PIPE_N=${PIPE_N:-5000}
ROUNDS=${ROUNDS:-3}
FSES=${FSES:-journal tmpfs root}
IMG_SIZE=${IMG_SIZE:-4G}
FS_BASE=${FS_BASE:-/var/tmp/postern-fsbench.$$}
PFI=postfix-fsbench
PF_CONF=/etc/$PFI
export PF_USER=fsbench PF_RCPT=fsbench@example.test
[ "$(id -u)" = 0 ] || { echo "needs root (mount, losetup, a Postfix instance)" >&2; exit 1; }
[ ! -e "$PF_CONF" ] || { echo "$PF_CONF exists: another fs_compare.sh running, or left over" >&2; exit 1; }
build_release
peer_ensure

STAMP=$(date +%Y%m%d-%H%M%S)
LOG=$WORK/results/fs_compare-$STAMP.log
TABLE=$WORK/results/fs_compare-$STAMP.md
LOOP= FSDIR= MOUNTS=() INITED=0 CREATED=0 USERMADE=0 PF_USER_HOME=
mkdir -p "$FS_BASE"

pf() { postfix -c "$PF_CONF" "$@"; }

fs_cleanup() {
  local rc=$? m i
  trap - EXIT INT TERM
  set +e
  progress "fs_compare: cleaning up"
  if [ "$CREATED" = 1 ]; then
    pf status >/dev/null 2>&1 && pf stop >/dev/null 2>&1
    for i in $(seq 50); do pf status >/dev/null 2>&1 || break; sleep 0.2; done
    local q d
    q=$(postconf -c "$PF_CONF" -h queue_directory 2>/dev/null)
    d=$(postconf -c "$PF_CONF" -h data_directory 2>/dev/null)
    # queue and data directories are ours (on FS_BASE, or create's empty defaults)
    for x in "$q" "$d"; do
      case $x in "$FS_BASE"/*|/var/spool/$PFI|/var/lib/$PFI) rm -rf "$x";; esac
    done
    postmulti -i "$PFI" -e destroy >/dev/null 2>&1
    rm -rf "/var/spool/$PFI" "/var/lib/$PFI" "$PF_CONF"
  fi
  if [ "$INITED" = 1 ]; then
    # postmulti -e init set these in the main instance's main.cf; take them out again
    postconf -X multi_instance_wrapper multi_instance_enable multi_instance_directories 2>/dev/null
  fi
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${MOUNTS[$i]}
    # what still runs on our own mount (an interrupted load's instance) is ours: end it by pid
    mountpoint -q "$m" && for p in $(fuser -m "$m" 2>/dev/null); do kill "$p" 2>/dev/null; done
    umount "$m" 2>/dev/null || { sleep 2; umount "$m"; } || umount -l "$m"
  done
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  [ "$USERMADE" = 1 ] && userdel "$PF_USER" 2>/dev/null
  [ -n "$PF_USER_HOME" ] && usermod -d "$PF_USER_HOME" "$PF_USER"
  [ -f "$FS_BASE/postfix-fsbench.log" ] && cp "$FS_BASE/postfix-fsbench.log" "$WORK/results/fs_compare-$STAMP-postfix.log"
  rm -rf "$FS_BASE"
  [ -e "$PF_CONF" ] && echo "fs_compare: $PF_CONF left behind" >&2
  exit "$rc"
}
trap fs_cleanup EXIT
trap 'exit 130' INT TERM

# --- the second Postfix instance (disabled: `postfix start` of the main one never starts it)
if [ "$(postconf -h multi_instance_enable)" != yes ]; then
  postmulti -e init; INITED=1
fi
CREATED=1
postmulti -I "$PFI" -e create
cp /etc/postfix/master.cf "$PF_CONF/master.cf"   # the same services (and chroots) as the peer
postconf -c "$PF_CONF" -MX '127.0.0.1:10025/inet' '127.0.0.1:10587/inet' 2>/dev/null || true
PF_PORT=$(free_port)
export PF_PORT
postconf -c "$PF_CONF" -M "127.0.0.1:$PF_PORT/inet=127.0.0.1:$PF_PORT inet n - y - - smtpd"
# the peer's settings (bench/peer/peer-setup.sh), but its own log, and inet services on
mapfile -t PF_SETTINGS < <(postconf -n | grep -vE '^(maillog_file|multi_instance_|alternate_config_directories|(queue|data|config)_directory) ')
postconf -c "$PF_CONF" -e "${PF_SETTINGS[@]}" master_service_disable= "maillog_file=$FS_BASE/postfix-fsbench.log"
if ! id "$PF_USER" >/dev/null 2>&1; then
  useradd -M -d "$FS_BASE" -s /usr/sbin/nologin "$PF_USER"; USERMADE=1
else
  PF_USER_HOME=$(getent passwd "$PF_USER" | cut -d: -f6)   # given back at the end
fi

fs_prepare() { # NAME: sets FSDIR, a directory on that file system
  local name=$1 m=$FS_BASE/mnt-$1
  FSDIR=$m
  case $name in
    journal)
      truncate -s "$IMG_SIZE" "$FS_BASE/ext4.img"
      LOOP=$(losetup -f --show "$FS_BASE/ext4.img")
      mkfs.ext4 -F -q "$LOOP"
      mkdir -p "$m"; MOUNTS+=("$m"); mount "$LOOP" "$m"
      [ -d "/proc/fs/jbd2/$(basename "$LOOP")-8" ] || { echo "no journal on $LOOP?" >&2; exit 1; };;
    tmpfs)
      mkdir -p "$m"; MOUNTS+=("$m"); mount -t tmpfs -o "size=$IMG_SIZE,mode=755" tmpfs "$m";;
    root)
      mkdir -p "$m";;
    *) echo "unknown file system $name (journal, tmpfs, root)" >&2; exit 1;;
  esac
  chmod 755 "$m"
}

pf_onto() { # DIR: the Postfix instance's queue, data and the user's home under DIR, started
  local fsd=$1
  pf status >/dev/null 2>&1 && pf stop >/dev/null
  mkdir -p "$fsd/pfqueue" "$fsd/pfdata" "$fsd/home"
  chown postfix:postfix "$fsd/pfdata"
  postconf -c "$PF_CONF" -e "queue_directory=$fsd/pfqueue" "data_directory=$fsd/pfdata"
  usermod -d "$fsd/home/$PF_USER" "$PF_USER"
  install -d -o "$PF_USER" -g "$PF_USER" -m 700 "$fsd/home/$PF_USER"
  peer_user "$PF_USER" "$PF_USER-pw"
  pf set-permissions >/dev/null 2>&1 || true
  /usr/lib/postfix/configure-instance.sh "$PFI" >/dev/null   # chroot files into the queue
  pf start >/dev/null 2>&1
  PF_PIDFILE=$fsd/pfqueue/pid/master.pid
  export PF_PIDFILE
  local i
  for i in $(seq 50); do _running "$PF_PIDFILE" && break; sleep 0.2; done
  _running "$PF_PIDFILE" || { echo "the Postfix instance did not start on $fsd" >&2; exit 1; }
}

load() { cut -d' ' -f1-3 /proc/loadavg; }

for fs in $FSES; do
  fs_prepare "$fs"
  dir=$FSDIR
  pf_onto "$dir"
  mkdir -p "$dir/work/results"
  progress "fs_compare: $fs ($(findmnt -n -o FSTYPE,SOURCE -T "$dir" | tr -s ' '))"
  {
    echo "== fs $fs $(findmnt -n -o FSTYPE,SOURCE,OPTIONS -T "$dir")"
    echo "== load-before accept $(load)"
    WORK=$dir/work NO_BUILD=1 BINS="$BIN" ROUNDS=$ROUNDS N=$N CONCS="8 32" bash bench/accept_ab.sh
    echo "== load-after accept $(load)"
    sleep 3
    echo "== load-before pipeline $(load)"
    WORK=$dir/work NO_BUILD=1 BINS="$BIN" ROUNDS=$ROUNDS N=$PIPE_N C=32 bash bench/pipeline_cpu.sh 2>/dev/null
    echo "== load-after pipeline $(load)"
  } 2>&1 | tee -a "$LOG"
  pf stop >/dev/null
  for i in $(seq 50); do pf status >/dev/null 2>&1 || break; sleep 0.2; done
  sleep 3
done

python3 - "$LOG" "$N/$PIPE_N" "$ROUNDS" "$BIN" > "$TABLE" <<'EOT'
import re, statistics, sys
log, n, rounds, binp = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
names = {"journal": "ext4 + journal (loop image)", "tmpfs": "tmpfs (no disk)", "root": "root ext4, no journal"}
data, loads, fs = {}, {}, None
for line in open(log):
    m = re.match(r"== fs (\S+)", line)
    if m: fs = m.group(1); continue
    m = re.match(r"== (load-\w+) (\w+) (.*)", line)
    if m: loads.setdefault(fs, []).append(f"{m.group(2)} {m.group(1)[5:]} {m.group(3)}"); continue
    m = re.match(r"\S*\[.*\] c=(\d+): (\d+) msg/s", line)
    if m: data.setdefault((fs, "accept " + m.group(1), "postern"), []).append(float(m.group(2))); continue
    m = re.match(r"Postfix c=(\d+): (\d+) msg/s", line)
    if m: data.setdefault((fs, "accept " + m.group(1), "postfix"), []).append(float(m.group(2))); continue
    m = re.match(r"(\S*\[.*\]|postfix) c=(\d+): accept \d+/s delivered (\d+)/s .*total ([\d.]+)", line)
    if m:
        who = "postfix" if m.group(1) == "postfix" else "postern"
        data.setdefault((fs, "SMTP->Maildir " + m.group(2), who), []).append(float(m.group(3)))
        data.setdefault((fs, "cpu", who), []).append(float(m.group(4)))
def med(k, fmt="%.0f"):
    v = data.get(k)
    if not v: return None, "-"
    s = fmt % statistics.median(v)
    return statistics.median(v), (s + (" (" + fmt % min(v) + "-" + fmt % max(v) + ")" if len(v) > 1 else ""))
print(f"Postern {binp}; {n} (accept/SMTP->Maildir) messages of 4 KB per run, smtp-source, one message per connection; "
      f"median of {rounds} rounds (min-max); ratio = Postern/Postfix medians.\n")
print("| file system | load | Postern msg/s | Postfix msg/s | ratio |")
print("| --- | --- | --- | --- | --- |")
for f in names:
    if not any(k[0] == f for k in data): continue
    for l in ("accept 8", "accept 32", "SMTP->Maildir 32"):
        a, sa = med((f, l, "postern")); b, sb = med((f, l, "postfix"))
        r = f"{a / b:.2f}" if a and b else "-"
        print(f"| {names[f]} | {l}{' (delivered/s)' if 'Maildir' in l else ''} | {sa} | {sb} | {r} |")
print("\nCPU ms per message, whole pipeline (every daemon, exited ones included; bench/pipeline_cpu.sh, SMTP->Maildir at 32):\n")
print("| file system | Postern | Postfix | ratio |")
print("| --- | --- | --- | --- |")
for f in names:
    a, sa = med((f, "cpu", "postern"), "%.3f"); b, sb = med((f, "cpu", "postfix"), "%.3f")
    if a is None and b is None: continue
    print(f"| {names[f]} | {sa} | {sb} | {a / b:.2f} |" if a and b else f"| {names[f]} | {sa} | {sb} | - |")
print("\nLoad average (1/5/15 min):")
for f, ls in loads.items():
    print(f"- {names.get(f, f)}: " + "; ".join(ls))
EOT
cat "$TABLE"
progress "fs_compare: raw output $LOG, table $TABLE"
