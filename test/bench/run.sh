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
# runs); auth part: BENCH_AUTH_REPS (3 interleaved rounds of the three modes; the table
# shows medians), BENCH_AUTH_PROFILE (1: profile dockyard with perf for a few seconds per
# mode when perf works, 0: never); lifecycle part: BENCH_GC_BLOBS (100000),
# BENCH_GC_MANIFESTS (10000), BENCH_RET_TAGS (10000); s3 part (both registries on one
# versitygw): BENCH_S3_MIB (128), BENCH_S3_PULLS (4), BENCH_S3_PUSHN (16 concurrent pushes
# for the RSS row); cluster part (three dockyards behind nginx on PostgreSQL and one
# bucket, one dockyard on the same, the reference on S3): BENCH_CLUSTER_MIB (32),
# BENCH_CLUSTER_PUSHN (12), BENCH_PAGES_N (100000 tags in one repository, and
# repositories), BENCH_CLUSTER_GC_BLOBS (20000); BENCH_ONLY=hosted, proxy, auth,
# lifecycle, s3 or cluster runs one part alone (development).
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
AUTH_REPS=${BENCH_AUTH_REPS:-3}
AUTH_PROFILE=${BENCH_AUTH_PROFILE:-1}
GC_BLOBS=${BENCH_GC_BLOBS:-100000}
GC_MANIFESTS=${BENCH_GC_MANIFESTS:-10000}
RET_TAGS=${BENCH_RET_TAGS:-10000}
S3_MIB=${BENCH_S3_MIB:-128}
S3_PULLS=${BENCH_S3_PULLS:-4}
S3_PUSHN=${BENCH_S3_PUSHN:-16}
CL_MIB=${BENCH_CLUSTER_MIB:-32}
CL_PUSHN=${BENCH_CLUSTER_PUSHN:-12}
PAGES_N=${BENCH_PAGES_N:-100000}
CL_GC_BLOBS=${BENCH_CLUSTER_GC_BLOBS:-20000}
ONLY=${BENCH_ONLY:-}
case "$ONLY" in "" | hosted | proxy | auth | lifecycle | s3 | cluster) ;; *) echo "bench: BENCH_ONLY must be hosted, proxy, auth, lifecycle, s3 or cluster"; exit 2 ;; esac
# part NAME: whether this run includes that part.
part() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
CONNS=32
# The reference registry runs with its access log off; so does dockyard here.
export DOCKYARD_LOG_ACCESS=false
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json'

tools=(go)
# Every part but lifecycle (which builds its own program on the Go API) drives servers.
[ "$ONLY" = lifecycle ] || tools+=(wrk curl "$TOOLS/registry" bin/dockyard)
part auth && tools+=(htpasswd)
part s3 && tools+=("$TOOLS/versitygw")
part cluster && tools+=("$TOOLS/versitygw" nginx)
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || { echo "bench: $t is missing (run make tools build)"; exit 2; }
done

rm -rf "$OUT"
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dockyard-bench.XXXXXX")
SERVER_PID=""
PROXY_PIDS=() # the proxy part's servers, all running at once
AUX_PIDS=()   # background load and profilers of the auth part
declare -A AUTH_PID=() # the auth part's servers by mode, all running at once
CLUSTER_PIDS=()        # the cluster part's servers
cleanup() {
  local p
  for p in "${AUX_PIDS[@]}" "$SERVER_PID" "${PROXY_PIDS[@]}" "${AUTH_PID[@]}" "${CLUSTER_PIDS[@]}"; do
    [ -n "$p" ] || continue
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  [ -z "${PG_DIR:-}" ] || remove_pg
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# shellcheck source=../servers.sh
. "$ROOT/test/servers.sh"

log() { echo "bench: $*" >&2; }

log "building loadgen"
go build -o "$TMP/loadgen" ./test/bench/loadgen
LG=$TMP/loadgen

if part hosted; then
  log "generating ${BIG_MIB} MiB and ${PUSH_MIB} MiB random files"
  head -c $((BIG_MIB << 20)) /dev/urandom >"$TMP/big.bin"
  head -c $((PUSH_MIB << 20)) /dev/urandom >"$TMP/push.bin"
  BIG_DIGEST=sha256:$(sha256sum "$TMP/big.bin" | cut -d' ' -f1)
fi

# wait_up ADDR: waits until /v2/ answers (200, or 401 when auth is on).
wait_up() {
  local code
  for _ in $(seq 1 100); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$1/v2/" 2>/dev/null) || code=000
    case $code in 200 | 401) return 0 ;; esac
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# cpu_ticks PID...: user+system CPU clock ticks the processes have used so far.
cpu_ticks() {
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}

# wrk_rps NAME URL [HEADER...]: warms up, then measures; prints requests/s. Fails when
# any response was not 2xx/3xx or sockets failed. With WRK_CPU_PID set, writes that
# process's CPU clock ticks during the measured run to NAME.cpu.
wrk_rps() {
  local name=$1 url=$2; shift 2
  local hdr=() h ticks
  for h in "$@"; do hdr+=(-H "$h"); done
  timeout $((WARMUP + 30)) wrk -t2 -c$CONNS -d${WARMUP}s "${hdr[@]}" "$url" >/dev/null
  [ -z "${WRK_CPU_PID:-}" ] || ticks=$(cpu_ticks "$WRK_CPU_PID")
  timeout $((DURATION + 30)) wrk -t2 -c$CONNS -d${DURATION}s --latency "${hdr[@]}" "$url" >"$OUT/$name.wrk"
  [ -z "${WRK_CPU_PID:-}" ] || echo $(($(cpu_ticks "$WRK_CPU_PID") - ticks)) >"$OUT/$name.cpu"
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

if part hosted; then
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

if part proxy; then
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

# --- auth: what authentication costs -----------------------------------------------
# Manifest GET by tag on dockyard with the same wrk load in three modes, one server
# each, all started up front and measured in interleaved rounds (anonymous, token,
# basic, anonymous, ...) so that a noisy neighbour hurts every mode alike:
#   anonymous: no auth configured;
#   token: one Bearer JWT fetched once with curl from the realm of the 401 challenge and
#     sent on every request (dockyard verifies its ES256 signature each time);
#   basic: user and password on every request (dockyard caches a successful bcrypt
#     check for a minute; each round logs in a user of its own right before it, so every
#     round measures the cached path while BENCH_WARMUP + BENCH_DURATION stay under a
#     minute; longer runs include the bcrypt checks of the cache's expiry).
# Before measuring, the script checks that auth is enforced (anonymous and bad
# credentials get 401). Failures are reported in the table (FAIL) and make the script
# exit non-zero after printing it.
AUTH_ENV=$OUT/auth.env
AUTH_FAILED=""
AUTH_PASS=bench-$RANDOM$RANDOM
AUTH_REPO=bench/app
AUTH_KEYS=(ANON TOKEN BASIC)
declare -A AUTH_MODE=([ANON]=none [TOKEN]=token [BASIC]=basic)
declare -A AUTH_URL=() AUTH_AUTHZ=()

# http_code CURL-ARGS...: the status code curl gets (000 when it got none).
http_code() { curl -sS -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true; }

# expect_code WANT WHAT CURL-ARGS...: fails unless curl gets status WANT.
expect_code() {
  local want=$1 what=$2 got
  shift 2
  got=$(timeout 30 curl -sS -o /dev/null -w '%{http_code}' "$@" 2>/dev/null) || true
  [ "$got" = "$want" ] && return 0
  log "auth: $what: status ${got:-none}, want $want"
  return 1
}

# challenge ADDR: the WWW-Authenticate header of an anonymous GET /v2/.
challenge() {
  timeout 30 curl -sS -o /dev/null -D - "http://$1/v2/" 2>/dev/null | tr -d '\r' |
    sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: *//p'
}

# basic_authz USER: the Authorization header value of Basic auth as USER.
basic_authz() { echo "Basic $(printf '%s:%s' "$1" "$AUTH_PASS" | base64 -w0)"; }

# basic_login KEY USER: logs USER in on the basic server (dockyard checks bcrypt and
# caches the login for a minute) and makes them the user of the next measurement.
basic_login() {
  AUTH_AUTHZ[$1]=$(basic_authz "$2")
  expect_code 200 "basic: manifest GET as $2" -H "$ACCEPT" -H "Authorization: ${AUTH_AUTHZ[$1]}" "${AUTH_URL[$1]}"
}

# auth_start KEY: starts dockyard in the key's auth mode, pushes the test image with
# credentials and checks that auth is enforced. Fills AUTH_PID, AUTH_URL, AUTH_AUTHZ.
auth_start() {
  local key=$1 mode=${AUTH_MODE[$1]} name=auth-${1,,} port addr cfg ch realm service json token sig c i subjects=""
  cfg=$TMP/$name.yml
  for ((i = 0; i <= AUTH_REPS + 1; i++)); do subjects+=${subjects:+, }user:bench$i; done
  port=$("$LG" freeport) || return 1
  addr=127.0.0.1:$port
  mkdir -p "$TMP/$name"
  {
    echo "log: {level: warn}"
    [ "$mode" = none ] || cat <<EOF
auth:
  mode: $mode
  users_file: $TMP/auth-users.htpasswd
  token: {ttl: 1h}
  rules:
    - {subjects: [$subjects], registries: ["*"], repositories: ["**"], actions: [pull, push, delete]}
EOF
  } >"$cfg"
  log "auth: starting dockyard (auth mode $mode) on $addr"
  DOCKYARD_LOG_LEVEL=warn bin/dockyard serve --config "$cfg" --listen "$addr" --data "$TMP/$name" >"$OUT/$name.log" 2>&1 &
  SERVER_PID=$!
  AUTH_PID[$key]=$SERVER_PID
  wait_up "$addr" || { log "auth: dockyard ($mode) did not start"; tail -20 "$OUT/$name.log" >&2; SERVER_PID=""; return 1; }
  SERVER_PID=""
  ch=$(challenge "$addr")
  AUTH_AUTHZ[$key]=""
  case $mode in
  none)
    [ -z "$ch" ] || { log "auth: none: GET /v2/ challenges ($ch)"; return 1; }
    ;;
  token)
    case $ch in Bearer\ *realm=*service=*) ;; *) log "auth: token: GET /v2/ challenge is '$ch', want Bearer realm=...,service=..."; return 1 ;; esac
    realm=$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$ch")
    service=$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$ch")
    log "auth: token: fetching one token from $realm (service $service, scope repository:$AUTH_REPO:pull,push)"
    json=$(timeout 30 curl -fsS -u "bench0:$AUTH_PASS" -G "$realm" --data-urlencode "service=$service" \
      --data-urlencode "scope=repository:$AUTH_REPO:pull,push") || { log "auth: token: the token request failed"; return 1; }
    token=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' <<<"$json")
    [ -n "$token" ] || { log "auth: token: no token in the answer: $json"; return 1; }
    AUTH_AUTHZ[$key]="Bearer $token"
    echo "TOKEN_BYTES=${#token}" >>"$AUTH_ENV"
    ;;
  basic)
    case $ch in Basic\ *) ;; *) log "auth: basic: GET /v2/ challenge is '$ch', want Basic"; return 1 ;; esac
    AUTH_AUTHZ[$key]=$(basic_authz bench0)
    ;;
  esac
  log "auth: $mode: pushing the test image${AUTH_AUTHZ[$key]:+ with credentials}"
  timeout 60 "$LG" setup -addr "$addr" -repo "$AUTH_REPO" -auth "${AUTH_AUTHZ[$key]}" >"$TMP/$name-setup.env" || return 1
  AUTH_URL[$key]=$(sed -n 's/^MANIFEST_URL=//p' "$TMP/$name-setup.env")
  [ -n "${AUTH_URL[$key]}" ] || return 1
  case $mode in
  token)
    expect_code 401 "token: anonymous manifest GET" -H "$ACCEPT" "${AUTH_URL[$key]}" || return 1
    sig=${token##*.} c=A
    [ "${sig:0:1}" = A ] && c=B
    expect_code 401 "token: manifest GET with a bad signature" -H "$ACCEPT" \
      -H "Authorization: Bearer ${token%.*}.$c${sig:1}" "${AUTH_URL[$key]}" || return 1
    ;;
  basic)
    expect_code 401 "basic: anonymous manifest GET" -H "$ACCEPT" "${AUTH_URL[$key]}" || return 1
    expect_code 401 "basic: manifest GET with a wrong password" -H "$ACCEPT" -u "bench0:wrong" "${AUTH_URL[$key]}" || return 1
    ;;
  esac
}

# auth_measure KEY ROUND: one wrk run of manifest GETs with the key's credentials;
# appends req/s and dockyard's CPU microseconds per request to the key's lists.
auth_measure() {
  local key=$1 round=$2 name=auth-${1,,}-$2 hdrs=("$ACCEPT") rps reqs ticks
  kill -0 "${AUTH_PID[$key]}" 2>/dev/null || { log "auth: dockyard (${AUTH_MODE[$key]}) is not running"; return 1; }
  [ "$key" != BASIC ] || basic_login "$key" "bench$round" || return 1
  [ -z "${AUTH_AUTHZ[$key]}" ] || hdrs+=("Authorization: ${AUTH_AUTHZ[$key]}")
  log "auth: round $round, ${AUTH_MODE[$key]}: manifest GET by tag (wrk -c$CONNS -d${DURATION}s)"
  rps=$(WRK_CPU_PID=${AUTH_PID[$key]} wrk_rps "$name" "${AUTH_URL[$key]}" "${hdrs[@]}") || return 1
  [ -n "$rps" ] || { log "auth: $name: no wrk result"; return 1; }
  reqs=$(awk '/ requests in / {print $1}' "$OUT/$name.wrk")
  ticks=$(cat "$OUT/$name.cpu")
  AUTH_RPS_ALL[$key]+=${AUTH_RPS_ALL[$key]:+,}$(printf %.0f "$rps")
  AUTH_CPU_ALL[$key]+=${AUTH_CPU_ALL[$key]:+,}$(awk -v t="$ticks" -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
}
declare -A AUTH_RPS_ALL=() AUTH_CPU_ALL=()

# median A,B,...: the median of a comma-separated list.
median() { tr , '\n' <<<"$1" | sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# perf_shares KEY < perf script -F ip,sym: KEY_PROF_* lines, the share (%) of the
# samples whose stack holds: the gateway's authenticate (AUTHN), the JWT check
# auth.(*Signer).Verify (VERIFY), the ECDSA signature check in it (ECDSA), JWT header
# and claims decoding (JWTDECODE), the login of Basic auth (LOGIN) and bcrypt (BCRYPT);
# KERNEL is samples in the kernel (network, scheduling). P-256 assembly leaves lose
# their callers in perf's frame-pointer unwinding; they count as ECDSA and JWT check
# (nothing else uses P-256 here).
perf_shares() {
  awk -v key="$1" '
    function flush(  i, fr, c) {
      if (!n) return
      total++
      delete c
      if (k[1]) c["KERNEL"] = 1
      if (f[1] ~ /p256|fips140\/nistec|fips140\/ecdsa|fips140\/bigmod/) c["VERIFY"] = c["ECDSA"] = 1
      for (i = 1; i <= n; i++) {
        fr = f[i]
        if (fr ~ /dockyard\/gateway\.\(\*Gateway\)\.authenticate$/) c["AUTHN"] = 1
        if (fr ~ /dockyard\/auth\.\(\*Signer\)\.Verify$/) c["VERIFY"] = 1
        if (fr ~ /^crypto\/ecdsa\./) c["ECDSA"] = 1
        if (fr ~ /jwt\/v5\.\(\*Parser\)\.ParseUnverified$/) c["JWTDECODE"] = 1
        if (fr ~ /dockyard\/auth\.\(\*Service\)\.Login$/) c["LOGIN"] = 1
        if (fr ~ /crypto\/(bcrypt|blowfish)\./) c["BCRYPT"] = 1
      }
      if (("VERIFY" in c) || ("LOGIN" in c)) c["AUTHN"] = 1
      for (i in c) cnt[i]++
      n = 0
    }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]*[0-9a-f]+ / { n++; k[n] = $1 ~ /^ffffffff/; sub(/^[ \t]*[0-9a-f]+ /, ""); f[n] = $0; next }
    END {
      flush()
      printf "%s_PROF_SAMPLES=%d\n", key, total
      split("AUTHN VERIFY ECDSA JWTDECODE LOGIN BCRYPT KERNEL", names, " ")
      for (i = 1; i <= 7; i++) printf "%s_PROF_%s=%.1f\n", key, names[i], total ? 100 * cnt[names[i]] / total : 0
    }'
}

# auth_profile KEY: profiles the key's dockyard with perf for a few seconds under the
# same load (after the measured rounds, so it disturbs none of them); writes the shares
# of its CPU samples spent in the auth code (perf_shares) to auth.env and the functions
# with the most samples to auth-KEY-perf.txt.
auth_profile() {
  local key=$1 hdr=(-H "$ACCEPT") secs=$((DURATION < 4 ? DURATION : 4)) wpid data=$TMP/perf.data
  [ "$key" != BASIC ] || basic_login "$key" "bench$((AUTH_REPS + 1))" || return 1
  [ -z "${AUTH_AUTHZ[$key]}" ] || hdr+=(-H "Authorization: ${AUTH_AUTHZ[$key]}")
  log "auth: ${AUTH_MODE[$key]}: profiling dockyard for $secs s under the same load"
  timeout $((secs + 30)) wrk -t2 -c$CONNS -d$((secs + 2))s "${hdr[@]}" "${AUTH_URL[$key]}" >"$OUT/auth-${key,,}-profile.wrk" &
  wpid=$!
  AUX_PIDS+=("$wpid")
  sleep 1
  timeout $((secs + 30)) perf record -q -F 499 -g -p "${AUTH_PID[$key]}" -o "$data" -- sleep "$secs" >/dev/null 2>&1 || true
  wait "$wpid" || true
  AUX_PIDS=()
  [ -s "$data" ] || { log "auth: perf recorded nothing"; return 0; }
  timeout 120 perf report -i "$data" --no-children --stdio --sort sym -g none --percent-limit 0.5 \
    >"$OUT/auth-${key,,}-perf.txt" 2>/dev/null || true
  timeout 120 perf script -i "$data" -F ip,sym 2>/dev/null | perf_shares "$key" >>"$AUTH_ENV"
  rm -f "$data"
}

run_auth() {
  local key round i failed=""
  : >"$AUTH_ENV"
  # bench0 pushes (and owns the token); benchN is round N's Basic user; the last one
  # is the profile's.
  : >"$TMP/auth-users.htpasswd"
  for ((i = 0; i <= AUTH_REPS + 1; i++)); do
    htpasswd -Bbn -C 10 "bench$i" "$AUTH_PASS" 2>/dev/null | sed '/^$/d' >>"$TMP/auth-users.htpasswd" ||
      { log "auth: htpasswd failed"; return 1; }
  done
  for key in "${AUTH_KEYS[@]}"; do
    auth_start "$key" || { log "auth: ${AUTH_MODE[$key]}: setup FAILED"; return 1; }
  done
  for ((round = 1; round <= AUTH_REPS && ! failed; round++)); do
    for key in "${AUTH_KEYS[@]}"; do
      auth_measure "$key" "$round" || { failed=1; log "auth: round $round, ${AUTH_MODE[$key]}: FAILED"; break; }
    done
  done
  for key in "${AUTH_KEYS[@]}"; do
    echo "${key}_RPS_ALL=${AUTH_RPS_ALL[$key]:-}"
    echo "${key}_CPU_US_ALL=${AUTH_CPU_ALL[$key]:-}"
    [ -n "$failed" ] || echo "${key}_RPS=$(median "${AUTH_RPS_ALL[$key]}")"
    [ -n "$failed" ] || echo "${key}_CPU_US=$(median "${AUTH_CPU_ALL[$key]}" | xargs printf %.1f)"
  done >>"$AUTH_ENV"
  if [ -n "$failed" ]; then
    :
  elif [ "$AUTH_PROFILE" = 1 ] && command -v perf >/dev/null 2>&1 &&
    perf record -q -o "$TMP/perf-probe.data" -- true >/dev/null 2>&1; then
    for key in "${AUTH_KEYS[@]}"; do auth_profile "$key" || { failed=1; break; }; done
  else
    log "auth: no CPU profiles (BENCH_AUTH_PROFILE=$AUTH_PROFILE, or perf is missing or not permitted)"
  fi
  log "auth: timing ES256 signature verification alone (1 s, one goroutine)"
  timeout 30 "$LG" es256 -seconds 1 >>"$AUTH_ENV" || log "auth: es256 timing failed"
  cat "$AUTH_ENV" >&2
  [ -z "$failed" ]
}

# stop_auth: stops the auth part's servers.
stop_auth() {
  local key
  for key in "${!AUTH_PID[@]}"; do
    kill "${AUTH_PID[$key]}" 2>/dev/null || true
    wait "${AUTH_PID[$key]}" 2>/dev/null || true
  done
  AUTH_PID=()
  rm -rf "$TMP"/auth-anon "$TMP"/auth-token "$TMP"/auth-basic "$TMP/perf-probe.data"
}

if part auth; then
  run_auth || AUTH_FAILED=1
  stop_auth
fi

# --- lifecycle: garbage collection and retention planning --------------------------
# No server: test/bench/lcbench builds a store through dockyard's Go API (cache,
# lifecycle, oci) and times the calls the scheduled jobs, `dockyard gc` and `dockyard
# lifecycle plan` make. The reference registry has no online GC or retention planning
# to compare with, and the issue sets no target: the rows are reported.
#   gc: $GC_BLOBS small blobs in 4 repositories, $GC_MANIFESTS tagged manifests
#     referencing them (13 blobs each, base layers shared), every other manifest
#     deleted one by one, then a 15 s pause (Badger finishes compacting what the setup
#     wrote, so the memory measured is the collection's) and CollectGarbage with no
#     grace: dry run, collection, second collection.
#   retention: $RET_TAGS tags in one repository, Engine.Plan with Semver + Candidates +
#     Snapshots + KeepLast, then 500 of the manifests it lets go deleted one by one.
# lcbench checks its results (what was collected; the plan decides every tag) and
# fails otherwise; failures are reported in the table (FAIL) and make the script exit
# non-zero after printing it.
LC_GC_ENV=$OUT/lifecycle-gc.env
LC_RET_ENV=$OUT/lifecycle-retention.env
LIFECYCLE_FAILED=""

# pprof_top PROFILE OUT: the profile's top functions, flat and cumulative.
pprof_top() {
  {
    echo "== flat"
    go tool pprof -top -nodecount=30 "$1" 2>/dev/null | sed 1,5d
    echo
    echo "== cumulative"
    go tool pprof -top -cum -nodecount=40 "$1" 2>/dev/null | sed 1,5d
  } >"$2" || true
}

run_lifecycle() {
  : >"$LC_GC_ENV"
  : >"$LC_RET_ENV"
  log "lifecycle: building lcbench"
  go build -o "$TMP/lcbench" ./test/bench/lcbench || { log "lifecycle: build FAILED"; return 1; }
  log "lifecycle: gc over $GC_BLOBS blobs and $GC_MANIFESTS manifests (setup takes a minute or two)"
  timeout 600 "$TMP/lcbench" gc -dir "$TMP/lc-gc" -blobs "$GC_BLOBS" -manifests "$GC_MANIFESTS" -settle 15s \
    -cpuprofile "$OUT/lifecycle-gc.cpu.pprof" -memprofile "$OUT/lifecycle-gc.heap.pprof" \
    >"$LC_GC_ENV" 2>"$OUT/lifecycle-gc.log" || { log "lifecycle: gc FAILED:"; tail -5 "$OUT/lifecycle-gc.log" >&2; return 1; }
  rm -rf "$TMP/lc-gc"
  cat "$LC_GC_ENV" >&2
  log "lifecycle: retention plan over $RET_TAGS tags"
  timeout 300 "$TMP/lcbench" retention -dir "$TMP/lc-ret" -tags "$RET_TAGS" \
    -cpuprofile "$OUT/lifecycle-plan.cpu.pprof" >"$LC_RET_ENV" 2>"$OUT/lifecycle-retention.log" ||
    { log "lifecycle: retention FAILED:"; tail -5 "$OUT/lifecycle-retention.log" >&2; return 1; }
  rm -rf "$TMP/lc-ret"
  cat "$LC_RET_ENV" >&2
  pprof_top "$OUT/lifecycle-gc.cpu.pprof" "$OUT/lifecycle-gc-cpu.txt"
  pprof_top "$OUT/lifecycle-plan.cpu.pprof" "$OUT/lifecycle-plan-cpu.txt"
  go tool pprof -sample_index=alloc_space -top -cum -nodecount=40 -base "$OUT/lifecycle-gc.heap.pprof.base" \
    "$OUT/lifecycle-gc.heap.pprof" 2>/dev/null | sed 1,5d >"$OUT/lifecycle-gc-alloc.txt" || true
}

if part lifecycle; then
  run_lifecycle || LIFECYCLE_FAILED=1
  rm -rf "$TMP/lc-gc" "$TMP/lc-ret"
fi

# --- s3: both registries with their blobs in one versitygw -------------------------
S3_FAILED=""
# run_s3_suite NAME: the S3 workloads against the server at $ADDR (pid $SERVER_PID),
# results in $OUT/s3-NAME.env.
run_s3_suite() {
  local name=$1 env="$OUT/s3-$1.env"
  : >"$env"
  log "s3 $name: pushing the test image and the ${S3_MIB} MiB blob"
  timeout 300 "$LG" setup -addr "$ADDR" -repo bench/app -big "$TMP/s3big.bin" -big-digest "$S3_DIGEST" >"$TMP/setup.env" || return 1
  # shellcheck disable=SC1091
  . "$TMP/setup.env"
  log "s3 $name: manifest GET by tag (wrk -c$CONNS -d${DURATION}s)"
  echo "MANIFEST_RPS=$(wrk_rps "s3-$name-manifest" "$MANIFEST_URL" "$ACCEPT")" >>"$env" || return 1
  log "s3 $name: $S3_PULLS concurrent GETs of the ${S3_MIB} MiB blob"
  timeout 300 "$LG" pull -addr "$ADDR" -repo bench/app -digest "$S3_DIGEST" -size "$BIG_SIZE" -n 1 >/dev/null || return 1
  local runs=() i
  for i in $(seq 1 "$REPS"); do
    timeout 300 "$LG" pull -addr "$ADDR" -repo bench/app -digest "$S3_DIGEST" -size "$BIG_SIZE" -n "$S3_PULLS" -verify >"$TMP/pull.env" || return 1
    runs+=("$(awk -F= '$1 == "PULL_SECONDS" {print $2}' "$TMP/pull.env")")
  done
  echo "PULL_SECONDS_ALL=$(IFS=,; echo "${runs[*]}")" >>"$env"
  echo "PULL_SECONDS=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (${#runs[@]} + 1) / 2 ))p")" >>"$env"
  log "s3 $name: pushing ${S3_MIB} MiB blobs ($REPS× monolithic, POST ?digest=, 8 chunks)"
  timeout 600 "$LG" push -addr "$ADDR" -repo bench/push -file "$TMP/s3big.bin" -reps "$REPS" -chunks 8 >>"$env" || return 1
  log "s3 $name: $S3_PUSHN concurrent ${S3_MIB} MiB pushes"
  timeout 900 "$LG" pushn -addr "$ADDR" -file "$TMP/s3big.bin" -n "$S3_PUSHN" >>"$env" || return 1
  echo "HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")" >>"$env"
  cat "$env" >&2
}

# s3_dockyard_config FILE BUCKET REDIRECT
s3_dockyard_config() {
  cat >"$1" <<YAML
log: {level: warn}
storage:
  driver: s3
  s3: {endpoint: "http://$S3_ADDR", bucket: $2, path_style: true, redirect: $3, access_key_id: bench, secret_access_key_env: BENCH_S3_SECRET}
YAML
}

run_s3() {
  local port
  head -c $((S3_MIB << 20)) /dev/urandom >"$TMP/s3big.bin"
  S3_DIGEST=sha256:$(sha256sum "$TMP/s3big.bin" | cut -d' ' -f1)
  port=$("$LG" freeport) || return 1
  S3_ADDR=127.0.0.1:$port
  mkdir -p "$TMP/s3/dockyard" "$TMP/s3/redirect" "$TMP/s3/reference"
  export BENCH_S3_SECRET=bench-secret-key
  log "starting versitygw on $S3_ADDR"
  ROOT_ACCESS_KEY='' ROOT_SECRET_KEY='' "$TOOLS/versitygw" --port "$S3_ADDR" --access bench --secret "$BENCH_S3_SECRET" \
    posix "$TMP/s3" >"$OUT/s3-versitygw.log" 2>&1 &
  AUX_PIDS+=($!)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://$S3_ADDR/" && break; sleep 0.1; done

  port=$("$LG" freeport) || return 1
  ADDR=127.0.0.1:$port
  s3_dockyard_config "$TMP/s3-dockyard.yml" dockyard false
  mkdir -p "$TMP/s3-dockyard-data"
  log "starting dockyard on S3 at $ADDR"
  bin/dockyard serve --config "$TMP/s3-dockyard.yml" --listen "$ADDR" --data "$TMP/s3-dockyard-data" >"$OUT/s3-dockyard.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$ADDR" || { log "dockyard on S3 did not start"; tail -20 "$OUT/s3-dockyard.log" >&2; return 1; }
  run_s3_suite dockyard || return 1
  stop_server

  port=$("$LG" freeport) || return 1
  ADDR=127.0.0.1:$port
  s3_dockyard_config "$TMP/s3-redirect.yml" redirect true
  mkdir -p "$TMP/s3-redirect-data"
  log "starting dockyard on S3 with redirect: true at $ADDR"
  bin/dockyard serve --config "$TMP/s3-redirect.yml" --listen "$ADDR" --data "$TMP/s3-redirect-data" >"$OUT/s3-redirect.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$ADDR" || { log "dockyard (redirect) did not start"; tail -20 "$OUT/s3-redirect.log" >&2; return 1; }
  timeout 300 "$LG" setup -addr "$ADDR" -repo bench/app -big "$TMP/s3big.bin" -big-digest "$S3_DIGEST" >"$TMP/setup.env" || return 1
  timeout 300 "$LG" pull -addr "$ADDR" -repo bench/app -digest "$S3_DIGEST" -size "$BIG_SIZE" -n 1 >/dev/null || return 1
  timeout 300 "$LG" pull -addr "$ADDR" -repo bench/app -digest "$S3_DIGEST" -size "$BIG_SIZE" -n "$S3_PULLS" -verify -key REDIRECT >"$OUT/s3-redirect.env" || return 1
  stop_server

  port=$("$LG" freeport) || return 1
  ADDR=127.0.0.1:$port
  cat >"$TMP/s3-reference.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: bench
    secretkey: $BENCH_S3_SECRET
    region: us-east-1
    regionendpoint: http://$S3_ADDR
    bucket: reference
    forcepathstyle: true
    secure: false
    v4auth: true
    rootdirectory: /
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: $ADDR
YAML
  log "starting the reference registry on S3 at $ADDR"
  OTEL_TRACES_EXPORTER=none "$TOOLS/registry" serve "$TMP/s3-reference.yml" >"$OUT/s3-reference.log" 2>&1 &
  SERVER_PID=$!
  wait_up "$ADDR" || { log "reference registry on S3 did not start"; tail -20 "$OUT/s3-reference.log" >&2; return 1; }
  run_s3_suite reference || return 1
  stop_server
}

if part s3; then
  run_s3 || { S3_FAILED=1; log "s3 part FAILED"; stop_server; }
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
# aget KEY: a result of the auth part, FAIL when it is missing after a failure.
aget() {
  local v
  v=$(awk -F= -v k="$1" '$1 == k {print $2}' "$AUTH_ENV" 2>/dev/null)
  if [ -z "$v" ] && [ -n "$AUTH_FAILED" ]; then v=FAIL; fi
  echo "$v"
}
arow() { printf '%-44s %9s %9s %11s %9s %10s\n' "$@"; }
auth_table() {
  local k label rps cpu a_rps a_cpu es secs=$((DURATION < 4 ? DURATION : 4))
  echo
  echo "auth: manifest GET by tag on dockyard alone, wrk -t2 -c$CONNS -d${DURATION}s keep-alive, credentials on every"
  echo "request; one dockyard per mode, median of $AUTH_REPS interleaved rounds"
  arow "mode" "req/s" "vs anon" "CPU us/req" "vs anon" "in auth %"
  arow "----" "-----" "-------" "----------" "-------" "---------"
  a_rps=$(aget ANON_RPS) a_cpu=$(aget ANON_CPU_US)
  for k in ANON:"anonymous (no auth configured)" TOKEN:"token: Bearer JWT (ES256)" BASIC:"basic: Basic user:password"; do
    label=${k#*:} k=${k%%:*}
    rps=$(aget "${k}_RPS") cpu=$(aget "${k}_CPU_US")
    arow "$label" "$(case $rps in "" | FAIL) echo "${rps:--}" ;; *) printf %.0f "$rps" ;; esac)" \
      "$(rx "$rps" "$a_rps")" "${cpu:--}" "$(rx "$cpu" "$a_cpu")" "$(aget "${k}_PROF_AUTHN")"
  done
  echo
  echo "vs anon: the mode's req/s / anonymous req/s (1.00x: auth costs nothing, 0.50x: half the throughput)."
  echo "CPU us/req: dockyard's user+system CPU during the measured run / requests served, and the mode's / anonymous"
  echo "(the cost of auth per request). wrk shares the $(nproc) cores with the server: req/s understates the"
  echo "server-side cost, CPU per request does not."
  printf 'runs, req/s: anonymous %s | token %s | basic %s\n' "$(aget ANON_RPS_ALL)" "$(aget TOKEN_RPS_ALL)" "$(aget BASIC_RPS_ALL)"
  printf 'runs, CPU us/req: anonymous %s | token %s | basic %s\n' "$(aget ANON_CPU_US_ALL)" "$(aget TOKEN_CPU_US_ALL)" "$(aget BASIC_CPU_US_ALL)"
  echo "token: one token (scope repository:$AUTH_REPO:pull,push, $(aget TOKEN_BYTES) bytes) fetched once with curl from the"
  echo "realm of the 401 challenge and sent on every request; dockyard checks its ES256 signature, issuer, audience"
  echo "and expiry on every request (a token seen before skips the signature check). basic: dockyard checks bcrypt (cost 10) once per user, then accepts"
  echo "the password for a minute from its login cache (sha256 compare); each round logs a user of its own in just"
  echo "before it, so runs shorter than a minute measure the cached path."
  echo "Checked first: anonymous GETs, a token with a bad signature and a wrong password get 401; wrk saw only 2xx."
  if [[ $(aget TOKEN_PROF_SAMPLES) =~ ^[0-9]+$ ]]; then
    echo "in auth %: share of dockyard's CPU samples in the gateway's authenticate (perf -F 499 -g, $secs s under the"
    echo "same load after the rounds). Breakdown, % of samples (P-256 assembly, whose callers perf loses, counted as"
    echo "ECDSA):"
    printf '  token: JWT check %s%% (ECDSA P-256 signature %s%%, base64 and JSON decoding %s%%); kernel %s%%\n' \
      "$(aget TOKEN_PROF_VERIFY)" "$(aget TOKEN_PROF_ECDSA)" "$(aget TOKEN_PROF_JWTDECODE)" "$(aget TOKEN_PROF_KERNEL)"
    printf '  basic: login %s%% (bcrypt %s%%); kernel %s%%. anonymous: kernel %s%%. Top functions: auth-*-perf.txt\n' \
      "$(aget BASIC_PROF_LOGIN)" "$(aget BASIC_PROF_BCRYPT)" "$(aget BASIC_PROF_KERNEL)" "$(aget ANON_PROF_KERNEL)"
  else
    echo "in auth %: no CPU profile (perf missing or not permitted, or BENCH_AUTH_PROFILE=0)."
  fi
  es=$(aget ES256_VERIFY_US)
  if [[ $es =~ ^[0-9.]+$ ]]; then
    echo "ES256 signature verification alone (crypto/ecdsa, one goroutine): $es us; $(nproc) cores can check at most" \
      "$(awk -v u="$es" -v c="$(nproc)" 'BEGIN {printf "%.0f", c * 1e6 / u}') tokens/s."
  fi
  if [ -n "$AUTH_FAILED" ]; then
    echo "AUTH PART FAILED: see the bench log and test-results/bench/auth-*.log"
  fi
}
# lget ENV KEY: a result of the lifecycle part, FAIL when it is missing after a failure.
lget() {
  local v
  v=$(awk -F= -v k="$2" '$1 == k {print $2}' "$1" 2>/dev/null)
  if [ -z "$v" ] && [ -n "$LIFECYCLE_FAILED" ]; then v=FAIL; fi
  echo "$v"
}
lrow() { printf '%-46s %9s %8s %9s %8s %9s %9s  %-7s %s\n' "$@"; }
# lphase LABEL ENV PREFIX: a row with a phase's seconds, CPU time, peak heap, peak RSS
# and peak anonymous RSS.
lphase() {
  lrow "$1" "$(lget "$2" "${3}_S")" "$(lget "$2" "${3}_CPU_S")" "$(lget "$2" "${3}_HEAP_MIB")" \
    "$(lget "$2" "${3}_HWM_MIB")" "$(lget "$2" "${3}_ANON_MIB")" "n/a" "report" "-"
}
# lsub LABEL VALUE: an indented row with a value only.
lsub() { lrow "  $1" "$2" "" "" "" "" "n/a" "report" "-"; }
lifecycle_table() {
  local g=$LC_GC_ENV r=$LC_RET_ENV
  echo
  echo "lifecycle: garbage collection and retention planning on dockyard's store, called through the Go API"
  echo "(test/bench/lcbench, no HTTP). The reference registry has no online GC or retention planning, so there is"
  echo "no comparison (reference: n/a), and the issue sets no target (report)."
  lrow "workload" "dockyard" "CPU (s)" "heap MiB" "RSS MiB" "anon MiB" "reference" "target" "met"
  lrow "--------" "--------" "-------" "--------" "-------" "--------" "---------" "------" "---"
  lphase "GC dry run (s)" "$g" GC_DRY
  lphase "GC of $(lget "$g" GC_MANIFESTS) manifests + $(lget "$g" GC_BLOBS) blobs (s)" "$g" GC
  lsub "collected per second" "$(awk -v s="$(lget "$g" GC_S)" -v m="$(lget "$g" GC_MANIFESTS)" -v b="$(lget "$g" GC_BLOBS)" \
    'BEGIN { if (s + 0 > 0 && m b ~ /^[0-9]+$/) printf "%.0f", (m + b) / s; else print "n/a" }')"
  lphase "GC again, nothing to collect (s)" "$g" GC2
  lphase "retention: $(lget "$r" RET_PLAN_REPS) plans of $(lget "$r" RET_TAGS) tags (s)" "$r" RET_PLAN_ALL
  lsub "one plan, median (s)" "$(lget "$r" RET_PLAN_S)"
  lsub "tags planned per second" "$(lget "$r" RET_PLAN_TAGS_PER_S)"
  lsub "TagInfos alone (store reads), median (s)" "$(lget "$r" RET_TAGINFOS_S)"
  lphase "delete $(lget "$g" DELETE_MANIFESTS) manifests, $(lget "$g" GC_TAGS_PER_REPO) tags/repo (s)" "$g" DELETE
  lsub "per manifest (ms)" "$(awk -v s="$(lget "$g" DELETE_S)" -v n="$(lget "$g" DELETE_MANIFESTS)" \
    'BEGIN { if (n + 0 > 0) printf "%.2f", s * 1000 / n; else print "n/a" }')"
  lphase "delete $(lget "$r" RET_DELETE_MANIFESTS) manifests, $(lget "$r" RET_TAGS) tags/repo (s)" "$r" RET_DELETE
  lsub "per manifest (ms)" "$(lget "$r" RET_DELETE_MS_EACH)"
  echo
  echo "gc store: $(lget "$g" SETUP_BLOBS) blobs of 16-64 bytes in 4 repositories (set up in $(lget "$g" SETUP_BLOBS_S) s, 32 goroutines),"
  echo "$(lget "$g" SETUP_MANIFESTS) tagged manifests of 13 blobs each (in $(lget "$g" SETUP_MANIFESTS_S) s); every other manifest deleted, 15 s pause."
  echo "collected $(lget "$g" GC_MANIFESTS) manifests, $(lget "$g" GC_BLOBS) blobs, $(lget "$g" GC_BYTES) bytes, $(lget "$g" GC_ORPHANS) orphan files" \
    "(want $(lget "$g" GC_WANT_MANIFESTS) and $(lget "$g" GC_WANT_BLOBS)); dry run: $(lget "$g" GC_DRY_MANIFESTS) manifests," \
    "$(lget "$g" GC_DRY_BLOBS) blobs; second run: $(lget "$g" GC2_MANIFESTS) and $(lget "$g" GC2_BLOBS)."
  echo "GC wall time per collected item: $(lget "$g" GC_MS_PER_ITEM) ms; one small write+fsync on this disk: $(lget "$g" FSYNC_MS) ms;" \
    "voluntary context switches during GC: $(lget "$g" GC_CSW)."
  echo "retention repository: $(lget "$r" RET_RELEASES) releases, $(lget "$r" RET_RCS) RCs, $(lget "$r" RET_SNAPSHOTS) snapshots," \
    "$(lget "$r" RET_OTHERS) others (pushed in $(lget "$r" SETUP_TAGS_S) s); the plan keeps $(lget "$r" RET_PLAN_KEPT) ($(lget "$r" RET_PLAN_KEPT_BY))."
  printf 'plan runs (s): %s\n' "$(lget "$r" RET_PLAN_S_ALL)"
  echo "deletes: DeleteManifest one at a time (what untagged pruning does); allocated per delete:" \
    "$(awk -v a="$(lget "$g" DELETE_ALLOC_MIB)" -v n="$(lget "$g" DELETE_MANIFESTS)" 'BEGIN { if (n + 0 > 0) printf "%.0f", a * 1024 / n }') KiB" \
    "with $(lget "$g" GC_TAGS_PER_REPO) tags in the repository, $(lget "$r" RET_DELETE_ALLOC_KB_EACH) KiB with $(lget "$r" RET_TAGS)."
  echo "heap: peak of Go heap objects (live and not yet swept; Badger's memtables and caches are Go memory) sampled"
  echo "every 5 ms; RSS: VmHWM of the lcbench process, reset before each phase (it counts Badger's memory-mapped"
  echo "index files); anon: peak RssAnon sampled every 5 ms; CPU: user+system time of the phase."
  echo "CPU profiles: lifecycle-gc-cpu.txt, lifecycle-plan-cpu.txt; what the collection allocated:"
  echo "lifecycle-gc-alloc.txt (the .pprof files are beside them)."
  if [ -n "$LIFECYCLE_FAILED" ]; then
    echo "LIFECYCLE PART FAILED: see the bench log and test-results/bench/lifecycle-*.log"
  fi
}

s3get() { local v; v=$(awk -F= -v k="$2" '$1 == k {print $2}' "$OUT/s3-$1.env" 2>/dev/null); [ -z "$v" ] && [ -n "$S3_FAILED" ] && v=FAIL; echo "$v"; }
s3_table() {
  local d r q
  echo
  echo "s3: dockyard and the reference registry (s3 driver, regionendpoint, forcepathstyle, redirect disabled) on one"
  echo "versitygw on loopback; ${S3_MIB} MiB blobs"
  row "workload" "dockyard" "reference" "ratio" "target" "met"
  row "--------" "--------" "---------" "-----" "------" "---"
  d=$(s3get dockyard MANIFEST_RPS) r=$(s3get reference MANIFEST_RPS) q=$(ratio "$d" "$r")
  row "manifest GET by tag (req/s)" "$d" "$r" "$q" "dockyard >= 20x" "$(meets "$q" 20)"
  d=$(s3get dockyard PULL_SECONDS) r=$(s3get reference PULL_SECONDS) q=$(ratio "$d" "$r")
  row "${S3_PULLS}x GET ${S3_MIB} MiB blob (s)" "$d" "$r" "$q" "dockyard <= 1.05x" "$(atmost "$q" 1.05)"
  d=$(s3get dockyard PUSH_MONO) r=$(s3get reference PUSH_MONO) q=$(ratio "$r" "$d")
  row "push ${S3_MIB} MiB, POST+PUT (s)" "$d" "$r" "$q" "ref/dockyard >= 1.5x" "$(meets "$q" 1.5)"
  d=$(s3get dockyard PUSH_CHUNKED) r=$(s3get reference PUSH_CHUNKED) q=$(ratio "$r" "$d")
  row "push ${S3_MIB} MiB, 8 chunks (s)" "$d" "$r" "$q" "report" "-"
  d=$(s3get dockyard PUSHN_SECONDS) r=$(s3get reference PUSHN_SECONDS) q=$(ratio "$r" "$d")
  row "${S3_PUSHN}x push ${S3_MIB} MiB at once (s)" "$d" "$r" "$q" "report" "-"
  d=$(s3get dockyard HWM_KB) r=$(s3get reference HWM_KB)
  [[ $d =~ ^[0-9]+$ ]] && d=$(awk -v k="$d" 'BEGIN {printf "%.1f", k / 1024}')
  [[ $r =~ ^[0-9]+$ ]] && r=$(awk -v k="$r" 'BEGIN {printf "%.1f", k / 1024}')
  row "peak RSS, VmHWM (MiB)" "$d" "$r" "" "dockyard <= 150" "$(awk -v m="$d" 'BEGIN { if (m !~ /^[0-9.]+$/) print "-"; else print (m + 0 <= 150) ? "yes" : "NO" }')"
  d=$(s3get redirect REDIRECT_SECONDS)
  row "${S3_PULLS}x GET, redirect: true (s)" "$d" "" "" "report" "-"
  echo
  echo "ratio: dockyard/reference for req/s and GET time; reference/dockyard for pushes (above 1: dockyard faster)."
  echo "GETs: clients verify sha256; redirect: dockyard answers 307 to a presigned URL and the clients fetch from versitygw."
  echo "peak RSS covers the whole part, including the ${S3_PUSHN} concurrent pushes."
  printf 'GET runs (s), median shown: dockyard %s | reference %s\n' "$(s3get dockyard PULL_SECONDS_ALL)" "$(s3get reference PULL_SECONDS_ALL)"
  printf 'push runs (s): dockyard mono %s chunked %s | reference mono %s chunked %s\n' "$(s3get dockyard PUSH_MONO_ALL)" \
    "$(s3get dockyard PUSH_CHUNKED_ALL)" "$(s3get reference PUSH_MONO_ALL)" "$(s3get reference PUSH_CHUNKED_ALL)"
  [ -z "$S3_FAILED" ] || echo "S3 PART FAILED: see the bench log and test-results/bench/s3-*.log"
}

# --- cluster: three dockyards behind nginx, one dockyard, the reference ------------------
CLUSTER_FAILED=""
# cluster_suite NAME ADDR: manifest GETs and pushes against ADDR, into $OUT/cluster-NAME.env.
cluster_suite() {
  local name=$1 addr=$2 env="$OUT/cluster-$1.env"
  : >"$env"
  log "cluster $name: setup"
  timeout 300 "$LG" setup -addr "$addr" -repo bench/app -big "$TMP/clbig.bin" -big-digest "$CL_DIGEST" >"$TMP/setup.env" || return 1
  # shellcheck disable=SC1090
  . "$TMP/setup.env"
  log "cluster $name: manifest GET by tag (wrk -c$CONNS -d${DURATION}s)"
  echo "MANIFEST_RPS=$(wrk_rps "cluster-$name-manifest" "$MANIFEST_URL" "$ACCEPT")" >>"$env" || return 1
  log "cluster $name: pushing ${CL_MIB} MiB blobs ($REPS× each mode)"
  timeout 600 "$LG" push -addr "$addr" -repo bench/push -file "$TMP/clbig.bin" -reps "$REPS" -chunks 4 >>"$env" || return 1
  log "cluster $name: $CL_PUSHN concurrent ${CL_MIB} MiB pushes"
  timeout 900 "$LG" pushn -addr "$addr" -file "$TMP/clbig.bin" -n "$CL_PUSHN" >>"$env" || return 1
  cat "$env" >&2
}

# cluster_dockyard NAME CONFIG: starts a dockyard on CONFIG; sets CL_ADDR.
cluster_dockyard() {
  local addr; addr=127.0.0.1:$(free_port)
  mkdir -p "$TMP/cl-$1"
  DOCKYARD_LOG_LEVEL=warn bin/dockyard serve --config "$2" --listen "$addr" --data "$TMP/cl-$1" >"$OUT/cluster-$1.log" 2>&1 &
  CLUSTER_PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://$addr/v2/" 2>/dev/null && { CL_ADDR=$addr; return 0; }
    sleep 0.1
  done
  log "dockyard $1 did not start"; tail -20 "$OUT/cluster-$1.log" >&2
  return 1
}

run_cluster() {
  local s3 cfg a1 a2 a3 single lb ref
  head -c $((CL_MIB << 20)) /dev/urandom >"$TMP/clbig.bin"
  CL_DIGEST=sha256:$(sha256sum "$TMP/clbig.bin" | cut -d' ' -f1)
  log "cluster: starting PostgreSQL and versitygw"
  start_pg || return 1
  as_postgres "$PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT -U postgres single" || return 1
  as_postgres "$PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT -U postgres pages" || return 1
  as_postgres "$PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT -U postgres gc" || return 1
  s3=127.0.0.1:$(free_port)
  mkdir -p "$TMP/cls3/cluster" "$TMP/cls3/single" "$TMP/cls3/reference"
  export BENCH_S3_SECRET=bench-secret-key
  ROOT_ACCESS_KEY='' ROOT_SECRET_KEY='' "$TOOLS/versitygw" --port "$s3" --access bench --secret "$BENCH_S3_SECRET" \
    posix "$TMP/cls3" >"$OUT/cluster-versitygw.log" 2>&1 &
  CLUSTER_PIDS+=($!)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://$s3/" && break; sleep 0.1; done
  for cfg in cluster single; do
    local db=dockyard; [ $cfg = single ] && db=single
    cat >"$TMP/cl-$cfg.yml" <<YAML
index:
  driver: postgres
  postgres: {dsn: "postgres://postgres@127.0.0.1:$PG_PORT/$db?sslmode=disable", max_conns: 16}
storage:
  driver: s3
  s3: {endpoint: "http://$s3", bucket: $cfg, path_style: true, access_key_id: bench, secret_access_key_env: BENCH_S3_SECRET}
YAML
  done
  cluster_dockyard c1 "$TMP/cl-cluster.yml" && a1=$CL_ADDR && cluster_dockyard c2 "$TMP/cl-cluster.yml" && a2=$CL_ADDR &&
    cluster_dockyard c3 "$TMP/cl-cluster.yml" && a3=$CL_ADDR || return 1
  lb=127.0.0.1:$(free_port)
  NGINX_WORKERS=auto NGINX_ACCESS_LOG=off start_nginx "$TMP/cl-nginx" "${lb#*:}" "$a1" "$a2" "$a3" || return 1
  CLUSTER_PIDS+=("$NGINX_PID")
  cluster_suite cluster "$lb" || return 1
  cluster_dockyard single "$TMP/cl-single.yml" && single=$CL_ADDR || return 1
  cluster_suite single "$single" || return 1
  ref=127.0.0.1:$(free_port)
  cat >"$TMP/cl-reference.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  s3: {accesskey: bench, secretkey: $BENCH_S3_SECRET, region: us-east-1, regionendpoint: "http://$s3", bucket: reference,
       forcepathstyle: true, secure: false, v4auth: true, rootdirectory: /}
  redirect: {disable: true}
  cache: {blobdescriptor: inmemory}
  delete: {enabled: true}
http: {addr: $ref}
YAML
  OTEL_TRACES_EXPORTER=none "$TOOLS/registry" serve "$TMP/cl-reference.yml" >"$OUT/cluster-reference.log" 2>&1 &
  CLUSTER_PIDS+=($!)
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://$ref/v2/" && break; sleep 0.1; done
  cluster_suite reference "$ref" || return 1
  for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  CLUSTER_PIDS=()

  go build -o "$TMP/lcbench" ./test/bench/lcbench || return 1
  log "cluster: tag-list and catalog pages over $PAGES_N entries, Badger then PostgreSQL (setup takes minutes)"
  timeout 1200 "$TMP/lcbench" pages -dir "$TMP/pages-badger" -n "$PAGES_N" >"$OUT/cluster-pages-badger.env" 2>"$OUT/cluster-pages-badger.log" || return 1
  rm -rf "$TMP/pages-badger"
  timeout 1200 "$TMP/lcbench" pages -dir "$TMP/pages-pg" -n "$PAGES_N" -dsn "postgres://postgres@127.0.0.1:$PG_PORT/pages?sslmode=disable" \
    >"$OUT/cluster-pages-postgres.env" 2>"$OUT/cluster-pages-postgres.log" || return 1
  cat "$OUT"/cluster-pages-*.env >&2
  log "cluster: garbage collection over $CL_GC_BLOBS blobs, Badger then PostgreSQL"
  timeout 1200 "$TMP/lcbench" gc -dir "$TMP/gc-badger" -blobs "$CL_GC_BLOBS" -manifests $((CL_GC_BLOBS / 10)) \
    >"$OUT/cluster-gc-badger.env" 2>"$OUT/cluster-gc-badger.log" || return 1
  rm -rf "$TMP/gc-badger"
  timeout 1200 "$TMP/lcbench" gc -dir "$TMP/gc-pg" -blobs "$CL_GC_BLOBS" -manifests $((CL_GC_BLOBS / 10)) \
    -dsn "postgres://postgres@127.0.0.1:$PG_PORT/gc?sslmode=disable" >"$OUT/cluster-gc-postgres.env" 2>"$OUT/cluster-gc-postgres.log" || return 1
  cat "$OUT"/cluster-gc-*.env | grep -E '^GC_(S|BLOBS|MANIFESTS)=' >&2
  remove_pg; PG_DIR=
}

if part cluster; then
  run_cluster || { CLUSTER_FAILED=1; log "cluster part FAILED"; }
fi

clget() { local v; v=$(awk -F= -v k="$2" '$1 == k {print $2}' "$OUT/cluster-$1.env" 2>/dev/null); [ -z "$v" ] && [ -n "$CLUSTER_FAILED" ] && v=FAIL; echo "$v"; }
cluster_table() {
  local c s r q
  echo
  echo "cluster: three dockyards behind nginx (round robin) vs one dockyard, both on one PostgreSQL index and one"
  echo "versitygw bucket, vs the reference registry on the same versitygw; all on these $(nproc) cores; ${CL_MIB} MiB blobs"
  row "workload" "cluster" "one" "reference" "target" "met"
  row "--------" "-------" "---" "---------" "------" "---"
  c=$(clget cluster MANIFEST_RPS) s=$(clget single MANIFEST_RPS) r=$(clget reference MANIFEST_RPS) q=$(ratio "$c" "$r")
  row "manifest GET by tag (req/s)" "$c" "$s" "$r" "cluster/ref >= 20x" "$(meets "$q" 20) (${q}x)"
  row "  scaling factor cluster/one" "$(ratio "$c" "$s")x" "" "" "report" "-"
  for k in PUSH_MONO:"push ${CL_MIB} MiB, POST+PUT (s)" PUSH_CHUNKED:"push ${CL_MIB} MiB, 4 chunks (s)" PUSHN_SECONDS:"${CL_PUSHN}x push ${CL_MIB} MiB at once (s)"; do
    c=$(clget cluster "${k%%:*}") s=$(clget single "${k%%:*}") r=$(clget reference "${k%%:*}")
    row "${k#*:}" "$c" "$s" "$r" "report" "ref/cluster $(ratio "$r" "$c")x"
  done
  echo
  row "listing page of 1000 at $PAGES_N entries" "Badger" "PostgreSQL" "" "target" "met"
  for k in TAGS_P50_MS:"tag list p50 (ms)" TAGS_P99_MS:"tag list p99 (ms)" CATALOG_P50_MS:"catalog p50 (ms)" CATALOG_P99_MS:"catalog p99 (ms)"; do
    c=$(clget pages-badger "${k%%:*}") s=$(clget pages-postgres "${k%%:*}")
    case $k in *P99*) row "${k#*:}" "$c" "$s" "" "PostgreSQL <= 20" "$(atmost "$s" 20)" ;; *) row "${k#*:}" "$c" "$s" "" "report" "-" ;; esac
  done
  row "search at $PAGES_N tags (page of 50)" "Badger" "PostgreSQL" "" "target" "met"
  for k in SEARCH_PAGE:"page at a random cursor" SEARCH_TEXT:"text matching 100 tags" SEARCH_NONE:"class no tag has (full scan)"; do
    for q in P50 P99; do
      c=$(clget pages-badger "${k%%:*}_${q}_MS") s=$(clget pages-postgres "${k%%:*}_${q}_MS")
      case $q in P99) row "${k#*:} p99 (ms)" "$c" "$s" "" "<= 50 (both)" "$(atmost "$c" 50)/$(atmost "$s" 50)" ;; *) row "${k#*:} p50 (ms)" "$c" "$s" "" "report" "-" ;; esac
    done
  done
  c=$(clget gc-badger GC_S) s=$(clget gc-postgres GC_S)
  local nb; nb=$(awk -v b="$(clget gc-badger GC_BLOBS)" -v m="$(clget gc-badger GC_MANIFESTS)" 'BEGIN {print b + m}')
  row "GC of $nb items (s)" "$c" "$s" "" "report" "-"
  row "  items/s" "$(awk -v n="$nb" -v t="$c" 'BEGIN { if (t + 0 > 0) printf "%.0f", n / t }')" \
    "$(awk -v n="$(awk -v b="$(clget gc-postgres GC_BLOBS)" -v m="$(clget gc-postgres GC_MANIFESTS)" 'BEGIN {print b + m}')" -v t="$s" 'BEGIN { if (t + 0 > 0) printf "%.0f", n / t }')" "" "report" "-"
  echo
  echo "pages: the store call a listing makes (no HTTP), at 300 random keyset positions; setup $(clget pages-postgres PAGES_SETUP_S) s on PostgreSQL."
  echo "the cluster shares these cores with nginx, PostgreSQL and versitygw: its scaling factor here says what the"
  echo "balancer costs, not what three machines would give."
  [ -z "$CLUSTER_FAILED" ] || echo "CLUSTER PART FAILED: see the bench log and test-results/bench/cluster-*.log"
}

row() { printf '%-38s %12s %12s %9s  %-22s %s\n' "$@"; }
{
  echo "dockyard benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores$([ "$ONLY" = lifecycle ] || echo ", wrk -t2 -c$CONNS -d${DURATION}s")"
  if part hosted || part proxy; then
    echo "reference: CNCF distribution registry v3.1.2 (filesystem, inmemory blob descriptor cache)"
  fi
  if part hosted; then
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
  if part proxy; then
    proxy_table
  fi
  if part auth; then
    auth_table
  fi
  if part lifecycle; then
    lifecycle_table
  fi
  if part s3; then
    s3_table
  fi
  if part cluster; then
    cluster_table
  fi
} | tee "$OUT/summary.txt"
[ -z "$PROXY_FAILED" ] && [ -z "$AUTH_FAILED" ] && [ -z "$LIFECYCLE_FAILED" ] && [ -z "$S3_FAILED" ] && [ -z "$CLUSTER_FAILED" ] || exit 1
