#!/usr/bin/env bash
# Lifecycle with the real binary and real clients:
#  1. immutable releases as the Docker daemon sees them: a changed image pushed to an
#     existing release tag is refused (DENIED, naming the tag and the rule), the same
#     image again is accepted, snapshots stay mutable, the release still pulls the original;
#  2. crash safety with online GC running every second: concurrent crane pushes, SIGKILL
#     twice mid-run, an offline `dockyard gc` killed mid-run; `dockyard fsck
#     --verify-digests` stays clean, every acknowledged tag pulls byte-identical, and
#     deleting everything (crane delete, `lifecycle apply` keeping nothing, `gc --grace 0s`)
#     leaves no blob file;
#  3. `dockyard lifecycle plan --json` on releases, RCs and snapshots equals a hand-written
#     expectation (semver, pulled_within, keep_last by each tag's push time, keep,
#     snapshots, rcs, immutable releases); `apply` makes the deleted tags 404
#     MANIFEST_UNKNOWN, the kept ones pull, and untagged_grace prunes only the
#     repositories its policy covers.
# Sections run in the order 1, 3, 2 (the long crash run last); about 40 s in all.
# Starts the Docker daemon if it is not running (as clients.sh does) and leaves it running.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
# A failing step must become a FAIL line, not end the script before summary.
set +e

L="$RESULTS/lifecycle"
rm -rf "$L"
W="$L/work"
LOG="$L/commands.log"
mkdir -p "$W"
: >"$LOG"
DY="$ROOT/bin/dockyard"
export DOCKER_CONFIG="$L/docker-config"
mkdir -p "$DOCKER_CONFIG"; echo "{}" >"$DOCKER_CONFIG/config.json"

# ---------------------------------------------------------------------------- helpers

ne() { echo "ne ${3:-}: '$1' vs '$2'"; [ -n "$1" ] && [ -n "$2" ] && [ "$1" != "$2" ]; }
# has FILE REGEX: FILE has a line matching the extended REGEX (shows the file).
has() { echo "--- $1 (want /$2/)"; cat "$1"; grep -qE -- "$2" "$1"; }
digest_of() { crane digest "$1" 2>>"$LOG"; }
ACCEPT="application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json"

# fsck_clean NAME CONFIG DATA: `dockyard fsck --verify-digests` exits 0 and reports 0 problems.
fsck_clean() {
  echo "+ dockyard fsck --verify-digests --data $3"
  "$DY" fsck --verify-digests --config "$2" --data "$3" >"$W/$1.fsck" 2>&1
  local rc=$?
  cat "$W/$1.fsck"; echo "exit $rc"
  [ $rc -eq 0 ] && grep -qE '^fsck: [0-9]+ blobs, [0-9]+ manifests, [0-9]+ tags checked; 0 problems$' "$W/$1.fsck"
}

# image_intact REGISTRY REPO REF DIGEST: the manifest served for REPO:REF hashes to DIGEST
# and every blob it names (config, layers) hashes to its digest.
image_intact() {
  local r=$1 repo=$2 ref=$3 want=$4 m d got
  m=$(mktemp "$W/manifest.XXXXXX")
  if ! curl -fsS -H "Accept: $ACCEPT" -o "$m" "http://$r/v2/$repo/manifests/$ref"; then
    echo "$repo:$ref: manifest GET failed"; rm -f "$m"; return 1
  fi
  got="sha256:$(sha256_of <"$m")"
  if [ "$got" != "$want" ]; then echo "$repo:$ref: manifest bytes hash to $got, acknowledged $want"; rm -f "$m"; return 1; fi
  for d in $(jq -r '.config.digest, .layers[].digest' "$m"); do
    got="sha256:$(curl -fsS "http://$r/v2/$repo/blobs/$d" | sha256_of)"
    if [ "$got" != "$d" ]; then echo "$repo:$ref: blob $d reads back as $got"; rm -f "$m"; return 1; fi
  done
  rm -f "$m"
}

# manifest_status REGISTRY REPO REF: "<http status> <first error code>" of GET manifest.
manifest_status() {
  local body; body=$(mktemp "$W/body.XXXXXX")
  local st; st=$(curl -sS -H "Accept: $ACCEPT" -o "$body" -w '%{http_code}' "http://$1/v2/$2/manifests/$3")
  echo "$st $(jq -r '.errors[0].code // "-"' "$body" 2>/dev/null || echo -)"
  rm -f "$body"
}

# layer_tar FILE SIZE_BYTES [NAME]: a tar holding one file of random bytes.
layer_tar() {
  local d; d=$(mktemp -d "$W/layer.XXXXXX")
  head -c "$2" /dev/urandom >"$d/${3:-data}"
  tar -C "$d" -cf "$1" "${3:-data}"
  rm -rf "$d"
}

WORKERS=()
cleanup() {
  touch "$W/stop" 2>/dev/null
  local p
  for p in "${WORKERS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${WORKERS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "${DY_PID:-}" ] && stop_dockyard
  [ -n "${OFFLINE_PID:-}" ] && kill -9 "$OFFLINE_PID" 2>/dev/null
  if [ -n "${DOCKER_R:-}" ] && docker info >/dev/null 2>&1; then
    docker images --format '{{.Repository}} {{.ID}}' 2>/dev/null |
      awk -v r="$DOCKER_R/" 'index($1, r) == 1 { print $2 }' | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
  fi
  return 0
}
trap cleanup EXIT


T0=$(date +%s)

# ================================================== 1. immutable releases, Docker daemon

cat >"$L/immutable.yaml" <<'EOF'
lifecycle:
  immutable:
    # rule 0 covers other repositories; team/** is rule 1, which the message must name
    - {registries: [default], repositories: ["other/**"], rcs: true}
    - {registries: [default], repositories: ["team/**"], rcs: false, allow_delete: false}
  gc: {interval: 0s}
EOF
echo "=== 1. immutable releases through the Docker daemon"
if ! ensure_docker; then
  fail "docker daemon is up (see $RESULTS/docker/dockerd.log)"
elif ! start_dockyard lifecycle/immutable --config "$L/immutable.yaml"; then
  fail "dockyard starts with lifecycle.immutable (see $L/immutable/dockyard.log)"
else
  R=$DY_ADDR DOCKER_R=$DY_ADDR
  for v in a b; do
    mkdir -p "$W/root-$v/etc" "$W/root-$v/data"
    echo "image $v $RANDOM" >"$W/root-$v/etc/version"
    head -c 100000 /dev/urandom >"$W/root-$v/data/payload"
  done
  rel="$R/team/app:1.0.0" snap="$R/team/app:1.1.0-SNAPSHOT"
  ID_A=$(tar -C "$W/root-a" -c . | docker import - "$rel" 2>>"$LOG")
  docker push "$rel" >"$W/push-a.out" 2>&1; rc=$?; cat "$W/push-a.out" >>"$LOG"
  DIG_A=$(sed -nE 's/^1\.0\.0: digest: (sha256:[0-9a-f]{64}) size: [0-9]+$/\1/p' "$W/push-a.out")
  check "docker push of a new release team/app:1.0.0 succeeds (exit $rc)" test "$rc" -eq 0
  check "the digest docker reports is what dockyard serves for 1.0.0" eq "$DIG_A" "$(digest_of "$rel")"

  ID_B=$(tar -C "$W/root-b" -c . | docker import - "$rel" 2>>"$LOG")
  check "the changed image has another image ID" ne "$ID_A" "$ID_B"
  docker push "$rel" >"$W/push-b.out" 2>&1; rc=$?; cat "$W/push-b.out" >>"$LOG"
  check "docker push of a changed image to the release tag fails (exit $rc)" test "$rc" -ne 0
  check "docker shows DENIED naming the tag team/app:1.0.0 and the rule lifecycle.immutable[1]" \
    has "$W/push-b.out" '[Dd][Ee][Nn][Ii][Ee][Dd].*team/app:1\.0\.0.*lifecycle\.immutable\[1\]'
  check "after the refused push 1.0.0 still points at the original manifest" eq "$DIG_A" "$(digest_of "$rel")"

  run docker tag "$ID_A" "$rel"
  docker push "$rel" >"$W/push-a2.out" 2>&1; rc=$?; cat "$W/push-a2.out" >>"$LOG"
  check "docker re-push of the same image to 1.0.0 succeeds (exit $rc)" test "$rc" -eq 0
  check "the re-push reports the original digest" \
    eq "$DIG_A" "$(sed -nE 's/^1\.0\.0: digest: (sha256:[0-9a-f]{64}) .*/\1/p' "$W/push-a2.out")"

  run docker tag "$ID_A" "$snap"
  docker push "$snap" >"$W/push-snap-a.out" 2>&1; rc=$?; cat "$W/push-snap-a.out" >>"$LOG"
  check "docker push of 1.1.0-SNAPSHOT succeeds (exit $rc)" test "$rc" -eq 0
  run docker tag "$ID_B" "$snap"
  docker push "$snap" >"$W/push-snap-b.out" 2>&1; rc=$?; cat "$W/push-snap-b.out" >>"$LOG"
  DIG_B=$(sed -nE 's/^1\.1\.0-SNAPSHOT: digest: (sha256:[0-9a-f]{64}) .*/\1/p' "$W/push-snap-b.out")
  check "docker push of a changed image to 1.1.0-SNAPSHOT succeeds (exit $rc)" test "$rc" -eq 0
  check "the snapshot tag moved to the changed image" eq "$DIG_B" "$(digest_of "$snap")"
  check "the changed image has another manifest digest" ne "$DIG_A" "$DIG_B"

  # The registry's own answer, without the Docker CLI in between.
  crane manifest "$snap" >"$W/manifest-b.json" 2>>"$LOG"
  crane manifest "$rel" >"$W/manifest-a.json" 2>>"$LOG"
  put_manifest() { # FILE REPO REF NAME: PUT FILE; "<status>" to stdout, body to $W/NAME.json
    curl -sS -X PUT -H "Content-Type: $(jq -r .mediaType "$1")" --data-binary @"$1" \
      -o "$W/$4.json" -w '%{http_code}' "http://$R/v2/$2/manifests/$3"
  }
  st=$(put_manifest "$W/manifest-b.json" team/app 1.0.0 put-b)
  check "PUT of another manifest to 1.0.0: 403 DENIED naming tag and rule" eq \
    "403 DENIED true" "$st $(jq -r '.errors[0].code' "$W/put-b.json") $(jq -r '.errors[0].message | test("team/app:1\\.0\\.0.*lifecycle\\.immutable\\[1\\]")' "$W/put-b.json")"
  st=$(put_manifest "$W/manifest-b.json" team/app "$DIG_B?tag=1.0.0" put-b-tagparam)
  check "PUT of another manifest by digest with ?tag=1.0.0: 403 DENIED" \
    eq "403 DENIED" "$st $(jq -r '.errors[0].code' "$W/put-b-tagparam.json" 2>/dev/null)"
  check "after the refused PUTs 1.0.0 still points at the original manifest" eq "$DIG_A" "$(digest_of "$rel")"
  st=$(put_manifest "$W/manifest-a.json" team/app 1.0.0 put-a)
  check "PUT of the same manifest bytes to 1.0.0: 201" eq 201 "$st"
  # rcs: false in rule 1: release candidates of team/** stay mutable.
  st1=$(put_manifest "$W/manifest-a.json" team/app 1.1.0-rc.1 put-rc-a)
  st2=$(put_manifest "$W/manifest-b.json" team/app 1.1.0-rc.1 put-rc-b)
  check "an RC under a rule with rcs: false moves (201 201)" eq "201 201" "$st1 $st2"
  # rcs: true in rule 0: there release candidates are protected too.
  run crane copy "$rel" "$R/other/lib:2.0.0-rc.1"
  run crane copy "$snap" "$R/other/lib:scratch" # the blobs of the changed image, in other/lib
  st=$(put_manifest "$W/manifest-b.json" other/lib 2.0.0-rc.1 put-rc-other)
  check "PUT of another manifest to other/lib:2.0.0-rc.1 (rule 0, rcs: true): 403 DENIED naming lifecycle.immutable[0]" eq \
    "403 DENIED true" "$st $(jq -r '.errors[0].code' "$W/put-rc-other.json") $(jq -r '.errors[0].message | test("other/lib:2\\.0\\.0-rc\\.1.*lifecycle\\.immutable\\[0\\]")' "$W/put-rc-other.json")"
  st=$(curl -sS -X DELETE -o "$W/del.json" -w '%{http_code}' "http://$R/v2/team/app/manifests/$DIG_A")
  check "DELETE of the release's manifest (allow_delete: false): 403 DENIED" \
    eq "403 DENIED" "$st $(jq -r '.errors[0].code' "$W/del.json" 2>/dev/null)"
  st=$(curl -sS -X DELETE -o "$W/del-tag.json" -w '%{http_code}' "http://$R/v2/team/app/manifests/1.0.0")
  check "DELETE of the release tag: 403 DENIED" eq "403 DENIED" "$st $(jq -r '.errors[0].code' "$W/del-tag.json" 2>/dev/null)"

  # The release still pulls the original image.
  run docker rmi -f "$ID_A"
  not_docker_image() { ! docker image inspect "$1" >/dev/null 2>&1; }
  check "original image removed locally before pulling" not_docker_image "$ID_A"
  run docker pull "$rel"
  check "docker pull of 1.0.0: image ID is the original one" \
    eq "$ID_A" "$(docker image inspect --format '{{.Id}}' "$rel" 2>>"$LOG")"
  check "docker pull of 1.0.0: RepoDigests holds the original manifest digest" \
    eq "$R/team/app@$DIG_A" "$(docker image inspect --format '{{json .RepoDigests}}' "$rel" 2>>"$LOG" |
      jq -r --arg p "$R/team/app@" '.[] | select(startswith($p))')"
  stop_dockyard
fi
DY_PID=
echo "section 1 done after $(( $(date +%s) - T0 ))s"

# ============================================ 3. lifecycle plan --json and apply (crane)

echo "=== 3. lifecycle plan / apply"
cat >"$L/plan.yaml" <<'EOF'
lifecycle:
  immutable:
    - {registries: [default], repositories: ["plan/locked"]}
  gc: {interval: 0s, grace: 1h}
  retention:
    - name: plan-test
      registries: [default]
      repositories: ["plan/**"]
      semver: {majors: 2, minors: 2, patches: "2"}
      pulled_within: 1h
      keep_last: 1
      keep: ["latest"]
      snapshots: {keep_per_version: 2, drop_released: true}
      rcs: {drop_released: true}
      untagged_grace: 1ns
EOF
PD="$L/plan/data"
if ! start_dockyard lifecycle/plan --config "$L/plan.yaml"; then
  fail "dockyard starts with the retention policy (see $L/plan/dockyard.log)"
else
  R=$DY_ADDR
  : >"$W/plan-pushed"
  # Each tag its own image, pushed in this order (snapshots: -3 is the newest).
  push_tag() { # REPO TAG
    layer_tar "$W/t.tar" 512 "$2"
    local out; out=$(crane append --oci-empty-base -f "$W/t.tar" -t "$R/$1:$2" 2>>"$LOG") &&
      echo "$1 $2 ${out##*@}" >>"$W/plan-pushed"
  }
  for t in 0.9.0 1.0.0 1.1.0 1.2.0 1.2.1 2.0.0 2.1.1 2.1.2 v2.1.3 \
    2.1.0-rc.1 2.2.0-RC1 2.2.0-rc.2 2.1.3-SNAPSHOT 2.2.0-SNAPSHOT-1 2.2.0-SNAPSHOT-2 2.2.0-SNAPSHOT-3 \
    3.0.0-SNAPSHOT feature-x 2.1.0; do
    push_tag plan/app "$t"
  done
  # latest: the same image as 2.1.0 (same layer file, so the same manifest), pushed last
  # (keep_last: 1 keeps it); pushed again rather than tagged, since a GET would count as a pull.
  out=$(crane append --oci-empty-base -f "$W/t.tar" -t "$R/plan/app:latest" 2>>"$LOG") &&
    echo "plan/app latest ${out##*@}" >>"$W/plan-pushed"
  for t in 1.0.0 1.0.1 1.0.2 1.0.1-rc.1 nightly; do push_tag plan/locked "$t"; done
  push_tag keep/me 0.0.1 # no policy covers it
  check "all 26 test tags pushed" eq 26 "$(wc -l <"$W/plan-pushed")"
  # An untagged manifest in a covered repository and one in a repository no policy
  # covers: pushed with a tag, then the tag deleted.
  untagged_in() { # REPO: prints the digest of a new untagged manifest in REPO
    layer_tar "$W/u.tar" 700 "untagged-${1//\//-}"
    local out; out=$(crane append --oci-empty-base -f "$W/u.tar" -t "$R/$1:untag-me" 2>>"$LOG") &&
      curl -fsS -X DELETE "http://$R/v2/$1/manifests/untag-me" >>"$LOG" 2>&1 && echo "${out##*@}"
  }
  U_APP=$(untagged_in plan/app) U_KEEP=$(untagged_in keep/me)
  check "untagged manifests made in plan/app and keep/me" \
    eq "200 200" "$(manifest_status "$R" plan/app "$U_APP" | cut -d' ' -f1) $(manifest_status "$R" keep/me "$U_KEEP" | cut -d' ' -f1)"
  check "latest and 2.1.0 are one manifest" \
    eq "$(awk '$2=="2.1.0" {print $3}' "$W/plan-pushed")" "$(awk '$2=="latest" {print $3}' "$W/plan-pushed")"
  # A pull just before a clean stop: pulled_within must see it (access records are batched).
  crane manifest "$R/plan/app:1.1.0" >/dev/null 2>>"$LOG"
  stop_dockyard
  DY_PID=

  # The expectation, by hand: repository tag class keep reason.
  cat >"$W/plan.expected" <<'EOF'
plan/app 0.9.0 release false no rule keeps it
plan/app 1.0.0 release false no rule keeps it
plan/app 1.1.0 release true kept by pulled_within
plan/app 1.2.0 release false no rule keeps it
plan/app 1.2.1 release true kept by semver
plan/app 2.0.0 release true kept by semver
plan/app 2.1.0 release false no rule keeps it
plan/app 2.1.0-rc.1 rc false no rule keeps it
plan/app 2.1.1 release false no rule keeps it
plan/app 2.1.2 release true kept by semver
plan/app 2.1.3-SNAPSHOT snapshot false no rule keeps it
plan/app 2.2.0-RC1 rc true kept by rcs
plan/app 2.2.0-SNAPSHOT-1 snapshot false no rule keeps it
plan/app 2.2.0-SNAPSHOT-2 snapshot true kept by snapshots
plan/app 2.2.0-SNAPSHOT-3 snapshot true kept by snapshots
plan/app 2.2.0-rc.2 rc true kept by rcs
plan/app 3.0.0-SNAPSHOT snapshot true kept by snapshots
plan/app feature-x other false no rule keeps it
plan/app latest other true kept by keep_last
plan/app v2.1.3 release true kept by semver
plan/locked 1.0.0 release true immutable release
plan/locked 1.0.1 release true kept by semver
plan/locked 1.0.1-rc.1 rc false no rule keeps it
plan/locked 1.0.2 release true kept by semver
plan/locked nightly other true kept by keep_last
EOF
  "$DY" lifecycle plan --json --config "$L/plan.yaml" --data "$PD" >"$W/plan.json" 2>"$W/plan.err"
  check "lifecycle plan --json exits 0" test $? -eq 0
  jq -r '.[] | "\(.repository) \(.tag) \(.class) \(.keep) \(.reason)"' "$W/plan.json" 2>&1 | sort >"$W/plan.got"
  check "lifecycle plan --json: every tag's class, verdict and reason as expected" \
    diff -u "$W/plan.expected" "$W/plan.got"
  jq -r '.[] | "\(.repository) \(.tag) \(.digest)"' "$W/plan.json" 2>&1 | sort >"$W/plan.digests"
  grep -v '^keep/me ' "$W/plan-pushed" | sort >"$W/plan.pushed-digests"
  check "lifecycle plan --json: each decision names the tag's pushed digest" \
    diff -u "$W/plan.pushed-digests" "$W/plan.digests"
  check "lifecycle plan --json: registry default and policy plan-test on every decision" \
    jq -e 'length == 25 and all(.[]; .registry == "default" and .policy == "plan-test")' "$W/plan.json"
  "$DY" lifecycle plan --json --repo plan/locked --config "$L/plan.yaml" --data "$PD" >"$W/plan-locked.json" 2>>"$LOG"
  check "lifecycle plan --repo plan/locked: only that repository's 5 tags" \
    jq -e 'length == 5 and all(.[]; .repository == "plan/locked")' "$W/plan-locked.json"

  ndel=$(awk '$4=="false"' "$W/plan.expected" | wc -l)
  "$DY" lifecycle apply --config "$L/plan.yaml" --data "$PD" >"$W/apply.out" 2>&1
  check "lifecycle apply exits 0" test $? -eq 0
  check "lifecycle apply deleted the $ndel tags the plan deletes (plan itself deleted nothing)" \
    has "$W/apply.out" "^deleted $ndel tags "
  # Untagged after the tag deletions: the manifests of deleted tags that no kept tag
  # shares, and the one made in plan/app (not the one in keep/me).
  nuntag=$(( $(awk 'NR==FNR { d[$1" "$2]=$3; next } { print $4, d[$1" "$2] }' "$W/plan-pushed" "$W/plan.expected" |
    awk '$1=="true" {k[$2]=1} $1=="false" {x[$2]=1} END {n=0; for (d in x) if (!(d in k)) n++; print n}') + 1 ))
  check "lifecycle apply pruned $nuntag untagged manifests (of the deleted tags, and the one in plan/app)" \
    has "$W/apply.out" "^deleted [0-9]+ tags and $nuntag untagged manifests"
  check "fsck clean after apply" fsck_clean plan-apply "$L/plan.yaml" "$PD"

  if start_dockyard lifecycle/plan --config "$L/plan.yaml"; then
    R=$DY_ADDR
    gone_ok=0 gone_bad=() kept_ok=0 kept_bad=()
    while read -r repo tag _ keep _; do
      if [ "$keep" = false ]; then
        s=$(manifest_status "$R" "$repo" "$tag")
        if [ "$s" = "404 MANIFEST_UNKNOWN" ]; then gone_ok=$((gone_ok + 1)); else gone_bad+=("$repo:$tag→$s"); fi
      else
        d=$(awk -v r="$repo" -v t="$tag" '$1==r && $2==t {print $3}' "$W/plan-pushed")
        if image_intact "$R" "$repo" "$tag" "$d" >>"$LOG" 2>&1 && crane validate --remote "$R/$repo:$tag" >>"$LOG" 2>&1; then
          kept_ok=$((kept_ok + 1)); else kept_bad+=("$repo:$tag"); fi
      fi
    done <"$W/plan.expected"
    check "after apply every deleted tag answers 404 MANIFEST_UNKNOWN ($gone_ok ok; bad: ${gone_bad[*]:-none})" \
      eq "$ndel 0" "$gone_ok ${#gone_bad[@]}"
    nkeep=$(awk '$4=="true"' "$W/plan.expected" | wc -l)
    check "after apply every kept tag pulls with its pushed bytes ($kept_ok ok; bad: ${kept_bad[*]:-none})" \
      eq "$nkeep 0" "$kept_ok ${#kept_bad[@]}"
    check "after apply the tag list of plan/app is exactly the kept tags" \
      eq "$(awk '$1=="plan/app" && $4=="true" {print $2}' "$W/plan.expected" | sort | paste -sd' ')" \
      "$(crane ls "$R/plan/app" 2>>"$LOG" | sort | paste -sd' ')"
    check "a repository no policy covers is untouched (keep/me:0.0.1 pulls)" \
      image_intact "$R" keep/me 0.0.1 "$(awk '$1=="keep/me" {print $3}' "$W/plan-pushed")"
    check "untagged_grace pruned the untagged manifest of plan/app (404 MANIFEST_UNKNOWN)" \
      eq "404 MANIFEST_UNKNOWN" "$(manifest_status "$R" plan/app "$U_APP")"
    check "untagged_grace left the untagged manifest of keep/me alone (no policy covers keep/me)" \
      image_intact "$R" keep/me "$U_KEEP" "$U_KEEP"
    stop_dockyard
  else
    fail "dockyard restarts after lifecycle apply"
  fi
  DY_PID=
fi
echo "section 3 done after $(( $(date +%s) - T0 ))s"

# ================================ 2. crash safety: pushes, online GC, SIGKILL, fsck, GC

echo "=== 2. crash safety with online GC"
# A build whose collections delete blob files slowly (DOCKYARD_E2E_GC_FILE_DELAY), so the
# SIGKILLs below land in the middle of a collection's deletes, not by luck.
go build -tags e2ehooks -o "$L/dockyard-e2ehooks" ./cmd/dockyard >>"$LOG" 2>&1
export DY_BIN="$L/dockyard-e2ehooks" DOCKYARD_E2E_GC_FILE_DELAY=40ms
cat >"$L/crash.yaml" <<'EOF'
lifecycle:
  gc: {interval: 1s, grace: 2s}
  uploads: {purge_after: 30s, interval: 1s}
  retention:
    # only on demand (no schedule): keeps nothing, drops untagged manifests at once
    - name: keep-nothing
      registries: [default]
      repositories: ["crash/**"]
      untagged_grace: 1ns
EOF
CD="$L/crash/data"
STOP="$W/stop"
ACKED="$W/acked"
: >"$ACKED"
rm -f "$STOP"
layer_tar "$W/shared.tar" 300000 shared # in every kept image of the w* workers

# kept_worker N: pushes crash/wN:kI (shared layer + a random one) and records what was
# acknowledged; between them an ephemeral image crash/wN:eI, deleted by digest at once,
# gives the online GC manifests and blobs to collect.
kept_worker() {
  local w=$1 i=0 out
  while [ ! -e "$STOP" ]; do
    i=$((i + 1))
    layer_tar "$W/w$w.tar" $((RANDOM % 32768 + 1024))
    if out=$(crane append --oci-empty-base -f "$W/shared.tar" -f "$W/w$w.tar" -t "$R/crash/w$w:k$i" 2>>"$W/w$w.err"); then
      echo "crash/w$w k$i ${out##*@}" >>"$ACKED"
    fi
    layer_tar "$W/w$w.tar" $((RANDOM % 32768 + 1024))
    if out=$(crane append --oci-empty-base -f "$W/w$w.tar" -t "$R/crash/w$w:e$i" 2>>"$W/w$w.err"); then
      crane delete "$out" 2>>"$W/w$w.err"
    fi
  done
}
# resurrect_worker N: pushes an image with six fresh layers and deletes it by digest; GC
# collects the manifest after the grace period and its layers a grace period later.
# Meanwhile kept images, one every half second, each reuse one of those layers: crane
# skips the upload when its HEAD finds the layer, so when GC takes the layer right then,
# the registry must refuse the manifest or keep the blob. Whether each push found its
# layer still there or uploaded it again goes to $W/resurrect.log.
resurrect_worker() {
  local n=$1 g=0 j out files
  while [ ! -e "$STOP" ]; do
    g=$((g + 1)) files=()
    for j in 1 2 3 4 5 6; do layer_tar "$W/r$n-e$j.tar" 4096 "e$g-$j"; files+=(-f "$W/r$n-e$j.tar"); done
    if out=$(crane append --oci-empty-base "${files[@]}" -t "$R/crash/r$n:tmp$g" 2>>"$W/r$n.err"); then
      crane delete "$out" 2>>"$W/r$n.err"
    fi
    sleep 2.5
    for j in 1 2 3 4 5 6; do
      [ -e "$STOP" ] && break
      layer_tar "$W/r$n.tar" 2000
      if out=$(crane append --oci-empty-base -f "$W/r$n-e$j.tar" -f "$W/r$n.tar" -t "$R/crash/r$n:k$g-$j" 2>"$W/r$n.one"); then
        echo "crash/r$n k$g-$j ${out##*@}" >>"$ACKED"
        if grep -q 'existing blob' "$W/r$n.one"; then echo reused; else echo uploaded; fi >>"$W/resurrect.log"
      fi
      cat "$W/r$n.one" >>"$W/r$n.err"
      sleep 0.5
    done
  done
}
acked() { wc -l <"$ACKED" | tr -d ' '; }
gc_lines() { grep -c 'msg="garbage collection"' "$L/crash/dockyard.log" 2>/dev/null; }

if ! start_dockyard lifecycle/crash --config "$L/crash.yaml"; then
  fail "dockyard starts with online GC every second (see $L/crash/dockyard.log)"
else
  R=$DY_ADDR
  export DY_PORT=${R##*:} # restarts keep the address the workers push to
  for w in 1 2 3; do kept_worker $w & WORKERS+=($!); done
  for n in 1 2; do resurrect_worker $n & WORKERS+=($!); done

  sleep 5 # the first SIGKILL comes in the middle of the pushes
  A1=$(acked)
  alive1=$(kill -0 "$DY_PID" 2>/dev/null && echo yes)
  stop_dockyard KILL
  echo "life 1: $A1 acknowledged, SIGKILL; gc runs logged: $(gc_lines)"
  sleep 0.5
  start_dockyard lifecycle/crash --config "$L/crash.yaml" || fail "dockyard restarts after the first SIGKILL"
  sleep 4
  # The second SIGKILL comes while the online GC is deleting blob files: poll the blob
  # directory every 20 ms and kill as soon as a file that was there has vanished.
  during_gc=no
  find "$CD/blobs" -type f | sort >"$W/blobs.prev"
  for _ in $(seq 1 250); do
    sleep 0.02
    find "$CD/blobs" -type f | sort >"$W/blobs.now"
    if [ -n "$(comm -23 "$W/blobs.prev" "$W/blobs.now" | head -1)" ]; then during_gc=yes; break; fi
    mv "$W/blobs.now" "$W/blobs.prev"
  done
  A2=$(acked)
  alive2=$(kill -0 "$DY_PID" 2>/dev/null && echo yes)
  stop_dockyard KILL
  echo "life 2: $A2 acknowledged, SIGKILL; gc runs logged: $(gc_lines)"
  sleep 0.5
  start_dockyard lifecycle/crash --config "$L/crash.yaml" || fail "dockyard restarts after the second SIGKILL"
  sleep 3
  touch "$STOP"
  for p in "${WORKERS[@]}"; do wait "$p" 2>/dev/null; done
  WORKERS=()
  A3=$(acked)
  echo "life 3: $A3 acknowledged; workers stopped"
  echo "resurrect pushes: $(grep -c reused "$W/resurrect.log" 2>/dev/null) found their deleted image's layer still there, $(grep -c uploaded "$W/resurrect.log" 2>/dev/null) uploaded it again after GC took it"
  check "dockyard was serving when each SIGKILL came" eq "yes yes" "$alive1 $alive2"
  check "the second SIGKILL came while the online GC was deleting blob files" eq yes "$during_gc"
  check "pushes were acknowledged in every life ($A1, $A2, $A3 in total)" \
    test "$A1" -gt 0 -a "$A2" -gt "$A1" -a "$A3" -gt "$A2"
  "$DY" fsck --config "$L/crash.yaml" --data "$CD" >"$W/fsck-running.out" 2>&1; rc=$?
  check "an offline command refuses the data directory of a running server (exit $rc)" \
    bash -c "[ $rc -ne 0 ] && grep -q 'server running' '$W/fsck-running.out'"
  sleep 3 # a few more GC runs over what the workers left behind
  stop_dockyard TERM
  DY_PID=
  # What the online GC did, from its log lines (one per run, with counts).
  gc_sum() {
    grep 'msg="garbage collection"' "$L/crash/dockyard.log" |
      sed -nE 's/.* manifests=([0-9]+) blobs=([0-9]+) .*/\1 \2/p' | awk '{m+=$1; b+=$2} END {print m+0, b+0}'
  }
  read -r gcm gcb <<<"$(gc_sum)"
  echo "online GC: $(gc_lines) runs, $gcm manifests and $gcb blobs collected"
  check "online GC ran and collected manifests and blobs meanwhile ($gcm manifests, $gcb blobs)" \
    test "${gcm:-0}" -gt 0 -a "${gcb:-0}" -gt 0
  # A collection cancelled by a shutdown (SIGTERM) says so; any other error fails.
  check "the online GC reported no error" bash -c "! grep 'msg=\"garbage collection\"' '$L/crash/dockyard.log' | grep -v -e ' err=<nil>' -e ' err=\"context canceled\"'"
  check "fsck --verify-digests clean after two SIGKILLs under GC" fsck_clean crash-1 "$L/crash.yaml" "$CD"

  # fsck is not vacuous: a corrupted blob file is reported, with a non-zero exit.
  victim=$(find "$CD/blobs" -type f | head -1)
  if [ -n "$victim" ]; then
    cp "$victim" "$W/victim.bak"
    printf 'X' | dd of="$victim" bs=1 seek=0 conv=notrunc 2>/dev/null
    "$DY" fsck --verify-digests --config "$L/crash.yaml" --data "$CD" >"$W/fsck-corrupt.out" 2>&1
    rc=$?
    vd="sha256:$(basename "$victim")"
    check "fsck --verify-digests finds a corrupted blob (exit $rc, names $vd)" \
      bash -c "[ $rc -ne 0 ] && grep -qF 'blob $vd: file content hashes to' '$W/fsck-corrupt.out'"
    cp "$W/victim.bak" "$victim"
  else
    fail "a blob file exists after the pushes"
  fi

  if start_dockyard lifecycle/crash --config "$L/crash.yaml"; then
    R=$DY_ADDR
    echo "pull checks start after $(( $(date +%s) - T0 ))s"
    # Four readers in parallel, each over a quarter of the acknowledged tags.
    split -n l/4 -d "$ACKED" "$W/acked.part."
    pids=()
    for f in "$W"/acked.part.??; do
      while read -r repo tag d; do
        if image_intact "$R" "$repo" "$tag" "$d" >>"$f.log" 2>&1; then echo ok; else echo "bad $repo:$tag"; fi
      done <"$f" >"$f.res" &
      pids+=($!)
    done
    wait "${pids[@]}"
    cat "$W"/acked.part.??.log >>"$LOG"
    ok=$(cat "$W"/acked.part.??.res | grep -c '^ok$') bad=$(cat "$W"/acked.part.??.res | sed -n 's/^bad //p' | tr '\n' ' ')
    check "every acknowledged tag pulls: manifest bytes hash to the acknowledged digest, every blob to its own ($ok of $A3; bad: ${bad:-none})" \
      eq "$A3 none" "$ok ${bad:-none}"
    # crane's view of a sample (pull + validate the layers).
    sample_ok=0
    for ref in $(awk '{print $1":"$2}' "$ACKED" | shuf -n 5 --random-source=<(yes)); do
      crane validate --remote "$R/$ref" >>"$LOG" 2>&1 && sample_ok=$((sample_ok + 1))
    done
    check "crane validate --remote on 5 acknowledged tags" eq 5 "$sample_ok"

    # Delete every tag of the crash/w* repositories by manifest digest (crane delete,
    # eight at a time); the digests come from the tag list and a HEAD of each tag.
    : >"$W/to-delete"
    for repo in crash/w1 crash/w2 crash/w3; do
      for tag in $(curl -fsS "http://$R/v2/$repo/tags/list" | jq -r '.tags[]?'); do
        d=$(curl -fsS -I -H "Accept: $ACCEPT" "http://$R/v2/$repo/manifests/$tag" | tr -d '\r' |
          awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}')
        echo "$R/$repo@$d" >>"$W/to-delete"
      done
    done
    sort -u "$W/to-delete" | xargs -P 8 -n 1 sh -c 'crane delete "$0" >/dev/null 2>&1 && echo ok || echo "bad $0"' >"$W/deleted"
    del_ok=$(grep -c '^ok$' "$W/deleted") del_bad=$(grep -c '^bad' "$W/deleted")
    grep '^bad' "$W/deleted" >>"$LOG"
    check "crane delete by digest of every tag in crash/w1..3 ($del_ok deleted)" test "$del_ok" -gt 0 -a "$del_bad" -eq 0
    # no_tags REPO: crane lists no tag, or the repository is gone (NAME_UNKNOWN); a
    # crane that fails otherwise fails the check.
    no_tags() {
      local out rc
      out=$(crane ls "$R/$1" 2>&1); rc=$?
      echo "crane ls $1: exit $rc: $out"
      if [ $rc -eq 0 ]; then [ -z "$out" ]; else grep -q NAME_UNKNOWN <<<"$out"; fi
    }
    check "crash/w1..3 have no tags left" eval 'no_tags crash/w1 && no_tags crash/w2 && no_tags crash/w3'
    first=$(head -1 "$ACKED")
    check "a deleted acknowledged manifest answers 404 MANIFEST_UNKNOWN by digest" \
      eq "404 MANIFEST_UNKNOWN" "$(set -- $first; manifest_status "$R" "$1" "$3")"
    stop_dockyard TERM
    DY_PID=

    echo "deletes done after $(( $(date +%s) - T0 ))s"
    # An offline GC with nothing held back, killed mid-run (the slowed build: 40 ms a
    # file, so it is still deleting when the first file is seen gone).
    blobs_before=$(find "$CD/blobs" -type f | wc -l)
    "$DY_BIN" gc --grace 0s --config "$L/crash.yaml" --data "$CD" >"$W/gc-killed.out" 2>&1 &
    OFFLINE_PID=$!
    for _ in $(seq 1 200); do # kill it once it has deleted some blob files
      [ "$(find "$CD/blobs" -type f | wc -l)" -lt "$blobs_before" ] && break
      kill -0 "$OFFLINE_PID" 2>/dev/null || break
      sleep 0.01
    done
    kill -9 "$OFFLINE_PID" 2>/dev/null; killed=$?
    wait "$OFFLINE_PID" 2>/dev/null
    OFFLINE_PID=
    blobs_mid=$(find "$CD/blobs" -type f | wc -l)
    echo "offline gc: $blobs_before blob files before, $blobs_mid when killed (kill status $killed)"
    check "fsck --verify-digests clean after an offline gc was SIGKILLed mid-run" fsck_clean crash-2 "$L/crash.yaml" "$CD"
    # How far a whole collection goes: the kill must have come before that.
    "$DY" gc --grace 0s --config "$L/crash.yaml" --data "$CD" >"$W/gc-after-kill.out" 2>&1
    blobs_after=$(find "$CD/blobs" -type f | wc -l)
    check "the offline gc was killed while deleting ($blobs_before before > $blobs_mid at the kill > $blobs_after after a whole run)" \
      test "$killed" -eq 0 -a "$blobs_mid" -lt "$blobs_before" -a "$blobs_mid" -gt "$blobs_after"

    # Retention keeping nothing (crash/r* tags, leftovers), untagged manifests at once, then GC.
    "$DY" lifecycle apply --config "$L/crash.yaml" --data "$CD" >"$W/crash-apply.out" 2>&1
    check "lifecycle apply with a policy keeping nothing exits 0" test $? -eq 0
    "$DY" gc --grace 0s --config "$L/crash.yaml" --data "$CD" >"$W/crash-gc.out" 2>&1
    check "gc --grace 0s exits 0" test $? -eq 0
    cat "$W/crash-apply.out" "$W/crash-gc.out" >>"$LOG"
    left=$(find "$CD/blobs" -type f | wc -l)
    find "$CD/blobs" -type f >>"$LOG"
    check "no blob file remains under data/blobs ($left left)" eq 0 "$left"
    check "fsck clean after everything was collected" fsck_clean crash-3 "$L/crash.yaml" "$CD"
    check "fsck counts nothing left (0 blobs, 0 manifests, 0 tags)" \
      has "$W/crash-3.fsck" '^fsck: 0 blobs, 0 manifests, 0 tags checked; 0 problems$'
  else
    fail "dockyard restarts for the pull checks (see $L/crash/dockyard.log)"
  fi
fi
echo "lifecycle.sh took $(( $(date +%s) - T0 ))s"
summary
