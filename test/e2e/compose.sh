#!/usr/bin/env bash
# The container image and the compose files.
# - Both compose files (and the test's overrides) pass `docker-compose config`; the
#   cluster file refuses to run without its secrets; its configuration passes
#   `dockyard check-config` and its nginx.conf `nginx -t`.
# - `make image` builds an image of the expected shape (user 65532, /data volume owned
#   by it, port 5000, HEALTHCHECK, the host's CA bundle), whose health check finds a
#   registry that does not answer unhealthy.
# - docker-compose.single.yml runs: healthy, uid 65532, its volume owned by it, an image
#   pushed with docker and a layer pushed with crane come back byte-identical, also
#   after a restart, and `down -v` leaves nothing behind.
# - docker-compose.yml runs with three replicas behind nginx: push and pull through
#   nginx, requests spread over the replicas, every instance serves what one pushed, the blobs are in the bucket and in no instance's volume.
#   Its postgres, versitygw and nginx images come from Docker Hub, which is not
#   reachable here: test/e2e/compose/standins.sh builds stand-ins from this machine's
#   PostgreSQL, versitygw and nginx, and test/e2e/compose/cluster-standins.yml puts
#   them in place (with nginx.conf minus `resolve`, which Debian's nginx 1.22 lacks).
#
# Needs docker-compose (Debian's, v1) and a Docker daemon (started here when none
# answers, as clients.sh does). Bridge networks are used when Docker can make them;
# otherwise (or with COMPOSE_NETWORK=host) the single service runs with
# network_mode: host on a copy of its file without the published port, and the
# cluster part is skipped.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
set +e

CR="$RESULTS/compose"
rm -rf "$CR"; mkdir -p "$CR"
W="$CR/work"; mkdir -p "$W"
LOG="$CR/commands.log"; : >"$LOG"
export DOCKER_CONFIG="$CR/docker-config"
mkdir -p "$DOCKER_CONFIG"; echo '{}' >"$DOCKER_CONFIG/config.json"

PROJECT=dytest$$
IMAGE=dockyard:local
DC=(docker-compose -p "$PROJECT")
# The cluster file insists on its two secrets; any value does for validation.
export DOCKYARD_PG_PASSWORD=e2e-pg-password DOCKYARD_S3_SECRET=e2e-s3-secret
unset DOCKYARD_IMAGE DOCKYARD_PUBLISH

# bounded NAME SECONDS CMD...: retries CMD every second until it succeeds or SECONDS pass.
bounded() {
  local name=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  while [ $SECONDS -lt $end ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "$name: not after ${secs}s"
  return 1
}

# or_none: its input on one line, or "none" when there is none.
or_none() { local x; x=$(tr '\n' ' ' | sed 's/ $//'); echo "${x:-none}"; }

if ! command -v docker-compose >/dev/null 2>&1; then
  fail "docker-compose is not installed (scripts/install-tools.sh installs it)"; summary; exit 1
fi

# --------------------------------------------------------------- the files as written
check "docker-compose.yml passes docker-compose config" run docker-compose -f docker-compose.yml config -q
check "docker-compose.single.yml passes docker-compose config" \
  run docker-compose -f docker-compose.single.yml config -q
check "docker-compose.single.yml with the test's override passes docker-compose config" \
  run docker-compose -f docker-compose.single.yml -f test/e2e/compose/docker-compose.test.yml config -q
# Without its secrets the cluster file is refused rather than run with empty ones.
check "docker-compose.yml without DOCKYARD_S3_SECRET is refused" \
  eq "1 DOCKYARD_S3_SECRET" "$(env -u DOCKYARD_S3_SECRET docker-compose -f docker-compose.yml config -q 2>"$W/nosecret.err"; echo $?) $(grep -o DOCKYARD_S3_SECRET "$W/nosecret.err" | head -1)"
# The cluster as compose resolves it: the replicas read the compose configuration, with
# the DSN the file gives them.
docker-compose -f docker-compose.yml config >"$W/cluster.yml" 2>>"$LOG"
cluster_facts() {
  python3 - "$W/cluster.yml" <<'PY'
import sys, yaml
s = yaml.safe_load(open(sys.argv[1]))["services"]
out = []
for name in ("dockyard",):
    d = s[name]
    out.append("%s:%s:%s" % (name, "compose-cluster.yaml:/etc/dockyard/dockyard.yaml:ro" in " ".join(d.get("volumes", [])),
                            d["environment"].get("DOCKYARD_PG_DSN", "").startswith("postgres://dockyard:e2e-pg-password@postgres:5432/")))
out.append("services:" + ",".join(sorted(s)))
out.append("nginx-conf:" + str(any(v.endswith(":/etc/nginx/nginx.conf:ro") for v in s["nginx"]["volumes"])))
print(" ".join(out))
PY
}
check "docker-compose.yml: the replicas run configs/compose-cluster.yaml with the PostgreSQL DSN" \
  eq "dockyard:True:True services:dockyard,nginx,postgres,s3 nginx-conf:True" "$(cluster_facts)"

# The compose configuration is a valid dockyard configuration (the Go tests also build a
# server from it, against a real PostgreSQL and S3 server).
check "build dockyard" run make build
check "configs/compose-cluster.yaml passes dockyard check-config" \
  run bin/dockyard check-config --config configs/compose-cluster.yaml
# nginx.conf: Debian's nginx (1.22) predates the upstream `resolve` parameter (1.27.3)
# and resolves upstream names when it loads the file, so those two things are adapted;
# the rest is checked as written.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$NGINX" ]; then
  mkdir -p "$W/nginx"
  sed -e 's/ resolve;/;/' -e 's/server dockyard:5000/server 127.0.0.1:5000/' configs/compose-nginx.conf >"$W/nginx/nginx.conf"
  check "configs/compose-nginx.conf passes nginx -t (resolve removed)" \
    run "$NGINX" -t -p "$W/nginx" -c "$W/nginx/nginx.conf" -g "pid $W/nginx/nginx.pid;"
fi

# ------------------------------------------------------------------------- the image
ensure_docker >>"$LOG" 2>&1 || { fail "no Docker daemon (see $LOG)"; summary; exit 1; }
check "make image builds $IMAGE" run make image IMAGE="$IMAGE"
check "the image: user 65532:65532, /dockyard serve on :5000 with /data, a volume on /data, port 5000, HEALTHCHECK dockyard healthcheck" \
  eq '65532:65532 ["/dockyard"] ["serve","--listen",":5000","--data","/data"] {"/data":{}} {"5000/tcp":{}} ["CMD","/dockyard","healthcheck"]' \
  "$(docker image inspect -f '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}} {{json .Config.Volumes}} {{json .Config.ExposedPorts}} {{json .Config.Healthcheck.Test}}' "$IMAGE" 2>>"$LOG")"
# What the image holds: /data owned by 65532, and the host's CA bundle.
rm -rf "$W/image"; mkdir -p "$W/image"
cid=$(docker create "$IMAGE" 2>>"$LOG")
docker export -o "$W/image.tar" "$cid" 2>>"$LOG"
docker rm -v "$cid" >/dev/null 2>&1
tar -C "$W/image" -xf "$W/image.tar" 2>>"$LOG"
check "the image: /data is owned by 65532:65532" \
  eq "65532/65532" "$(tar -tvf "$W/image.tar" --numeric-owner 2>>"$LOG" | awk '$NF ~ /^(\.\/)?data\/?$/ {print $2}')"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  check "the image: /etc/ssl/certs/ca-certificates.crt is the host's CA bundle" \
    same_bytes /etc/ssl/certs/ca-certificates.crt "$W/image/etc/ssl/certs/ca-certificates.crt"
fi

# The image's health check sees a registry that does not answer: dockyard listening on
# another port than the one the check asks is unhealthy, a few failed checks later.
dead=$(docker run -d --network none --health-interval 1s --health-retries 2 --health-start-period 1s \
  "$IMAGE" serve --listen :5001 --data /data 2>>"$LOG")
health_is() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null)" = "$2" ]; }
check "the image's health check: a registry not answering on :5000 becomes unhealthy" \
  bounded unhealthy 30 health_is "$dead" unhealthy
check "the health check says why (GET http://127.0.0.1:5000/-/ready: connection refused)" \
  eq "yes" "$(docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$dead" 2>/dev/null |
    grep -q 'unhealthy: Get "http://127.0.0.1:5000/-/ready".*connection refused' && echo yes)"
docker rm -f -v "$dead" >/dev/null 2>&1

# ----------------------------------------------- docker-compose.single.yml, running
PORT=$(free_port)
R="127.0.0.1:$PORT"
export DY_COMPOSE_PORT=$PORT DOCKYARD_PUBLISH=$R
NET=${COMPOSE_NETWORK:-}
if [ -z "$NET" ]; then
  if docker network create "$PROJECT-probe" >>"$LOG" 2>&1; then
    docker network rm "$PROJECT-probe" >/dev/null 2>&1; NET=bridge
  else
    NET=host
  fi
fi
if [ "$NET" = bridge ]; then
  FILES=(-f docker-compose.single.yml -f test/e2e/compose/docker-compose.test.yml)
else
  # compose cannot take a published port away in an override, and a port cannot be
  # published on the host network: run a copy of the file without it.
  docker-compose -f docker-compose.single.yml -f test/e2e/compose/docker-compose.test.yml config 2>>"$LOG" |
    python3 -c 'import sys, yaml
c = yaml.safe_load(sys.stdin)
c["services"]["dockyard"].pop("ports", None)
yaml.safe_dump(c, sys.stdout)' >"$W/single-host.yml"
  FILES=(-f "$W/single-host.yml" -f test/e2e/compose/host-network.yml)
fi
echo "compose: $NET networking, registry on $R"
down() { "${DC[@]}" "${FILES[@]}" down -v --remove-orphans >>"$LOG" 2>&1; }
trap down EXIT

check "docker-compose up -d (single, $NET networking)" run "${DC[@]}" "${FILES[@]}" up -d
CID=$("${DC[@]}" "${FILES[@]}" ps -q dockyard 2>>"$LOG")
check "the container becomes healthy" bounded healthy 60 health_is "$CID" healthy
check "its health check asked /-/ready and got 200" \
  eq "healthy: 200 OK" "$(docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$CID" 2>/dev/null | grep -o -m1 'healthy: GET [^ ]*/-/ready: 200 OK' | sed 's/GET [^ ]* //')"
check "the registry answers on the published port" \
  eq 200 "$(curl -s -o /dev/null -w '%{http_code}' "http://$R/v2/")"

# It runs as 65532: the image says so, and so does the kernel about its process.
PID=$(docker inspect -f '{{.State.Pid}}' "$CID" 2>/dev/null)
check "the container runs as uid/gid 65532 (config and process)" \
  eq "65532:65532 65532 65532" \
  "$(docker inspect -f '{{.Config.User}}' "$CID" 2>/dev/null) $(awk '/^Uid:/{print $2}' "/proc/$PID/status" 2>/dev/null) $(awk '/^Gid:/{print $2}' "/proc/$PID/status" 2>/dev/null)"

# Push with docker: an image made here, pulled back after its local copy is gone.
mkdir -p "$W/rootfs/etc"
head -c 300000 /dev/urandom >"$W/rootfs/payload"
echo "compose e2e $$" >"$W/rootfs/etc/motd"
tar -C "$W/rootfs" -c . | docker import - "$R/compose/app:1" >>"$LOG" 2>&1
id_before=$(docker image inspect -f '{{.Id}}' "$R/compose/app:1" 2>/dev/null)
docker push "$R/compose/app:1" >"$W/push.out" 2>&1; cat "$W/push.out" >>"$LOG"
pushed=$(grep -o 'digest: sha256:[0-9a-f]*' "$W/push.out" | cut -d' ' -f2)
check "docker push to the compose registry" eq "sha256:" "${pushed:0:7}"
check "the registry serves the pushed manifest digest" eq "$pushed" "$(crane digest "$R/compose/app:1" 2>>"$LOG")"
docker rmi "$R/compose/app:1" >>"$LOG" 2>&1
docker pull "$R/compose/app:1" >"$W/pull.out" 2>&1; cat "$W/pull.out" >>"$LOG"
check "docker pull gets the same manifest and image (digest, image id)" \
  eq "$pushed $id_before" "$(grep -o 'Digest: sha256:[0-9a-f]*' "$W/pull.out" | cut -d' ' -f2) $(docker image inspect -f '{{.Id}}' "$R/compose/app:1" 2>/dev/null)"
# The layer's bytes, through crane: a tarball appended to an empty image comes back
# (decompressed) byte for byte.
tar -C "$W/rootfs" -cf "$W/layer.tar" .
crane append -f "$W/layer.tar" -t "$R/compose/layer:1" >>"$LOG" 2>&1
ldigest=$(crane manifest "$R/compose/layer:1" 2>>"$LOG" | jq -r '.layers[0].digest')
crane blob "$R/compose/layer:1@$ldigest" 2>>"$LOG" >"$W/layer.tgz"
check "a layer pushed with crane comes back with its digest" eq "$ldigest" "sha256:$(file_sha "$W/layer.tgz")"
check "and its bytes are the tarball's" eq "$(file_sha "$W/layer.tar")" "$(gzip -dc "$W/layer.tgz" | sha256_of)"

# The named volume holds the data, owned by 65532.
VOL=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Name}}{{end}}{{end}}' "$CID" 2>/dev/null)
MP=$(docker volume inspect -f '{{.Mountpoint}}' "$VOL" 2>/dev/null)
check "the data is in the named volume ${PROJECT}_dockyard-data" eq "${PROJECT}_dockyard-data yes" \
  "$VOL $([ -d "$MP/index" ] && [ -n "$(find "$MP/blobs" -type f 2>/dev/null | head -1)" ] && echo yes)"
check "every file in the volume is owned by 65532:65532" \
  eq "none" "$(find "$MP" \( -not -uid 65532 -o -not -gid 65532 \) -printf '%u:%g %p\n' 2>/dev/null | head -3 | or_none)"

# A restart keeps everything (the volume outlives the process).
check "docker-compose restart" run "${DC[@]}" "${FILES[@]}" restart dockyard
check "healthy again after the restart" bounded healthy-again 60 health_is "$CID" healthy
check "the image is still there after the restart" eq "$pushed" "$(crane digest "$R/compose/app:1" 2>>"$LOG")"

# down -v removes the container, its network and its volume.
check "docker-compose down -v" run "${DC[@]}" "${FILES[@]}" down -v --remove-orphans
check "nothing of the project is left (containers, volumes, networks)" eq "none" \
  "$( (docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"; docker network ls -q --filter "label=com.docker.compose.project=$PROJECT") 2>/dev/null | head -3 | or_none)"
trap - EXIT
docker rmi "$R/compose/app:1" >/dev/null 2>&1

# ------------------------------------- docker-compose.yml, running with stand-ins
# The cluster file as written, with test/e2e/compose/cluster-standins.yml putting
# images made from this machine's PostgreSQL, versitygw and nginx in place of the
# Docker Hub ones (and nginx.conf without `resolve`): three replicas behind nginx.
if [ "$NET" != bridge ]; then
  echo "SKIP: docker-compose.yml needs bridge networks, which Docker cannot make here"
  summary; exit $?
fi
failed_before=$FAILED
check "stand-in images for postgres, versitygw and nginx (test/e2e/compose/standins.sh)" \
  run bash test/e2e/compose/standins.sh "$W/standins"
[ "$FAILED" -eq "$failed_before" ] || { summary; exit 1; }
CP=dycluster$$
CPORT=$(free_port)
C="127.0.0.1:$CPORT"
export DOCKYARD_PUBLISH=$C DY_STANDIN_NGINX_CONF="$W/nginx-standin.conf"
sed 's/ resolve;/;/' configs/compose-nginx.conf >"$DY_STANDIN_NGINX_CONF"
CDC=(docker-compose -p "$CP" -f docker-compose.yml -f test/e2e/compose/cluster-standins.yml)
cdown() { "${CDC[@]}" down -v --remove-orphans >>"$LOG" 2>&1; }
trap cdown EXIT
check "cluster: docker-compose up -d --scale dockyard=3" run timeout 180 "${CDC[@]}" up -d --scale dockyard=3
REPLICAS=$("${CDC[@]}" ps -q dockyard 2>>"$LOG")
check "cluster: three dockyard replicas, healthy" \
  eq "healthy healthy healthy" "$(for c in $REPLICAS; do docker inspect -f '{{.State.Health.Status}}' "$c"; done 2>/dev/null | or_none)"
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1" 2>/dev/null; }
REPLICA_IPS=$(for c in $REPLICAS; do ip_of "$c"; done | sort | or_none)

# Push through nginx (uploads, chunks and the manifest land on whichever replica
# nginx picks), pull back after the local copy is gone.
head -c 3000000 /dev/urandom >"$W/rootfs/payload"
tar -C "$W/rootfs" -c . | docker import - "$C/cluster/app:1" >>"$LOG" 2>&1
cid_before=$(docker image inspect -f '{{.Id}}' "$C/cluster/app:1" 2>/dev/null)
docker push "$C/cluster/app:1" >"$W/cpush.out" 2>&1; cat "$W/cpush.out" >>"$LOG"
cpushed=$(grep -o 'digest: sha256:[0-9a-f]*' "$W/cpush.out" | cut -d' ' -f2)
check "cluster: docker push through nginx" eq "sha256:" "${cpushed:0:7}"
docker rmi "$C/cluster/app:1" >>"$LOG" 2>&1
docker pull "$C/cluster/app:1" >"$W/cpull.out" 2>&1; cat "$W/cpull.out" >>"$LOG"
check "cluster: docker pull through nginx gets the same manifest and image" \
  eq "$cpushed $cid_before" "$(grep -o 'Digest: sha256:[0-9a-f]*' "$W/cpull.out" | cut -d' ' -f2) $(docker image inspect -f '{{.Id}}' "$C/cluster/app:1" 2>/dev/null)"
docker rmi "$C/cluster/app:1" >/dev/null 2>&1
# nginx spreads requests over exactly the replicas: 12 GETs,
# each answered 200 with the pushed digest, by three upstreams.
: >"$W/rr.out"
for _ in $(seq 1 12); do
  curl -s -o /dev/null -D - "http://$C/v2/cluster/app/manifests/1" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' |
    awk 'NR==1{s=$2} tolower($1)=="docker-content-digest:"{d=$2} END{print s, d}' | tr -d '\r' >>"$W/rr.out"
done
check "cluster: 12 manifest GETs through nginx, all 200 with the pushed digest" \
  eq "12 200 $cpushed" "$(sort "$W/rr.out" | uniq -c | awk '{print $1, $2, $3}' | or_none)"
# Which replica answered each of those 12 (nginx logs upstream=ADDR): every replica,
# at least twice (round robin gives 4 each), and nothing else.
docker logs "$("${CDC[@]}" ps -q nginx 2>/dev/null)" 2>/dev/null | grep '"GET /v2/cluster/app/manifests/1 ' |
  grep -o 'upstream=[0-9.]*' | cut -d= -f2 | tail -12 >"$W/upstreams"
check "cluster: nginx spread the GETs over the three replicas" \
  eq "$REPLICA_IPS 12 yes" \
  "$(sort -u "$W/upstreams" | or_none) $(wc -l <"$W/upstreams") $(sort "$W/upstreams" | uniq -c | awk '$1 < 2 {bad=1} END {print bad ? "no" : "yes"}')"
# One index, one bucket: each replica, asked directly, has the image; its bytes are in
# the bucket, and no replica's own volume holds a blob.
direct=""
for ip in $REPLICA_IPS; do
  direct+="$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://$ip:5000/v2/cluster/app/manifests/$cpushed") "
done
check "cluster: every instance serves the image itself (shared index)" eq "200 200 200" "$(echo $direct)"
S3MP=$(docker volume inspect -f '{{.Mountpoint}}' "${CP}_s3-data" 2>/dev/null)
check "cluster: the blobs are in the bucket dockyard, under registry/" \
  eq "yes" "$([ -n "$S3MP" ] && [ -n "$(find "$S3MP/dockyard/registry" -type f -path '*blobs*' 2>/dev/null | head -1)" ] && echo yes)"
instances=0 local_blobs=""
for c in $REPLICAS; do
  mp=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/data"}}{{.Source}}{{end}}{{end}}' "$c" 2>/dev/null)
  [ -n "$mp" ] && [ -d "$mp" ] || continue
  instances=$((instances + 1))
  local_blobs+=$(find "$mp/blobs" -type f 2>/dev/null | head -1)
done
check "cluster: no instance keeps blobs in its own /data volume (3 volumes looked at)" \
  eq "3 none" "$instances ${local_blobs:-none}"
check "cluster: docker-compose down -v" run "${CDC[@]}" down -v --remove-orphans
check "cluster: nothing of the project is left" eq "none" \
  "$( (docker ps -aq --filter "label=com.docker.compose.project=$CP"; docker volume ls -q --filter "label=com.docker.compose.project=$CP"; docker network ls -q --filter "label=com.docker.compose.project=$CP") 2>/dev/null | head -3 | or_none)"
trap - EXIT

summary
