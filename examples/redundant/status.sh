#!/bin/sh
# status.sh — the cluster at a glance: per node whether it runs, its queue (files in
# incoming/active/deferred; a hub's `postern status` says which mailbox server is owed
# copies), on the mailbox servers the messages in alice's and bob's INBOX, then each
# node's `postern status`.
set -eu
. "$(dirname "$0")/common.sh"
need_root
count() { find "$1" -maxdepth 1 -type f ! -name '.*' 2>/dev/null | wc -l; }
printf '%-16s %-8s %-8s %s\n' NODE STATE QUEUED MAILBOXES
for h in $HOSTS; do
    ns=$P$h
    root=$PST_DIR/$h
    state=down
    if [ ! -e "/run/netns/$ns" ]; then
        state=absent
    elif [ -s "$root/var/spool/pid/master.pid" ] && kill -0 "$(cat "$root/var/spool/pid/master.pid")" 2>/dev/null; then
        state=running
    fi
    q=0
    for d in incoming active deferred; do
        q=$((q + $(find "$root/var/spool/$d" -type f 2>/dev/null | wc -l)))
    done
    boxes=
    if [ "$(role_of "$h")" = mailbox ]; then
        for u in alice bob; do
            m=$root/var/mail/$u
            boxes="$boxes $u=$(( $(count "$m/new") + $(count "$m/cur") ))"
        done
    fi
    printf '%-16s %-8s %-8s %s\n' "$ns" "$state" "$q" "${boxes# }"
done
for h in $HOSTS; do
    [ -e "/run/netns/$P$h" ] && [ -d "$PST_DIR/$h/etc" ] || continue
    echo
    echo "== $P$h: postern status"
    ip netns exec "$P$h" "$POSTERN_BIN/postern" -c "$PST_DIR/$h/etc" status 2>&1 || true
done
