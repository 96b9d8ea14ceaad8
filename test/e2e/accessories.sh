#!/usr/bin/env bash
# Signatures, attestations and SBOMs follow their image, with the real cosign (v2.6.1,
# built into .tools/ by scripts/install-tools.sh) and oras:
#  1. two releases of signed/app, each signed by cosign in tag mode (sha256-<hex>.sig),
#     attested (--type spdxjson: sha256-<hex>.att) and given an oras attach referrer;
#     2.0.0 also signed in OCI 1.1 mode (a referrer) and signed again by a second key
#     under immutable releases (cosign adds to the .sig tag, which stays mutable);
#  2. a semver policy keeping only the newest release: the plan lets every accessory tag
#     follow its subject ('follows subject …'); after the retention run and GC, cosign
#     verify (both keys) and verify-attestation of 2.0.0 succeed, 1.0.0's accessory
#     tags and referrers are gone and its bytes collected; fsck is clean;
#  3. a second dockyard proxying the first and grouping it: cosign verify and
#     verify-attestation of 2.0.0 succeed through the proxy's and the group's hosts.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
set +e

A="$RESULTS/accessories"
rm -rf "$A"
W="$A/work"
LOG="$A/commands.log"
mkdir -p "$W"
: >"$LOG"
DY="${DY_BIN:-$ROOT/bin/dockyard}"
COSIGN="$ROOT/.tools/cosign"
export DOCKER_CONFIG="$A/docker-config" COSIGN_PASSWORD=e2e-password TUF_ROOT="$A/tuf"
mkdir -p "$DOCKER_CONFIG"; echo "{}" >"$DOCKER_CONFIG/config.json"
# No transparency log here (no network): signatures are made and verified offline.
SIGN_FLAGS=(--tlog-upload=false --allow-http-registry --allow-insecure-registry -y)
VERIFY_FLAGS=(--insecure-ignore-tlog=true --allow-http-registry --allow-insecure-registry)

cleanup() {
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
  [ -n "${DY_PID:-}" ] && stop_dockyard
  return 0
}
trap cleanup EXIT

cosign_run() { echo "+ cosign $*" >>"$LOG"; "$COSIGN" "$@" >>"$LOG" 2>&1; }
# tags REPO: the repository's tags, one per line.
tags() { curl -fsS "http://$R/v2/$1/tags/list" | jq -r '.tags[]?' | sort; }
# referrers REGISTRY REPO DIGEST: the digests of the subject's referrers, one per line.
referrers() { curl -fsS "http://$1/v2/$2/referrers/$3" | jq -r '.manifests[].digest' | sort; }
status() { curl -sS -o /dev/null -w '%{http_code}' -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$1"; }
dash() { echo "${1/:/-}"; } # sha256:hex → sha256-hex

if [ ! -x "$COSIGN" ]; then
  fail "cosign is installed in .tools (scripts/install-tools.sh)"
  summary; exit 1
fi

cat >"$A/primary.yaml" <<'EOF'
lifecycle:
  immutable:
    # releases never move; retention may delete them (allow_delete)
    - {registries: [default], repositories: ["signed/**"], allow_delete: true}
  retention:
    - name: releases
      registries: [default]
      repositories: ["signed/**"]
      semver: {majors: 1, minors: 1, patches: all}
      untagged_grace: 1s
  gc: {interval: 0s, grace: 0s}
EOF
echo "=== 1. signing, attesting and attaching two releases"
if ! start_dockyard accessories/primary --config "$A/primary.yaml"; then
  fail "dockyard starts (see $A/primary/dockyard.log)"; summary; exit 1
fi
R=$DY_ADDR
cosign_run generate-key-pair --output-key-prefix "$W/k1"
cosign_run generate-key-pair --output-key-prefix "$W/k2"
check "cosign makes two key pairs" test -s "$W/k1.key" -a -s "$W/k2.key"
cat >"$W/sbom.spdx.json" <<'EOF'
{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"app","documentNamespace":"https://example.com/app","creationInfo":{"created":"2026-01-01T00:00:00Z","creators":["Tool: e2e"]},"packages":[]}
EOF
echo '{"report":"e2e"}' >"$W/report.json"
declare -A D
for v in 1.0.0 2.0.0; do
  head -c 200000 /dev/urandom >"$W/payload-$v"
  tar -C "$W" -cf "$W/layer-$v.tar" "payload-$v"
  D[$v]=$(crane append --oci-empty-base -f "$W/layer-$v.tar" -t "$R/signed/app:$v" 2>>"$LOG" | sed -E 's/.*@//')
  check "crane pushes signed/app:$v" test -n "${D[$v]}"
  ref="$R/signed/app@${D[$v]}"
  check "cosign sign (tag mode) $v" cosign_run sign --key "$W/k1.key" "${SIGN_FLAGS[@]}" "$ref"
  check "cosign attest --type spdxjson $v" cosign_run attest --key "$W/k1.key" --type spdxjson --predicate "$W/sbom.spdx.json" "${SIGN_FLAGS[@]}" "$ref"
  check "oras attach a report to $v" sh -c "cd '$W' && oras attach --plain-http --artifact-type application/vnd.example.report '$ref' report.json:application/json >>'$LOG' 2>&1"
done
# Releases are immutable, their signature tags are not: a second signature goes on.
check "cosign sign 2.0.0 again with a second key under immutable releases" \
  cosign_run sign --key "$W/k2.key" "${SIGN_FLAGS[@]}" "$R/signed/app@${D[2.0.0]}"
check "cosign sign 2.0.0 in OCI 1.1 mode (a referrer)" \
  env COSIGN_EXPERIMENTAL=1 "$COSIGN" sign --key "$W/k1.key" --registry-referrers-mode=oci-1-1 "${SIGN_FLAGS[@]}" "$R/signed/app@${D[2.0.0]}"
for v in 1.0.0 2.0.0; do
  check "before retention: cosign verify $v" cosign_run verify --key "$W/k1.pub" "${VERIFY_FLAGS[@]}" "$R/signed/app:$v"
done
check "the .sig and .att tags of both releases are there" \
  eq "4" "$(tags signed/app | grep -cE '^sha256-[0-9a-f]{64}\.(sig|att)$')"
REFS1=$(referrers "$R" signed/app "${D[1.0.0]}")
check "1.0.0 has its oras referrer" test -n "$REFS1"

echo "=== 2. retention keeps 2.0.0 with its accessories, deletes 1.0.0 with its own"
curl -fsS "http://$R/-/admin/plan?registry=default" >"$W/plan.json" 2>>"$LOG"
plan_of() { jq -r --arg t "$1" '.[] | select(.tag == $t) | "\(.keep) \(.reason)"' "$W/plan.json"; }
for v in 1.0.0 2.0.0; do
  keep=false; [ "$v" = 2.0.0 ] && keep=true
  for suffix in .sig .att; do
    t="$(dash "${D[$v]}")$suffix"
    check "plan: $v's $suffix tag follows its subject (keep $keep)" \
      eq "$keep follows subject ${D[$v]}, $([ $keep = true ] && echo kept || echo deleted)" "$(plan_of "$t")"
  done
done
check "plan: 2.0.0 kept by semver, 1.0.0 not" eq "true kept by semver false no rule keeps it" "$(plan_of 2.0.0) $(plan_of 1.0.0)"
sleep 1.5 # past untagged_grace
curl -fsS -X POST "http://$R/-/admin/retention?policy=releases" >"$W/retention.json" 2>>"$LOG"
cat "$W/retention.json" >>"$LOG"
# The deleted image's accessory tags went with the run; its referrers and accessory
# manifests at the collection after it (grace 0s: the same).
curl -fsS -X POST "http://$R/-/admin/gc" >>"$LOG" 2>&1
for key in k1 k2; do
  check "after retention: cosign verify 2.0.0 with $key" cosign_run verify --key "$W/$key.pub" "${VERIFY_FLAGS[@]}" "$R/signed/app:2.0.0"
done
check "after retention: cosign verify-attestation 2.0.0" \
  cosign_run verify-attestation --key "$W/k1.pub" --type spdxjson "${VERIFY_FLAGS[@]}" "$R/signed/app:2.0.0"
check "after retention: 2.0.0's referrers (oras report, OCI 1.1 signature) are listed" \
  test "$(referrers "$R" signed/app "${D[2.0.0]}" | wc -l)" -ge 2
check "after retention: no tag names 1.0.0 any more" eq "0" "$(tags signed/app | grep -c "$(dash "${D[1.0.0]}" | cut -d- -f2)")"
check "after retention: the tags left are 2.0.0 and its accessory tags" \
  eq "2.0.0 $(dash "${D[2.0.0]}").att $(dash "${D[2.0.0]}").sig" "$(tags signed/app | tr '\n' ' ' | sed 's/ $//')"
check "after retention: 1.0.0 is gone (404)" eq "404" "$(status "$R/v2/signed/app/manifests/${D[1.0.0]}")"
for d in $REFS1; do
  check "after retention: 1.0.0's referrer $d is gone (404)" eq "404" "$(status "$R/v2/signed/app/manifests/$d")"
done
L1=$(crane manifest "$R/signed/app@${D[2.0.0]}" 2>>"$LOG" | jq -r '.layers[0].digest')
check "after retention: 1.0.0's layer is collected (404), 2.0.0's served (200)" \
  eq "404 200" "$(status "$R/v2/signed/app/blobs/sha256:$(sha256sum "$W/layer-1.0.0.tar" | cut -d' ' -f1)") $(status "$R/v2/signed/app/blobs/$L1")"

echo "=== 3. through a proxy and a group"
PORT2=$(free_port)
cat >"$A/edge.yaml" <<EOF
registries:
  - {name: local, type: hosted}
  - name: up
    type: proxy
    upstream: {url: "http://$R", tag_ttl: 1m}
  - {name: all, type: group, members: [local, up], push_to: local}
routes:
  - {host: localhost, registry: up}
  - {host: "*", registry: all}
EOF
"$DY" serve --listen "127.0.0.1:$PORT2" --data "$A/edge/data" --config "$A/edge.yaml" >>"$A/edge.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT2/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
for host in "localhost:$PORT2" "127.0.0.1:$PORT2"; do
  what=proxy; [ "$host" = "127.0.0.1:$PORT2" ] && what=group
  check "through the $what: cosign verify 2.0.0" cosign_run verify --key "$W/k1.pub" "${VERIFY_FLAGS[@]}" "$host/signed/app:2.0.0"
  check "through the $what: cosign verify-attestation 2.0.0" \
    cosign_run verify-attestation --key "$W/k1.pub" --type spdxjson "${VERIFY_FLAGS[@]}" "$host/signed/app:2.0.0"
done
check "through the group: 2.0.0's referrers are listed" test "$(referrers "127.0.0.1:$PORT2" signed/app "${D[2.0.0]}" | wc -l)" -ge 2
stop_dockyard
check "fsck --verify-digests is clean after it all" sh -c "'$DY' fsck --verify-digests --config '$A/primary.yaml' --data '$RESULTS/accessories/primary/data' | tee -a '$LOG' | grep -q '; 0 problems$'"
DY_PID=
summary
