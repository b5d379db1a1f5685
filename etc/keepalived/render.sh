#!/bin/sh
# Renders etc/keepalived/postern.conf.in for one node of a Postern active-standby pair on
# standard output. Options (defaults in brackets):
#   --node 1|2                node 1 is the preferred master
#   --mode failback|stay|alternate  [failback]; see the template's header
#   --alternate-seconds N     slot length for --mode alternate [60]
#   --vip ADDR/PLEN           the service address [198.18.1.100/24]
#   --iface IF                the interface carrying it [eth0]
#   --postern PATH            the postern command [postern]
#   --config DIR              Postern's config directory [/etc/postern]
#   --hooks DIR               where postern-notify and postern-slot are [this directory]
#   --state-file FILE         the notify hook writes MASTER/BACKUP/FAULT here [/run/postern-vrrp.state]
#   --advert SECONDS          VRRP advert interval [1]; take-over after about 3.5 of them
#   --vrid N                  virtual_router_id, the same on both nodes [51]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
node="" mode=failback alt=60 vip=198.18.1.100/24 iface=eth0 postern=postern config=/etc/postern
hooks=$here state_file=/run/postern-vrrp.state advert=1 vrid=51
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "render.sh: $1 needs a value" >&2; exit 2; }
    case "$1" in
        --node) node=$2 ;;
        --mode) mode=$2 ;;
        --alternate-seconds) alt=$2 ;;
        --vip) vip=$2 ;;
        --iface) iface=$2 ;;
        --postern) postern=$2 ;;
        --config) config=$2 ;;
        --hooks) hooks=$2 ;;
        --state-file) state_file=$2 ;;
        --advert) advert=$2 ;;
        --vrid) vrid=$2 ;;
        *) echo "render.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift 2
done
case "$node" in 1|2) ;; *) echo "render.sh: --node 1 or 2" >&2; exit 2 ;; esac
case "$alt" in ''|*[!0-9]*) echo "render.sh: --alternate-seconds: whole seconds" >&2; exit 2 ;; esac
[ "$alt" -ge 5 ] || { echo "render.sh: --alternate-seconds: at least 5" >&2; exit 2; }
# node 1: priority 150, node 2: 100 (the alternation slot adds 100: 250 / 200).
if [ "$node" = 1 ]; then prio=150 state=MASTER; else prio=100 state=BACKUP; fi
preempt="# preempt (keepalived's default): the higher priority takes the address back"
altmark="#"
case "$mode" in
    failback) ;;
    stay) state=BACKUP preempt="nopreempt" ;;
    alternate) altmark="" ;;
    *) echo "render.sh: --mode failback, stay or alternate" >&2; exit 2 ;;
esac
# The check bounds itself at 3 s; keepalived kills it at 5 s; it runs every 2 s.
sed -e "s|@ROUTER_ID@|postern-n$node|" \
    -e "s|@POSTERN@|$postern|" \
    -e "s|@CONFIG_DIR@|$config|" \
    -e "s|@HEALTH_TIMEOUT@|3|" \
    -e "s|@HEALTH_INTERVAL@|2|" \
    -e "s|@HEALTH_KILL@|5|" \
    -e "s|@HOOKS@|$hooks|g" \
    -e "s|@ALTERNATE_SECONDS@|$alt|" \
    -e "s|@SLOT@|$((node - 1))|" \
    -e "s|@IFACE@|$iface|g" \
    -e "s|@STATE@|$state|" \
    -e "s|@VRID@|$vrid|" \
    -e "s|@PRIORITY@|$prio|" \
    -e "s|@ADVERT@|$advert|" \
    -e "s|@PREEMPT@|$preempt|" \
    -e "s|@VIP@|$vip|" \
    -e "s|@STATE_FILE@|$state_file|" \
    -e "s|^@ALT@|$altmark|" \
    "$here/postern.conf.in"
