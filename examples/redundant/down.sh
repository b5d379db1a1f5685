#!/bin/sh
# down.sh [--purge] — removes what up.sh built: every process in the cluster's namespaces
# (SIGKILL; use node.sh NS stop first for a clean stop), the namespaces and with them the
# bridge and the veth links, and the /etc/netns/NS/resolv.conf files up.sh wrote. The
# nodes' directories under $PST_DIR stay (queues, mailboxes, logs); --purge removes them.
set -eu
. "$(dirname "$0")/common.sh"
need_root
for h in $HOSTS rbr; do
    ns=$P$h
    if [ -e "/run/netns/$ns" ]; then
        kill_ns "$ns"
        ip netns del "$ns"
    fi
    f=/etc/netns/$ns/resolv.conf
    if [ -f "$f" ] && grep -q "examples/redundant/up.sh" "$f"; then
        rm -f "$f"
        rmdir "/etc/netns/$ns" 2>/dev/null || true
    fi
done
rmdir /etc/netns 2>/dev/null || true
if [ "${1:-}" = --purge ]; then
    rm -rf "$PST_DIR"
fi
echo "down: namespaces removed${1:+ ($1)}"
