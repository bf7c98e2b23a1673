#!/usr/bin/env bash
# Reproducer: one INVITE received twice at once (the original and its retransmission, queued
# while the proxy was busy) by two workers creates two dialogs and two INVITE transactions.
# Not a fuzz input: the race needs two worker threads, which the sans-IO fuzz target (one
# thread) cannot show. Linux, root, iproute2 + nftables + curl + python3;
# builds nothing.
#
#   fuzz/regressions/engine-invite-race.sh [path/to/sipedge]   (default target/debug/sipedge)
#
# Each round sends one new INVITE twice from one socket while the proxy is stopped
# (SIGSTOP), then resumes it. With `--spread all` the reuseport program steers each datagram
# to a random worker, so about half the pairs land on two workers. Expected: one dialog per
# INVITE ("starting" = ROUNDS, "core.forwarded" = ROUNDS). Before the shared INVITE index and
# the dialog claim (issue 17) it showed extra dialogs; since, 20 of 20.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=${1:-target/debug/sipedge}
ROUNDS=20
NS=sipedge-race-$$
bash tests/netns/lossy-ns.sh up "$NS" 0
trap 'kill "$PP" 2>/dev/null || true; bash tests/netns/lossy-ns.sh down "$NS"' EXIT
ip netns exec "$NS" "$BIN" run --listen udp:127.0.0.1:5060 --mgmt 127.0.0.1:8080 \
    --workers 2 --spread all --log error &
PP=$!
for _ in $(seq 50); do
    ip netns exec "$NS" curl -sf http://127.0.0.1:8080/health >/dev/null && break
    sleep 0.1
done
ip netns exec "$NS" python3 - "$PP" "$ROUNDS" <<'PY'
import os, signal, socket, sys, time
pid, rounds = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # one socket: both copies share a 4-tuple
s.bind(("127.0.0.1", 5070))
for i in range(rounds):
    msg = (f"INVITE sip:bob@127.0.0.1:5099 SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKrace{i};rport\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=race{i}\r\n"
           f"To: <sip:bob@127.0.0.1>\r\nCall-ID: race-{i}@repro\r\nCSeq: 1 INVITE\r\n"
           f"Contact: <sip:alice@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n").encode()
    os.kill(pid, signal.SIGSTOP)
    s.sendto(msg, ("127.0.0.1", 5060))
    s.sendto(msg, ("127.0.0.1", 5060))  # the retransmission, queued behind the original
    time.sleep(0.05)
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.1)
PY
sleep 0.5
rpc() {
    ip netns exec "$NS" curl -s -d "{\"jsonrpc\":\"2.0\",\"method\":\"$1\",\"id\":1}" \
        http://127.0.0.1:8080/jsonrpc
}
echo "INVITEs sent (each twice): $ROUNDS"
rpc stats.fetchn | tr ',' '\n' | grep -E '"(core.forwarded|dialog.processed_dialogs)"'
echo "dlg.stats_active: $(rpc dlg.stats_active)"
