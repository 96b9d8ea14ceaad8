#!/usr/bin/env bash
# The soak test's short form in `make test`: test/soak/run.sh for SOAK_DURATION (2m),
# single instance and cluster at once. `make soak DURATION=30m` runs the long one.
cd "$(dirname "$0")/../.."
DURATION=${SOAK_DURATION:-2m} SOAK_RESULTS="$PWD/test-results/e2e/soak" exec bash test/soak/run.sh
