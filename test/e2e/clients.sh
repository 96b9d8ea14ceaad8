#!/usr/bin/env bash
# Real clients against the real binary: docker, skopeo, crane, regctl, podman and oras
# push to and pull from one dockyard, and every check compares what came back (digests,
# manifest bytes, file bytes) with what went in. Each client uses its own repositories.
# Needs the tools from scripts/install-tools.sh; starts the Docker daemon if it is not
# running and leaves it running. Client configs and HOME dirs live under $RESULTS/clients.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
# A failing client must become a FAIL line, not end the script before summary.
set +e

rm -rf "$RESULTS/clients"
W="$RESULTS/clients/work"
LOG="$RESULTS/clients/commands.log"
mkdir -p "$W"
: >"$LOG"
# Client configuration stays under $RESULTS: docker CLI config, containers/image
# registries.conf (skopeo, podman), a permissive signature policy; regctl, oras and
# podman get their own HOME/storage below.
export DOCKER_CONFIG="$RESULTS/clients/docker-config"
export CONTAINERS_REGISTRIES_CONF="$RESULTS/clients/registries.conf"
mkdir -p "$DOCKER_CONFIG"; echo "{}" >"$DOCKER_CONFIG/config.json" # podman needs it to exist
: >"$CONTAINERS_REGISTRIES_CONF"
POLICY="$RESULTS/clients/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"

# ---------------------------------------------------------------------------- helpers

# manifest_sha REF: sha256 of the manifest bytes the registry serves for REF.
# (piped, not captured: $(...) would drop a trailing newline of the manifest bytes)
manifest_sha() { crane manifest "$1" 2>>"$LOG" | sha256_of; }
digest_of() { crane digest "$1" 2>>"$LOG"; }

# make_layout DIR TAG: writes an OCI image layout whose TAG is a two-platform index
# (linux/amd64, linux/arm64), each image one gzip layer of random content, and the
# original payload files next to DIR. Sets SRC_INDEX (digest), SRC_CHILDREN and
# SRC_CONFIGS (child manifest and config digests, amd64 first). Built by hand so the
# source bytes never came from dockyard.
make_layout() {
  local dir=$1 tag=$2 tmp entries=() plat
  rm -rf "$dir"; mkdir -p "$dir/blobs/sha256"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  tmp=$(mktemp -d "$W/layout.XXXX")
  SRC_CHILDREN=() SRC_CONFIGS=()
  for plat in amd64 arm64; do
    mkdir -p "$tmp/$plat/rootfs"
    head -c 120000 /dev/urandom >"$tmp/$plat/rootfs/payload-$plat"
    echo "built for $plat" >"$tmp/$plat/rootfs/arch"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/$plat/rootfs" \
      -cf "$tmp/$plat/layer.tar" .
    local diffid; diffid=$(file_sha "$tmp/$plat/layer.tar")
    gzip -n -c "$tmp/$plat/layer.tar" >"$tmp/$plat/layer.tgz"
    local ld ls; ld=$(file_sha "$tmp/$plat/layer.tgz"); ls=$(stat -c %s "$tmp/$plat/layer.tgz")
    cp "$tmp/$plat/layer.tgz" "$dir/blobs/sha256/$ld"
    jq -cn --arg a "$plat" --arg d "sha256:$diffid" \
      '{architecture:$a,os:"linux",config:{},rootfs:{type:"layers",diff_ids:[$d]}}' >"$tmp/$plat/config.json"
    local cd cs; cd=$(file_sha "$tmp/$plat/config.json"); cs=$(stat -c %s "$tmp/$plat/config.json")
    cp "$tmp/$plat/config.json" "$dir/blobs/sha256/$cd"
    jq -cn --arg cd "sha256:$cd" --argjson cs "$cs" --arg ld "sha256:$ld" --argjson ls "$ls" \
      '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",
        config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$cd,size:$cs},
        layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar+gzip",digest:$ld,size:$ls}]}' \
      >"$tmp/$plat/manifest.json"
    local md ms; md=$(file_sha "$tmp/$plat/manifest.json"); ms=$(stat -c %s "$tmp/$plat/manifest.json")
    cp "$tmp/$plat/manifest.json" "$dir/blobs/sha256/$md"
    cp "$tmp/$plat/rootfs/payload-$plat" "$dir.payload-$plat"
    SRC_CHILDREN+=("sha256:$md") SRC_CONFIGS+=("sha256:$cd")
    entries+=("$(jq -cn --arg d "sha256:$md" --argjson s "$ms" --arg a "$plat" \
      '{mediaType:"application/vnd.oci.image.manifest.v1+json",digest:$d,size:$s,platform:{architecture:$a,os:"linux"}}')")
  done
  printf '%s\n' "${entries[@]}" |
    jq -cs '{schemaVersion:2,mediaType:"application/vnd.oci.image.index.v1+json",manifests:.}' >"$tmp/index.json"
  local id is; id=$(file_sha "$tmp/index.json"); is=$(stat -c %s "$tmp/index.json")
  cp "$tmp/index.json" "$dir/blobs/sha256/$id"
  jq -cn --arg d "sha256:$id" --argjson s "$is" --arg t "$tag" \
    '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.index.v1+json",digest:$d,size:$s,
      annotations:{"org.opencontainers.image.ref.name":$t}}]}' >"$dir/index.json"
  SRC_INDEX="sha256:$id"
  rm -rf "$tmp"
}

# index_matches_source REF: the registry serves REF with the source index digest, the
# exact source index bytes, and every child manifest byte-identical to the source.
index_matches_source() {
  local ref=$1 repo=${1%:*} c
  eq "$SRC_INDEX" "$(digest_of "$ref")" "index digest of $ref" || return 1
  eq "$SRC_INDEX" "sha256:$(manifest_sha "$ref")" "sha256 of index bytes of $ref" || return 1
  for c in "${SRC_CHILDREN[@]}"; do
    eq "$c" "sha256:$(manifest_sha "$repo@$c")" "child $repo@$c" || return 1
  done
}

# layout_has_source OUTDIR TAG SRCDIR: an OCI layout a client wrote from dockyard maps
# TAG to the source index and holds every blob of SRCDIR with identical bytes.
layout_has_source() {
  local out=$1 tag=$2 src=$3 f got
  got=$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' \
    "$out/index.json" 2>/dev/null | head -1)
  eq "$SRC_INDEX" "$got" "index.json of $out" || return 1
  for f in "$src"/blobs/sha256/*; do
    same_bytes "$f" "$out/blobs/sha256/$(basename "$f")" || return 1
  done
}

# ------------------------------------------------------------------------ the registry

# CLIENTS_ADDR: test a registry already running there (a cluster behind a balancer;
# CLIENTS_PID is a process that must stay alive, e.g. the balancer).
if [ -n "${CLIENTS_ADDR:-}" ]; then
  DY_ADDR=$CLIENTS_ADDR DY_PID=$CLIENTS_PID
  stop_dockyard() { :; }
else
  start_dockyard clients ${CLIENTS_SERVE_ARGS:-} || { fail "dockyard did not start"; summary; exit 1; }
  if ! kill -0 "$DY_PID" 2>/dev/null; then # port taken by someone else between probe and bind
    fail "dockyard exited at start (see $RESULTS/clients/dockyard.log)"; summary; exit 1
  fi
fi
R=$DY_ADDR
echo "dockyard on $R (data $RESULTS/clients/data)"
# On exit: stop dockyard, drop the images this run left in the shared Docker daemon.
cleanup() {
  stop_dockyard
  docker info >/dev/null 2>&1 || return 0
  docker images --format '{{.Repository}} {{.ID}}' 2>/dev/null |
    awk -v r="$R/" 'index($1, r) == 1 { print $2 }' | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
  return 0
}
trap cleanup EXIT

make_layout "$W/src-layout" v1
echo "source index $SRC_INDEX children ${SRC_CHILDREN[*]}"

# ---------------------------------------------------------------------- 1. docker


DOCKER_DIGEST="" DOCKER_ID=""
if ensure_docker; then
  pass "docker daemon is up"
  rootfs="$W/docker-rootfs"
  mkdir -p "$rootfs/data" "$rootfs/etc"
  head -c 200000 /dev/urandom >"$rootfs/data/blob.bin"
  echo "hello from dockyard e2e $RANDOM" >"$rootfs/etc/greeting"
  img="$R/e2e/app:1.0"
  DOCKER_ID=$(tar -C "$rootfs" -c . | docker import - "$img" 2>>"$LOG")
  echo "+ docker push $img" >>"$LOG"
  docker push "$img" >"$W/docker-push.out" 2>&1; cat "$W/docker-push.out" >>"$LOG"
  pushed=$(sed -nE 's/^1\.0: digest: (sha256:[0-9a-f]{64}) size: [0-9]+$/\1/p' "$W/docker-push.out")
  DOCKER_DIGEST=$(digest_of "$img")
  check "docker push: digest docker reports equals the digest dockyard serves" eq "$pushed" "$DOCKER_DIGEST"
  check "docker push: config blob dockyard serves hashes to the local image ID" \
    eq "$DOCKER_ID" "sha256:$(crane config "$img" 2>>"$LOG" | sha256_of)"
  run docker rmi "$img"
  not_docker_image() { ! docker image inspect "$1" >/dev/null 2>&1; }
  check "docker rmi: image gone locally before pulling" not_docker_image "$img"
  run docker pull "$img"
  check "docker pull: pulled image ID equals the pushed image ID" \
    eq "$DOCKER_ID" "$(docker image inspect --format '{{.Id}}' "$img" 2>>"$LOG")"
  check "docker pull: RepoDigests holds the manifest digest dockyard serves" \
    eq "$R/e2e/app@$DOCKER_DIGEST" "$(docker image inspect --format '{{json .RepoDigests}}' "$img" 2>>"$LOG" |
      jq -r --arg p "$R/e2e/app@" '.[] | select(startswith($p))')"
  # The file bytes survived the round trip: save the pulled image, unpack its layer.
  rm -rf "$W/docker-save"; mkdir -p "$W/docker-save/layer"
  docker save "$img" 2>>"$LOG" | tar -x -C "$W/docker-save" 2>>"$LOG"
  layer=$(jq -r '.[0].Layers[0]' "$W/docker-save/manifest.json" 2>/dev/null)
  tar -x -C "$W/docker-save/layer" -f "$W/docker-save/$layer" 2>>"$LOG"
  check "docker pull: file contents of the pulled image equal the original" \
    same_bytes "$rootfs/data/blob.bin" "$W/docker-save/layer/data/blob.bin"
  # By digest, and into a second repository (docker mounts the blobs across repos).
  run docker rmi "$img"
  check "docker rmi: the image is gone locally before the pull by digest" not_docker_image "$img"
  run docker pull "$R/e2e/app@$DOCKER_DIGEST"
  check "docker pull by digest: image ID equals the pushed image ID" \
    eq "$DOCKER_ID" "$(docker image inspect --format '{{.Id}}' "$R/e2e/app@$DOCKER_DIGEST" 2>>"$LOG")"
  run docker tag "$R/e2e/app@$DOCKER_DIGEST" "$R/e2e/app-mirror:1.0"
  run docker push "$R/e2e/app-mirror:1.0"
  check "docker push to a second repository: same manifest digest" \
    eq "$DOCKER_DIGEST" "$(digest_of "$R/e2e/app-mirror:1.0")"
  run docker rmi "$R/e2e/app@$DOCKER_DIGEST" "$R/e2e/app-mirror:1.0"
  # docker search, plain HTTP, no authentication: the repositories whose names hold the term.
  echo "+ docker search $R/e2e/app" >>"$LOG"
  docker search --no-trunc --format '{{.Name}}' "$R/e2e/app" >"$W/docker-search.out" 2>&1; cat "$W/docker-search.out" >>"$LOG"
  check "docker search $R/e2e/app: finds e2e/app and e2e/app-mirror, nothing else" \
    eq "e2e/app e2e/app-mirror" "$(sort "$W/docker-search.out" | tr '\n' ' ' | sed 's/ $//')"
else
  fail "docker daemon is up (see $RESULTS/docker/dockerd.log)"
fi

# ---------------------------------------------------------------------- 2. skopeo

run skopeo --policy "$POLICY" copy --all --dest-tls-verify=false \
  "oci:$W/src-layout:v1" "docker://$R/e2e/skopeo-multi:v1"
check "skopeo copy --all into dockyard: index and both child manifests byte-identical" \
  index_matches_source "$R/e2e/skopeo-multi:v1"
run skopeo --policy "$POLICY" copy --all --src-tls-verify=false \
  "docker://$R/e2e/skopeo-multi:v1" "oci:$W/skopeo-out:v1"
check "skopeo copy --all out of dockyard: same index digest, every blob byte-identical" \
  layout_has_source "$W/skopeo-out" v1 "$W/src-layout"
check "skopeo inspect --raw: bytes hash to the source index digest" \
  eq "$SRC_INDEX" "sha256:$(skopeo inspect --raw --tls-verify=false "docker://$R/e2e/skopeo-multi:v1" 2>>"$LOG" | sha256_of)"

if [ -n "$DOCKER_ID" ]; then # the daemon is up: docker resolves the index skopeo pushed
  run docker pull --platform linux/arm64 "$R/e2e/skopeo-multi:v1"
  check "docker pull --platform linux/arm64 of the index: arm64 image, RepoDigest is the index" \
    eq "${SRC_CONFIGS[1]} arm64 $R/e2e/skopeo-multi@$SRC_INDEX" \
    "$(docker image inspect --format '{{json .}}' "$R/e2e/skopeo-multi:v1" 2>>"$LOG" |
      jq -r '"\(.Id) \(.Architecture) \(.RepoDigests | join(" "))"')"
  run docker rmi "$R/e2e/skopeo-multi:v1"
fi

# ---------------------------------------------------------------------- 3. crane

run crane push "$W/src-layout" "$R/e2e/crane-src:v1"
check "crane push of an OCI layout: index and children byte-identical" index_matches_source "$R/e2e/crane-src:v1"
run crane copy "$R/e2e/crane-src:v1" "$R/e2e/crane-dst:v1"
check "crane copy between repositories: index and children byte-identical" index_matches_source "$R/e2e/crane-dst:v1"
run crane copy --platform linux/arm64 "$R/e2e/crane-src:v1" "$R/e2e/crane-dst:arm64"
check "crane copy --platform linux/arm64: resolves to the arm64 child" \
  eq "${SRC_CHILDREN[1]}" "$(digest_of "$R/e2e/crane-dst:arm64")"
exported_file_is() { # REF FILE ORIGINAL: crane export REF, FILE in the flattened fs equals ORIGINAL
  local d="$W/crane-export"; rm -rf "$d"; mkdir -p "$d"
  crane export "$1" - | tar -x -C "$d" && same_bytes "$3" "$d/$2"
}
check "crane export: file in the arm64 layer equals the original bytes" \
  exported_file_is "$R/e2e/crane-dst:arm64" payload-arm64 "$W/src-layout.payload-arm64"
if [ -n "$DOCKER_DIGEST" ]; then
  run crane copy "$R/e2e/app:1.0" "$R/e2e/crane-app:1.0"
fi
check "crane copy of the docker-pushed image: same digest" eq "$DOCKER_DIGEST" "$(digest_of "$R/e2e/crane-app:1.0")"

# ---------------------------------------------------------------------- 4. regctl

RG_HOME="$RESULTS/clients/regctl-home"
mkdir -p "$RG_HOME"
rg() { HOME="$RG_HOME" regctl "$@"; }
run rg registry set --tls disabled "$R"
run rg image copy "ocidir://$W/src-layout:v1" "$R/e2e/regctl-src:v1"
check "regctl image copy from an OCI layout: index and children byte-identical" \
  index_matches_source "$R/e2e/regctl-src:v1"
run rg image copy "$R/e2e/regctl-src:v1" "$R/e2e/regctl-dst:v1"
check "regctl image copy between repositories: digest equal (regctl image digest)" \
  eq "$SRC_INDEX" "$(rg image digest "$R/e2e/regctl-dst:v1" 2>>"$LOG")"
check "regctl image copy between repositories: index and children byte-identical" \
  index_matches_source "$R/e2e/regctl-dst:v1"
run rg image copy "$R/e2e/regctl-dst:v1" "ocidir://$W/regctl-out:v1"
check "regctl image copy out of dockyard: same index digest, every blob byte-identical" \
  layout_has_source "$W/regctl-out" v1 "$W/src-layout"

# ---------------------------------------------------------------------- 5. podman

P="$RESULTS/clients/podman"
mkdir -p "$P/tmp"
cat >"$P/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$P/root"
runroot = "$P/run"
EOF
pm() {
  CONTAINERS_STORAGE_CONF="$P/storage.conf" podman --tmpdir "$P/tmp" "$@"
}
not_podman_image() { ! pm image exists "$1"; }
prootfs="$W/podman-rootfs"
mkdir -p "$prootfs/opt"
head -c 150000 /dev/urandom >"$prootfs/opt/podman.bin"
tar -C "$prootfs" -cf "$W/podman-rootfs.tar" .
pimg="$R/e2e/podman-app:1.0"
PODMAN_ID=$(pm import "$W/podman-rootfs.tar" "$pimg" 2>>"$LOG" | tail -1)
PODMAN_ID=${PODMAN_ID#sha256:}
run pm push --tls-verify=false --digestfile "$P/digestfile" "$pimg"
PODMAN_DIGEST=$(digest_of "$pimg")
check "podman push: digest podman reports equals the digest dockyard serves" \
  eq "$(cat "$P/digestfile" 2>/dev/null)" "$PODMAN_DIGEST"
check "podman push: config blob dockyard serves hashes to the local image ID" \
  eq "sha256:$PODMAN_ID" "sha256:$(crane config "$pimg" 2>>"$LOG" | sha256_of)"
run pm rmi "$pimg"
check "podman rmi: image gone locally before pulling" not_podman_image "$pimg"
run pm pull --tls-verify=false --signature-policy "$POLICY" "$pimg"
check "podman pull: image ID and manifest digest equal what was pushed" \
  eq "$PODMAN_ID $PODMAN_DIGEST" "$(pm image inspect --format '{{.Id}} {{.Digest}}' "$pimg" 2>>"$LOG")"
mnt=$(pm image mount "$pimg" 2>>"$LOG")
check "podman pull: file contents of the pulled image equal the original" \
  same_bytes "$prootfs/opt/podman.bin" "$mnt/opt/podman.bin"
[ -n "$mnt" ] && run pm image unmount "$pimg"
# What docker pushed, pulled by podman.
run pm pull --tls-verify=false --signature-policy "$POLICY" "$R/e2e/app:1.0"
check "podman pull of the docker-pushed image: same image ID and digest" \
  eq "$DOCKER_ID $DOCKER_DIGEST" "sha256:$(pm image inspect --format '{{.Id}} {{.Digest}}' "$R/e2e/app:1.0" 2>>"$LOG")"

# ---------------------------------------------------------------------- 6. oras

OR_HOME="$RESULTS/clients/oras-home"
mkdir -p "$OR_HOME" "$W/oras-src"
orc() { HOME="$OR_HOME" oras "$@"; }
head -c 80000 /dev/urandom >"$W/oras-src/model.bin"
printf '{"name":"e2e","n":%d}\n' "$RANDOM" >"$W/oras-src/settings.json"
art="$R/e2e/oras-artifact:v1"
(cd "$W/oras-src" && orc push --plain-http --artifact-type application/vnd.example.bundle --format json \
  "$art" model.bin:application/octet-stream settings.json:application/json >"$W/oras-push.json" 2>>"$LOG")
ART_DIGEST=$(jq -r .digest "$W/oras-push.json" 2>/dev/null)
check "oras push: digest oras reports equals the digest dockyard serves" eq "$ART_DIGEST" "$(digest_of "$art")"
check "oras push: dockyard serves the manifest with the custom artifactType" \
  eq application/vnd.example.bundle "$(crane manifest "$art" 2>>"$LOG" | jq -r .artifactType)"
run orc pull --plain-http -o "$W/oras-pull" "$art"
check "oras pull: model.bin byte-identical" same_bytes "$W/oras-src/model.bin" "$W/oras-pull/model.bin"
check "oras pull: settings.json byte-identical" same_bytes "$W/oras-src/settings.json" "$W/oras-pull/settings.json"

# A referrer on the image docker pushed.
SBOM_TYPE=application/vnd.example.sbom
echo "{\"sbom\":\"e2e\",\"n\":$RANDOM}" >"$W/oras-src/sbom.json"
subject="$R/e2e/app@$DOCKER_DIGEST"
(cd "$W/oras-src" && orc attach --plain-http --artifact-type "$SBOM_TYPE" --format json \
  "$subject" sbom.json:application/json >"$W/oras-attach.json" 2>>"$LOG")
REF_DIGEST=$(jq -r .digest "$W/oras-attach.json" 2>/dev/null)
check "oras attach: referrer manifest stored under the digest oras reports" \
  eq "$REF_DIGEST" "sha256:$(manifest_sha "$R/e2e/app@$REF_DIGEST")"
check "oras attach: referrer's subject is the docker image" \
  eq "$DOCKER_DIGEST" "$(crane manifest "$R/e2e/app@$REF_DIGEST" 2>>"$LOG" | jq -r .subject.digest)"
orc discover --plain-http --format json "$subject" >"$W/oras-discover.json" 2>>"$LOG"
check "oras discover: lists the referrer with its artifactType" \
  eq "$SBOM_TYPE" "$(jq -r --arg d "$REF_DIGEST" '.referrers[] | select(.digest==$d) | .artifactType' "$W/oras-discover.json" 2>/dev/null)"
no_fallback_tag() { local tags; tags=$(crane ls "$1"); echo "$tags"; [ -n "$tags" ] && ! grep -q '^sha256-' <<<"$tags"; }
check "oras attach used the referrers API (no sha256-* fallback tag)" no_fallback_tag "$R/e2e/app"
rm -rf "$W/oras-sbom"
run orc pull --plain-http -o "$W/oras-sbom" "$R/e2e/app@$REF_DIGEST"
check "oras pull of the referrer: sbom.json byte-identical" same_bytes "$W/oras-src/sbom.json" "$W/oras-sbom/sbom.json"

# The referrers endpoint itself.
referrers() { # QUERY NAME: GET the referrers list, headers to NAME.h, body to NAME.json
  curl -sS -D "$W/$2.h" -o "$W/$2.json" "http://$R/v2/e2e/app/referrers/$DOCKER_DIGEST$1" 2>>"$LOG"
}
header() { grep -i "^$2:" "$W/$1.h" | head -1 | cut -d: -f2- | tr -d ' \r'; }
status_of() { head -1 "$W/$1.h" | cut -d' ' -f2; }
referrers_lists_it() { # NAME: 200, OCI index content type, exactly one matching descriptor
  cat "$W/$1.h" "$W/$1.json"; echo
  [ "$(status_of "$1")" = 200 ] &&
    [ "$(header "$1" Content-Type)" = application/vnd.oci.image.index.v1+json ] &&
    jq -e --arg d "$REF_DIGEST" --arg t "$SBOM_TYPE" '.schemaVersion==2
      and .mediaType=="application/vnd.oci.image.index.v1+json"
      and ([.manifests[] | select(.digest==$d and .artifactType==$t
            and .mediaType=="application/vnd.oci.image.manifest.v1+json")] | length)==1' "$W/$1.json"
}
no_filter_header() { cat "$W/$1.h"; [ -s "$W/$1.h" ] && ! grep -qi '^oci-filters-applied:' "$W/$1.h"; }
referrers "" ref-all
check "GET /v2/e2e/app/referrers/<digest>: 200, an OCI index listing the referrer" referrers_lists_it ref-all
check "referrers: the listed size equals the referrer manifest's size" \
  eq "$(crane manifest "$R/e2e/app@$REF_DIGEST" 2>>"$LOG" | wc -c | tr -d ' ')" \
  "$(jq -r --arg d "$REF_DIGEST" '.manifests[] | select(.digest==$d) | .size' "$W/ref-all.json" 2>/dev/null)"
check "referrers without a filter: no OCI-Filters-Applied header" no_filter_header ref-all
referrers "?artifactType=$SBOM_TYPE" ref-match
check "referrers ?artifactType=<sbom>: 200 and OCI-Filters-Applied: artifactType" \
  eq "200 artifactType" "$(status_of ref-match) $(header ref-match OCI-Filters-Applied)"
check "referrers ?artifactType=<sbom>: lists the referrer" referrers_lists_it ref-match
referrers "?artifactType=application/vnd.example.other" ref-other
check "referrers ?artifactType=<other>: 200 and OCI-Filters-Applied: artifactType" \
  eq "200 artifactType" "$(status_of ref-other) $(header ref-other OCI-Filters-Applied)"
check "referrers ?artifactType=<other>: empty manifests list" \
  eq 0 "$(jq -r '.manifests | length' "$W/ref-other.json" 2>/dev/null)"

# Deleting the referrer takes it out of the list; the subject stays.
run orc manifest delete --plain-http --force "$R/e2e/app@$REF_DIGEST"
referrers "" ref-after-delete
check "referrers after deleting the referrer manifest: 200, empty list" \
  eq "200 0" "$(status_of ref-after-delete) $(jq -r '.manifests | length' "$W/ref-after-delete.json" 2>/dev/null)"
check "subject still served after its referrer was deleted" eq "$DOCKER_DIGEST" "$(digest_of "$R/e2e/app:1.0")"

# A crash (or anything else stopping dockyard mid-run) shows up here, not only as
# unreachable-registry failures above.
dockyard_alive() { kill -0 "$DY_PID" && curl -fsS "http://$R/v2/"; }
check "dockyard still running after all clients" dockyard_alive
kill -0 "$DY_PID" 2>/dev/null || tail -20 "$RESULTS/clients/dockyard.log"

summary
