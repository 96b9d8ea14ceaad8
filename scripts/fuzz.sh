#!/usr/bin/env bash
# Runs every Go fuzzer of the repository (func FuzzX in a _test.go file) for FUZZTIME
# each, one after the other: `go test -fuzz` takes one fuzzer per run. Prints a table of
# executions, inputs that widened coverage, and the result; a failing input is written
# by Go under the package's testdata/fuzz/FuzzX/ (commit it with the fix).
#
#   FUZZTIME          per fuzzer (default 5m; Go's forms: 30s, 1000x)
#   FUZZPARALLEL      worker processes per fuzzer (default: Go's, GOMAXPROCS)
#   FUZZMINIMIZETIME  time to minimise a new input (default 10s; Go's 60s stalls slow fuzzers)
#   FUZZ              only fuzzers whose name matches this extended regexp
#   FUZZOUT           where the logs and the table go (default test-results/fuzz)
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5m}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-10s}
mkdir -p "${FUZZOUT:-test-results/fuzz}"
OUT=$(cd "${FUZZOUT:-test-results/fuzz}" && pwd)

parallel=()
[ -n "${FUZZPARALLEL:-}" ] && parallel=(-test.parallel="$FUZZPARALLEL")
module=$("$GO" list -m)
cache=$("$GO" env GOCACHE)/fuzz

# "dir name" for each fuzzer, in a stable order.
mapfile -t fuzzers < <(git ls-files '*_test.go' | xargs grep -H '^func Fuzz[A-Za-z0-9_]*(' |
  sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' | sort)
if [ -n "${FUZZ:-}" ]; then
  mapfile -t fuzzers < <(printf '%s\n' "${fuzzers[@]}" | grep -E " .*(${FUZZ})")
fi
[ ${#fuzzers[@]} -gt 0 ] || { echo "fuzz: no fuzzers found"; exit 1; }

table="$OUT/summary.md"
{
  echo "| package | fuzzer | time | executions | new inputs (corpus) | result |"
  echo "|---|---|---|---:|---:|---|"
} >"$table"
failed=0
built=""
for f in "${fuzzers[@]}"; do
  dir=${f% *} name=${f#* }
  log="$OUT/$name.log"
  bin="$OUT/bin/${dir//\//_}.test"
  # One instrumented test binary per package, run once per fuzzer (as go test -fuzz
  # does, without linking it again each time).
  if [[ " $built " != *" $dir "* ]]; then
    mkdir -p "$OUT/bin"
    "$GO" test -c -fuzz=. -o "$bin" "./$dir" || { echo "fuzz: cannot build ./$dir"; exit 1; }
    built="$built $dir"
  fi
  echo "fuzz: $dir $name for $FUZZTIME"
  start=$(date +%s)
  run() {
    (cd "$dir" && "$bin" -test.run='^$' -test.fuzz="^${name}\$" -test.fuzztime="$FUZZTIME" \
      -test.fuzzminimizetime="$FUZZMINIMIZETIME" -test.fuzzcachedir="$cache/$module/$dir" "${parallel[@]}") >"$log" 2>&1
  }
  # Go 1.26's coordinator can fail a run at its deadline with a bare "context deadline
  # exceeded", no input written (golang/go#75804, fixed in 1.27): that run is repeated
  # once; anything else is a finding.
  deadline_race() {
    grep -q 'context deadline exceeded' "$log" && ! grep -qE 'Failing input|failure while testing seed|panic:' "$log"
  }
  if run || { deadline_race && echo "fuzz: $name: Go's fuzztime race (golang/go#75804), once more" && run; }; then
    result=pass
  else
    result="FAIL (see $log)"
    failed=1
    grep -E -A6 -- '--- FAIL|panic:|Failing input' "$log" | head -40
  fi
  secs=$(($(date +%s) - start))
  last=$(grep -E '^fuzz: elapsed: .*execs: ' "$log" | tail -1)
  execs=$(sed -nE 's/.*execs: ([0-9]+).*/\1/p' <<<"$last")
  news=$(sed -nE 's/.*new interesting: ([0-9]+) \(total: ([0-9]+)\).*/\1 (\2)/p' <<<"$last")
  echo "| $dir | $name | ${secs}s | ${execs:-0} | ${news:--} | $result |" >>"$table"
done
cat "$table"
exit $failed
