#!/bin/sh
# up.sh — builds the redundant mail cluster of issue 15 on this machine, as root, in
# network namespaces joined by veth links to a bridge it creates itself (the root
# namespace gets no address; down.sh removes it all; leftovers of an earlier run are
# removed first):
#   pst-client  198.18.0.10  the test client, the sender (a Postern relaying example.test
#               by MX) and the DNS server (dnsmasq) on 198.18.0.53
#   pst-mh1     198.18.0.21  hub: SMTP 25, copies example.test mail to both mailbox servers
#   pst-mh2     198.18.0.22  hub, the same
#   pst-mba     198.18.0.31  mailbox server A: SMTP 25 from the hubs, POP3 110, IMAP 143,
#                            and as far as this build has them the replicator (1190) and
#                            the proxy (POP3 1100, IMAP 1143)
#   pst-mbb     198.18.0.32  mailbox server B, the same
#   pst-rbr                  the bridge br0 joining them
# DNS: example.test MX 10 mh1.example.test, MX 10 mh2.example.test; pop.example.test and
# imap.example.test round-robin over both mailbox servers. Users alice/alice-pw and
# bob/bob-pw on both mailbox servers. Each node is a Postern instance in $PST_DIR/HOST
# (default /var/tmp/postern-redundant), its config in HOST/etc, started with
# `ip netns exec NS postern -c $PST_DIR/HOST/etc start` (node.sh does that).
# Needs: iproute2, dnsmasq (Debian: dnsmasq-base), openssl, a built Postern
# (cargo build --workspace). Environment: PST_DIR, POSTERN_BIN, PST_PREFIX (tests only).
set -eu
. "$(dirname "$0")/common.sh"
need_root
for tool in ip dnsmasq openssl; do
    command -v $tool >/dev/null || { echo "up.sh: $tool missing (apt-get install iproute2 dnsmasq-base openssl)" >&2; exit 1; }
done
[ -x "$POSTERN_BIN/postern" ] || { echo "up.sh: no $POSTERN_BIN/postern: cargo build --workspace" >&2; exit 1; }
sh "$here/down.sh" >/dev/null
mkdir -p "$PST_DIR"
chmod 755 "$PST_DIR"
# A scratch copy of etc/ to ask this build which settings it knows (has_setting).
rm -rf "$PST_DIR/.probe"
mkdir -p "$PST_DIR/.probe/etc"
cp "$repo/etc/main.toml" "$repo/etc/master.toml" "$PST_DIR/.probe/etc/"

# The LAN: a bridge in its own namespace, a veth pair per host created inside the namespaces.
ip netns add "$BRIDGE_NS"
ip -n "$BRIDGE_NS" link set lo up
ip -n "$BRIDGE_NS" link add br0 type bridge
ip -n "$BRIDGE_NS" link set br0 up
for h in $HOSTS; do
    ns=$P$h
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "$h" netns "$BRIDGE_NS"
    ip -n "$BRIDGE_NS" link set "$h" master br0 up
    ip -n "$ns" addr add "$(addr_of "$h")/$PLEN" dev eth0
    ip -n "$ns" link set eth0 up
    # Programs run with `ip netns exec NS` resolve through the cluster's DNS server.
    mkdir -p "/etc/netns/$ns"
    printf '# written by examples/redundant/up.sh; down.sh removes it\nnameserver %s\n' "$DNS_ADDR" \
        >"/etc/netns/$ns/resolv.conf"
done
ip -n "${P}client" addr add "$DNS_ADDR/$PLEN" dev eth0

# The DNS server.
mkdir -p "$PST_DIR/dns"
sed -e "s|@DNS@|$DNS_ADDR|g" -e "s|@DIR@|$PST_DIR/dns|g" "$here/dnsmasq.conf" >"$PST_DIR/dns/dnsmasq.conf"
ip netns exec "${P}client" dnsmasq --conf-file="$PST_DIR/dns/dnsmasq.conf"

# Renders template $1 for host $2 to standard output.
render() {
    peer=$(peer_of "$2")
    sed -e "s|@HOST@|$2|g" -e "s|@ADDR@|$(addr_of "$2")|g" -e "s|@DNS@|$DNS_ADDR|g" \
        -e "s|@PEER_ADDR@|${peer:+$(addr_of "$peer")}|g" -e "s|@DIR@|$PST_DIR/$2|g" "$1"
}
# `postern config set` with the lines of settings template $1 for host $2 (see the
# templates' heads for the ?SETTING / !SETTING lines).
apply_settings() {
    etc=$PST_DIR/$2/etc
    tmp=$PST_DIR/$2/settings.rendered
    render "$1" "$2" >"$tmp"
    set --
    while IFS= read -r line; do
        case "$line" in
            ""|"#"*) continue ;;
            "?"*) want=${line%% *}; has_setting "${want#?}" || continue; line=${line#* } ;;
            "!"*) want=${line%% *}; ! has_setting "${want#?}" || continue; line=${line#* } ;;
        esac
        set -- "$@" "$line"
    done <"$tmp"
    "$POSTERN_BIN/postern" -c "$etc" config set "$@" >/dev/null
}

# Made once for the cluster: the replicas' shared secret, and the proxy's master user
# `proxy` (its password in a file for the proxy; its entry, in etc/users' format, made
# with `postern user add` in the scratch copy, for the mailbox servers' auth).
umask 077
openssl rand -hex 32 >"$PST_DIR/replica-secret"
openssl rand -hex 16 >"$PST_DIR/proxy-master-password"
umask 022
"$POSTERN_BIN/postern" -c "$PST_DIR/.probe/etc" user add proxy <"$PST_DIR/proxy-master-password" >/dev/null

for h in $HOSTS; do
    root=$PST_DIR/$h
    role=$(role_of "$h")
    rm -rf "$root"
    mkdir -p "$root/etc"
    chmod 755 "$root"
    cp "$repo/etc/main.toml" "$repo/etc/aliases" "$repo/etc/sender_login_maps" "$root/etc/"
    render "$here/base.master.toml" "$h" >"$root/etc/master.toml"
    if [ "$role" = mailbox ]; then
        render "$here/mailbox.master.toml" "$h" >>"$root/etc/master.toml"
        # The replicator and the proxy, where this build has them.
        if [ -x "$POSTERN_BIN/replicator" ] && has_setting replica_peers; then
            render "$here/replicator.master.toml" "$h" >>"$root/etc/master.toml"
        fi
        if [ -x "$POSTERN_BIN/proxy" ] && has_setting proxy_master_password_file; then
            render "$here/proxy.master.toml" "$h" >>"$root/etc/master.toml"
        fi
    fi
    apply_settings "$here/$role.settings" "$h"
    case "$role" in
        hub)
            # Used only by a build without replica_domains (see hub.settings).
            printf 'example.test smtp:[%s]:25\n' "$(addr_of mba)" >"$root/etc/transport"
            ;;
        mailbox)
            openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$h.example.test" \
                -keyout "$root/etc/key.pem" -out "$root/etc/cert.pem" 2>/dev/null
            echo alice-pw | "$POSTERN_BIN/postern" -c "$root/etc" user add alice >/dev/null
            echo bob-pw | "$POSTERN_BIN/postern" -c "$root/etc" user add bob >/dev/null
            # The replicas' shared secret and the proxy's master user: the same on both.
            install -m 600 "$PST_DIR/replica-secret" "$root/etc/replica-secret"
            install -m 600 "$PST_DIR/proxy-master-password" "$root/etc/proxy-master-password"
            install -m 600 "$PST_DIR/.probe/etc/users" "$root/etc/master-users"
            ;;
    esac
done
rm -rf "$PST_DIR/.probe"

# Mailbox servers first (the hubs' copies have somewhere to go), then the hubs, then the
# sender.
for h in mba mbb mh1 mh2 client; do
    sh "$here/node.sh" "$P$h" start
done
echo "up: cluster running: ${P}client ${P}mh1 ${P}mh2 ${P}mba ${P}mbb (bridge ${P}rbr), DNS on $DNS_ADDR"
echo "up: send: ip netns exec ${P}client $POSTERN_BIN/sendmail -C $PST_DIR/client/etc alice@example.test"
echo "up: nodes: node.sh NS start|stop|kill; state: status.sh; remove: down.sh; directories in $PST_DIR"
