#!/bin/sh
# node.sh NS start|stop|kill|status — drive one node of the cluster built by up.sh
# (NS: pst-client, pst-mh1, pst-mh2, pst-mba, pst-mbb).
#   start   `ip netns exec NS postern -c DIR start` (in pst-client also the DNS server,
#           when it is not running)
#   stop    `postern stop`: a clean stop (the queue and mailboxes stay; a start goes on)
#   kill    SIGKILL to every process of the node (in pst-client the DNS server too), as
#           if the machine died; start brings it back
#   status  `postern status` of the node
set -eu
. "$(dirname "$0")/common.sh"
need_root
usage="usage: node.sh NS start|stop|kill|status"
ns=${1:?$usage}
cmd=${2:?$usage}
h=$(host_of "$ns") || exit 2
root=$PST_DIR/$h
[ -d "$root/etc" ] || { echo "node.sh: $root/etc missing: run up.sh first" >&2; exit 1; }
postern() { ip netns exec "$ns" "$POSTERN_BIN/postern" -c "$root/etc" "$@"; }
dns_running() { [ -s "$PST_DIR/dns/dnsmasq.pid" ] && kill -0 "$(cat "$PST_DIR/dns/dnsmasq.pid")" 2>/dev/null; }
case "$cmd" in
    start)
        if [ "$h" = client ] && ! dns_running; then
            ip netns exec "$ns" dnsmasq --conf-file="$PST_DIR/dns/dnsmasq.conf"
        fi
        postern start --quiet
        ;;
    stop) postern stop ;;
    kill)
        kill_ns "$ns"
        rm -f "$root/var/spool/pid/master.pid"
        ;;
    status) postern status || true ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
