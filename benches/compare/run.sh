#!/bin/bash
# Side-by-side macro benchmark on this machine, in one run: sipedge (2 workers), Kamailio 5.6
# (2 children, -x tlsf -m 2048), a no-op UDP relay (the physical floor) and the direct
# loadgen UAC -> UAS case. See README.md in this directory for what each column means.
#
# usage: benches/compare/run.sh            (from anywhere; ~27 min)
# env (defaults in brackets):
#   RATES ["2000 4000 6000 8000 12000 16000 18000 20000"]  ladder rates, cps; stop at first failure
#   LG_THREADS [2]      loadgen threads in the ladder (one thread falls behind past ~12000 cps here)
#   STEP_S [5]          seconds of calls per ladder step     LADDER_HOLD [1s] hold per call
#   LADDER_ROUNDS [3]   interleaved ladder rounds (every proxy climbs once per round); medians reported
#   FIXED_RATE [4000]   rate for CPU/call and latency         FIXED_S [10]   its length, s
#   MEM_CALLS [50000]   held dialogs for the memory run       MEM_RATE [3000] their rate
#   SIPP_RATE [2000]    SIPp cross-check rate                 SIPP_CALLS [10000]
#   SCALE_RATE [6000]   1-vs-2-worker run, one UAC socket     SCALE_S [10]
#   LAT_RATE [2000]     latency-floor run (half Kamailio's max) LAT_S [10]
#   LAT_ROUNDS [5]      interleaved latency rounds (all proxies once per round); medians reported
#   SIPP_RATES ["4000 6000 8000 10000 12000 12600 14000 16000"]  SIPp capacity ladder   SIPP_STEP_S [5]
#   PHASES ["ladder fixed latency memory sipp sippcap scaling soak"]  which phases to run
#   PROXIES ["direct relay sipedge sipedge_all kamailio"]  which rows to run; add `sipedge_base`
#                       (with BASE_SIPEDGE=path) to run a previous sipedge binary beside this one
#   BASE_SIPEDGE [""]   the previous binary for the `sipedge_base` row (same flags as `sipedge`)
#                       Rows for the edge's defences (this binary, 2 workers): `sipedge_counted`
#                       (flood control counts loopback: `flood-counted.toml`) and `sipedge_nodef`
#                       (flood and overload control off: `defences-off.toml`).
#   SOAK_S [600]        soak length, s; SOAK_RATE [70% of sipedge's median ladder maximum, or
#                       12600 without a ladder]: see soak.sh
#   OVL_MAX [sipedge's median ladder maximum, or 12000]  the maximum clean rate the overload
#                       phase scales from; OVL_S [30] seconds at 1.3x; OVL_TAIL_S [20] seconds at
#                       0.6x after the 5 s recovery window. Phase `overload` (not in the default
#                       PHASES): every proxy in OVL_PROXIES ["sipedge kamailio"], one after another.
#                       OVL_MAXES ["" ] per-proxy maxima, e.g. "sipedge:12000 kamailio:6000", so each
#                       proxy is offered 1.3x its own maximum (default: OVL_MAX for all).
#   SKIP_BUILD [0]      1 = use the existing target/release binaries
#   OUT [benches/compare/out-<date>]  raw logs; the table goes to benches/compare/results-<date>.md
set -u
D=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$D/../.." && pwd)
RATES=${RATES:-"2000 4000 6000 8000 12000 16000 18000 20000"} LG_THREADS=${LG_THREADS:-2} STEP_S=${STEP_S:-5}
LADDER_ROUNDS=${LADDER_ROUNDS:-3}
LADDER_HOLD=${LADDER_HOLD:-1s} FIXED_RATE=${FIXED_RATE:-4000} FIXED_S=${FIXED_S:-10}
MEM_CALLS=${MEM_CALLS:-50000} MEM_RATE=${MEM_RATE:-3000}
SIPP_RATE=${SIPP_RATE:-2000} SIPP_CALLS=${SIPP_CALLS:-10000}
SCALE_RATE=${SCALE_RATE:-6000} SCALE_S=${SCALE_S:-10}
LAT_RATE=${LAT_RATE:-2000} LAT_S=${LAT_S:-10} LAT_ROUNDS=${LAT_ROUNDS:-5}
SIPP_RATES=${SIPP_RATES:-"4000 6000 8000 10000 12000 12600 14000 16000"} SIPP_STEP_S=${SIPP_STEP_S:-5}
PHASES=${PHASES:-"ladder fixed latency memory sipp sippcap scaling soak"}
OVL_S=${OVL_S:-30} OVL_TAIL_S=${OVL_TAIL_S:-20} OVL_PROXIES=${OVL_PROXIES:-"sipedge kamailio"}
BASE_SIPEDGE=${BASE_SIPEDGE:-}
PROXIES=${PROXIES:-"direct relay sipedge sipedge_all kamailio"}
STAMP=$(date +%Y%m%d-%H%M)
OUT=${OUT:-$D/out-$STAMP}
RES=$D/results-$STAMP.md
HZ=$(getconf CLK_TCK)
SIPEDGE=$ROOT/target/release/sipedge LOADGEN=$ROOT/target/release/loadgen
RELAY=$ROOT/target/release/examples/udp_relay
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/run.log" >&2; }

# ---- process bookkeeping: every process we start is stopped on exit -------------------------
PPID_=""  # the proxy under test (main pid)
KDIR=""
stop_proxy() {
  [ -n "$PPID_" ] || return 0
  kill "$PPID_" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$PPID_" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$PPID_" 2>/dev/null; wait "$PPID_" 2>/dev/null
  PPID_=""
}
cleanup() { stop_proxy; jobs -p | xargs -r kill 2>/dev/null; wait 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM

for P in 5060 5090 5070 7060; do
  ss -Hunlt "sport = :$P" | grep -q . && { echo "port $P busy" >&2; exit 2; }
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --workspace && cargo build --release -p sipedge --example udp_relay) \
    >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
fi

# ---- measurement helpers ---------------------------------------------------------------------
ticks() { # utime+stime (clock ticks, all threads) of $1 and its direct children
  for f in /proc/[0-9]*/stat; do { read -r l <"$f"; } 2>/dev/null && echo "${f//[^0-9]/} ${l##*) }"; done |
    awk -v p="$1" '$1==p || $3==p {s+=$13+$14} END{print s+0}'
}
rss_kib() { # VmRSS (KiB) of $1 plus its direct children
  for f in /proc/[0-9]*/stat; do { read -r l <"$f"; } 2>/dev/null && echo "${f//[^0-9]/} ${l##*) }"; done |
    awk -v p="$1" '$1==p || $3==p {print $1}' |
    while read -r q; do awk '/^VmRSS:/{print $2}' "/proc/$q/status" 2>/dev/null; done |
    awk '{s+=$1} END{print s+0}'
}
pss_kib() { # summed Pss (KiB) of $1 plus its direct children (shared pages counted once)
  for f in /proc/[0-9]*/stat; do { read -r l <"$f"; } 2>/dev/null && echo "${f//[^0-9]/} ${l##*) }"; done |
    awk -v p="$1" '$1==p || $3==p {print $1}' |
    while read -r q; do awk '/^Pss:/{print $2}' "/proc/$q/smaps_rollup" 2>/dev/null; done |
    awk '{s+=$1} END{print s+0}'
}
steal() { awk '/^cpu /{print $9}' /proc/stat; }
# CPU pressure (PSI): µs during which some runnable task waited for a CPU. Precise, unlike the
# tick-sampled /proc/stat busy time, which misses processes that run between two ticks.
psi_us() { sed -n 's/^some .*total=\([0-9]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null || echo 0; }
j() { jq -r "$2" "$1" 2>/dev/null || echo NA; }
kam() { kamcmd -s "unix:$KDIR/ctl" "$@"; }
rpc() { curl -s -m 5 -X POST -H 'Content-Type: application/json' \
          -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\"}" http://127.0.0.1:7060/jsonrpc; }
held_dialogs() { # active dialogs as the proxy reports them
  case $1 in
    sipedge*) rpc dlg.stats_active | jq -r '.result.all // .result.active // "NA"' 2>/dev/null ;;
    kamailio) kam dlg.stats_active 2>/dev/null | awk '/all:/{print $2}' ;;
    *) echo NA ;;
  esac
}
kam_shm_used() { kam core.shmmem 2>/dev/null | awk '/real_used:/{print $2}'; }

target_of() { [ "$1" = direct ] && echo 127.0.0.1:5090 || echo 127.0.0.1:5060; }

start_proxy() { # $1 = direct | relay | sipedge | sipedge1 | sipedge_all | kamailio; sets PPID_
  local name=$1 n=$OUT/$1.proxy.log
  case $name in
    direct) PPID_=""; return 0 ;;
    relay) "$RELAY" 127.0.0.1:5060 127.0.0.1:5090 2>>"$n" & PPID_=$! ;;
    sipedge|sipedge1|sipedge_all|sipedge_base|sipedge_counted|sipedge_nodef)
      local w=2 sp=adaptive bin=$SIPEDGE cfg=(); [ "$name" = sipedge1 ] && w=1; [ "$name" = sipedge_all ] && sp=all
      [ "$name" = sipedge_counted ] && cfg=(--config "$D/flood-counted.toml")
      [ "$name" = sipedge_nodef ] && cfg=(--config "$D/defences-off.toml")
      if [ "$name" = sipedge_base ]; then
        [ -x "$BASE_SIPEDGE" ] || { log "sipedge_base needs BASE_SIPEDGE=<previous binary>"; exit 2; }
        bin=$BASE_SIPEDGE
      fi
      "$bin" run "${cfg[@]}" --listen udp:127.0.0.1:5060 --workers $w --spread $sp --mgmt 127.0.0.1:7060 \
        --log warn >>"$n" 2>&1 & PPID_=$!
      for _ in $(seq 50); do curl -s -m 1 http://127.0.0.1:7060/metrics >/dev/null && break; sleep 0.1; done ;;
    kamailio)
      KDIR=$(mktemp -d /tmp/kamailio-compare.XXXXXX)
      kamailio -f "$D/kamailio.cfg" -DD -E -m 2048 -M 32 -n 2 -x tlsf -P "$KDIR/pid" -Y "$KDIR" \
        -w "$KDIR" -A "CTL_SOCK=\"unix:$KDIR/ctl\"" >"$KDIR/kamailio.log" 2>&1 & PPID_=$!
      for _ in $(seq 120); do [ -S "$KDIR/ctl" ] && break; sleep 0.5; done
      sleep 1 ;;
  esac
  sleep 0.3
  kill -0 "$PPID_" 2>/dev/null || { log "$name did not start"; tail "$n" "$KDIR/kamailio.log" 2>/dev/null; exit 1; }
}
finish_proxy() { # stop; keep the relay's datagram count and Kamailio's log head
  local name=$1
  stop_proxy
  if [ "$name" = kamailio ] && [ -n "$KDIR" ]; then
    head -c 2000000 "$KDIR/kamailio.log" >>"$OUT/kamailio.proxy.log"; rm -rf "$KDIR"; KDIR=""
  fi
}

# loadgen run: $1 target, $2 rate, $3 calls, $4 json, rest = extra args. Prints nothing.
lg() { local t=$1 r=$2 c=$3 js=$4; shift 4
  "$LOADGEN" both --target "$t" --rate "$r" --calls "$c" --json "$js" --quiet "$@" \
    >"${js%.json}.txt" 2>&1; }
# A ladder step is clean with 0 failed calls, retransmissions under 0.1% of calls, and the last
# call done within 1 s of its schedule (sending time + hold + 1 s): a proxy that falls behind
# (calls queue up, none fail) is not sustaining the rate.
case $LADDER_HOLD in *ms) HOLD_S=$(( (${LADDER_HOLD%ms} + 999) / 1000 )) ;; *s) HOLD_S=${LADDER_HOLD%s} ;; *) HOLD_S=$LADDER_HOLD ;; esac
LADDER_LIMIT=$(( STEP_S + HOLD_S + 1 ))
clean() { # $1 ladder json
  jq -e --argjson lim "$LADDER_LIMIT" '(.failed_total == 0) and (.ok > 0) and (.retrans * 1000 < .started) and (.elapsed_s <= $lim)' "$1" >/dev/null 2>&1; }

declare -A MAXCPS MAXR MAXALL LP99 CPU LAT MEM SCALE RDG RDGC SCAP MEDP99 STEALR SOAKR OVL
# ---- 1. ladder: max sustained cps --------------------------------------------------------------
# LADDER_ROUNDS interleaved rounds (every proxy climbs once per round), so one noisy minute of
# the VM does not decide a row: the table gives each row's median max and median p99 per rate.
ladder() { local name=$1 k=$2 best=0
  start_proxy "$name"
  for R in $RATES; do
    local js=$OUT/$name.ladder$k.$R.json c0=0 c1=0 s0 t0 t1
    [ -n "$PPID_" ] && c0=$(ticks "$PPID_")
    s0=$(steal); t0=$(date +%s.%N)
    # The relay returns every response to the last client address it saw, so it gets one
    # loadgen thread (one UAC socket); it sustained the whole ladder that way in earlier runs.
    local lt=$LG_THREADS; [ "$name" = relay ] && lt=1
    lg "$(target_of "$name")" "$R" $((R * STEP_S)) "$js" --hold "$LADDER_HOLD" --threads "$lt"
    t1=$(date +%s.%N)
    [ -n "$PPID_" ] && c1=$(ticks "$PPID_")
    local el; el=$(j "$js" .elapsed_s)
    # CPU over the step as % of one core: the proxy (from /proc) and loadgen (its own report);
    # then the host's steal over the step, % of one vCPU
    awk -v c=$((c1 - c0)) -v h="$HZ" -v e="$el" -v l="$(j "$js" .cpu_s)" \
        -v sa="$s0" -v sb="$(steal)" -v w0="$t0" -v w1="$t1" \
      'BEGIN{ st = (w1 > w0) ? 100*(sb-sa)/h/(w1-w0) : 0;
              if (e > 0) printf "%.0f %.0f %.1f\n", 100*c/h/e, 100*l/e, st; else print "NA NA NA" }' >"$js.cpu"
    log "ladder $name round $k $R cps: ok=$(j "$js" .ok) failed=$(j "$js" .failed_total) retrans=$(j "$js" .retrans) elapsed_s=$el (limit $LADDER_LIMIT) p99_us=$(j "$js" '.latency.invite_200.percentiles_us.p99') cpu proxy/loadgen/steal %: $(cat "$js.cpu") loadgen_late_calls=$(j "$js" .behind_schedule) max_late_ms=$(j "$js" '.max_behind_us / 1000 | floor')"
    clean "$js" || break
    best=$R; sleep 1
  done
  MAXR[$name:$k]=$best
  finish_proxy "$name"
}
rates_head() { # $1 = column alignment ('---' or '---:'): header of a per-rate Markdown table
  printf '| proxy |'; for R in $RATES; do printf ' %s |' "$R"; done; echo
  printf '|---|'; for R in $RATES; do printf -- '%s|' "$1"; done; echo
}
median() { # numbers on stdin (inf allowed) -> the median (the lower middle for an even count)
  sort -g | awk '{v[NR]=$1} END{ if (NR) print v[int((NR+1)/2)]; else print "NA" }'
}
ladder_summary() { # $1 proxy: MAXCPS = median of the rounds' max; LP99[$1:R] = median p99 at R
  local p=$1 k R
  MAXCPS[$p]=$(for k in $(seq "$LADDER_ROUNDS"); do echo "${MAXR[$p:$k]:-0}"; done | median)
  MAXALL[$p]=$(for k in $(seq "$LADDER_ROUNDS"); do echo "${MAXR[$p:$k]:-0}"; done | paste -sd/)
  [ "${MAXCPS[$p]}" = "${RATES##* }" ] && MAXCPS[$p]="≥${MAXCPS[$p]} (ladder top)"
  MAXCPS[$p]="${MAXCPS[$p]} (rounds: ${MAXALL[$p]})"
  for R in $RATES; do
    # a step that did not run (the round's ladder stopped below it) counts as infinitely slow
    LP99[$p:$R]=$(for k in $(seq "$LADDER_ROUNDS"); do
        f=$OUT/$p.ladder$k.$R.json; [ -f "$f" ] && j "$f" '.latency.invite_200.percentiles_us.p99' || echo inf
      done | median)
  done
}

# ---- 2. fixed rate: CPU per call + latency ---------------------------------------------------
fixed() { # $1 proxy, $2 rate, $3 seconds, $4 tag (results go to CPU/LAT["$4:$1"])
  local name=$1 rate=$2 secs=$3 tag=$4 js=$OUT/$1.$4.json
  start_proxy "$name"
  local c0=0 s0 t0 t1; [ -n "$PPID_" ] && c0=$(ticks "$PPID_")
  s0=$(steal); t0=$(date +%s.%N)
  lg "$(target_of "$name")" "$rate" $((rate * secs)) "$js"
  t1=$(date +%s.%N)
  local c1=0; [ -n "$PPID_" ] && c1=$(ticks "$PPID_")
  local st; st=$(awk -v a="$s0" -v b="$(steal)" -v h="$HZ" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.1f", 100*(b-a)/h/(e-s)}')
  local ok; ok=$(j "$js" .ok)
  local us=NA; [ -n "$PPID_" ] && us=$(awk -v c=$((c1 - c0)) -v h="$HZ" -v n="$ok" 'BEGIN{printf "%.1f", (n>0 ? c*1e6/h/n : 0)}')
  finish_proxy "$name"
  if [ "$name" = relay ]; then
    local dg; dg=$(sed -n 's/.*datagrams=\([0-9]*\).*/\1/p' "$OUT/relay.proxy.log" | tail -1)
    RDG[$tag]=$(awk -v c=$((c1 - c0)) -v h="$HZ" -v n="${dg:-0}" 'BEGIN{printf "%.2f", (n>0 ? c*1e6/h/n : 0)}')
    RDGC[$tag]=$(awk -v d="${dg:-0}" -v n="$ok" 'BEGIN{printf "%.1f", (n>0 ? d/n : 0)}')
  fi
  CPU[$tag:$name]="$us"
  STEALR[$tag:$name]=$st
  LAT[$tag:$name]="$(j "$js" '[.latency.invite_200.percentiles_us | .p50, .p99, ."p99.9"] | map(tostring) | join(" / ")')"
  log "$tag $name $rate cps: ok=$ok failed=$(j "$js" .failed_total) retrans=$(j "$js" .retrans) cpu_us_per_call=$us invite_200 p50/p99/p99.9 us=${LAT[$tag:$name]} loadgen_cpu_us_per_call=$(j "$js" .cpu_us_per_call) start_lag p99=$(j "$js" '.latency.start_lag.percentiles_us.p99') invite_200_sent p99=$(j "$js" '.latency.invite_200_sent.percentiles_us.p99') steal=${st}%"
}

# ---- 3. memory per held dialog ---------------------------------------------------------------
memory() { local name=$1 js=$OUT/$1.mem.json
  local send_s=$(( (MEM_CALLS + MEM_RATE - 1) / MEM_RATE ))
  local hold=$(( send_s + 15 ))
  start_proxy "$name"
  sleep 1
  local r0 p0 k0=NA; r0=$(rss_kib "$PPID_"); p0=$(pss_kib "$PPID_"); [ "$name" = kamailio ] && k0=$(kam_shm_used)
  lg 127.0.0.1:5060 "$MEM_RATE" "$MEM_CALLS" "$js" --hold "${hold}s" & local L=$!
  # Two samples inside the sending window, both after the INVITE transactions reached their
  # steady population (rate x 5 s linger): the slope between them is the memory one more held
  # dialog costs, without fixed costs (buffers, histograms) that are touched during warm-up.
  local ta=$(( send_s * 2 / 5 )) tb=$(( send_s - 1 ))
  [ "$ta" -ge 6 ] || ta=6
  sleep "$ta"
  local ha ra pa ka=NA; ha=$(held_dialogs "$name"); ra=$(rss_kib "$PPID_"); pa=$(pss_kib "$PPID_")
  [ "$name" = kamailio ] && ka=$(kam_shm_used)
  sleep $(( tb - ta ))
  local hb rb pb kb=NA; hb=$(held_dialogs "$name"); rb=$(rss_kib "$PPID_"); pb=$(pss_kib "$PPID_")
  [ "$name" = kamailio ] && kb=$(kam_shm_used)
  sleep $(( send_s + 8 - tb ))   # every call set up, their INVITE transactions lingered out (5 s)
  local held r1 p1 k1=NA; held=$(held_dialogs "$name"); r1=$(rss_kib "$PPID_"); p1=$(pss_kib "$PPID_")
  [ "$name" = kamailio ] && k1=$(kam_shm_used)
  wait $L
  local nd=${held:-NA}; [[ $nd =~ ^[0-9]+$ ]] && [ "$nd" -gt 0 ] || nd=$MEM_CALLS
  local dn=0; [[ $ha =~ ^[0-9]+$ && $hb =~ ^[0-9]+$ ]] && dn=$(( hb - ha ))
  # slope (marginal bytes per dialog) and delta from idle (includes warm-up/fixed costs)
  local per slope; per=$(awk -v a="$r0" -v b="$r1" -v n="$nd" 'BEGIN{printf "%.0f", (b-a)*1024/n}')
  slope=$(awk -v a="$ra" -v b="$rb" -v n="$dn" 'BEGIN{ if (n>0) printf "%.0f", (b-a)*1024/n; else print "NA"}')
  local pper; pper=$(awk -v a="$p0" -v b="$p1" -v n="$nd" 'BEGIN{printf "%.0f", (b-a)*1024/n}')
  MEM[$name]="**$slope B** marginal VmRSS ($per B delta from idle)"
  if [ "$name" = kamailio ]; then
    local kslope kper
    kslope=$(awk -v a="$ka" -v b="$kb" -v pa="$pa" -v pb="$pb" -v n="$dn" 'BEGIN{ if (n>0 && a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) printf "%.0f", ((b-a) + (pb-pa)*1024)/n; else print "NA"}')
    kper=$(awk -v a="$k0" -v b="$k1" -v n="$nd" -v pp="$pper" 'BEGIN{ if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/) printf "%.0f", (b-a)/n + pp; else print "NA"}')
    MEM[$name]="**$kslope B** marginal shm real_used + PSS ($kper B delta from idle)"
  fi
  log "memory $name: held $ha -> $hb (t=${ta}s..${tb}s) rss_kib $ra -> $rb pss_kib $pa -> $pb shm $ka -> $kb; idle rss $r0 pss $p0 shm $k0; end held=$held rss $r1 pss $p1 shm $k1 => ${MEM[$name]}; run ok=$(j "$js" .ok) failed=$(j "$js" .failed_total)"
  finish_proxy "$name"
}

# ---- 4. SIPp cross-check ---------------------------------------------------------------------
sipp_check() { local name=$1
  start_proxy "$name"
  local c0 c1 r; c0=$(ticks "$PPID_")
  for _ in 1 2 3; do   # a port still in TIME_WAIT/closing from the previous phase: retry
    r=$("$D/sipp_step.sh" 127.0.0.1:5060 "$SIPP_RATE" "$SIPP_CALLS" 0 2>>"$OUT/sipp.stderr" | grep '^RESULT')
    [ -n "$r" ] && break; sleep 3
  done
  c1=$(ticks "$PPID_")
  finish_proxy "$name"
  echo "$name $r" >>"$OUT/sipp.txt"
  kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$r"; }
  SIPP[$name]="$(kv ok)/$(kv failed)/$(kv retrans), p50/p99 $(kv rt_p50_ms)/$(kv rt_p99_ms) ms, $(awk -v c=$((c1 - c0)) -v h="$HZ" -v n="$(kv ok)" 'BEGIN{printf "%.0f", (n>0 ? c*1e6/h/n : 0)}') µs/call"
  log "sipp $name $SIPP_RATE cps: ${SIPP[$name]}"
}
declare -A SIPP

# ---- 4b. SIPp capacity: SIPp's own limit (no proxy) vs through the proxy ---------------------
# One proxy start per step. For each step: ok/failed/retrans, and the CPU of SIPp (UAC+UAS) and
# of the proxy as % of one core over the UAC's wall time, to show where the 2-core budget goes.
sippcap() { local name=$1 best=0 R
  for R in $SIPP_RATES; do
    # SIPp alone fails a step now and then at rates it passes in the next minute (its limit
    # moved between 6000 and >=16000 across runs), so a failed step gets one more try, for
    # every row alike; the second result stands.
    local try clean=0   # set by sippcap_step (bash scoping: the caller's local)
    for try in 1 2; do
      sippcap_step "$name" "$R" "$try"
      [ "$clean" = 1 ] && break
      sleep 2
    done
    [ "$clean" = 1 ] || break
    best=$R; sleep 2
  done
  SCAP[$name:max]=$best
}
sippcap_step() { # $1 proxy, $2 rate, $3 try; sets SCAP[$1:$2] and the caller's clean
  local name=$1 R=$2 try=$3
  local c0=0 c1=0 r="" tgt=127.0.0.1:5060
  if [ "$name" = direct ]; then tgt=127.0.0.1:5090; PPID_=""; else start_proxy "$name"; c0=$(ticks "$PPID_"); fi
  local q0 q1; q0=$(psi_us)
  for _ in 1 2 3; do
    r=$("$D/sipp_step.sh" "$tgt" "$R" $((R * SIPP_STEP_S)) 0 2>>"$OUT/sipp.stderr" | grep '^RESULT')
    [ -n "$r" ] && break; sleep 3
  done
  q1=$(psi_us)
  [ -n "$PPID_" ] && c1=$(ticks "$PPID_")
  [ "$name" = direct ] || finish_proxy "$name"
  echo "cap $name $r" >>"$OUT/sipp.txt"
  kv() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$r"; }
  local el; el=$(kv elapsed_s)
  local scpu pcpu; scpu=$(awk -v c="$(kv sipp_cpu_s)" -v e="$el" 'BEGIN{ if (e>0) printf "%.0f", 100*c/e; else print "NA"}')
  pcpu=$(awk -v c=$((c1 - c0)) -v h="$HZ" -v e="$el" 'BEGIN{ if (e>0) printf "%.0f", 100*c/h/e; else print "NA"}')
  clean=0; [ "$(kv failed)" = 0 ] && [ -n "$(kv retrans)" ] && [ $(( $(kv retrans) * 1000 )) -lt $((R * SIPP_STEP_S)) ] && clean=1
  # share of the step's wall time (incl. the script's ~2 s of set-up) in which a task waited for a CPU
  local psi; psi=$(awk -v a="$q0" -v b="$q1" -v e="$el" 'BEGIN{ if (e>0) printf "%.0f", (b-a)/1e4/(e+2.1); else print "NA"}')
  SCAP[$name:$R]="$(kv ok)/$(kv failed)/$(kv retrans), SIPp ${scpu}% + proxy ${pcpu}%, cpu wait ${psi}%"
  [ "$try" = 2 ] && SCAP[$name:$R]="${SCAP[$name:$R]} (2nd try)"
  log "sippcap $name $R cps (try $try): ${SCAP[$name:$R]} clean=$clean"
}

# ---- 5. scaling: 1 vs 2 workers, one peer socket ---------------------------------------------
scaling() { local name=$1 js=$OUT/$1.scale.json
  start_proxy "$name"
  local c0 c1; c0=$(ticks "$PPID_")
  lg 127.0.0.1:5060 "$SCALE_RATE" $((SCALE_RATE * SCALE_S)) "$js" --sockets 1
  c1=$(ticks "$PPID_")
  curl -s -m 5 http://127.0.0.1:7060/metrics >"$OUT/$name.scale.metrics"
  local split; split=$(grep '^sipedge_packets_in' "$OUT/$name.scale.metrics" |
    sed -n 's/.*worker="\([0-9]*\)",transport="udp"} \([0-9.e+]*\)$/w\1=\2/p' | sort | tr '\n' ' ')
  finish_proxy "$name"
  local ok; ok=$(j "$js" .ok)
  SCALE[$name]="ok=$ok failed=$(j "$js" .failed_total) retrans=$(j "$js" .retrans) cpu=$(awk -v c=$((c1 - c0)) -v h="$HZ" -v n="$ok" 'BEGIN{printf "%.1f", (n>0 ? c*1e6/h/n : 0)}') µs/call p99=$(j "$js" '.latency.invite_200.percentiles_us.p99') µs packets_in: ${split:-NA}"
  log "scaling $name $SCALE_RATE cps --sockets 1: ${SCALE[$name]}"
}

# ---- run -------------------------------------------------------------------------------------
{ echo "# $(date -Is) $(uname -r) $(nproc) cpus; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# RATES=$RATES STEP_S=$STEP_S FIXED_RATE=$FIXED_RATE FIXED_S=$FIXED_S MEM_CALLS=$MEM_CALLS MEM_RATE=$MEM_RATE"; } | tee -a "$OUT/run.log"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); STEAL0=$(steal); T0=$(date +%s)
on() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }
if on ladder; then
  for k in $(seq "$LADDER_ROUNDS"); do for p in $PROXIES; do ladder "$p" "$k"; done; done
  for p in $PROXIES; do ladder_summary "$p"; done
fi
on fixed && for p in $PROXIES; do fixed "$p" "$FIXED_RATE" "$FIXED_S" fixed; done
on latency && for k in $(seq "$LAT_ROUNDS"); do for p in $PROXIES; do fixed "$p" "$LAT_RATE" "$LAT_S" "lat$k"; done; done
# Latency rounds: the round with the median p99 gives each proxy's "lat" figures.
median_round() { # $1 proxy -> round number whose invite_200 p99 is the median
  for k in $(seq "$LAT_ROUNDS"); do echo "$k $(j "$OUT/$1.lat$k.json" '.latency.invite_200.percentiles_us.p99')"; done |
    sort -k2,2n | awk '{r[NR]=$1} END{print r[int((NR+1)/2)]}'
}
p99s() { # $1 proxy, $2 metric -> "a, b, c" p99 of each round
  for k in $(seq "$LAT_ROUNDS"); do j "$OUT/$1.lat$k.json" ".latency.$2.percentiles_us.p99"; done | paste -sd, | sed 's/,/, /g'
}
if on latency; then for p in $PROXIES; do
  m=$(median_round "$p"); CPU[lat:$p]=${CPU[lat$m:$p]:-NA}; LAT[lat:$p]=${LAT[lat$m:$p]:-NA}
  [ "$p" = relay ] && RDG[lat]=${RDG[lat$m]:-NA}
  MEDP99[$p]=$(j "$OUT/$p.lat$m.json" '.latency.invite_200.percentiles_us.p99')
done; fi
on memory && for p in $PROXIES; do case $p in sipedge|kamailio) memory "$p" ;; esac; done
on sipp && for p in $PROXIES; do case $p in sipedge|kamailio) sipp_check "$p" ;; esac; done
on sippcap && for p in direct relay sipedge kamailio; do case " $PROXIES " in *" $p "*) sippcap "$p" ;; esac; done
on scaling && case " $PROXIES " in *" sipedge "*) scaling sipedge1; scaling sipedge_all; scaling sipedge ;; esac
# Soak: memory must stay flat over minutes of a constant load at 70% of the maximum clean
# rate (soak.sh has the method); for both binaries when a previous one is given.
if on soak; then
  SOAK_RATE=${SOAK_RATE:-$(awk -v m="$(echo "${MAXCPS[sipedge]:-}" | grep -o '[0-9]\+' | head -1)" \
    'BEGIN{ if (m+0 > 0) printf "%d", 0.7*m; else print 12600 }')}
  for p in $PROXIES; do
    case $p in sipedge) b=$SIPEDGE ;; sipedge_base) b=$BASE_SIPEDGE ;; *) continue ;; esac
    log "soak $p: $SOAK_RATE cps for ${SOAK_S:-600} s"
    SIPEDGE=$b LOADGEN=$LOADGEN SOAK_RATE=$SOAK_RATE OUT=$OUT/soak-$p "$D/soak.sh" >"$OUT/soak-$p.md" 2>&1
    SOAKR[$p]=$(cat "$OUT/soak-$p.md")
  done
fi
# ---- overload: 1.3x the maximum clean rate for OVL_S, then 0.6x (RFC 6357 goodput) -----------
# Three loadgen runs on their own UAS ports: the overload (1.3x for OVL_S s), then, started when
# it stops starting calls, 0.6x for a 5 s recovery window, then 0.6x for OVL_TAIL_S s that must
# be clean. Goodput = calls of the overload run that completed, per second of it; "lost after a
# 200" = BYE timeouts, missing ACKs and 481s (a call that was answered and then broke).
ovl_lost() { j "$1" '[.failed.non_invite_timeout // 0, .failed.no_ack // 0, .failed.unknown_dialog // 0] | add'; }
overload() { local name=$1 max=$2 hi lo js=$OUT/$1.ovl
  hi=$(( max * 13 / 10 )); lo=$(( max * 6 / 10 ))
  start_proxy "$name"
  local t; t=$(target_of "$name")
  log "overload $name: $hi cps for $OVL_S s, then $lo cps (5 s recovery + $OVL_TAIL_S s)"
  lg "$t" "$hi" $((hi * OVL_S)) "$js.hi.json" --hold 1s --threads "$LG_THREADS" --invite-timeout 8s --uas 127.0.0.1:5090 &
  local a=$!
  sleep "$OVL_S"
  lg "$t" "$lo" $((lo * 5)) "$js.rec.json" --hold 1s --threads "$LG_THREADS" --invite-timeout 8s --uas 127.0.0.1:5100 &
  local b=$!
  sleep 5
  lg "$t" "$lo" $((lo * OVL_TAIL_S)) "$js.after.json" --hold 1s --threads "$LG_THREADS" --invite-timeout 8s --uas 127.0.0.1:5110
  wait "$a" "$b"
  sleep 10
  local left=NA
  case $name in sipedge*) left=$(curl -s -m 5 -d '{"jsonrpc":"2.0","id":1,"method":"dlg.stats_active"}' \
    http://127.0.0.1:7060/jsonrpc | jq -r '.result.all // "NA"') ;; esac
  local refused=NA
  case $name in sipedge*) refused=$(curl -s -m 5 http://127.0.0.1:7060/metrics | awk '/^sipedge_refused_total\{reason="overload"\}/{print $2}') ;; esac
  finish_proxy "$name"
  local ok; ok=$(j "$js.hi.json" .ok)
  OVL[$name]="$(awk -v o="$ok" -v s="$OVL_S" -v m="$max" 'BEGIN{printf "%.0f cps (%.0f%% of %d)", o/s, 100*o/s/m, m}') | $(j "$js.hi.json" .failed_total) ($(j "$js.hi.json" '.failed | to_entries | map("\(.key) \(.value)") | join(", ")')) | $(ovl_lost "$js.hi.json") | $(j "$js.rec.json" .ok)/$(j "$js.rec.json" .failed_total) | $(j "$js.after.json" .ok)/$(j "$js.after.json" .failed_total) | $left | ${refused:-NA}"
  log "overload $name: ${OVL[$name]}"
}
if on overload; then
  OVL_MAX=${OVL_MAX:-$(echo "${MAXCPS[sipedge]:-}" | grep -o '^[0-9]\+' | head -1)}
  OVL_MAX=${OVL_MAX:-12000}
  for p in $OVL_PROXIES; do
    m=$OVL_MAX
    for pm in ${OVL_MAXES:-}; do [ "${pm%%:*}" = "$p" ] && m=${pm#*:}; done
    overload "$p" "$m"; sleep 5
  done
fi
T1=$(date +%s); STEAL_PCT=$(awk -v a="$STEAL0" -v b="$(steal)" -v h="$HZ" -v t=$((T1 - T0)) 'BEGIN{printf "%.1f", 100*(b-a)/h/t}')

{
  echo "# sipedge vs Kamailio side by side ($(date '+%Y-%m-%d %H:%M'))"
  echo
  echo "Machine: $(nproc) vCPU, $(uname -r). Load average at start: $LOAD0; at end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Host steal over the run: ${STEAL_PCT}% of one cpu. Run took $((T1 - T0)) s. Raw logs: \`$(basename "$OUT")/\`."
  echo
  echo "| proxy | max clean cps (ladder ${STEP_S} s/step, median of ${LADDER_ROUNDS} rounds) | CPU µs/call @ ${FIXED_RATE} cps | INVITE→200 p50 / p99 / p99.9 µs @ ${FIXED_RATE} cps | CPU µs/call @ ${LAT_RATE} cps | INVITE→200 p50 / p99 / p99.9 µs @ ${LAT_RATE} cps | memory per held dialog (${MEM_CALLS} held) | SIPp ${SIPP_RATE} cps ok/fail/retr |"
  echo "|---|---:|---:|---|---:|---|---|---|"
  for p in $PROXIES; do
    case $p in
      direct) label="direct (loadgen UAC→UAS, floor)";;
      relay) label="no-op UDP relay (floor)";;
      sipedge) label="**sipedge** (2 workers, adaptive spreading: default)";;
      sipedge_base) label="sipedge, previous binary (\`$(basename "$BASE_SIPEDGE")\`, same flags)";;
      sipedge_counted) label="sipedge, flood control counting loopback (\`flood-counted.toml\`)";;
      sipedge_nodef) label="sipedge, flood and overload control off (\`defences-off.toml\`)";;
      sipedge1) label="sipedge (1 worker)";;
      sipedge_all) label="sipedge (2 workers, \`--spread all\`)";;
      kamailio) label="Kamailio 5.6 (2 children, tlsf)";;
    esac
    cpu=${CPU[fixed:$p]:-NA}; [ "$p" = relay ] && cpu="$cpu (${RDG[fixed]:-NA} µs/datagram, ${RDGC[fixed]:-NA} dg/call)"
    lcpu=${CPU[lat:$p]:-NA}; [ "$p" = relay ] && lcpu="$lcpu (${RDG[lat]:-NA} µs/datagram)"
    echo "| $label | ${MAXCPS[$p]:-NA} | $cpu | ${LAT[fixed:$p]:-NA} | $lcpu | ${LAT[lat:$p]:-NA} | ${MEM[$p]:--} | ${SIPP[$p]:--} |"
  done
  echo
  if on ladder; then
    echo "INVITE→200 p99 (µs) at each ladder step: the median over ${LADDER_ROUNDS} interleaved rounds, then each round's value in brackets (✗ = that step was not clean; - = not run, that round's ladder had stopped; a step not run counts as infinitely slow in the median). Hold ${LADDER_HOLD}."
    echo
    rates_head '---:'
    for p in $PROXIES; do
      printf '| %s |' "$p"
      for R in $RATES; do
        v=${LP99[$p:$R]:-NA}; [ "$v" = inf ] && v="-"
        per=$(for k in $(seq "$LADDER_ROUNDS"); do
            f=$OUT/$p.ladder$k.$R.json
            if [ -f "$f" ]; then x=$(j "$f" '.latency.invite_200.percentiles_us.p99'); clean "$f" || x="$x✗"; echo "$x"; else echo -; fi
          done | paste -sd/)
        printf ' **%s** (%s) |' "$v" "$per"
      done; echo
    done
    echo
    echo "CPU over each ladder step as % of one core, per round: proxy + loadgen (lg), and the host's steal (st, % of one vCPU). The box has 200%."
    echo
    rates_head '---'
    for p in $PROXIES; do
      printf '| %s |' "$p"
      for R in $RATES; do
        per=$(for k in $(seq "$LADDER_ROUNDS"); do
            f=$OUT/$p.ladder$k.$R.json
            if [ -f "$f.cpu" ]; then read -r pc lc st <"$f.cpu"
              [ "$p" = direct ] && echo "lg $lc st $st" || echo "$pc+lg $lc st $st"
            else echo -; fi
          done | paste -sd'|' | sed 's/|/ · /g')
        printf ' %s |' "$per"
      done; echo
    done
    echo
  fi
  if on sippcap; then
    echo "SIPp capacity (${SIPP_STEP_S} s of calls per step, hold 0; ok/failed/retrans, CPU as % of one core over the step; the box has 200%; 'cpu wait' = share of the step in which some task waited for a CPU, from /proc/pressure/cpu; the relay carries only INVITE and its responses; a failed step is tried once more):"
    echo
    printf '| SIPp UAC→UAS via |'; for R in $SIPP_RATES; do printf ' %s |' "$R"; done; echo " max clean |"
    printf '|---|'; for R in $SIPP_RATES; do printf -- '---|'; done; echo "---:|"
    for p in direct relay sipedge kamailio; do
      case " $PROXIES " in *" $p "*) ;; *) continue ;; esac
      printf '| %s |' "$([ $p = direct ] && echo 'nothing (SIPp limit)' || echo $p)"
      for R in $SIPP_RATES; do printf ' %s |' "${SCAP[$p:$R]:--}"; done; echo " ${SCAP[$p:max]:-NA} |"
    done
    echo
  fi
  if on latency; then
    echo "Latency at ${LAT_RATE} cps: ${LAT_ROUNDS} interleaved rounds of ${LAT_S} s (every proxy once per round). invite_200 is the headline (from the intended send time); start_lag is loadgen's own lag behind its schedule, invite_200_sent the time from the actual send (so a tail in invite_200 but not in invite_200_sent is the generator's):"
    echo
    echo "| proxy | invite_200 p99 per round (µs) | median p99 | median − direct median | start_lag p99 per round | invite_200_sent p99 per round | host steal per round (% of one vCPU) |"
    echo "|---|---|---:|---:|---|---|---|"
    for p in $PROXIES; do
      d=NA; [[ ${MEDP99[direct]:-} =~ ^[0-9]+$ && ${MEDP99[$p]:-} =~ ^[0-9]+$ ]] && d=$(( ${MEDP99[$p]} - ${MEDP99[direct]} ))
      echo "| $p | $(p99s "$p" invite_200) | ${MEDP99[$p]:-NA} | $d | $(p99s "$p" start_lag) | $(p99s "$p" invite_200_sent) | $(for k in $(seq "$LAT_ROUNDS"); do echo "${STEALR[lat$k:$p]:-NA}"; done | paste -sd, | sed 's/,/, /g') |"
    done
    echo
  fi
  echo "Scaling at ${SCALE_RATE} cps from ONE UAC socket (\`loadgen --sockets 1\`):"
  echo
  echo "| sipedge | result |"
  echo "|---|---|"
  for p in sipedge1 sipedge_all sipedge; do
    case $p in sipedge1) l="1 worker";; sipedge_all) l="2 workers, \`--spread all\`";; *) l="2 workers, adaptive (default)";; esac
    [ -n "${SCALE[$p]:-}" ] && echo "| $l | ${SCALE[$p]} |"
  done
  echo
  if on soak; then
    for p in $PROXIES; do [ -n "${SOAKR[$p]:-}" ] && { echo "Soak, $p:"; echo; echo "${SOAKR[$p]}"; echo; }; done
  fi
  if on overload; then
    echo "Overload: each proxy offered 1.3x its maximum clean rate (${OVL_MAXES:-$OVL_MAX for all}) for ${OVL_S} s, then 0.6x (5 s recovery window, then ${OVL_TAIL_S} s that should be clean); hold 1 s, INVITE timeout 8 s."
    echo
    echo "| proxy | goodput during overload (of its maximum) | failed in overload (by reason) | lost after a 200 | recovery window ok/failed | after ok/failed | dialogs left | refused for overload |"
    echo "|---|---|---|---:|---|---|---:|---:|"
    for p in $OVL_PROXIES; do [ -n "${OVL[$p]:-}" ] && echo "| $p | ${OVL[$p]} |"; done
    echo
  fi
  echo "Ladder: a step is clean with 0 failed calls, < 0.1% retransmissions and the last call done within ${LADDER_LIMIT} s (${STEP_S} s of sending + hold ${LADDER_HOLD} + 1 s); rates: $RATES."
  echo "Ladder load: loadgen --threads ${LG_THREADS} (each thread its own UAS port; the relay row: 1 thread). Latency run: ${LAT_RATE} cps for ${LAT_S} s, hold 0, loadgen 1 thread; the table shows the median round. CPU: utime+stime of the proxy (all threads; Kamailio: main + children) over the whole loadgen run, / ok calls."
  echo "Memory: marginal = slope between two samples inside the sending window (same INVITE-transaction population), / dialogs added; sipedge VmRSS, Kamailio (pre-faults shm) shm real_used + summed PSS. 'Delta from idle' also counts buffers first touched under load."
  echo "The relay forwards only INVITE and its responses (ACK/BYE go to the Contact directly), so compare it per datagram."
} >"$RES"
cat "$RES"
