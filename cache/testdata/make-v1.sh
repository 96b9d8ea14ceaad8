#!/usr/bin/env bash
# Writes cache/testdata/v1.tar.gz: a data directory written by dockyard at commit
# 8c34a90 (index format 1, before the format version existed), for the upgrade test
# (format_test.go). It holds a hosted image, a two-platform index, an OCI referrer, a
# sparse index and a sparse image manifest (pending references of both kinds), tags,
# pull records, a CI token and a half-done chunked upload; v1.json says what the test
# must find. Run from the repository root with the old binary:
#   git worktree add /tmp/v1 8c34a90 && (cd /tmp/v1 && go build -o /tmp/dockyard-v1 ./cmd/dockyard)
#   DOCKYARD=/tmp/dockyard-v1 bash cache/testdata/make-v1.sh
set -euo pipefail
DY=${DOCKYARD:?the dockyard binary of commit 8c34a90}
CRANE=${CRANE:-$PWD/.tools/crane}
ORAS=${ORAS:-$PWD/.tools/oras}
W=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
cat >"$W/config.yaml" <<CFG
listen: 127.0.0.1:5999
data: $W/data
registries:
  - {name: dev, type: hosted, sparse_index: true}
routes:
  - {host: "*", registry: dev}
CFG
"$DY" token create --config "$W/config.yaml" --user ci --scope 'dev/**:pull' --expires 0 >"$W/token"
"$DY" serve --config "$W/config.yaml" >"$W/log" 2>&1 &
PID=$!
for _ in $(seq 50); do curl -fsS http://127.0.0.1:5999/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
R=127.0.0.1:5999
mk_layer() { mkdir -p "$W/l/$1"; echo "$1 content" >"$W/l/$1/file-$1"; tar -C "$W/l/$1" -cf "$W/$1.tar" .; }
mk_layer amd64; mk_layer arm64; mk_layer app
"$CRANE" append --insecure -f "$W/app.tar" -t $R/team/app:1.0 >/dev/null
"$CRANE" append --insecure -f "$W/amd64.tar" -t $R/team/multi:amd64 --platform linux/amd64 >/dev/null
"$CRANE" append --insecure -f "$W/arm64.tar" -t $R/team/multi:arm64 --platform linux/arm64 >/dev/null
"$CRANE" index append --insecure -m $R/team/multi:amd64 -m $R/team/multi:arm64 -t $R/team/multi:2.0 >/dev/null
APP=$("$CRANE" digest --insecure $R/team/app:1.0)
echo '{"sbom":"v1"}' >"$W/sbom.json"
(cd "$W" && "$ORAS" attach --plain-http --artifact-type application/vnd.example.sbom $R/team/app@$APP sbom.json >/dev/null)
# Sparse content: an index naming a child manifest that was never pushed, and an image
# manifest naming a layer that was never pushed (pending references of both kinds).
ghost_manifest='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'
ghost=sha256:$(printf '%s' "$ghost_manifest" | sha256sum | cut -d' ' -f1)
printf '%s' "$ghost_manifest" >"$W/ghost.json"
index='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'$ghost'","size":'${#ghost_manifest}'}]}'
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' --data-binary "$index" http://$R/v2/team/sparse/manifests/index >/dev/null
ghost_layer="a layer that was never pushed"
gl=sha256:$(printf '%s' "$ghost_layer" | sha256sum | cut -d' ' -f1)
img='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"'$gl'","size":'${#ghost_layer}'}]}'
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$img" http://$R/v2/team/sparse/manifests/image >/dev/null
# Pulls, recorded by the 5 s flush.
for _ in 1 2 3; do "$CRANE" manifest --insecure $R/team/app:1.0 >/dev/null; done
sleep 6
# A chunked upload left half-done: POST, one PATCH, no PUT.
loc=$(curl -fsS -X POST -D - -o /dev/null http://$R/v2/team/app/blobs/uploads/ | tr -d '\r' | sed -n 's/^Location: //Ip')
printf 'the first half of an upload, ' >"$W/half"
curl -fsS -X PATCH -H 'Content-Type: application/octet-stream' --data-binary @"$W/half" "http://$R$loc" >/dev/null
kill -TERM $PID; wait $PID || true
# What the test must find.
jq -n --arg app "$APP" --arg index "$(printf '%s' "$index" | sha256sum | cut -d' ' -f1)" \
  --arg image "$(printf '%s' "$img" | sha256sum | cut -d' ' -f1)" --arg ghost "$ghost" --arg ghost_manifest "$ghost_manifest" \
  --arg ghost_layer "$ghost_layer" --arg gl "$gl" --arg upload "${loc##*/}" --arg half "$(cat "$W/half")" \
  --arg token "$(head -1 "$W/token")" \
  '{app: $app, sparse_index: ("sha256:" + $index), sparse_image: ("sha256:" + $image), ghost_manifest_digest: $ghost,
    ghost_manifest: $ghost_manifest, ghost_layer: $ghost_layer, ghost_layer_digest: $gl, upload: $upload, half: $half, token: $token}' \
  >cache/testdata/v1.json
tar -C "$W/data" -czf cache/testdata/v1.tar.gz .
ls -la cache/testdata/v1.tar.gz
