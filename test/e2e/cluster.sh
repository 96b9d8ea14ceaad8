#!/usr/bin/env bash
# Three dockyard instances sharing one PostgreSQL index and one S3 bucket (versitygw),
# behind nginx as a per-request round-robin balancer with no stickiness:
#  1. the OCI conformance suite and the real clients through the balancer;
#  2. an upload whose POST, PATCH and PUT each reach another instance;
#  3. a tag moved 20 times, each time through another instance, seen by all three;
#  4. 60 concurrent pushes: tag lists and catalogs agree everywhere, fsck (reference
#     counts against a recount) is clean;
#  5. 12 cold pulls of one proxied 48 MiB blob over the three: one upstream GET;
#  6. garbage collection with a short grace on one instance while the others push:
#     every acknowledged push pulls byte-identical, fsck --verify-digests is clean;
#  7. kill -9 of an instance during pushes: every acknowledged push pulls, and the
#     scheduled job it ran moves to a survivor;
#  8. PostgreSQL stopped for 10 s during traffic: 503s with an OCI error body (never a
#     500), then recovery without restarting anything.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
set +e

C="$RESULTS/cluster"
rm -rf "$C"; mkdir -p "$C/work"
W="$C/work"
LOG="$C/commands.log"; : >"$LOG"
BIN=${DOCKYARD_BIN:-$ROOT/bin/dockyard}
declare -a DYP DYA # pids and addresses of instances 1..3
UP_PID=

cleanup() {
  local p
  for p in "${DYP[@]}" "$UP_PID"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  [ -n "${NGINX_PID:-}" ] && kill -TERM "$NGINX_PID" 2>/dev/null # its workers leave with it
  for p in "${DYP[@]}" "$UP_PID" "${NGINX_PID:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
  stop_s3
  remove_pg
}
trap cleanup EXIT

start_pg || { fail "PostgreSQL did not start"; summary; exit 1; }
start_s3 "$C/versitygw" || { fail "versitygw did not start"; summary; exit 1; }
export DY_PG_DSN=$PG_DSN

# The upstream of the proxy: a CNCF registry whose log says each request it served.
UP_PORT=$(free_port)
mkdir -p "$C/upstream/data"
cat >"$C/upstream/config.yml" <<YAML
version: 0.1
log: {level: info, formatter: text}
storage:
  filesystem: {rootdirectory: $C/upstream/data}
http: {addr: 127.0.0.1:$UP_PORT}
YAML
registry serve "$C/upstream/config.yml" >"$C/upstream/log" 2>&1 &
UP_PID=$!
UP="127.0.0.1:$UP_PORT"

cat >"$C/cluster.yaml" <<YAML
index:
  driver: postgres
  postgres: {dsn_env: DY_PG_DSN, max_conns: 16, timeout: 10s}
storage:
  driver: s3
  s3: {endpoint: $S3_ENDPOINT, bucket: dockyard, prefix: cluster, path_style: true, part_size: 5MiB,
       access_key_id: e2e, secret_access_key_env: DY_S3_SECRET}
lifecycle:
  gc: {interval: 0s, grace: 3s}
  uploads: {purge_after: 1h, interval: 1s}
registries:
  - {name: default, type: hosted}
  - {name: up, type: proxy, upstream: {url: "http://$UP"}}
routes:
  - {host: "*", registry: default, namespaces: {upstream: up}}
YAML

# dy_start I: starts instance I (its own data directory, the shared configuration).
dy_start() {
  local i=$1
  [ -n "${DYA[$i]:-}" ] || DYA[$i]="127.0.0.1:$(free_port)"
  "$BIN" serve --config "$C/cluster.yaml" --listen "${DYA[$i]}" --data "$C/dy$i" >>"$C/dy$i.log" 2>&1 &
  DYP[$i]=$!
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://${DYA[$i]}/v2/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "instance $i did not start:"; tail -20 "$C/dy$i.log"
  return 1
}
for i in 1 2 3; do dy_start $i || { fail "instance $i started"; summary; exit 1; }; done
LB_PORT=$(free_port)
start_nginx "$C/nginx" "$LB_PORT" "${DYA[1]}" "${DYA[2]}" "${DYA[3]}" || { fail "nginx started"; summary; exit 1; }
LB="127.0.0.1:$LB_PORT"
echo "instances ${DYA[*]} behind $LB; PostgreSQL on $PG_PORT; S3 at $S3_ENDPOINT; upstream $UP"

# --------------------------------------------------------------------------- helpers

# push_image ADDR REPO TAG SIZE DIR: pushes an image of one random layer of SIZE bytes
# (monolithic blob POSTs, then the manifest), keeping its parts in DIR; succeeds when
# the manifest PUT answered 201, and writes the manifest digest to DIR/digest.
push_image() {
  local addr=$1 repo=$2 tag=$3 size=$4 d=$5 code ld cd
  mkdir -p "$d"
  head -c "$size" /dev/urandom >"$d/layer"
  ld="sha256:$(file_sha "$d/layer")"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]}}' "$ld" >"$d/config"
  cd="sha256:$(file_sha "$d/config")"
  for part in layer config; do
    local pd; pd="sha256:$(file_sha "$d/$part")"
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 60 -X POST -H 'Content-Type: application/octet-stream' \
      --data-binary @"$d/$part" "http://$addr/v2/$repo/blobs/uploads/?digest=$pd" 2>>"$LOG")
    [ "$code" = 201 ] || { echo "push $repo:$tag $part: $code" >>"$LOG"; return 1; }
  done
  # PUSH_PAUSE: seconds between the blobs and the manifest (past a GC grace period, the
  # blobs may be collected meanwhile: the manifest must then be refused, not stored).
  [ -n "${PUSH_PAUSE:-}" ] && sleep "$PUSH_PAUSE"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
    "$cd" "$(stat -c %s "$d/config")" "$ld" "$size" >"$d/manifest"
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 60 -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$d/manifest" "http://$addr/v2/$repo/manifests/$tag" 2>>"$LOG")
  [ "$code" = 201 ] || { echo "push $repo:$tag manifest: $code" >>"$LOG"; return 1; }
  echo "sha256:$(file_sha "$d/manifest")" >"$d/digest"
  echo "$repo $tag" >"$d/ref"
}

# pulls_back ADDR DIR: the image pushed from DIR pulls byte-identical through ADDR
# (manifest by tag, layer and config).
pulls_back() {
  local addr=$1 d=$2 repo tag
  read -r repo tag <"$d/ref"
  [ "$(curl -sS --max-time 60 "http://$addr/v2/$repo/manifests/$tag" | sha256_of)" = "$(file_sha "$d/manifest")" ] &&
    [ "$(curl -sS --max-time 60 "http://$addr/v2/$repo/blobs/sha256:$(file_sha "$d/layer")" | sha256_of)" = "$(file_sha "$d/layer")" ] &&
    [ "$(curl -sS --max-time 60 "http://$addr/v2/$repo/blobs/sha256:$(file_sha "$d/config")" | sha256_of)" = "$(file_sha "$d/config")" ]
}

# every_acked_push_pulls GLOB: every image whose push was acknowledged (a digest file
# under a directory matching GLOB) pulls back through the balancer; prints the count.
every_acked_push_pulls() {
  local n=0 bad=0 d
  for d in $1; do
    [ -f "$d/digest" ] || continue
    n=$((n + 1))
    pulls_back "$LB" "$d" || { bad=$((bad + 1)); echo "lost: $d $(cat "$d/ref")"; }
  done
  echo "$n acknowledged pushes, $bad not pulled back"
  [ "$n" -gt 0 ] && [ "$bad" -eq 0 ]
}

# wait_jobs: waits for the background jobs in JOBS (a bare wait would wait for the
# servers too).
wait_jobs() { local p; for p in "${JOBS[@]}"; do wait "$p"; done; JOBS=(); }

fsck_clean() { # [--verify-digests]
  "$BIN" fsck --config "$C/cluster.yaml" --data "$C/fsck" "$@" 2>&1 | tail -5
  [ "${PIPESTATUS[0]}" -eq 0 ]
}

# ------------------------------------------------------- 1. conformance and clients
# CLUSTER_QUICK=1 skips them (for working on the later parts).
if [ -z "${CLUSTER_QUICK:-}" ]; then
  (
    . test/conformance/env.sh
    export OCI_REGISTRY=$LB OCI_RESULTS_DIR="$C/conformance/results"
    mkdir -p "$C/conformance" && cd "$C/conformance" && conformance >"$C/conformance/conformance.log" 2>&1
  ) || true
  conformance_result "cluster of three behind nginx" "$C/conformance/conformance.log"

  clients_result "through the balancer" "$C/clients.out" RESULTS="$C/clients" CLIENTS_ADDR=$LB CLIENTS_PID=$NGINX_PID
fi

# ------------------------------------------------ 2. one upload over three instances
head -c $((7 << 20)) /dev/urandom >"$W/up.bin"
UD="sha256:$(file_sha "$W/up.bin")"
head -c $((6 << 20)) "$W/up.bin" >"$W/up.1"; tail -c +$(((6 << 20) + 1)) "$W/up.bin" >"$W/up.2"
loc=$(curl -sS -o /dev/null -D - -X POST "http://${DYA[1]}/v2/across/blobs/uploads/" | grep -i '^location:' | cut -d' ' -f2- | tr -d '\r')
code1=$(curl -sS -o /dev/null -D "$W/patch.h" -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
  -H "Content-Range: 0-$(((6 << 20) - 1))" --data-binary @"$W/up.1" "http://${DYA[2]}$loc")
loc=$(grep -i '^location:' "$W/patch.h" | cut -d' ' -f2- | tr -d '\r')
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
code2=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' \
  -H "Content-Range: $((6 << 20))-$(((7 << 20) - 1))" --data-binary @"$W/up.2" "http://${DYA[3]}$loc${sep}digest=$UD")
check "an upload begun on instance 1, continued on 2, finished on 3: 202 201" eq "202 201" "$code1 $code2"
check "that blob pulls byte-identical through the balancer" \
  eq "$UD" "sha256:$(curl -sS "http://$LB/v2/across/blobs/$UD" | sha256_of)"

# ------------------------------------------------------------ 3. a tag moved 20 times
moved_ok=0
for k in $(seq 1 20); do
  i=$(((k - 1) % 3 + 1))
  push_image "${DYA[$i]}" team/moving latest 2000 "$W/moving/$k" || { echo "move $k: push failed"; continue; }
  want=$(cat "$W/moving/$k/digest")
  seen=""
  for j in 1 2 3; do
    seen+="$(curl -sS -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://${DYA[$j]}/v2/team/moving/manifests/latest" |
      grep -i '^docker-content-digest:' | cut -d' ' -f2 | tr -d '\r') "
  done
  [ "$seen" = "$want $want $want " ] && moved_ok=$((moved_ok + 1)) || echo "move $k through $i: want $want, instances serve $seen"
done
check "a tag moved 20 times, each through another instance: every instance serves each move at once" eq 20 "$moved_ok"

# ------------------------------------------------------------ 4. 60 concurrent pushes
JOBS=()
for k in $(seq 1 60); do
  push_image "$LB" "many/r$((k % 12))" "t$k" $((20000 + k * 1000)) "$W/many/$k" &
  JOBS+=($!)
done
wait_jobs
acked=$(ls "$W"/many/*/digest 2>/dev/null | wc -l)
check "60 concurrent pushes through the balancer: all acknowledged" eq 60 "$acked"
for i in 1 2 3; do
  curl -sS "http://${DYA[$i]}/v2/_catalog?n=1000" | jq -c '.repositories | map(select(startswith("many/")))' >"$W/catalog.$i"
  : >"$W/tags.$i"
  for r in $(seq 0 11); do curl -sS "http://${DYA[$i]}/v2/many/r$r/tags/list" | jq -c '.tags | sort' >>"$W/tags.$i"; done
done
check "catalogs agree on the three instances (12 repositories)" \
  eq "12 same same" "$(jq length "$W/catalog.1") $(cmp -s "$W/catalog.1" "$W/catalog.2" && echo same) $(cmp -s "$W/catalog.1" "$W/catalog.3" && echo same)"
check "tag lists agree on the three instances (60 tags)" \
  eq "60 same same" "$(jq -s 'map(length) | add' "$W/tags.1") $(cmp -s "$W/tags.1" "$W/tags.2" && echo same) $(cmp -s "$W/tags.1" "$W/tags.3" && echo same)"
check "fsck on PostgreSQL after concurrent pushes: reference counts equal a recount" fsck_clean

# ---------------------------------------------- 5. cold pulls of one proxied blob
head -c $((48 << 20)) /dev/urandom >"$W/big.bin"
tar -C "$W" -cf "$W/big.tar" big.bin
run crane append -f "$W/big.tar" -t "$UP/lib/big:1" --oci-empty-base
BIGD=$(crane manifest "$UP/lib/big:1" 2>>"$LOG" | jq -r '.layers[0].digest')
BIGS=${BIGD#sha256:}
upstream_gets() { grep -c "\"GET /v2/lib/big/blobs/$BIGD HTTP" "$C/upstream/log"; } # its access log
JOBS=()
for k in $(seq 1 12); do
  curl -sS --max-time 120 "http://$LB/v2/upstream/lib/big/blobs/$BIGD" | sha256_of >"$W/cold.$k" &
  JOBS+=($!)
done
wait_jobs
sleep 1 # the upstream's log lines are written after the responses
after=$(upstream_gets)
same=0; for k in $(seq 1 12); do [ "$(cat "$W/cold.$k")" = "$BIGS" ] && same=$((same + 1)); done
check "12 cold pulls of a proxied 48 MiB blob over three instances: all byte-identical" eq 12 "$same"
check "those 12 cold pulls made one upstream GET" eq 1 "$after"

# ------------------------------------------- 6. garbage collection while pushing
(
  end=$((SECONDS + 60))
  while [ $SECONDS -lt $end ]; do
    curl -sS -o /dev/null -X POST "http://${DYA[1]}/-/admin/gc" 2>>"$LOG"
    sleep 1
  done
) &
JOBS=($!)
for w in 1 2 3 4; do
  (
    k=0 end=$((SECONDS + 60))
    while [ $SECONDS -lt $end ]; do
      k=$((k + 1))
      i=$((2 + (k + w) % 2))
      # Every third push waits past the grace period before its manifest.
      pause=""; [ $((k % 3)) -eq 0 ] && pause=$((2 + k % 3)).$((k % 10))
      # A push moves its tag on from the last acknowledged push of that tag, whose
      # manifest is then deleted, leaving its blobs to the collector. Only the newest
      # of a tag is checked.
      latest="$W/gc/latest.$w.$((k % 5))"
      if PUSH_PAUSE=$pause push_image "${DYA[$i]}" "gc/w$w" "t$((k % 5))" $((4000 + k * 300)) "$W/gc/$w-$k"; then
        if [ -f "$latest" ]; then
          old=$(cat "$latest")
          curl -sS -o /dev/null -X DELETE "http://${DYA[$i]}/v2/gc/w$w/manifests/$(cat "$old/digest")" 2>>"$LOG"
          rm -rf "$old"
        fi
        echo "$W/gc/$w-$k" >"$latest"
      fi
    done
  ) &
  JOBS+=($!)
done
wait_jobs
gcs=$(curl -sS "http://${DYA[1]}/-/admin/jobs" | jq -r .gcRuns)
collected=$(curl -sS "http://${DYA[1]}/-/admin/jobs" | jq -r .blobsCollected)
echo "collections on instance 1: $gcs, blobs collected: $collected"
check "garbage was collected while the others pushed" test "${collected:-0}" -gt 0
check "GC while pushing: every acknowledged push pulls byte-identical" every_acked_push_pulls "$W/gc/*"
check "fsck --verify-digests after GC while pushing: clean" fsck_clean --verify-digests

# ------------------------------------------------------ 7. kill -9 during pushes
# The instance that ran the scheduled upload purge last is the one killed.
last_purger() {
  local best=0 who=1 i n
  for i in 1 2 3; do
    n=$(grep -c 'msg="upload purge"' "$C/dy$i.log")
    [ -n "${DYP[$i]}" ] || continue
    [ "$n" -gt "$best" ] && best=$n who=$i
  done
  echo "$who"
}
sleep 3
victim=$(last_purger)
echo "killing instance $victim (it ran the upload purge most)"
JOBS=()
for w in 1 2 3; do
  (
    for k in $(seq 1 15); do
      push_image "$LB" "kill/w$w" "t$k" $((50000 + k * 1000)) "$W/kill/$w-$k" || true
    done
  ) &
  JOBS+=($!)
done
sleep 2
kill -9 "${DYP[$victim]}"
wait "${DYP[$victim]}" 2>/dev/null
DYP[$victim]=
before=()
for i in 1 2 3; do before[$i]=$(grep -c 'msg="upload purge"' "$C/dy$i.log"); done
wait_jobs # the pushers
sleep 3
moved=0
for i in 1 2 3; do
  [ "$i" = "$victim" ] && continue
  [ "$(grep -c 'msg="upload purge"' "$C/dy$i.log")" -gt "${before[$i]}" ] && moved=1
done
check "kill -9 during pushes: every acknowledged push pulls byte-identical" every_acked_push_pulls "$W/kill/*"
check "the scheduled job of the killed instance runs on a survivor" eq 1 "$moved"
dy_start "$victim" || fail "instance $victim restarted"

# --------------------------------------------- 8. PostgreSQL stopped for 10 seconds
push_image "$LB" pg/base latest 3000 "$W/pg/base" || true
(
  end=$((SECONDS + 25))
  while [ $SECONDS -lt $end ]; do
    curl -sS -o "$W/pg.body" -w '%{http_code}\n' --max-time 30 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$LB/v2/pg/base/manifests/latest" >>"$W/pg.codes" 2>>"$LOG"
    [ "$(tail -1 "$W/pg.codes")" = 503 ] && cp "$W/pg.body" "$W/pg.503.body"
    sleep 0.1
  done
) &
READER=$!
sleep 3
stop_pg fast
down_at=$SECONDS
sleep 10
restart_pg
echo "PostgreSQL was down $((SECONDS - down_at)) s"
wait $READER
echo "statuses during the outage: $(sort "$W/pg.codes" | uniq -c | tr '\n' ' ')"
check "with PostgreSQL down: requests got 503 (and nothing else but 200)" \
  eq "200 503" "$(sort -u "$W/pg.codes" | tr '\n' ' ' | sed 's/ $//')"
check "a 503 has an OCI error body" eq UNKNOWN "$(jq -r '.errors[0].code' "$W/pg.503.body" 2>/dev/null)"
recovered=0
for i in 1 2 3; do
  push_image "${DYA[$i]}" pg/after "i$i" 4000 "$W/pg/after$i" && pulls_back "${DYA[$i]}" "$W/pg/after$i" && recovered=$((recovered + 1))
done
check "after PostgreSQL came back: every instance pushes and pulls, without a restart" eq 3 "$recovered"
check "no instance died" eq "3" "$(for i in 1 2 3; do kill -0 "${DYP[$i]}" 2>/dev/null && echo x; done | wc -l)"

summary
