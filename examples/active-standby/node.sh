#!/bin/sh
# node.sh NS start|stop|kill|status — drive one node of the pair built by up.sh.
#   start   Postern, then keepalived under a loop that restarts it when it dies (a service
#           address left behind by a killed node is removed first, as a reboot would);
#           `postern start` first asks the peer which of this node's queued messages it
#           adopted while this node was down and removes them (`postern mirror rejoin`)
#   stop    keepalived first (it hands the address over at once), then `postern stop`;
#           to see a lone keepalived die and come back: kill -9 $(cat DIR/keepalived.pid)
#   kill    SIGKILL to every process of the node, keepalived included, and the service
#           address off its interface as if the machine died (the peer takes over after
#           about 3.5 advert intervals)
#   status  the VRRP state the notify hook recorded, the addresses, `postern status --health`
set -eu
. "$(dirname "$0")/common.sh"
need_root
ns=${1:?usage: node.sh NS start|stop|kill|status}
cmd=${2:?usage: node.sh NS start|stop|kill|status}
case "$ns" in pst-n1|pst-n2) ;; *) echo "node.sh: NS is pst-n1 or pst-n2" >&2; exit 2 ;; esac
root=$PST_DIR/$ns
[ -d "$root/etc" ] || { echo "node.sh: $root/etc missing: run up.sh first" >&2; exit 1; }
run() { ip netns exec "$ns" "$@"; }
case "$cmd" in
    start)
        run ip addr del "$VIP/$PLEN" dev eth0 2>/dev/null || true
        run "$POSTERN_BIN/postern" -c "$root/etc" start --quiet
        # keepalived in the foreground of a loop that restarts it a second after it dies, as
        # etc/keepalived/keepalived.service.d/postern.conf makes systemd do (at start it
        # removes an address a dead keepalived left); its log goes to a file of the node.
        setsid ip netns exec "$ns" sh -c 'echo $$ >"$1/supervisor.pid"
            while :; do
                keepalived --vrrp --dont-fork --log-console --log-detail --no-syslog \
                    --use-file "$1/keepalived.conf" --pid "$1/keepalived.pid" --vrrp_pid "$1/vrrp.pid"
                echo "node.sh: keepalived exited with status $?; restarting it in 1 s"
                sleep 1
            done' sh "$root" </dev/null >>"$root/keepalived.log" 2>&1 &
        ;;
    stop)
        if [ -s "$root/supervisor.pid" ]; then
            kill "$(cat "$root/supervisor.pid")" 2>/dev/null || true
            rm -f "$root/supervisor.pid"
        fi
        if [ -s "$root/keepalived.pid" ]; then
            kill "$(cat "$root/keepalived.pid")" 2>/dev/null || true
            for _ in $(seq 50); do [ -e "$root/keepalived.pid" ] || break; sleep 0.1; done
        fi
        run "$POSTERN_BIN/postern" -c "$root/etc" stop || true
        ;;
    kill)
        kill_ns "$ns"
        # A machine that dies answers no ARP for the address; a namespace's kernel outlives
        # its processes, so take the address off too.
        run ip addr del "$VIP/$PLEN" dev eth0 2>/dev/null || true
        rm -f "$root/keepalived.pid" "$root/vrrp.pid" "$root/supervisor.pid"
        ;;
    status)
        echo "vrrp: $(cat "$root/vrrp.state" 2>/dev/null || echo unknown)"
        run ip -o -4 addr show dev eth0 | awk '{print "address:", $4}'
        run "$POSTERN_BIN/postern" -c "$root/etc" status --health || true
        ;;
    *) echo "usage: node.sh NS start|stop|kill|status" >&2; exit 2 ;;
esac
