#!/usr/bin/env bash
# Federation end-to-end: proxy and group registries with real upstreams and real clients.
#  1. Upstreams are CNCF reference registries on loopback, one plain and one behind
#     htpasswd (bcrypt): a proxy with username + password_file pulls through the
#     authenticated one; proxies without or with wrong credentials get UNAUTHORIZED, and
#     never the bytes another proxy cached.
#  2. Docker mirror mode: configs/docker-hub-mirror.yaml (upstream swapped for the plain
#     registry) as the daemon's registry-mirrors; `docker pull name:tag` goes through
#     dockyard, and keeps working from its cache once the upstream is gone (also after a
#     dockyard restart, with a Warning header).
#  3. configs/nexus.yaml (upstreams swapped for local registries) behind the hostnames it
#     names, via /etc/hosts: group precedence dev > prod > ghcr, pull-through and caching
#     of the ghcr member, pushes through the group land in dev, pulls with docker, podman,
#     skopeo and crane, the hub namespace route.
#  4. The OCI conformance suite against the group hostname; what it pushed is in dev only.
# Changes /etc/hosts and /etc/docker/daemon.json and restarts dockerd; the trap puts both
# files back and restarts dockerd again, leaving it running.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
# A failing client must become a FAIL line, not end the script before summary.
set +e

F="$RESULTS/federation"
W="$F/work"
LOG="$F/commands.log"
rm -rf "$F"
mkdir -p "$W"
: >"$LOG"
export DOCKER_CONFIG="$F/docker-config"
export CONTAINERS_REGISTRIES_CONF="$F/registries.conf"
mkdir -p "$DOCKER_CONFIG"; echo "{}" >"$DOCKER_CONFIG/config.json"
: >"$CONTAINERS_REGISTRIES_CONF"
POLICY="$F/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
T0=$SECONDS

# ---------------------------------------------------------------------------- helpers

# crane against plain-HTTP registries named by hostname (loopback IPs need no flag).
cr() { crane --insecure "$@"; }
digest_of() { cr digest "$1" 2>>"$LOG"; }
manifest_sha() { cr manifest "$1" 2>>"$LOG" | sha256_of; }
# exported_file REF PATH ORIGINAL: crane export REF; PATH in its filesystem equals ORIGINAL.
exported_file() {
  local d; d=$(mktemp -d "$W/export.XXXX")
  cr export "$1" - | tar -x -C "$d" && same_bytes "$3" "$d/$2"
}
ACCEPT="application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"
# req NAME URL [curl args...]: one request; prints the status, keeps NAME.h and NAME.body.
req() {
  local name=$1 url=$2; shift 2
  echo "+ curl $* $url" >>"$LOG"
  curl -sS -o "$W/$name.body" -D "$W/$name.h" -w '%{http_code}' "$@" "$url" 2>>"$LOG"
}
header() { grep -i "^$2:" "$W/$1.h" | head -1 | cut -d: -f2- | sed -e 's/^ *//' -e 's/\r$//'; }
err_code() { jq -r '.errors[0].code' "$W/$1.body" 2>/dev/null; }
body_has() { echo "body of $1: $(cat "$W/$1.body")"; grep -qF -- "$2" "$W/$1.body"; }
body_lacks() { echo "body of $1: $(cat "$W/$1.body")"; [ -s "$W/$1.body" ] && ! grep -qF -- "$2" "$W/$1.body"; }
# catalog HOST: the repositories of HOST's catalog, one a line; a failed request prints
# a marker no repository is named (so in_list and not_in_list both fail on it).
catalog() {
  local body code
  body=$(curl -sS -w '\n%{http_code}' "http://$1/v2/_catalog?n=1000" 2>>"$LOG")
  code=${body##*$'\n'}
  if [ "$code" != 200 ]; then echo "CATALOG-REQUEST-FAILED-$code"; return; fi
  jq -r '.repositories[]?' <<<"${body%$'\n'*}" 2>>"$LOG" || echo "CATALOG-NOT-JSON"
}
in_list() { echo "looking for '$1' in: $(echo $2)"; grep -qxF -- "$1" <<<"$2"; }
not_in_list() {
  echo "'$1' must not be in: $(echo $2)"
  case "$2" in CATALOG-*) echo "  the catalog request failed"; return 1 ;; esac
  ! grep -qxF -- "$1" <<<"$2"
}

# ---------------------------------------------------------------- processes and cleanup

UP_PIDS=()
DY_PID="" DY_ADDR="" MIRROR_URL=""
# start_upstream NAME [HTPASSWD]: a CNCF registry on a free loopback port, data under
# $F/NAME; sets UP_ADDR and UP_PID.
start_upstream() {
  local name=$1 htpasswd=${2:-} port d
  d="$F/$name"
  port=$(free_port)
  mkdir -p "$d/data"
  {
    echo "version: 0.1"
    echo "log: {level: warn}"
    echo "storage:"
    echo "  filesystem: {rootdirectory: $d/data}"
    echo "  delete: {enabled: true}"
    echo "http:"
    echo "  addr: 127.0.0.1:$port"
    [ -n "$htpasswd" ] && printf 'auth:\n  htpasswd: {realm: dockyard-e2e, path: %s}\n' "$htpasswd"
  } >"$d/config.yml"
  OTEL_TRACES_EXPORTER=none "$TOOLS/registry" serve "$d/config.yml" >>"$d/registry.log" 2>&1 &
  UP_PID=$!
  UP_PIDS+=("$UP_PID")
  UP_ADDR="127.0.0.1:$port"
  local code
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$UP_ADDR/v2/" 2>/dev/null)
    if [ "$code" = 200 ] || [ "$code" = 401 ]; then kill -0 "$UP_PID" 2>/dev/null && return 0; fi
    sleep 0.1
  done
  echo "upstream $name did not start; log:"; tail -20 "$d/registry.log"
  return 1
}
stop_pid() { kill -TERM "$1" 2>/dev/null && wait "$1" 2>/dev/null; return 0; }
down() { ! curl -s -o /dev/null --max-time 2 "http://$1/v2/"; }

# The hostnames configs/nexus.yaml routes, resolved to loopback for this run.
HOSTS_MARK="# dockyard-e2e-federation"
HOSTNAMES=(dev.registry.example.com prod.registry.example.com ghcr.registry.example.com
  hub.registry.example.com registry.example.com)
HOSTS_LINES="$F/hosts.lines"
for h in "${HOSTNAMES[@]}"; do echo "127.0.0.1 $h $HOSTS_MARK"; done >"$HOSTS_LINES"
remove_hosts_lines() { # rewritten in place: /etc/hosts may be a bind mount
  local tmp; tmp=$(mktemp)
  grep -vxF -f "$HOSTS_LINES" /etc/hosts >"$tmp"
  cat "$tmp" >/etc/hosts; rm -f "$tmp"
}

# Docker daemon configuration. The original daemon.json is kept next to it until it is
# restored, so a run killed before its trap does not lose it: the next run restores it.
DAEMON_JSON=/etc/docker/daemon.json
DAEMON_BACKUP=/etc/docker/daemon.json.dockyard-e2e-orig # holds the original, or "absent"
DAEMON_CHANGED=0
DOCKERD_LOG="$RESULTS/docker/dockerd.log"
restart_dockerd() {
  mkdir -p "$RESULTS/docker"
  local pid; pid=$(pgrep -x dockerd | head -1)
  if [ -n "$pid" ]; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then echo "dockerd ($pid) did not stop within 30s"; return 1; fi
  fi
  if ! pgrep -x containerd >/dev/null; then
    nohup setsid containerd >>"$RESULTS/docker/containerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
  fi
  nohup setsid dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
    >>"$DOCKERD_LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  echo "docker daemon not ready after 60s"; tail -20 "$DOCKERD_LOG"
  return 1
}
# set_daemon_json [JQ-ARGS...] FILTER: applies the filter to the original daemon.json (or {}).
set_daemon_json() {
  mkdir -p /etc/docker
  if [ ! -e "$DAEMON_BACKUP" ]; then
    if [ -e "$DAEMON_JSON" ]; then cp -p "$DAEMON_JSON" "$DAEMON_BACKUP"; else echo absent >"$DAEMON_BACKUP"; fi
  fi
  local orig='{}'
  [ "$(cat "$DAEMON_BACKUP")" != absent ] && orig=$(cat "$DAEMON_BACKUP")
  DAEMON_CHANGED=1
  jq "$@" <<<"$orig" >"$DAEMON_JSON.tmp" && mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
  echo "daemon.json now: $(cat "$DAEMON_JSON")" >>"$LOG"
}
restore_daemon_json() {
  [ -e "$DAEMON_BACKUP" ] || return 0
  if [ "$(cat "$DAEMON_BACKUP")" = absent ]; then rm -f "$DAEMON_JSON"; rm -f "$DAEMON_BACKUP"
  else mv "$DAEMON_BACKUP" "$DAEMON_JSON"; fi
}
# A run killed before its trap left the daemon configured for it: start from the original.
if [ -e "$DAEMON_BACKUP" ]; then restore_daemon_json; DAEMON_CHANGED=1; fi

IMAGE_IDS=()
cleanup() {
  trap - EXIT INT TERM
  echo "cleaning up"
  stop_dockyard
  for p in "${UP_PIDS[@]}"; do stop_pid "$p"; done
  if docker info >/dev/null 2>&1 && [ ${#IMAGE_IDS[@]} -gt 0 ]; then
    docker rmi -f "${IMAGE_IDS[@]}" >/dev/null 2>&1
  fi
  remove_hosts_lines
  if [ "$DAEMON_CHANGED" = 1 ]; then
    restore_daemon_json
    echo "restarting dockerd with the original daemon.json"
    restart_dockerd || echo "WARNING: dockerd did not come back (log $DOCKERD_LOG)"
  fi
  echo "federation.sh took $((SECONDS - T0))s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

remove_hosts_lines # lines a killed run may have left
cat "$HOSTS_LINES" >>/etc/hosts
resolves_to_loopback() {
  local h
  for h in "${HOSTNAMES[@]}"; do
    echo "$h -> $(getent ahostsv4 "$h" | head -1)"
    [ "$(getent ahostsv4 "$h" | awk 'NR==1{print $1}')" = 127.0.0.1 ] || return 1
  done
}
check "/etc/hosts: the nexus.yaml hostnames resolve to 127.0.0.1" resolves_to_loopback

# docker_image NAME REF: imports a small random rootfs as REF (its only tag); sets
# IMG_ID. The payload is $W/img-NAME/data/NAME.bin.
docker_image() {
  local d="$W/img-$1"
  mkdir -p "$d/data"
  head -c 100000 /dev/urandom >"$d/data/$1.bin"
  echo "dockyard federation e2e: $1" >"$d/data/name"
  IMG_ID=$(tar -C "$d" -c data | docker import - "$2" 2>>"$LOG")
  [ -n "$IMG_ID" ] && IMAGE_IDS+=("$IMG_ID")
  echo "image $1: $2 $IMG_ID" >>"$LOG"
}
# docker_push REF: pushes; prints the digest docker reports.
docker_push() {
  local out="$W/push.out"
  echo "+ docker push $1" >>"$LOG"
  docker push "$1" >"$out" 2>&1; cat "$out" >>"$LOG"
  sed -nE 's/^[^ ]+: digest: (sha256:[0-9a-f]{64}) size: [0-9]+$/\1/p' "$out" | tail -1
}
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>>"$LOG"; }
image_gone() { ! docker image inspect "$1" >/dev/null 2>&1; }
repo_digests() { docker image inspect --format '{{join .RepoDigests " "}}' "$1" 2>>"$LOG"; }
has_word() { echo "looking for '$1' in '$2'"; [ -n "$1" ] && [[ " $2 " == *" $1 "* ]]; }

# ================================================= 1. plain and authenticated upstreams

echo "=== 1. proxies over a plain and an htpasswd (bcrypt) CNCF registry"
UP_USER=alice
UP_PASSWORD="pw-$RANDOM-$RANDOM-$RANDOM"
htpasswd -Bbn "$UP_USER" "$UP_PASSWORD" >"$F/htpasswd" 2>>"$LOG"
check "htpasswd file holds a bcrypt hash" grep -qE "^$UP_USER:\\\$2[aby]\\\$" "$F/htpasswd"
printf '%s\n' "$UP_PASSWORD" >"$F/upstream-password"
echo "not-the-password" >"$F/wrong-password"

start_upstream up-plain || fail "plain CNCF registry started"
UP_PLAIN=$UP_ADDR UP_PLAIN_PID=$UP_PID
start_upstream up-auth "$F/htpasswd" || fail "htpasswd CNCF registry started"
UP_AUTH=$UP_ADDR UP_AUTH_PID=$UP_PID
echo "upstreams: plain $UP_PLAIN, htpasswd $UP_AUTH"
jq -n --arg h "$UP_AUTH" --arg a "$(printf '%s:%s' "$UP_USER" "$UP_PASSWORD" | base64 -w0)" \
  '{auths: {($h): {auth: $a}}}' >"$DOCKER_CONFIG/config.json" # crane's credentials for pushing

# Images made by crane (one random layer each), pushed straight into the upstreams.
mkdir -p "$W/p1/rootfs"
head -c 150000 /dev/urandom >"$W/p1/rootfs/secret.bin"
head -c 150000 /dev/urandom >"$W/p1/rootfs/open.bin"
tar -C "$W/p1/rootfs" -cf "$W/p1/secret.tar" secret.bin
tar -C "$W/p1/rootfs" -cf "$W/p1/open.tar" open.bin
run crane append -f "$W/p1/secret.tar" -t "$UP_AUTH/team/secret:1" --oci-empty-base
run crane append -f "$W/p1/open.tar" -t "$UP_PLAIN/team/open:1" --oci-empty-base
SECRET_DIGEST=$(crane digest "$UP_AUTH/team/secret:1" 2>>"$LOG")
OPEN_DIGEST=$(crane digest "$UP_PLAIN/team/open:1" 2>>"$LOG")
SECRET_LAYER=$(crane manifest "$UP_AUTH/team/secret:1" 2>>"$LOG" | jq -r '.layers[0].digest')
echo "secret $SECRET_DIGEST (layer $SECRET_LAYER), open $OPEN_DIGEST"
check "htpasswd upstream refuses anonymous pulls (401), so the checks below mean something" \
  eq 401 "$(req up-anon "http://$UP_AUTH/v2/team/secret/manifests/1" -H "Accept: $ACCEPT")"

cat >"$F/proxies.yaml" <<EOF
registries:
  - name: plain
    type: proxy
    upstream: {url: "http://$UP_PLAIN", timeout: 5s}
  - name: auth
    type: proxy
    upstream: {url: "http://$UP_AUTH", username: $UP_USER, password_file: "$F/upstream-password", timeout: 5s}
  - name: anon
    type: proxy
    upstream: {url: "http://$UP_AUTH", timeout: 5s}
  - name: wrongpw
    type: proxy
    upstream: {url: "http://$UP_AUTH", username: $UP_USER, password_file: "$F/wrong-password", timeout: 5s}
routes:
  - {host: "*", registry: plain, namespaces: {auth: auth, anon: anon, wrongpw: wrongpw}}
EOF
if start_dockyard federation/proxies --config "$F/proxies.yaml" && kill -0 "$DY_PID" 2>/dev/null; then
  P=$DY_ADDR
  check "plain proxy: digest equals the upstream's" eq "$OPEN_DIGEST" "$(digest_of "$P/team/open:1")"
  check "plain proxy: manifest bytes hash to the upstream digest" \
    eq "$OPEN_DIGEST" "sha256:$(manifest_sha "$P/team/open:1")"
  check "plain proxy: file in the pulled layer equals the original" \
    exported_file "$P/team/open:1" open.bin "$W/p1/rootfs/open.bin"

  check "proxy with username + password_file: digest equals the authenticated upstream's" \
    eq "$SECRET_DIGEST" "$(digest_of "$P/auth/team/secret:1")"
  check "proxy with username + password_file: manifest bytes hash to the upstream digest" \
    eq "$SECRET_DIGEST" "sha256:$(manifest_sha "$P/auth/team/secret:1")"
  check "proxy with username + password_file: layer blob hashes to its digest" \
    eq "$SECRET_LAYER" "sha256:$(cr blob "$P/auth/team/secret@$SECRET_LAYER" 2>>"$LOG" | sha256_of)"
  check "proxy with username + password_file: file in the pulled layer equals the original" \
    exported_file "$P/auth/team/secret:1" secret.bin "$W/p1/rootfs/secret.bin"

  # Without credentials: a clear UNAUTHORIZED naming the upstream, for the tag, the
  # manifest digest and the layer the authenticated proxy has cached by now.
  unauthorized() { # NAME: 401, code UNAUTHORIZED, message names the upstream, no password
    cat "$W/$1.h" "$W/$1.body"; echo
    [ "$(head -1 "$W/$1.h" | cut -d' ' -f2)" = 401 ] && [ "$(err_code "$1")" = UNAUTHORIZED ] &&
      jq -e --arg u "$UP_AUTH" '.errors[0].message | contains($u)' "$W/$1.body" >/dev/null &&
      ! grep -qF "$UP_PASSWORD" "$W/$1.body"
  }
  req anon-tag "http://$P/v2/anon/team/secret/manifests/1" -H "Accept: $ACCEPT" >/dev/null
  check "proxy without credentials, tag: 401 UNAUTHORIZED naming the upstream" unauthorized anon-tag
  req anon-digest "http://$P/v2/anon/team/secret/manifests/$SECRET_DIGEST" -H "Accept: $ACCEPT" >/dev/null
  check "proxy without credentials, manifest by digest (cached by the other proxy): 401 UNAUTHORIZED" \
    unauthorized anon-digest
  req anon-blob "http://$P/v2/anon/team/secret/blobs/$SECRET_LAYER" >/dev/null
  check "proxy without credentials, layer cached by the other proxy: 401 UNAUTHORIZED, not the bytes" \
    unauthorized anon-blob
  anon_crane_says_unauthorized() {
    local out rc; out=$(cr digest "$P/anon/team/secret:1" 2>&1); rc=$?
    echo "crane (exit $rc): $out"; [ $rc -ne 0 ] && grep -q UNAUTHORIZED <<<"$out"
  }
  check "proxy without credentials: crane fails and reports UNAUTHORIZED" anon_crane_says_unauthorized
  req wrongpw-tag "http://$P/v2/wrongpw/team/secret/manifests/1" -H "Accept: $ACCEPT" >/dev/null
  check "proxy with a wrong password: 401 UNAUTHORIZED naming the upstream, password not echoed" \
    unauthorized wrongpw-tag
  # The authenticated upstream goes away. The layer sits in dockyard's shared blob store
  # (the authenticated proxy cached it); a proxy whose upstream cannot confirm the
  # repository has it must not hand it out.
  stop_pid "$UP_AUTH_PID"
  check "htpasswd upstream is stopped" down "$UP_AUTH"
  code=$(req anon-blob-down "http://$P/v2/anon/team/secret/blobs/$SECRET_LAYER")
  check "upstream down: the proxy without credentials still does not serve the other proxy's cached layer" \
    eq "not-2xx" "$([ "${code:0:1}" = 2 ] && echo "$code ($(sha256_of <"$W/anon-blob-down.body"))" || echo not-2xx)"
  code=$(req anon-manifest-down "http://$P/v2/anon/team/secret/manifests/$SECRET_DIGEST" -H "Accept: $ACCEPT")
  check "upstream down: the proxy without credentials does not serve the cached manifest by digest" \
    eq "not-2xx" "$([ "${code:0:1}" = 2 ] && echo "$code" || echo not-2xx)"
  check "upstream down: the proxy with credentials serves its cached image" \
    eq "$SECRET_DIGEST" "$(digest_of "$P/auth/team/secret:1")"
  stop_dockyard
else
  fail "dockyard with the proxy configuration started (see $RESULTS/federation/proxies/dockyard.log)"
fi
stop_pid "$UP_AUTH_PID"

# ============================================================ 2. Docker Hub mirror mode

echo "=== 2. Docker daemon with registry-mirrors -> dockyard (configs/docker-hub-mirror.yaml)"
sed "s#https://registry-1.docker.io#http://$UP_PLAIN#" configs/docker-hub-mirror.yaml >"$F/docker-hub-mirror.yaml"
check "mirror config: generated from configs/docker-hub-mirror.yaml with only the upstream URL changed" \
  eq "1 1" "$(diff configs/docker-hub-mirror.yaml "$F/docker-hub-mirror.yaml" | grep -c '^<') $(grep -c "url: http://$UP_PLAIN\$" "$F/docker-hub-mirror.yaml")"
DOCKER_UP=0
if start_dockyard federation/mirror --config "$F/docker-hub-mirror.yaml" && kill -0 "$DY_PID" 2>/dev/null; then
  M=$DY_ADDR
  MIRROR_URL="http://$M"
  set_daemon_json --arg m "$MIRROR_URL" '.["registry-mirrors"] = ([$m] + ((.["registry-mirrors"] // []) - [$m]))'
  if restart_dockerd; then DOCKER_UP=1; fi
  check "dockerd restarted with daemon.json registry-mirrors = [$MIRROR_URL]" \
    eq "$MIRROR_URL" "$(docker info --format '{{join .RegistryConfig.Mirrors " "}}' 2>>"$LOG" | tr ' ' '\n' | grep -xF "$MIRROR_URL/" | sed 's#/$##')"
else
  fail "dockyard with configs/docker-hub-mirror.yaml started (see $RESULTS/federation/mirror/dockyard.log)"
fi

if [ "$DOCKER_UP" = 1 ]; then
  NAME=dyfed-mirror-$RANDOM
  docker_image mirror "$UP_PLAIN/library/$NAME:1.0"; MIRROR_ID=$IMG_ID
  MIRROR_DIGEST=$(docker_push "$UP_PLAIN/library/$NAME:1.0")
  check "upstream holds library/$NAME:1.0 with the digest docker pushed" \
    eq "$MIRROR_DIGEST" "$(digest_of "$UP_PLAIN/library/$NAME:1.0")"
  run docker rmi "$UP_PLAIN/library/$NAME:1.0"
  check "docker rmi: the image is gone locally before the mirror pull" image_gone "$MIRROR_ID"
  run docker pull "$NAME:1.0"
  check "docker pull $NAME:1.0 (no registry host) via the mirror: image ID equals the original" \
    eq "$MIRROR_ID" "$(image_id "$NAME:1.0")"
  check "docker pull via the mirror: RepoDigests is $NAME@<the pushed digest>" \
    has_word "$NAME@$MIRROR_DIGEST" "$(repo_digests "$NAME:1.0")"
  check "the pull went through dockyard: its catalog lists library/$NAME" \
    in_list "library/$NAME" "$(catalog "$M")"
  logged_cached() { grep 'msg="cached upstream blob"' "$RESULTS/federation/mirror/dockyard.log" | grep -q "repo=library/$NAME "; }
  check "dockyard logged caching library/$NAME blobs from the upstream" logged_cached

  # The upstream goes away: the cached image still pulls.
  stop_pid "$UP_PLAIN_PID"
  check "plain upstream is stopped" down "$UP_PLAIN"
  run docker rmi "$NAME:1.0"
  check "docker rmi: the image is gone locally again" image_gone "$MIRROR_ID"
  run docker pull "$NAME:1.0"
  check "upstream down: docker pull via the mirror still works, same image ID" \
    eq "$MIRROR_ID" "$(image_id "$NAME:1.0")"

  # dockyard restarts while the upstream is down: the tag is stale, served from the cache
  # with a Warning, and docker still pulls it.
  stop_dockyard
  DY_PORT=${M##*:} start_dockyard federation/mirror --config "$F/docker-hub-mirror.yaml"
  code=$(req mirror-stale "http://$M/v2/library/$NAME/manifests/1.0" -H "Accept: $ACCEPT")
  check "after a dockyard restart, upstream down: the cached tag is served (200, same digest)" \
    eq "200 $MIRROR_DIGEST" "$code $(header mirror-stale Docker-Content-Digest)"
  warning_299() { echo "Warning: $(header mirror-stale Warning)"; [[ "$(header mirror-stale Warning)" == '299 - "'*'"' ]]; }
  check "stale tag served with 'Warning: 299 - \"...\"'" warning_299
  run docker rmi "$NAME:1.0"
  check "docker rmi: the image is gone locally before the pull after the restart" image_gone "$MIRROR_ID"
  run docker pull "$NAME:1.0"
  check "after a dockyard restart, upstream down: docker pull via the mirror, same image ID" \
    eq "$MIRROR_ID" "$(image_id "$NAME:1.0")"
  code=$(req mirror-uncached "http://$M/v2/library/$NAME/manifests/never-pulled" -H "Accept: $ACCEPT")
  check "upstream down, tag never cached: a 5xx error, not a 404 (dockyard cannot know)" \
    eq "5 UNKNOWN" "${code:0:1} $(err_code mirror-uncached)"
  run docker rmi "$NAME:1.0"
else
  fail "docker daemon up with the mirror configured (see $DOCKERD_LOG)"
fi
stop_dockyard
stop_pid "$UP_PLAIN_PID"

# ================================================ 3. Nexus-style group over hostnames

echo "=== 3. configs/nexus.yaml: dev, prod, ghcr and hub behind their hostnames, group 'all'"
start_upstream up-ghcr || fail "ghcr stand-in CNCF registry started"
UP_GHCR=$UP_ADDR UP_GHCR_PID=$UP_PID
start_upstream up-hub || fail "hub stand-in CNCF registry started"
UP_HUB=$UP_ADDR
sed -e "s#https://ghcr.io#http://$UP_GHCR#" -e "s#https://registry-1.docker.io#http://$UP_HUB#" \
  configs/nexus.yaml >"$F/nexus.yaml"
check "nexus config: generated from configs/nexus.yaml with only the two upstream URLs changed" \
  eq "2 1 1" "$(diff configs/nexus.yaml "$F/nexus.yaml" | grep -c '^<') $(grep -c "url: http://$UP_GHCR\$" "$F/nexus.yaml") $(grep -c "url: http://$UP_HUB\$" "$F/nexus.yaml")"
check "nexus config: dockyard check-config accepts it" bin/dockyard check-config --config "$F/nexus.yaml"

GROUP_UP=0
if start_dockyard federation/nexus --config "$F/nexus.yaml" && kill -0 "$DY_PID" 2>/dev/null; then
  GROUP_UP=1
  PORT=${DY_ADDR##*:}
else
  fail "dockyard with configs/nexus.yaml started (see $RESULTS/federation/nexus/dockyard.log)"
  PORT=1
fi
DEV=dev.registry.example.com:$PORT PROD=prod.registry.example.com:$PORT
GHCR=ghcr.registry.example.com:$PORT HUB=hub.registry.example.com:$PORT GRP=registry.example.com:$PORT
echo "dockyard group on $GRP"

# Docker speaks plain HTTP to names resolving to loopback; if this daemon does not,
# list the hostnames as insecure registries.
if [ "$DOCKER_UP" = 1 ] && [ "$GROUP_UP" = 1 ]; then
  docker pull "$GRP/probe/none:0" >"$W/probe.out" 2>&1
  cat "$W/probe.out" >>"$LOG"
  if grep -qiE 'HTTP response to HTTPS client|x509|tls' "$W/probe.out"; then
    echo "docker insists on TLS for $GRP; adding insecure-registries"
    set_daemon_json --arg m "$MIRROR_URL" --argjson h "$(printf '%s\n' "${HOSTNAMES[@]}" | sed "s/\$/:$PORT/" | jq -R . | jq -s .)" \
      '(if $m == "" then . else .["registry-mirrors"] = ([$m] + ((.["registry-mirrors"] // []) - [$m])) end) | .["insecure-registries"] = ((.["insecure-registries"] // []) + $h | unique)'
    restart_dockerd || DOCKER_UP=0
  fi
fi

# Content: app:1 in dev, prod and the ghcr upstream (three different images), app:2 in
# prod only, app:3 and app:4 in the ghcr upstream only, library/dyfed-hub:1 in the hub
# upstream.
declare -A ID DIG
add_image() { # KEY REF: import, push, record the image ID and the digest docker reports
  docker_image "$1" "$2"; ID[$1]=$IMG_ID
  DIG[$1]=$(docker_push "$2")
  echo "$1 -> $2 id ${ID[$1]} digest ${DIG[$1]}"
}
if [ "$DOCKER_UP" = 1 ]; then
  add_image dev1 "$DEV/team/app:1"
  add_image prod1 "$PROD/team/app:1"
  add_image prod2 "$PROD/team/app:2"
  add_image ghcr1 "$UP_GHCR/team/app:1"
  add_image ghcr3 "$UP_GHCR/team/app:3"
  add_image ghcr4 "$UP_GHCR/team/app:4"
  add_image hub1 "$UP_HUB/library/dyfed-hub:1"
fi
check "docker push to dev.registry.example.com: dockyard serves the digest docker reported" \
  eq "${DIG[dev1]:-}" "$(digest_of "$DEV/team/app:1")"
check "docker push to prod.registry.example.com, same tag: prod serves the other image" \
  eq "${DIG[prod1]:-} ${DIG[prod2]:-}" "$(digest_of "$PROD/team/app:1") $(digest_of "$PROD/team/app:2")"
three_different() { echo "${DIG[dev1]:-} ${DIG[prod1]:-} ${DIG[ghcr1]:-}"
  [ -n "${DIG[dev1]:-}" ] && [ -n "${DIG[prod1]:-}" ] && [ -n "${DIG[ghcr1]:-}" ] &&
  [ "$(printf '%s\n' "${DIG[dev1]}" "${DIG[prod1]}" "${DIG[ghcr1]}" | sort -u | wc -l)" = 3 ]; }
check "app:1 is three different images in dev, prod and the ghcr upstream" three_different
check "dev does not have prod's app:2" eq 404 "$(req dev-app2 "http://$DEV/v2/team/app/manifests/2" -H "Accept: $ACCEPT")"

# Group precedence dev > prod > ghcr, by digest and by bytes.
check "group registry.example.com team/app:1 resolves to dev's image" eq "${DIG[dev1]:-}" "$(digest_of "$GRP/team/app:1")"
check "group team/app:2 (only in prod) resolves to prod's image" eq "${DIG[prod2]:-}" "$(digest_of "$GRP/team/app:2")"
check "group team/app:3 (only in the ghcr upstream) is pulled through: upstream's digest" \
  eq "${DIG[ghcr3]:-}" "$(digest_of "$GRP/team/app:3")"
check "group team/app:3: manifest bytes hash to the upstream digest" \
  eq "${DIG[ghcr3]:-}" "sha256:$(manifest_sha "$GRP/team/app:3")"
check "group tags list is the union of the members' tags" \
  eq "1 2 3 4" "$(cr ls "$GRP/team/app" 2>>"$LOG" | sort | tr '\n' ' ' | sed 's/ $//')"
check "ghcr.registry.example.com serves the cached team/app:3" eq "${DIG[ghcr3]:-}" "$(digest_of "$GHCR/team/app:3")"
check "hub namespace: registry.example.com/hub/library/dyfed-hub:1 is the hub upstream's image" \
  eq "${DIG[hub1]:-}" "$(digest_of "$GRP/hub/library/dyfed-hub:1")"
check "hub.registry.example.com/library/dyfed-hub:1 is the hub upstream's image" \
  eq "${DIG[hub1]:-}" "$(digest_of "$HUB/library/dyfed-hub:1")"
code=$(req ghcr-push "http://$GHCR/v2/team/app/blobs/uploads/" -X POST)
check "pushes to the ghcr proxy are refused: 403 DENIED" eq "403 DENIED" "$code $(err_code ghcr-push)"

# Pulls through the group hostname with every client, digests and bytes compared.
if [ "$DOCKER_UP" = 1 ]; then
  run docker rmi -f "${ID[dev1]}" "${ID[prod1]}" "${ID[prod2]}" "${ID[ghcr1]}" "${ID[ghcr3]}" "${ID[ghcr4]}" "${ID[hub1]}"
  all_gone() { local k; for k in "$@"; do image_gone "${ID[$k]}" || return 1; done; }
  check "docker: all pushed images removed locally before pulling through the group" all_gone dev1 prod2 ghcr3
fi
for t in 1:dev1 2:prod2 3:ghcr3; do
  tag=${t%%:*} k=${t#*:}
  run docker pull "$GRP/team/app:$tag"
  check "docker pull $GRP/team/app:$tag: image ID and RepoDigest of the $k image" \
    eq "${ID[$k]:-} $GRP/team/app@${DIG[$k]:-}" "$(image_id "$GRP/team/app:$tag") $(repo_digests "$GRP/team/app:$tag")"
done
save_has_payload() { # REF KEY: docker save REF; the payload file equals the original
  local d; d=$(mktemp -d "$W/save.XXXX")
  docker save "$1" | tar -x -C "$d" && mkdir "$d/fs" &&
    tar -x -C "$d/fs" -f "$d/$(jq -r '.[0].Layers[0]' "$d/manifest.json")" && same_bytes "$W/img-$2/data/$2.bin" "$d/fs/data/$2.bin"
}
check "docker pull through the group: file in the ghcr image equals the original" save_has_payload "$GRP/team/app:3" ghcr3

PM="$F/podman"
mkdir -p "$PM/tmp"
printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n' "$PM" "$PM" >"$PM/storage.conf"
pm() { CONTAINERS_STORAGE_CONF="$PM/storage.conf" podman --tmpdir "$PM/tmp" "$@"; }
for t in 1:dev1 2:prod2 3:ghcr3; do
  tag=${t%%:*} k=${t#*:}
  run pm pull --tls-verify=false --signature-policy "$POLICY" "$GRP/team/app:$tag"
  check "podman pull --tls-verify=false $GRP/team/app:$tag: image ID and digest of the $k image" \
    eq "${ID[$k]:-} ${DIG[$k]:-}" "sha256:$(pm image inspect --format '{{.Id}} {{.Digest}}' "$GRP/team/app:$tag" 2>>"$LOG")"
done
mnt=$(pm image mount "$GRP/team/app:2" 2>>"$LOG")
check "podman pull through the group: file in prod's image equals the original" \
  same_bytes "$W/img-prod2/data/prod2.bin" "$mnt/data/prod2.bin"
[ -n "$mnt" ] && run pm image unmount "$GRP/team/app:2"

skopeo_copy_matches() { # TAG KEY: skopeo copy to dir:, manifest and every blob verified
  local d="$W/skopeo-$1" f
  rm -rf "$d"
  run skopeo --policy "$POLICY" copy --src-tls-verify=false "docker://$GRP/team/app:$1" "dir:$d" || return 1
  eq "${DIG[$2]:-}" "sha256:$(sha256_of <"$d/manifest.json")" "manifest.json of $d" || return 1
  for f in $(jq -r '.config.digest, .layers[].digest' "$d/manifest.json"); do
    eq "${f#sha256:}" "$(sha256_of <"$d/${f#sha256:}")" "blob $f" || return 1
  done
}
for t in 1:dev1 2:prod2 3:ghcr3; do
  check "skopeo copy --src-tls-verify=false $GRP/team/app:${t%%:*}: manifest of the ${t#*:} image, blobs verified" \
    skopeo_copy_matches "${t%%:*}" "${t#*:}"
done
check "skopeo inspect --raw through the group: bytes hash to dev's digest" \
  eq "${DIG[dev1]:-}" "sha256:$(skopeo inspect --raw --tls-verify=false "docker://$GRP/team/app:1" 2>>"$LOG" | sha256_of)"

for t in 1:dev1 2:prod2 3:ghcr3; do
  tag=${t%%:*} k=${t#*:}
  check "crane --insecure export $GRP/team/app:$tag: file equals the $k original" \
    exported_file "$GRP/team/app:$tag" "data/$k.bin" "$W/img-$k/data/$k.bin"
  check "crane --insecure config $GRP/team/app:$tag hashes to the $k image ID" \
    eq "${ID[$k]:-}" "sha256:$(cr config "$GRP/team/app:$tag" 2>>"$LOG" | sha256_of)"
done

# A push through the group lands in dev.
if [ "$DOCKER_UP" = 1 ]; then
  docker_image pushed "$GRP/team/pushed:1"; PUSHED_ID=$IMG_ID
  PUSHED_DIGEST=$(docker_push "$GRP/team/pushed:1")
fi
check "docker push through registry.example.com: dev.registry.example.com serves it" \
  eq "${PUSHED_DIGEST:-}" "$(digest_of "$DEV/team/pushed:1")"
code=$(req prod-pushed "http://$PROD/v2/team/pushed/manifests/1" -H "Accept: $ACCEPT")
check "docker push through registry.example.com: prod.registry.example.com does not have it (404)" \
  eq "404" "$code"
check "prod's catalog does not list team/pushed" not_in_list team/pushed "$(catalog "$PROD")"
check "dev's catalog lists team/pushed" in_list team/pushed "$(catalog "$DEV")"
check "the ghcr upstream was not written to" eq 404 "$(req up-ghcr-pushed "http://$UP_GHCR/v2/team/pushed/manifests/1" -H "Accept: $ACCEPT")"

# ==================================================== 4. OCI conformance via the group

echo "=== 4. OCI conformance suite against $GRP"
out="$F/conformance"
mkdir -p "$out"
(
  . test/conformance/env.sh
  export OCI_REGISTRY=$GRP OCI_RESULTS_DIR="$out/results"
  cd "$out" && timeout 900 conformance >"$out/conformance.log" 2>&1
)
conformance_result "group $GRP" "$out/conformance.log"
. test/conformance/env.sh
DEV_REPOS=$(catalog "$DEV") PROD_REPOS=$(catalog "$PROD")
for r in "$OCI_REPO1" "$OCI_REPO2"; do
  check "conformance repository $r is in dev's catalog" in_list "$r" "$DEV_REPOS"
  check "conformance repository $r is not in prod's catalog" not_in_list "$r" "$PROD_REPOS"
done

# ========================================= 3 (cont.) the ghcr member's cache, upstream gone

echo "=== 3. ghcr upstream stopped: the group serves what it cached"
stop_pid "$UP_GHCR_PID"
check "ghcr upstream is stopped" down "$UP_GHCR"
if [ "$DOCKER_UP" = 1 ]; then
  run docker rmi "$GRP/team/app:3"
  check "docker rmi: the ghcr image is gone locally" image_gone "${ID[ghcr3]}"
  run docker pull "$GRP/team/app:3"
  check "ghcr upstream down: docker pull $GRP/team/app:3 still works, same image ID" \
    eq "${ID[ghcr3]:-}" "$(image_id "$GRP/team/app:3")"
fi
check "ghcr upstream down: ghcr.registry.example.com still serves team/app:3" \
  eq "${DIG[ghcr3]:-}" "$(digest_of "$GHCR/team/app:3")"
check "ghcr upstream down: crane export through the group, file equals the original" \
  exported_file "$GRP/team/app:3" data/ghcr3.bin "$W/img-ghcr3/data/ghcr3.bin"
check "ghcr upstream down: dev's app:1 still wins in the group" eq "${DIG[dev1]:-}" "$(digest_of "$GRP/team/app:1")"
# dev is private to its users; the public-cache hostname must not hand out dev's layers
# just because its own upstream cannot be asked.
DEV1_LAYER=$(cr manifest "$DEV/team/app:1" 2>>"$LOG" | jq -r '.layers[0].digest')
code=$(req ghcr-devblob "http://$GHCR/v2/team/app/blobs/$DEV1_LAYER")
check "ghcr upstream down: ghcr.registry.example.com does not serve a layer only dev has" \
  eq "not-2xx" "$([ "${code:0:1}" = 2 ] && echo "$code ($(sha256_of <"$W/ghcr-devblob.body"))" || echo not-2xx)"
code=$(req grp-uncached "http://$GRP/v2/team/app/manifests/4" -H "Accept: $ACCEPT")
check "ghcr upstream down, app:4 never pulled: a 5xx error from the group, not a 404" \
  eq "5 UNKNOWN" "${code:0:1} $(err_code grp-uncached)"

dockyard_alive() { kill -0 "$DY_PID" && curl -fsS "http://$DY_ADDR/v2/"; }
check "dockyard still running after all checks" dockyard_alive
summary
