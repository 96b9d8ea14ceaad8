# Shared helpers for the end-to-end scripts: start and stop the real dockyard binary,
# count checks, and print the closing "N passed, N failed" line.
# Source it; it expects to run from the repository root.
set -euo pipefail
ROOT="$(pwd)"
TOOLS="$ROOT/.tools"
export PATH="$TOOLS:$PATH"
RESULTS="${RESULTS:-$ROOT/test-results/e2e}"
mkdir -p "$RESULTS"
PASSED=${PASSED:-0}
FAILED=${FAILED:-0}
FAILURES=()

pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); echo "FAIL: $*"; }

# check NAME CMD...: runs CMD, counts it as one check.
check() {
  local name=$1; shift
  if "$@" >>"$RESULTS/checks.log" 2>&1; then pass "$name"; else fail "$name (see $RESULTS/checks.log)"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_dockyard NAME [serve args...]: starts bin/dockyard (or $DY_BIN) with its data in
# $RESULTS/NAME; sets DY_ADDR (host:port) and DY_PID. Reuses the data dir if present.
start_dockyard() {
  local name=$1; shift
  local port; port=${DY_PORT:-$(free_port)}
  mkdir -p "$RESULTS/$name"
  "${DY_BIN:-$ROOT/bin/dockyard}" serve --listen "127.0.0.1:$port" --data "$RESULTS/$name/data" "$@" \
    >>"$RESULTS/$name/dockyard.log" 2>&1 &
  DY_PID=$!
  DY_ADDR="127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if curl -fsS "http://$DY_ADDR/v2/" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "dockyard did not start; log:"; tail -20 "$RESULTS/$name/dockyard.log"
  return 1
}

# stop_dockyard [signal]: stops the last started dockyard and waits for it.
stop_dockyard() {
  local sig=${1:-TERM}
  kill -s "$sig" "$DY_PID" 2>/dev/null || true
  wait "$DY_PID" 2>/dev/null || true
}

# run CMD...: runs a command with its output in $LOG; returns its status.
run() {
  echo "+ $*" >>"$LOG"
  "$@" >>"$LOG" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || echo "  (exit $rc: $*)" | tee -a "$LOG"
  return $rc
}
# eq WANT GOT [what]: a check body; prints both sides to the check log. WANT may join
# several values with single spaces; an empty one among them (nothing captured: a
# leading, trailing or doubled space, or nothing at all) fails.
eq() {
  echo "eq ${3:-}: want '$1' got '$2'"
  case "$1" in "" | " "* | *" " | *"  "*) echo "  an expected value is empty"; return 1 ;; esac
  [ "$1" = "$2" ]
}
sha256_of() { sha256sum | cut -d' ' -f1; }
file_sha() { sha256sum "$1" | cut -d' ' -f1; }
# same_bytes A B: both files exist and are byte-identical.
same_bytes() { echo "cmp $1 $2"; [ -f "$1" ] && [ -f "$2" ] && cmp "$1" "$2"; }

# conformance_result NAME LOG: one check that the conformance run logged in LOG had
# passes and 0 failures, errors, skips and disabled tests. (The suite's exit code does
# not say so.)
conformance_result() {
  local name=$1 log=$2 counts
  counts=$(grep -E '^  (Pass|FAIL|Error|Skip|Disabled)\.' "$log" | tr -s ' .:' ' ' | tr '\n' ' ')
  echo "conformance ($name): $counts"
  if grep -qE '^  FAIL\.+: +0$' "$log" && grep -qE '^  Error\.+: +0$' "$log" &&
     grep -qE '^  Skip\.+: +0$' "$log" && grep -qE '^  Disabled\.+: +0$' "$log" &&
     grep -qE '^  Pass\.+: +[1-9]' "$log"; then
    pass "OCI conformance ($name): $counts"
  else
    grep 'failed test' "$log" | cut -c1-400 | head -20
    fail "OCI conformance ($name): $counts (see $log)"
  fi
}

# ensure_docker: starts containerd and dockerd (vfs, no iptables, no bridge) when no
# Docker daemon answers; bounded wait.
ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  local d="$RESULTS/docker"
  mkdir -p "$d"
  if ! pgrep -x dockerd >/dev/null; then
    if ! pgrep -x containerd >/dev/null; then
      echo "starting containerd (log $d/containerd.log)"
      nohup setsid containerd >"$d/containerd.log" 2>&1 </dev/null &
      for _ in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
    fi
    echo "starting dockerd (log $d/dockerd.log)"
    nohup setsid dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
      >"$d/dockerd.log" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  echo "docker daemon not ready after 60s"; tail -20 "$d/dockerd.log" 2>/dev/null
  return 1
}

summary() {
  echo
  if [ ${#FAILURES[@]} -gt 0 ]; then printf 'failed: %s\n' "${FAILURES[@]}"; fi
  echo "e2e: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

# start_s3 DIR: starts versitygw (a real S3 server) on a free port serving DIR, with a
# bucket "dockyard"; sets S3_ENDPOINT, S3_PID, S3_DIR, and exports DY_S3_SECRET for the
# configurations write_s3_config writes. restart_s3 starts it again on the same port.
start_s3() {
  S3_DIR=$1 S3_PORT=$(free_port)
  mkdir -p "$S3_DIR/data/dockyard"
  S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
  export DY_S3_SECRET=e2e-s3-secret
  restart_s3
}
restart_s3() {
  ROOT_ACCESS_KEY= ROOT_SECRET_KEY= versitygw --port "127.0.0.1:$S3_PORT" --access e2e --secret "$DY_S3_SECRET" \
    posix "$S3_DIR/data" >>"$S3_DIR/versitygw.log" 2>&1 &
  S3_PID=$!
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$S3_ENDPOINT/"; then return 0; fi
    sleep 0.1
  done
  echo "versitygw did not start:"; tail -20 "$S3_DIR/versitygw.log"
  return 1
}
stop_s3() { kill -9 "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null || true; }

# write_s3_config FILE [REDIRECT] [PREFIX]: a configuration with one hosted registry
# whose blobs live in the S3 bucket (part size 5 MiB, so that a few MiB cross parts).
write_s3_config() {
  cat >"$1" <<YAML
storage:
  driver: s3
  s3:
    endpoint: $S3_ENDPOINT
    bucket: dockyard
    prefix: ${3:-e2e}
    path_style: true
    redirect: ${2:-false}
    part_size: 5MiB
    access_key_id: e2e
    secret_access_key_env: DY_S3_SECRET
lifecycle:
  uploads: {purge_after: 1h}
registries:
  - {name: default, type: hosted}
routes:
  - {host: "*", registry: default}
YAML
}


# clients_result NAME OUT [env assignments...]: runs clients.sh whole with the given
# environment (CLIENTS_SERVE_ARGS or CLIENTS_ADDR), its output in OUT, and counts it as
# one check: its own summary with no failure and more than 20 passes.
clients_result() {
  local name=$1 out=$2 line p f; shift 2
  env "$@" PASSED=0 FAILED=0 bash test/e2e/clients.sh >"$out" 2>&1
  line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' "$out" | tail -1)
  p=$(sed -E 's/e2e: ([0-9]+) passed.*/\1/' <<<"$line"); f=$(sed -E 's/.*passed, ([0-9]+) failed/\1/' <<<"$line")
  grep '^FAIL' "$out" | head -20
  if [ -n "$line" ] && [ "${f:-1}" -eq 0 ] && [ "${p:-0}" -gt 20 ]; then
    pass "real clients $name: $p checks passed"
  else
    fail "real clients $name: ${line:-no summary} (see $out)"
  fi
}

# PostgreSQL and nginx, shared with the benchmark.
. "$ROOT/test/servers.sh"
