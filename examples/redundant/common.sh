# Shared by up.sh, down.sh, node.sh and status.sh (sourced, not run): names, addresses,
# paths. The names and addresses are fixed by issue 15 so that anyone can drive the
# cluster; PST_PREFIX (default "pst-") exists only so that tests can build several
# clusters side by side (tests/src/redundant.rs): the addresses are the same in each,
# namespaces keep them apart.
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/examples/redundant
# Where each node's Postern (etc/, var/) and the DNS server's files live.
PST_DIR=${PST_DIR:-/var/tmp/postern-redundant}
# The Postern binaries: $POSTERN_BIN, else the newer of the release and debug builds.
if [ -z "${POSTERN_BIN:-}" ]; then
    POSTERN_BIN=$repo/target/debug
    if [ "$repo/target/release/postern" -nt "$repo/target/debug/postern" ]; then POSTERN_BIN=$repo/target/release; fi
fi
P=${PST_PREFIX:-pst-}
case "$P" in pst-*) ;; *) echo "PST_PREFIX must start with pst-" >&2; exit 2 ;; esac
# The bridge joining the hosts lives in a namespace of its own (not the root namespace).
BRIDGE_NS=${P}rbr
# The hosts: the client (and DNS), two hubs, two mailbox servers.
HOSTS="client mh1 mh2 mba mbb"
PLEN=24
DNS_ADDR=198.18.0.53
addr_of() {
    case "$1" in
        client) echo 198.18.0.10 ;;
        mh1) echo 198.18.0.21 ;;
        mh2) echo 198.18.0.22 ;;
        mba) echo 198.18.0.31 ;;
        mbb) echo 198.18.0.32 ;;
        *) echo "unknown host $1 (client mh1 mh2 mba mbb)" >&2; return 1 ;;
    esac
}
# What a host is: sender (the client's Postern), hub, mailbox.
role_of() {
    case "$1" in
        client) echo sender ;;
        mh1|mh2) echo hub ;;
        mba|mbb) echo mailbox ;;
    esac
}
# The other mailbox server (its peer).
peer_of() {
    case "$1" in mba) echo mbb ;; mbb) echo mba ;; esac
}
# NS (pst-mh1) -> host (mh1); fails for a name that is not one of this cluster's.
host_of() {
    h=${1#"$P"}
    for x in $HOSTS; do [ "$x" = "$h" ] && [ "$P$h" = "$1" ] && { echo "$h"; return 0; }; done
    echo "unknown node $1 (${P}client ${P}mh1 ${P}mh2 ${P}mba ${P}mbb)" >&2
    return 1
}
need_root() {
    [ "$(id -u)" -eq 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
}
# Whether this Postern build knows main.toml setting $1 (the parts of issue 15 land one by
# one; up.sh configures what the build has).
has_setting() {
    "$POSTERN_BIN/postern" -c "$PST_DIR/.probe/etc" config "$1" >/dev/null 2>&1
}
# Every process of namespace $1 gets SIGKILL, until none is left. All are stopped first,
# so none sees another die and acts on it, as a machine that dies does not.
kill_ns() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(ip netns pids "$1" 2>/dev/null) || return 0
        [ -n "$pids" ] || return 0
        kill -STOP $pids 2>/dev/null || true
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
}
