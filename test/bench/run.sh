#!/usr/bin/env bash
# dockyard benchmark (`make bench`): runs the same workloads against dockyard and the
# CNCF reference registry, one after the other on loopback, and prints both numbers,
# their ratio and the target. Absolute numbers on a shared machine are noise; the
# ratios are the result. Exits 0 even when targets are missed; non-zero only when
# something broke.
#
# Knobs (environment): BENCH_DURATION (wrk seconds, default 10), BENCH_WARMUP (2),
# BENCH_BIG_MIB (512), BENCH_PUSH_MIB (256), BENCH_PULLS (8), BENCH_REPS (3);
# proxy part: BENCH_PROXY_MIB (256), BENCH_PROXY_PULLS (16), BENCH_PROXY_REPS (3 TTFB
# runs); BENCH_ONLY=hosted or BENCH_ONLY=proxy runs one part alone (development).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TOOLS=$ROOT/.tools
OUT=$ROOT/test-results/bench
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
BIG_MIB=${BENCH_BIG_MIB:-512}
PUSH_MIB=${BENCH_PUSH_MIB:-256}
PULLS=${BENCH_PULLS:-8}
REPS=${BENCH_REPS:-3}
PROXY_MIB=${BENCH_PROXY_MIB:-256}
PROXY_PULLS=${BENCH_PROXY_PULLS:-16}
PROXY_REPS=${BENCH_PROXY_REPS:-3}
ONLY=${BENCH_ONLY:-}
case "$ONLY" in "" | hosted | proxy) ;; *) echo "bench: BENCH_ONLY must be hosted or proxy"; exit 2 ;; esac
CONNS=32
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'

for t in wrk curl "$TOOLS/registry" bin/dockyard; do
  command -v "$t" >/dev/null 2>&1 || { echo "bench: $t is missing (run make tools build)"; exit 2; }
done

rm -rf "$OUT"
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-bench.XXXXXX")
SERVER_PID=""
PROXY_PIDS=() # the proxy part's servers, all running at once
cleanup() {
  local p
  for p in "$SERVER_PID" "${PROXY_PIDS[@]}"; do
    [ -n "$p" ] || continue
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

log "building loadgen"
go build -o "$TMP/loadgen" ./test/bench/loadgen
LG=$TMP/loadgen

if [ "$ONLY" != proxy ]; then
  log "generating ${BIG_MIB} MiB and ${PUSH_MIB} MiB random files"
  head -c $((BIG_MIB << 20)) /dev/urandom >"$TMP/big.bin"
  head -c $((PUSH_MIB << 20)) /dev/urandom >"$TMP/push.bin"
  BIG_DIGEST=sha256:$(sha256sum "$TMP/big.bin" | cut -d' ' -f1)
fi

# wait_up ADDR: waits until /v2/ answers.
wait_up() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://$1/v2/" 2>/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# wrk_rps NAME URL [HEADER]: warms up, then measures; prints requests/s. Fails when any
# response was not 2xx/3xx or sockets failed.
wrk_rps() {
  local name=$1 url=$2; shift 2
  local hdr=()
  [ $# -gt 0 ] && hdr=(-H "$1")
  timeout $((WARMUP + 30)) wrk -t2 -c$CONNS -d${WARMUP}s "${hdr[@]}" "$url" >/dev/null
  timeout $((DURATION + 30)) wrk -t2 -c$CONNS -d${DURATION}s --latency "${hdr[@]}" "$url" >"$OUT/$name.wrk"
  if grep -qE 'Non-2xx|Socket errors' "$OUT/$name.wrk"; then
    log "$name: wrk saw errors:"; grep -E 'Non-2xx|Socket errors' "$OUT/$name.wrk" >&2
    return 1
  fi
  awk '/^Requests\/sec:/ {print $2}' "$OUT/$name.wrk"
}

# run_suite NAME: runs every workload against the server at $ADDR (pid $SERVER_PID)
# and writes NAME.env with the results.
run_suite() {
  local name=$1 env="$OUT/$1.env"
  log "$name: pushing the test image and the ${BIG_MIB} MiB blob"
  timeout 120 "$LG" setup -addr "$ADDR" -repo bench/app -big "$TMP/big.bin" -big-digest "$BIG_DIGEST" >"$TMP/setup.env"
  # shellcheck disable=SC1091
  . "$TMP/setup.env"
  : >"$env"
  log "$name: manifest GET by tag (wrk -c$CONNS -d${DURATION}s)"
  echo "MANIFEST_RPS=$(wrk_rps "$name-manifest" "$MANIFEST_URL" "$ACCEPT")" >>"$env"
  log "$name: 2 KiB blob GET (wrk -c$CONNS -d${DURATION}s)"
  echo "SMALL_RPS=$(wrk_rps "$name-small-blob" "$SMALL_URL")" >>"$env"
  log "$name: $PULLS concurrent GETs of the ${BIG_MIB} MiB blob"
  timeout 200 "$LG" pull -addr "$ADDR" -repo bench/app -digest "$BIG_DIGEST" -size "$BIG_SIZE" -n 1 >/dev/null # warm-up
  timeout 200 "$LG" pull -addr "$ADDR" -repo bench/app -digest "$BIG_DIGEST" -size "$BIG_SIZE" -n "$PULLS" >>"$env"
  log "$name: pushing ${PUSH_MIB} MiB blobs ($REPS× monolithic POST+PUT, POST ?digest=, 4 chunks)"
  timeout 200 "$LG" push -addr "$ADDR" -repo bench/push -file "$TMP/push.bin" -reps "$REPS" -chunks 4 >>"$env"
  echo "HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")" >>"$env"
  cat "$env" >&2
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

if [ "$ONLY" != proxy ]; then
# --- dockyard ---------------------------------------------------------------------
PORT=$("$LG" freeport)
ADDR=127.0.0.1:$PORT
mkdir -p "$TMP/dockyard"
log "starting dockyard on $ADDR"
DOCKYARD_LOG_LEVEL=warn bin/dockyard serve --listen "$ADDR" --data "$TMP/dockyard" >"$OUT/dockyard.log" 2>&1 &
SERVER_PID=$!
wait_up "$ADDR" || { log "dockyard did not start"; tail -20 "$OUT/dockyard.log" >&2; exit 1; }
DY_PID=$SERVER_PID
run_suite dockyard
stop_server
rm -rf "$TMP/dockyard"

# --- reference registry -----------------------------------------------------------
PORT=$("$LG" freeport)
ADDR=127.0.0.1:$PORT
mkdir -p "$TMP/reference"
# The reference registry's shipped example config (inmemory blob descriptor cache),
# with deletes enabled and the access log off (dockyard writes none).
cat >"$TMP/reference.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/reference
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: $ADDR
EOF
log "starting the reference registry on $ADDR"
OTEL_TRACES_EXPORTER=none "$TOOLS/registry" serve "$TMP/reference.yml" >"$OUT/reference.log" 2>&1 &
SERVER_PID=$!
wait_up "$ADDR" || { log "reference registry did not start"; tail -20 "$OUT/reference.log" >&2; exit 1; }
run_suite reference
stop_server
fi

# --- proxy: pull-through caches of a plain reference registry ----------------------
# The upstream is a plain reference registry holding the content. dockyard (type:
# proxy) and the reference registry in proxy mode both cache it, with empty caches.
# Clients check the sha256 of what they get (all but the 'not hashing' round). The
# upstream's access log counts the blob GETs each proxy sends it. Failures here are reported in the table (FAIL) and make
# the script exit non-zero after printing it.
PROXY_REPO=bench/proxy
PROXY_ENV=$OUT/proxy.env
PROXY_FAILED=""

# start_proxy_server NAME ADDR CMD...: starts a server of the proxy part, logging to
# $OUT/NAME.log, and waits until it answers.
start_proxy_server() {
  local name=$1 addr=$2; shift 2
  log "starting $name on $addr"
  "$@" >"$OUT/$name.log" 2>&1 &
  SERVER_PID=$!
  PROXY_PIDS+=("$SERVER_PID")
  wait_up "$addr" || { log "$name did not start"; tail -20 "$OUT/$name.log" >&2; return 1; }
  SERVER_PID=""
}

# cpu_ticks PID...: user+system CPU clock ticks the processes have used so far.
cpu_ticks() {
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}

# upstream_gets DIGEST: how many GETs of the blob the upstream has logged.
upstream_gets() { grep -c "\"GET /v2/$PROXY_REPO/blobs/$1 HTTP" "$OUT/proxy-upstream.log" || true; }

run_proxy() {
  local up_port dy_port ref_port
  up_port=$("$LG" freeport) && dy_port=$("$LG" freeport) && ref_port=$("$LG" freeport) || return 1
  UP_ADDR=127.0.0.1:$up_port DYP_ADDR=127.0.0.1:$dy_port REFP_ADDR=127.0.0.1:$ref_port
  mkdir -p "$TMP/upstream" "$TMP/dockyard-proxy" "$TMP/reference-proxy"
  # The upstream keeps its access log on: it counts the proxies' fetches.
  cat >"$TMP/upstream.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $TMP/upstream
  cache:
    blobdescriptor: inmemory
http:
  addr: $UP_ADDR
EOF
  cat >"$TMP/reference-proxy.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/reference-proxy
  cache:
    blobdescriptor: inmemory
http:
  addr: $REFP_ADDR
proxy:
  remoteurl: http://$UP_ADDR
EOF
  cat >"$TMP/dockyard-proxy.yml" <<EOF
registries:
  - name: up
    type: proxy
    upstream: {url: "http://$UP_ADDR", tag_ttl: 10m}
routes:
  - {host: "*", registry: up}
EOF
  start_proxy_server proxy-upstream "$UP_ADDR" env OTEL_TRACES_EXPORTER=none "$TOOLS/registry" serve "$TMP/upstream.yml" || return 1
  local up_pid=${PROXY_PIDS[-1]}
  start_proxy_server proxy-dockyard "$DYP_ADDR" env DOCKYARD_LOG_LEVEL=info \
    bin/dockyard serve --config "$TMP/dockyard-proxy.yml" --listen "$DYP_ADDR" --data "$TMP/dockyard-proxy" || return 1
  local dy_pid=${PROXY_PIDS[-1]}
  start_proxy_server proxy-reference "$REFP_ADDR" env OTEL_TRACES_EXPORTER=none "$TOOLS/registry" serve "$TMP/reference-proxy.yml" || return 1
  local ref_pid=${PROXY_PIDS[-1]}

  log "proxy: pushing $((PROXY_REPS + 2)) blobs of ${PROXY_MIB} MiB to the upstream"
  timeout 120 "$LG" proxy-setup -addr "$UP_ADDR" -repo "$PROXY_REPO" -mib "$PROXY_MIB" -count $((PROXY_REPS + 2)) >"$TMP/proxy-setup.env" || return 1
  # shellcheck disable=SC1091
  . "$TMP/proxy-setup.env"
  local d n name addr before mode key verify ticks pids
  : >"$PROXY_ENV"

  # $PROXY_PULLS cold pulls of one blob: straight from the upstream, then through each
  # proxy (which has never seen it), then once more warm through each proxy. Clients
  # hash what they get, as docker and containerd do; a second round on another blob
  # has the clients only count bytes, to show the servers' share of the time.
  for mode in COLD:"$PROXY_DIGEST_1" RAW:"$PROXY_DIGEST_2"; do
    d=${mode#*:} mode=${mode%%:*}
    verify=-verify
    [ "$mode" = RAW ] && verify=""
    for name in UP:"$UP_ADDR" DY:"$DYP_ADDR" REF:"$REFP_ADDR"; do
      addr=${name#*:} name=${name%%:*} key=${mode}_$name
      pids=("$up_pid")
      [ "$name" = DY ] && pids+=("$dy_pid")
      [ "$name" = REF ] && pids+=("$ref_pid")
      sync
      before=$(upstream_gets "$d") ticks=$(cpu_ticks "${pids[@]}")
      log "proxy: $PROXY_PULLS concurrent cold GETs of a ${PROXY_MIB} MiB blob, $name ($addr)${verify:+, verified}"
      timeout 150 "$LG" pull -addr "$addr" -repo "$PROXY_REPO" -digest "$d" -size "$PROXY_SIZE" -n "$PROXY_PULLS" \
        $verify -key "$key" >>"$PROXY_ENV" || { log "proxy: $key pulls failed"; return 1; }
      echo "${key}_CPU_S=$(awk -v t=$(($(cpu_ticks "${pids[@]}") - ticks)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')" >>"$PROXY_ENV"
      sleep 0.5 # let the access log line of the last GET land
      echo "${key}_UPGETS=$(($(upstream_gets "$d") - before))" >>"$PROXY_ENV"
      [ "$name" = UP ] || [ "$mode" = RAW ] && continue
      before=$(upstream_gets "$d")
      timeout 60 "$LG" pull -addr "$addr" -repo "$PROXY_REPO" -digest "$d" -size "$PROXY_SIZE" -n 1 \
        -verify -key "WARM_$name" >>"$PROXY_ENV" || { log "proxy: $name warm pull failed"; return 1; }
      sleep 0.5
      echo "WARM_${name}_UPGETS=$(($(upstream_gets "$d") - before))" >>"$PROXY_ENV"
    done
  done

  # Time to first byte of a cold blob, one fresh blob per run.
  local ds=""
  for n in $(seq 3 $((PROXY_REPS + 2))); do
    d=PROXY_DIGEST_$n
    ds=$ds${ds:+,}${!d}
  done
  sync
  log "proxy: time to first byte of a cold ${PROXY_MIB} MiB blob, $PROXY_REPS runs"
  timeout 150 "$LG" ttfb -targets "up=$UP_ADDR,dy=$DYP_ADDR,ref=$REFP_ADDR" -repo "$PROXY_REPO" -digests "$ds" \
    -size "$PROXY_SIZE" >>"$PROXY_ENV" || { log "proxy: TTFB runs failed"; return 1; }
  echo "TTFB_UPGETS=$(for x in ${ds//,/ }; do upstream_gets "$x"; done | paste -sd,)" >>"$PROXY_ENV"

  echo "DY_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$dy_pid/status")" >>"$PROXY_ENV"
  echo "REF_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$ref_pid/status")" >>"$PROXY_ENV"
  echo "DY_CACHED_LOGS=$(grep -c 'cached upstream blob' "$OUT/proxy-dockyard.log" || true)" >>"$PROXY_ENV"
  echo "DY_NOT_CACHED_LOGS=$(grep -c 'upstream blob not cached' "$OUT/proxy-dockyard.log" || true)" >>"$PROXY_ENV"
  cat "$PROXY_ENV" >&2
}

if [ "$ONLY" != hosted ]; then
  if ! run_proxy; then
    PROXY_FAILED=1
    log "proxy: FAILED (see above and $OUT/proxy-*.log)"
  fi
  for p in "${PROXY_PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PROXY_PIDS=()
  rm -rf "$TMP/upstream" "$TMP/dockyard-proxy" "$TMP/reference-proxy"
fi

# --- table -------------------------------------------------------------------------
get() { awk -F= -v k="$2" '$1 == k {print $2}' "$OUT/$1.env"; }
# ratio A B: A/B with two decimals, or n/a.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
# meets RATIO MIN: yes/NO.
meets() { awk -v r="$1" -v m="$2" 'BEGIN { if (r == "n/a") print "-"; else if (r + 0 >= m) print "yes"; else print "NO" }'; }

# pget KEY: a result of the proxy part, FAIL when it is missing after a failure.
pget() {
  local v
  v=$(awk -F= -v k="$1" '$1 == k {print $2}' "$PROXY_ENV" 2>/dev/null)
  if [ -z "$v" ] && [ -n "$PROXY_FAILED" ]; then v=FAIL; fi
  echo "$v"
}
# atmost RATIO MAX: yes/NO, for a ratio that must stay at or below MAX.
atmost() { awk -v r="$1" -v m="$2" 'BEGIN { if (r == "n/a") print "-"; else if (r + 0 <= m) print "yes"; else print "NO" }'; }
# rx A B: the ratio A/B as "1.23x", or n/a.
rx() { local q; q=$(ratio "$1" "$2"); [ "$q" = n/a ] && echo n/a || echo "${q}x"; }
prow() { printf '%-38s %9s %9s %9s %7s %7s  %-22s %s\n' "$@"; }
proxy_table() {
  local u d r
  echo
  echo "proxy: dockyard (type: proxy) and the reference registry in proxy mode, both with empty caches, in front"
  echo "of a plain reference registry (the upstream) on loopback; ${PROXY_MIB} MiB blobs, new content for each measurement"
  prow "workload" "upstream" "dockyard" "ref-proxy" "dy/up" "ref/dy" "target" "met"
  prow "--------" "--------" "--------" "---------" "-----" "------" "------" "---"
  u=$(pget COLD_UP_SECONDS) d=$(pget COLD_DY_SECONDS) r=$(pget COLD_REF_SECONDS)
  prow "${PROXY_PULLS}x cold blob GET, aggregate (s)" "$u" "$d" "$r" "$(rx "$d" "$u")" "$(rx "$r" "$d")" \
    "dy/up <= 1.2x" "$(atmost "$(ratio "$d" "$u")" 1.2)"
  prow "  aggregate throughput (GB/s)" "$(pget COLD_UP_GBPS)" "$(pget COLD_DY_GBPS)" "$(pget COLD_REF_GBPS)" "" "" "" ""
  u=$(pget COLD_UP_CPU_S) d=$(pget COLD_DY_CPU_S) r=$(pget COLD_REF_CPU_S)
  prow "  server CPU, proxy + upstream (s)" "$u" "$d" "$r" "$(rx "$d" "$u")" "$(rx "$r" "$d")" "" ""
  u=$(pget RAW_UP_SECONDS) d=$(pget RAW_DY_SECONDS) r=$(pget RAW_REF_SECONDS)
  prow "  same, clients not hashing (s)" "$u" "$d" "$r" "$(rx "$d" "$u")" "$(rx "$r" "$d")" "" ""
  u=$(pget RAW_UP_CPU_S) d=$(pget RAW_DY_CPU_S) r=$(pget RAW_REF_CPU_S)
  prow "    server CPU, proxy + upstream (s)" "$u" "$d" "$r" "$(rx "$d" "$u")" "$(rx "$r" "$d")" "" ""
  prow "  slowest first byte (ms)" "$(pget COLD_UP_TTFB_MAX_MS)" "$(pget COLD_DY_TTFB_MAX_MS)" "$(pget COLD_REF_TTFB_MAX_MS)" "" "" "" ""
  d="$(pget COLD_DY_UPGETS)/$(pget RAW_DY_UPGETS) (+$(pget WARM_DY_UPGETS))"
  prow "  upstream blob GETs: 2 rounds (+warm)" "$(pget COLD_UP_UPGETS)/$(pget RAW_UP_UPGETS)" "$d" \
    "$(pget COLD_REF_UPGETS)/$(pget RAW_REF_UPGETS) (+$(pget WARM_REF_UPGETS))" "" "" "dockyard: 1/1 (+0)" \
    "$(case "$d" in "1/1 (+0)") echo yes ;; *FAIL*) echo - ;; *) echo NO ;; esac)"
  u=$(pget TTFB_UP_MS) d=$(pget TTFB_DY_MS) r=$(pget TTFB_REF_MS)
  prow "cold blob TTFB, median of $PROXY_REPS (ms)" "$u" "$d" "$r" "$(rx "$d" "$u")" "$(rx "$r" "$d")" \
    "dy <= up + 100 ms" "$(awk -v d="$d" -v u="$u" 'BEGIN { if (d !~ /^[0-9.]+$/ || u !~ /^[0-9.]+$/) print "-"; else if (d + 0 <= u + 100) print "yes"; else print "NO" }')"
  u=$(pget FULL_UP_S) d=$(pget FULL_DY_S) r=$(pget FULL_REF_S)
  prow "  same GETs, to last byte (s)" "$u" "$d" "$r" "$(rx "$d" "$u")" "$(rx "$r" "$d")" "" ""
  prow "  wait for the last byte (ms)" "$(pget TAIL_UP_MS)" "$(pget TAIL_DY_MS)" "$(pget TAIL_REF_MS)" "" "" "" ""
  d=$(pget DY_HWM_KB) r=$(pget REF_HWM_KB)
  if [ "$d" != FAIL ] && [ -n "$d" ]; then
    d=$(awk -v k="$d" 'BEGIN {printf "%.1f", k / 1024}') r=$(awk -v k="$r" 'BEGIN {printf "%.1f", k / 1024}')
  fi
  prow "proxy peak RSS, VmHWM (MiB)" "" "$d" "$r" "" "" "dockyard < 150 MiB" \
    "$(awk -v m="$d" 'BEGIN { if (m == "" || m == "FAIL") print "-"; else print (m + 0 < 150) ? "yes" : "NO" }')"
  echo
  echo "cold GETs: $PROXY_PULLS clients start together, first request to last byte of the last client; upstream = the"
  echo "same GETs sent straight to the upstream; clients hash (sha256) as they read, but not in the 'not hashing' round."
  echo "server CPU: user+system time of the upstream (and the proxy) during the round; steadier than wall time on a"
  echo "shared machine."
  echo "TTFB: first request to first body byte, one new blob per run, sync before each GET; dockyard sends the last"
  echo "byte only once the blob is verified and fsynced (the 'wait for the last byte' row)."
  printf 'TTFB runs (ms): upstream %s | dockyard %s | ref-proxy %s\n' "$(pget TTFB_UP_MS_ALL)" "$(pget TTFB_DY_MS_ALL)" "$(pget TTFB_REF_MS_ALL)"
  echo "upstream GETs of each TTFB blob (upstream + dockyard + ref-proxy): $(pget TTFB_UPGETS);" \
    "dockyard logged $(pget DY_CACHED_LOGS) blobs cached, $(pget DY_NOT_CACHED_LOGS) failed (want $((PROXY_REPS + 2)) and 0)."
  echo "ratio: dy/up is dockyard/upstream (1 = as fast as the origin); ref/dy is ref-proxy/dockyard (above 1: dockyard better)."
  if [ -n "$PROXY_FAILED" ]; then
    echo "PROXY PART FAILED: see the bench log and test-results/bench/proxy-*.log"
  fi
}
row() { printf '%-38s %12s %12s %9s  %-22s %s\n' "$@"; }
{
  echo "dockyard benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t2 -c$CONNS -d${DURATION}s"
  echo "reference: CNCF distribution registry v3.1.2 (filesystem, inmemory blob descriptor cache)"
  if [ "$ONLY" != proxy ]; then
  echo
  row "workload" "dockyard" "reference" "ratio" "target" "met"
  row "--------" "--------" "---------" "-----" "------" "---"
  for k in MANIFEST_RPS:"manifest GET by tag (req/s)" SMALL_RPS:"2 KiB blob GET (req/s)"; do
    d=$(get dockyard "${k%%:*}"); r=$(get reference "${k%%:*}"); q=$(ratio "$d" "$r")
    row "${k#*:}" "$(printf %.0f "$d")" "$(printf %.0f "$r")" "${q}x" "dy/ref >= 10x" "$(meets "$q" 10)"
  done
  d=$(get dockyard PULL_SECONDS); r=$(get reference PULL_SECONDS); q=$(ratio "$r" "$d")
  row "${PULLS}x ${BIG_MIB} MiB blob GET (s)" "$d" "$r" "${q}x" "ref/dy >= 1x" "$(meets "$q" 1)"
  row "  aggregate throughput (GB/s)" "$(get dockyard PULL_GBPS)" "$(get reference PULL_GBPS)" "" "" ""
  ref_mono=$(get reference PUSH_MONO)
  for k in PUSH_MONO:"push ${PUSH_MIB} MiB, POST+PUT (s)" PUSH_POSTDIGEST:"push ${PUSH_MIB} MiB, POST ?digest= (s)" \
    PUSH_CHUNKED:"push ${PUSH_MIB} MiB, 4 PATCH chunks (s)"; do
    d=$(get dockyard "${k%%:*}"); r=$(get reference "${k%%:*}")
    if [ "$r" = "n/a" ]; then # the reference cannot do it: compare with its POST+PUT
      q=$(ratio "$ref_mono" "$d"); r="n/a (*)"
    else
      q=$(ratio "$r" "$d")
    fi
    row "${k#*:}" "$d" "$r" "${q}x" "ref/dy >= 2x" "$(meets "$q" 2)"
  done
  dy_hwm=$(get dockyard HWM_KB); ref_hwm=$(get reference HWM_KB)
  dy_mib=$(awk -v k="$dy_hwm" 'BEGIN {printf "%.1f", k / 1024}')
  row "peak RSS, VmHWM (MiB)" "$dy_mib" "$(awk -v k="$ref_hwm" 'BEGIN {printf "%.1f", k / 1024}')" "" "dockyard < 150 MiB" \
    "$(awk -v m="$dy_mib" 'BEGIN { print (m + 0 < 150) ? "yes" : "NO" }')"
  echo
  echo "ratio: req/s rows are dockyard/reference, time rows are reference/dockyard; above 1 means dockyard is better."
  echo "push times: median of $REPS, first request to 201; every push uploads new content. Runs (s):"
  for n in dockyard reference; do
    printf '  %-9s POST+PUT %s | POST ?digest= %s | chunked %s\n' "$n" \
      "$(get $n PUSH_MONO_ALL)" "$(get $n PUSH_POSTDIGEST_ALL)" "$(get $n PUSH_CHUNKED_ALL)"
  done
  if [ "$(get reference PUSH_POSTDIGEST)" = "n/a" ]; then
    echo "(*) the reference registry ignores POST ?digest= (opens a session, 202); ratio is against its POST+PUT."
  fi
  fi # hosted part
  if [ "$ONLY" != hosted ]; then
    proxy_table
  fi
} | tee "$OUT/summary.txt"
[ -z "$PROXY_FAILED" ] || exit 1
