#!/usr/bin/env bash
# The OCI distribution-spec conformance suite with every category enabled: once on the
# embedded default, once with sparse indexes accepted and OCI_DATA_SPARSE on.
# Passes only with 0 failures and 0 skips.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh

run_conformance() { # name config sparse
  local name=$1 cfg=$2 sparse=$3
  local args=()
  [ -n "$cfg" ] && args=(--config "$cfg")
  start_dockyard "conformance-$name" "${args[@]}"
  local out="$RESULTS/conformance-$name"
  (
    . test/e2e/../conformance/env.sh
    export OCI_DATA_SPARSE=$sparse OCI_REGISTRY=$DY_ADDR OCI_RESULTS_DIR="$out/results"
    cd "$out" && conformance >"$out/conformance.log" 2>&1
  ) || true
  stop_dockyard
  conformance_result "$name" "$out/conformance.log"
}

run_conformance default "" false
run_conformance sparse configs/sparse.yaml true
summary
