#!/usr/bin/env bash
# Runs every end-to-end script against the real binary and prints one summary line.
set -uo pipefail
cd "$(dirname "$0")/../.."
rm -rf test-results/e2e
mkdir -p test-results/e2e
status=0
total_pass=0 total_fail=0
for t in test/e2e/conformance.sh test/e2e/s3.sh test/e2e/cluster.sh test/e2e/compose.sh test/e2e/clients.sh test/e2e/restart.sh test/e2e/federation.sh test/e2e/auth.sh test/e2e/lifecycle.sh test/e2e/accessories.sh test/e2e/isolation.sh test/e2e/soak.sh; do
  [ -x "$t" ] || continue
  echo "=== $t"
  bash "$t" | tee test-results/e2e/$(basename "$t" .sh).out
  rc=${PIPESTATUS[0]}
  line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed' test-results/e2e/$(basename "$t" .sh).out | tail -1)
  p=$(echo "$line" | sed -E 's/e2e: ([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) failed/\1/')
  total_pass=$((total_pass + ${p:-0})); total_fail=$((total_fail + ${f:-1}))
  [ "$rc" -eq 0 ] || status=1
done
echo "total: $total_pass passed, $total_fail failed"
exit $status
