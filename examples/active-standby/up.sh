#!/bin/sh
# up.sh [--stay | --alternate SECONDS] — builds the Postern active-standby pair of issue 16
# on this machine, as root, in network namespaces on a bridge it creates itself (the root
# namespace gets no address; down.sh removes it all):
#   pst-n1  198.18.1.1   Postern + keepalived, the master by default
#   pst-n2  198.18.1.2   Postern + keepalived, the standby
#   pst-c   198.18.1.10  the client
#   pst-br               the bridge br0 joining them
# The service address 198.18.1.100 carries SMTP 25, submission 587, POP3 110 and IMAP 143
# (STARTTLS, self-signed certificate); users alice/alice-pw and bob/bob-pw on both nodes.
# Default behaviour: fail-back (node 1 takes the address back); --stay: the holder keeps
# it; --alternate SECONDS: the address moves between the nodes every SECONDS (>= 5).
# Each node is a Postern instance in $PST_DIR/NODE (default /var/tmp/postern-active-standby).
# Needs: iproute2, keepalived, openssl, a built Postern (cargo build --workspace).
# Two-node durability is on: each node's mirror service (port 1191 on its own address)
# keeps a copy of every queue file the other accepts, before the 250 (queue_mirror_peer,
# shared secret mirror-secret; queue_mirror_unreachable = degraded, so a node whose peer is
# dead keeps accepting, logged); the notify hook adopts a dead peer's copies on MASTER,
# and `postern start` of a node that comes back asks the peer what it adopted first.
# The mailboxes are replicated: each node's replicator (port 1190 on its own address,
# shared secret replica-secret) keeps alice's and bob's mailboxes the same on both, so a
# reader sees the same mailbox through the service address whichever node holds it.
set -eu
. "$(dirname "$0")/common.sh"
need_root
mode=failback alt=60
case "${1:-}" in
    "") ;;
    --stay) mode=stay ;;
    --alternate) mode=alternate; alt=${2:?--alternate SECONDS} ;;
    *) echo "usage: up.sh [--stay | --alternate SECONDS]" >&2; exit 2 ;;
esac
for tool in ip keepalived openssl; do
    command -v $tool >/dev/null || { echo "up.sh: $tool missing (apt-get install iproute2 keepalived openssl)" >&2; exit 1; }
done
[ -x "$POSTERN_BIN/postern" ] || { echo "up.sh: no $POSTERN_BIN/postern: cargo build --workspace" >&2; exit 1; }
sh "$(dirname "$0")/down.sh" >/dev/null
mkdir -p "$PST_DIR"
chmod 755 "$PST_DIR"
# The queue mirror's and the replicator's shared secrets: the same files on both nodes.
secret=$(openssl rand -hex 32)
replica_secret=$(openssl rand -hex 32)

# The LAN: a bridge in its own namespace, a veth pair per host created inside the namespaces.
ip netns add $BRIDGE_NS
ip -n $BRIDGE_NS link set lo up
ip -n $BRIDGE_NS link add br0 type bridge
ip -n $BRIDGE_NS link set br0 up
for ns in $NODES $CLIENT; do
    port=${ns#pst-}
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "$port" netns $BRIDGE_NS
    ip -n $BRIDGE_NS link set "$port" master br0 up
    ip -n "$ns" addr add "$(addr_of "$ns")/$PLEN" dev eth0
    ip -n "$ns" link set eth0 up
done

# One Postern per node, listening on the service address (held or not: ip_nonlocal_bind)
# and on loopback (for the health check and local clients).
for ns in $NODES; do
    root=$PST_DIR/$ns
    n=${ns#pst-n}
    rm -rf "$root"
    mkdir -p "$root/etc"
    cp "$repo/etc/main.toml" "$repo/etc/master.toml" "$repo/etc/aliases" "$repo/etc/sender_login_maps" "$root/etc/"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=mail.example.test" \
        -keyout "$root/etc/key.pem" -out "$root/etc/cert.pem" 2>/dev/null
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_nonlocal_bind=1
    "$POSTERN_BIN/postern" -c "$root/etc" config set \
        "myhostname=n$n.example.test" \
        "smtp/inet.listen=[\"$VIP:25\", \"127.0.0.1:25\"]" \
        "submission/inet.listen=[\"$VIP:587\", \"127.0.0.1:587\"]" \
        "pop3/inet.listen=[\"$VIP:110\", \"127.0.0.1:110\"]" \
        "imap/inet.listen=[\"$VIP:143\", \"127.0.0.1:143\"]" \
        "pop3d_secure_networks=127.0.0.0/8, 198.18.1.0/24" \
        "imapd_tls_cert_file=cert.pem" "imapd_tls_key_file=key.pem" \
        "smtpd_tls_cert_file=cert.pem" "smtpd_tls_key_file=key.pem" >/dev/null
    # The queue mirror: its two services (inet on this node's address, for the peer), the
    # peer's address and the shared secret.
    addr=$(addr_of "$ns")
    if [ "$ns" = pst-n1 ]; then peer=$(addr_of pst-n2); else peer=$(addr_of pst-n1); fi
    cat >>"$root/etc/master.toml" <<EOF

# The queue mirror (two-node durability, issue 16), added by examples/active-standby/up.sh.
[[service]]
name = "mirror"
type = "inet"
listen = "$addr:1191"
command = "mirror"
maxproc = 1
max_conns = 64
max_use = 1000000
max_idle = "1d"

# The unix service also checks with the peer every queue_mirror_check_interval (one
# long-lived process, kept alive by master's wakeup).
[[service]]
name = "mirror"
type = "unix"
command = "mirror"
maxproc = 1
min_procs = 1
max_conns = 256
max_use = 1000000
max_idle = "1000d"
wakeup = "5s"

# The replicator (replicated mailboxes, issue 15): serves the peer's replicator on this
# node's address; the unix service runs the background sweep (one long-lived process,
# kept alive by master's wakeup).
[[service]]
name = "replicator"
type = "inet"
listen = "$addr:1190"
command = "replicator"
maxproc = 4

[[service]]
name = "replicator"
type = "unix"
command = "replicator"
maxproc = 1
min_procs = 1
max_use = 1000000000
max_idle = "1000d"
wakeup = "5s"
max_conns = 64
EOF
    (umask 077; printf '%s\n' "$secret" >"$root/etc/mirror-secret"
     printf '%s\n' "$replica_secret" >"$root/etc/replica-secret")
    "$POSTERN_BIN/postern" -c "$root/etc" config set \
        "queue_mirror_peer=$peer:1191" "queue_mirror_secret_file=mirror-secret" \
        "queue_mirror_unreachable=degraded" "queue_mirror_check_interval=10s" \
        "replica_peers=[\"$peer:1190\"]" "replica_name=n$n" "replica_secret_file=replica-secret" \
        "replica_sync_interval=5s" "replica_timeout=5s" "imapd_secure_networks=127.0.0.0/8, 198.18.1.0/24" >/dev/null
    echo alice-pw | "$POSTERN_BIN/postern" -c "$root/etc" user add alice >/dev/null
    echo bob-pw | "$POSTERN_BIN/postern" -c "$root/etc" user add bob >/dev/null
    sh "$repo/etc/keepalived/render.sh" --node "$n" --mode "$mode" --alternate-seconds "$alt" \
        --vip "$VIP/$PLEN" --iface eth0 --postern "$POSTERN_BIN/postern" --config "$root/etc" \
        --hooks "$repo/etc/keepalived" --state-file "$root/vrrp.state" >"$root/keepalived.conf"
done
# Node 1 first, and node 2 once node 1 holds the address: with --stay both start as
# BACKUP, and this makes node 1 the one elected.
holds() { ip -n "$1" -o -4 addr show dev eth0 | grep -q " $VIP/"; }
sh "$(dirname "$0")/node.sh" pst-n1 start
for _ in $(seq 150); do holds pst-n1 && break; sleep 0.1; done
holds pst-n1 || { echo "up: pst-n1 did not take $VIP within 15 s; see $PST_DIR/pst-n1/keepalived.log" >&2; exit 1; }
sh "$(dirname "$0")/node.sh" pst-n2 start
echo "up: pst-n1 holds $VIP (mode $mode), pst-n2 is the standby"
echo "up: client: ip netns exec $CLIENT COMMAND; nodes: node.sh NS start|stop|kill|status; down.sh"
echo "up: node directories in $PST_DIR"
