#!/usr/bin/env bash
# dockyard benchmark (`make bench`): runs the same workloads against dockyard and the
# CNCF reference registry, one after the other on loopback, and prints both numbers,
# their ratio and the target. Absolute numbers on a shared machine are noise; the
# ratios are the result. Exits 0 even when targets are missed; non-zero only when
# something broke.
#
# Knobs (environment): BENCH_DURATION (wrk seconds, default 10), BENCH_WARMUP (2),
# BENCH_BIG_MIB (512), BENCH_PUSH_MIB (256), BENCH_PULLS (8), BENCH_REPS (3).
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
CONNS=32
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'

for t in wrk curl "$TOOLS/registry" bin/dockyard; do
  command -v "$t" >/dev/null 2>&1 || { echo "bench: $t is missing (run make tools build)"; exit 2; }
done

rm -rf "$OUT"
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-bench.XXXXXX")
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

log "building loadgen"
go build -o "$TMP/loadgen" ./test/bench/loadgen
LG=$TMP/loadgen

log "generating ${BIG_MIB} MiB and ${PUSH_MIB} MiB random files"
head -c $((BIG_MIB << 20)) /dev/urandom >"$TMP/big.bin"
head -c $((PUSH_MIB << 20)) /dev/urandom >"$TMP/push.bin"
BIG_DIGEST=sha256:$(sha256sum "$TMP/big.bin" | cut -d' ' -f1)

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

# --- table -------------------------------------------------------------------------
get() { awk -F= -v k="$2" '$1 == k {print $2}' "$OUT/$1.env"; }
# ratio A B: A/B with two decimals, or n/a.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
# meets RATIO MIN: yes/NO.
meets() { awk -v r="$1" -v m="$2" 'BEGIN { if (r == "n/a") print "-"; else if (r + 0 >= m) print "yes"; else print "NO" }'; }

row() { printf '%-38s %12s %12s %9s  %-22s %s\n' "$@"; }
{
  echo "dockyard benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t2 -c$CONNS -d${DURATION}s"
  echo "reference: CNCF distribution registry v3.1.2 (filesystem, inmemory blob descriptor cache)"
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
} | tee "$OUT/summary.txt"
