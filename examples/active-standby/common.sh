# Shared by up.sh, down.sh and node.sh (sourced, not run): names, addresses, paths.
# The names are fixed by issue 16 so that anyone can drive the pair.
repo=$(cd "$(dirname "$0")/../.." && pwd)
# Where each node's Postern (etc/, var/) and keepalived files live.
PST_DIR=${PST_DIR:-/var/tmp/postern-active-standby}
# The Postern binaries: $POSTERN_BIN, else the newer of the release and debug builds.
if [ -z "${POSTERN_BIN:-}" ]; then
    POSTERN_BIN=$repo/target/debug
    if [ "$repo/target/release/postern" -nt "$repo/target/debug/postern" ]; then POSTERN_BIN=$repo/target/release; fi
fi
BRIDGE_NS=pst-br
NODES="pst-n1 pst-n2"
CLIENT=pst-c
VIP=198.18.1.100
PLEN=24
addr_of() {
    case "$1" in
        pst-n1) echo 198.18.1.1 ;;
        pst-n2) echo 198.18.1.2 ;;
        pst-c) echo 198.18.1.10 ;;
        *) echo "unknown node $1 (pst-n1, pst-n2, pst-c)" >&2; return 1 ;;
    esac
}
need_root() {
    [ "$(id -u)" -eq 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
}
# Every process of namespace $1 gets SIGKILL, until none is left. All are stopped first,
# so none sees another die and acts on it (keepalived's VRRP process would hand the
# address over cleanly on its parent's death, which a machine that dies does not do).
kill_ns() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$1" 2>/dev/null) || return 0
        [ -n "$pids" ] || return 0
        kill -STOP $pids 2>/dev/null || true
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
}
