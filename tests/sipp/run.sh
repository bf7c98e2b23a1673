#!/bin/bash
# Runs one scenario pair of this directory by hand, the way tests/it/sipp_interop.rs does.
# usage: [TRANSPORT=u1|t1] [UAS_PORT=5090] [UAC_PORT=5070] run.sh basic|486|cancel TARGET RATE CALLS [HOLD_MS]
#   TARGET = 127.0.0.1:PORT of the proxy, or "direct" (UAC -> UAS, no proxy).
# The R-URI always points at the UAS (sip:service@127.0.0.1:UAS_PORT); the proxy routes on it.
# Prints: RESULT scenario=.. ok=.. failed=.. unexpected=.. retrans=.. uas_ok=.. uas_failed=.. dir=..
# and exits 1 unless every call succeeded on both sides. Scratch files stay in dir=.
set -u
[ $# -ge 4 ] || { sed -n '3,6p' "$0" >&2; exit 2; }
SCEN=$1 TARGET=$2 RATE=$3 CALLS=$4 HOLD=${5:-0}
T=${TRANSPORT:-u1} UAS_PORT=${UAS_PORT:-5090} UAC_PORT=${UAC_PORT:-5070}
case $SCEN in basic) SFX= ;; 486|cancel) SFX=_$SCEN ;; *) echo "unknown scenario $SCEN" >&2; exit 2;; esac
[ "$TARGET" = direct ] && TARGET=127.0.0.1:$UAS_PORT
case $TARGET in 127.0.0.1:*) ;; *) echo "loopback targets only (127.0.0.1:PORT)" >&2; exit 2;; esac
command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 2; }
D=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /tmp/sipedge-sipp.XXXXXX)
TMO=$(( CALLS / RATE + HOLD / 1000 + 30 ))
COMMON=(-t "$T" -i 127.0.0.1 -nostdin -buff_size 1048576 -timeout "${TMO}s" -trace_stat -fd 1
        -trace_err -max_log_size 2000000)
cd "$W" || exit 2
sipp -sf "$D/uas$SFX.xml" -p "$UAS_PORT" -cp $((UAS_PORT + 1000)) -stf uas_stat.csv \
     -error_file uas_err.log "${COMMON[@]}" >/dev/null 2>uas.stderr &
UAS=$!
trap 'kill $UAS 2>/dev/null' EXIT
sleep 0.3
sipp "127.0.0.1:$UAS_PORT" -rsa "$TARGET" -sf "$D/uac$SFX.xml" -p "$UAC_PORT" -cp $((UAC_PORT + 1000)) \
     -r "$RATE" -m "$CALLS" -d "$HOLD" -recv_timeout 10000 -timeout_error -stf uac_stat.csv \
     -error_file uac_err.log "${COMMON[@]}" >/dev/null 2>uac.stderr
kill -USR1 $UAS 2>/dev/null                    # UAS: quit once its open calls end
for _ in $(seq 30); do kill -0 $UAS 2>/dev/null || break; sleep 0.1; done
col() { awk -F';' -v c="$2" 'NR==1{for(i=1;i<=NF;i++)if($i==c)k=i;next}{v=$k}END{print v+0}' "$1"; }
OK=$(col uac_stat.csv 'SuccessfulCall(C)') FAIL=$(col uac_stat.csv 'FailedCall(C)')
UNEXP=$(col uac_stat.csv 'FailedUnexpectedMessage(C)') RETR=$(col uac_stat.csv 'Retransmissions(C)')
UOK=$(col uas_stat.csv 'SuccessfulCall(C)') UFAIL=$(col uas_stat.csv 'FailedCall(C)')
echo "RESULT scenario=$SCEN transport=$T target=$TARGET calls=$CALLS ok=$OK failed=$FAIL unexpected=$UNEXP retrans=$RETR uas_ok=$UOK uas_failed=$UFAIL dir=$W"
[ "$OK" = "$CALLS" ] && [ "$UOK" = "$CALLS" ] && [ "$FAIL" = 0 ]
