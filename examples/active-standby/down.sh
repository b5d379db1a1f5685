#!/bin/sh
# down.sh — removes what up.sh built: every process in the pair's namespaces (SIGKILL; use
# node.sh NS stop first for a clean stop), the namespaces and with them the bridge and
# links. The nodes' directories under $PST_DIR stay (queue, mailboxes, logs); `--purge`
# removes them too.
set -eu
. "$(dirname "$0")/common.sh"
need_root
for ns in $NODES $CLIENT $BRIDGE_NS; do
    if ip netns list | grep -qw "^$ns"; then
        kill_ns "$ns"
        ip netns del "$ns"
    fi
done
if [ "${1:-}" = --purge ]; then
    rm -rf "$PST_DIR"
fi
echo "down: namespaces removed${1:+ ($1)}"
