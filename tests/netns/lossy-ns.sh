#!/usr/bin/env bash
# A private network namespace whose loopback drops a share of all UDP datagrams at random
# (nftables `numgen random`), for tests of retransmissions through real sockets. Linux, root.
#
#   lossy-ns.sh up NAME [LOSS_PERCENT]   create NAME, bring up lo, install the loss rule (default 5)
#   lossy-ns.sh counters NAME            print "udp=N dropped=M" (datagrams seen / dropped)
#   lossy-ns.sh down NAME                delete NAME (processes still inside lose their netns name)
#   ip netns exec NAME CMD...            run something inside it
#
# Used by tests/netns/main.rs; also handy by hand, e.g.
#   tests/netns/lossy-ns.sh up lab 5 && ip netns exec lab target/release/sipedge run ...
set -euo pipefail

usage() { echo "usage: $0 up NAME [LOSS_PERCENT] | counters NAME | down NAME" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
name=$2

case "$cmd" in
up)
    loss=${3:-5}
    [[ "$loss" =~ ^[0-9]+$ ]] && [ "$loss" -le 100 ] || { echo "loss must be 0..100" >&2; exit 2; }
    ip netns add "$name"
    # Anything failing from here on removes the namespace again.
    trap 'ip netns del "$name" 2>/dev/null || true' ERR
    ip -n "$name" link set lo up
    # Every datagram sent inside the namespace passes the input hook once, on delivery
    # from loopback. Dropping there is silent, like loss on a link; a drop in the output
    # hook would instead fail the sender's sendmsg with EPERM. The first rule counts the
    # datagrams, the second drops LOSS% of them.
    ip netns exec "$name" nft -f - <<EOF
table inet loss {
    chain in {
        type filter hook input priority 0; policy accept;
        meta l4proto udp counter
        meta l4proto udp numgen random mod 100 < $loss counter drop
    }
}
EOF
    ;;
counters)
    # "packets N" of the counting rule, then of the drop rule.
    ip netns exec "$name" nft list chain inet loss in |
        grep -o 'packets [0-9]*' | awk '{v[NR]=$2} END {printf "udp=%s dropped=%s\n", v[1], v[2]}'
    ;;
down)
    ip netns del "$name"
    ;;
*)
    usage
    ;;
esac
