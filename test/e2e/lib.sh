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

# start_dockyard NAME [serve args...]: starts bin/dockyard with its data in
# $RESULTS/NAME; sets DY_ADDR (host:port) and DY_PID. Reuses the data dir if present.
start_dockyard() {
  local name=$1; shift
  local port; port=${DY_PORT:-$(free_port)}
  mkdir -p "$RESULTS/$name"
  "$ROOT/bin/dockyard" serve --listen "127.0.0.1:$port" --data "$RESULTS/$name/data" "$@" \
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

summary() {
  echo
  if [ ${#FAILURES[@]} -gt 0 ]; then printf 'failed: %s\n' "${FAILURES[@]}"; fi
  echo "e2e: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}
