#!/bin/bash
# Soak: sustained load on sipedge for minutes, RSS sampled every SAMPLE_S seconds. Reports the
# RSS drift after the first minute, the failed calls, and RSS once the load has stopped.
# Memory is judged over minutes of a constant load, not at one point: a constant population
# of dialogs must give a flat RSS.
#
# usage: benches/compare/soak.sh            (run.sh calls it for its `soak` phase)
# env (defaults in brackets):
#   SOAK_RATE [12600]  calls/s (70% of the maximum clean rate; run.sh passes 70% of its ladder's)
#   SOAK_S [600]       seconds of load          SOAK_HOLD [1s]  hold per call
#   SAMPLE_S [10]      RSS sample period        WARM_S [60]     samples before this are warm-up
#   SIPEDGE [target/release/sipedge]  LOADGEN [target/release/loadgen]
#   SOAK_ARGS [""]     extra `sipedge run` flags        LG_THREADS [2] loadgen UAC threads
#   SIP_PORT [5060] UAS_PORT [5090] MGMT_PORT [7060]
#   OUT [a temp dir]   raw logs; the summary goes to stdout
# Goal (issue 15): drift within 5% after the first minute, at most 0.01% of calls failed, and
# RSS back near idle plus high-water buffers after the load stops. Exit 1 when missed.
set -u
D=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$D/../.." && pwd)
SOAK_RATE=${SOAK_RATE:-12600} SOAK_S=${SOAK_S:-600} SOAK_HOLD=${SOAK_HOLD:-1s}
SAMPLE_S=${SAMPLE_S:-10} WARM_S=${WARM_S:-60} LG_THREADS=${LG_THREADS:-2}
SIPEDGE=${SIPEDGE:-$ROOT/target/release/sipedge} LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
SIP_PORT=${SIP_PORT:-5060} UAS_PORT=${UAS_PORT:-5090} MGMT_PORT=${MGMT_PORT:-7060}
SOAK_ARGS=${SOAK_ARGS:-}
OUT=${OUT:-$(mktemp -d /tmp/sipedge-soak.XXXXXX)}
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
rpc() { curl -s -m 5 -X POST -H 'Content-Type: application/json' \
          -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\"}" "http://127.0.0.1:$MGMT_PORT/jsonrpc"; }

# shellcheck disable=SC2086
"$SIPEDGE" run --listen "udp:127.0.0.1:$SIP_PORT" --mgmt "127.0.0.1:$MGMT_PORT" --log warn $SOAK_ARGS \
  >"$OUT/sipedge.log" 2>&1 &
SP=$!; PIDS+=("$SP")
for _ in $(seq 50); do curl -s -m 1 "http://127.0.0.1:$MGMT_PORT/health" >/dev/null && break; sleep 0.1; done
kill -0 "$SP" 2>/dev/null || { echo "sipedge did not start:"; tail "$OUT/sipedge.log"; exit 2; }
"$LOADGEN" uas --listen "127.0.0.1:$UAS_PORT" --threads 1 --quiet >"$OUT/uas.log" 2>&1 &
PIDS+=("$!")
sleep 0.5
IDLE=$(rss_kib "$SP")
"$LOADGEN" uac --target "127.0.0.1:$SIP_PORT" --uas "127.0.0.1:$UAS_PORT" --rate "$SOAK_RATE" \
  --duration "${SOAK_S}s" --hold "$SOAK_HOLD" --threads "$LG_THREADS" --sockets "$LG_THREADS" \
  --json "$OUT/uac.json" --quiet >"$OUT/uac.log" 2>&1 &
LG=$!; PIDS+=("$LG")
T0=$(date +%s)
: >"$OUT/rss.tsv"
while kill -0 "$LG" 2>/dev/null; do
  sleep "$SAMPLE_S"
  t=$(( $(date +%s) - T0 ))
  kill -0 "$LG" 2>/dev/null || break
  echo "$t $(rss_kib "$SP") $(rpc dlg.stats_active | jq -r '.result.all // "NA"' 2>/dev/null)" >>"$OUT/rss.tsv"
done
wait "$LG"
sleep 15
AFTER=$(rss_kib "$SP")
LEFT=$(rpc dlg.stats_active | jq -r '.result.all // "NA"' 2>/dev/null)
# What is left, for diagnosis: the stats and a page of the dialogs themselves.
rpc dlg.stats_active >"$OUT/left.stats.json"
curl -s -m 5 -X POST -H 'Content-Type: application/json' \
  -d '{"jsonrpc":"2.0","id":1,"method":"dlg.list","params":[0,20]}' \
  "http://127.0.0.1:$MGMT_PORT/jsonrpc" >"$OUT/left.dialogs.json"
curl -s -m 5 "http://127.0.0.1:$MGMT_PORT/metrics" >"$OUT/metrics.txt"
J=$OUT/uac.json
ok=$(jq -r .ok "$J" 2>/dev/null || echo 0); failed=$(jq -r .failed_total "$J" 2>/dev/null || echo NA)
retrans=$(jq -r .retrans "$J" 2>/dev/null || echo NA)

# Drift after warm-up: (last sample - first sample at or after WARM_S) / that first sample;
# the least-squares slope over the same samples, in KiB per minute, beside it.
read -r base last peak slope < <(awk -v w="$WARM_S" '$1 >= w { n++; x[n]=$1; y[n]=$2; if ($2 > pk) pk = $2 }
  END { if (n < 2) { print "NA NA NA NA"; exit }
        for (i = 1; i <= n; i++) { sx += x[i]; sy += y[i] }
        mx = sx / n; my = sy / n
        for (i = 1; i <= n; i++) { sxy += (x[i]-mx)*(y[i]-my); sxx += (x[i]-mx)^2 }
        printf "%d %d %d %.0f\n", y[1], y[n], pk, (sxx > 0 ? 60*sxy/sxx : 0) }' "$OUT/rss.tsv")
drift=$(awk -v a="$base" -v b="$last" 'BEGIN{ if (a > 0) printf "%.2f", 100*(b-a)/a; else print "NA" }')
fpct=$(awk -v f="$failed" -v o="$ok" 'BEGIN{ t = f + o; if (t > 0) printf "%.4f", 100*f/t; else print "NA" }')

echo "## Soak: $SOAK_RATE cps, hold $SOAK_HOLD, ${SOAK_S} s ($(basename "$SIPEDGE") $SOAK_ARGS)"
echo
echo "RSS (MiB) every ${SAMPLE_S} s, then active dialogs:"
awk '{printf "  %4d s  %8.1f MiB  %s dialogs\n", $1, $2/1024, $3}' "$OUT/rss.tsv"
echo
echo "| idle MiB | at ${WARM_S} s | end of load | peak after ${WARM_S} s | drift after ${WARM_S} s | slope KiB/min | 15 s after the load | dialogs left | calls ok | failed (%) | retrans |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
m() { awk -v k="$1" 'BEGIN{ if (k ~ /^[0-9]+$/) printf "%.1f", k/1024; else print k }'; }
echo "| $(m "$IDLE") | $(m "$base") | $(m "$last") | $(m "$peak") | ${drift}% | $slope | $(m "$AFTER") | $LEFT | $ok | $failed ($fpct%) | $retrans |"
echo
echo "raw: $OUT"
verdict=0
awk -v d="$drift" 'BEGIN{ exit !(d != "NA" && d <= 5 && d >= -50) }' || { echo "FAIL: drift ${drift}% > 5%"; verdict=1; }
awk -v p="$fpct" 'BEGIN{ exit !(p != "NA" && p <= 0.01) }' || { echo "FAIL: ${fpct}% of calls failed > 0.01%"; verdict=1; }
[ "$LEFT" = 0 ] || { echo "FAIL: $LEFT dialogs left after the load"; verdict=1; }
[ $verdict = 0 ] && echo "PASS"
exit $verdict
