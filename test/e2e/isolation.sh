#!/usr/bin/env bash
# Isolation end-to-end: what one client, registry or upstream may do to another, against
# the real binary.
#  1. Tokens are bound to the virtual registry they were granted for: containerd's ns
#     parameter cannot carry a token into a proxy holding private upstream credentials,
#     and a token of one host does not open another host sharing its token service.
#  2. Bodies are bounded: an unauthenticated 768 MiB chunked POST /token gets 413 and
#     dockyard's memory stays small; a stalled manifest body, and a stalled upload
#     chunk, are cut off by the read timeout, while a slow upload chunk is not.
#  3. Behind a reverse proxy (nginx) in http.trusted_proxies, failed logins lock out the
#     attacker's (user, address) pair, not the user; the admin endpoint's loopback rule
#     sees the real client, and ignores forwarded requests from untrusted peers.
#  4. Groups over upstreams that answer like Docker Hub (401) and ghcr.io (403) for
#     repositories they do not have: dev-only tags, 404 for what nobody has, and
#     upstream images through the group with crane.
# DOCKYARD_BIN runs another binary (e.g. an older build, to see the checks fail).
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
set +e

F="$RESULTS/isolation"
W="$F/work"
LOG="$F/commands.log"
rm -rf "$F"
mkdir -p "$W"
: >"$LOG"
BIN=${DOCKYARD_BIN:-$ROOT/bin/dockyard}
export DOCKER_CONFIG="$F/docker-config"
mkdir -p "$DOCKER_CONFIG"; echo "{}" >"$DOCKER_CONFIG/config.json"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
T0=$SECONDS

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT

# req NAME URL [curl args...]: one request; prints the status, keeps NAME.h and NAME.body.
req() {
  local name=$1 url=$2; shift 2
  echo "+ curl $* $url" >>"$LOG"
  curl -sS -o "$W/$name.body" -D "$W/$name.h" -w '%{http_code}' "$@" "$url" 2>>"$LOG"
}
header() { grep -i "^$2:" "$W/$1.h" | head -1 | cut -d: -f2- | sed -e 's/^ *//' -e 's/\r$//'; }
err_code() { jq -r '.errors[0].code' "$W/$1.body" 2>/dev/null; }

# dy NAME CONFIG: starts the binary on CONFIG (which names its listen address); sets
# DY_PID. Waits for /v2/ to answer anything.
dy() {
  local name=$1 cfg=$2 addr
  addr=$(sed -n 's/^listen: *//p' "$cfg")
  "$BIN" serve --config "$cfg" >>"$F/$name.log" 2>&1 &
  DY_PID=$!
  PIDS+=("$DY_PID")
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v2/")" != 000 ] && return 0
    sleep 0.1
  done
  echo "dockyard $name did not start:"; tail -20 "$F/$name.log"
  return 1
}

# upstream NAME [HTPASSWD]: a CNCF registry; sets UP_ADDR.
upstream() {
  local name=$1 htpasswd=${2:-} port
  port=$(free_port)
  mkdir -p "$F/$name"
  {
    echo "version: 0.1"
    echo "log: {level: warn}"
    echo "storage: {filesystem: {rootdirectory: $F/$name/data}}"
    echo "http: {addr: 127.0.0.1:$port}"
    [ -n "$htpasswd" ] && echo "auth: {htpasswd: {realm: e2e, path: $htpasswd}}"
  } >"$F/$name/config.yml"
  OTEL_TRACES_EXPORTER=none "$TOOLS/registry" serve "$F/$name/config.yml" >>"$F/$name/registry.log" 2>&1 &
  PIDS+=($!)
  UP_ADDR=127.0.0.1:$port
  for _ in $(seq 1 100); do
    case $(curl -s -o /dev/null -w '%{http_code}' "http://$UP_ADDR/v2/") in 200 | 401) return 0 ;; esac
    sleep 0.1
  done
  echo "upstream $name did not start"; return 1
}

# image REF: pushes a one-layer image made here to REF (crane), prints its digest.
image() {
  local d; d=$(mktemp -d "$W/img.XXXX")
  echo "content of $1 $RANDOM$RANDOM" >"$d/file"
  tar -C "$d" -cf "$d.tar" file
  crane append --insecure -f "$d.tar" -t "$1" >>"$LOG" 2>&1 && crane digest --insecure "$1" 2>>"$LOG"
}

users_file() { # users_file PATH USER:PASSWORD...
  local f=$1; shift
  : >"$f"
  for up in "$@"; do htpasswd -nbB -C 10 "${up%%:*}" "${up#*:}" >>"$f" 2>>"$LOG"; done
  grep -v '^$' "$f" >"$f.tmp" && mv "$f.tmp" "$f"
}

# ============================================================ 1. token binding
echo "=== 1. tokens bound to their registry"
users_file "$F/up.htpasswd" "up:up-secret"
upstream vendor "$F/up.htpasswd"
VENDOR=$UP_ADDR
echo -n "up-secret" >"$F/up.pw"
crane auth login "$VENDOR" -u up -p up-secret >>"$LOG" 2>&1
SECRET=$(image "$VENDOR/vendor/secret:v1")
check "the private upstream holds vendor/secret:v1" test -n "$SECRET"
users_file "$F/users" "alice:alice-pw" "bob:bob-pw"
P1=$(free_port)
cat >"$F/token.yaml" <<EOF
listen: 127.0.0.1:$P1
data: $F/token-data
auth:
  mode: token
  users_file: $F/users
  token:
    hosts:
      - {host: dev.test, service: registry.test}
      - {host: prod.test, service: registry.test}
  rules:
    - {subjects: ["user:alice"], registries: [dev], repositories: ["**"], actions: [pull, push, delete]}
registries:
  - {name: dev, type: hosted}
  - {name: prod, type: hosted}
  - name: vendor
    type: proxy
    upstream: {url: "http://$VENDOR", username: up, password_file: $F/up.pw}
routes:
  - {host: dev.test, registry: dev}
  - {host: prod.test, registry: prod}
EOF
dy token "$F/token.yaml"
TOKEN_PID=$DY_PID
R1=127.0.0.1:$P1
token_for() { # token_for HOST SCOPE
  curl -sS -u alice:alice-pw -H "Host: $1" "http://$R1/token?service=registry.test&scope=$2" 2>>"$LOG" | jq -r '.token // empty'
}
TOK=$(token_for dev.test "repository:vendor/secret:pull")
check "alice gets a token for vendor/secret on dev.test (her registry)" test -n "$TOK"
code=$(req ns1 "http://$R1/v2/vendor/secret/manifests/v1?ns=$VENDOR" -H "Host: dev.test" -H "Authorization: Bearer $TOK" \
  -H "Accept: application/vnd.docker.distribution.manifest.v2+json")
ns=$(header ns1 OCI-Namespace)
check "that token with ?ns=<the private upstream> does not pull through the vendor proxy (404 MANIFEST_UNKNOWN from dev, no OCI-Namespace)" \
  eq "404 MANIFEST_UNKNOWN -" "$code $(err_code ns1) ${ns:--}"
check "the vendor proxy fetched nothing for it" eq 0 "$(ls "$F/token-data/blobs/sha256" 2>/dev/null | wc -l)"
TOK=$(token_for dev.test "repository:team/app:pull,push")
code=$(req shared1 "http://$R1/v2/team/app/blobs/uploads/" -X POST -H "Host: prod.test" -H "Authorization: Bearer $TOK")
check "a dev.test token does not open an upload on prod.test (same token service)" eq "403 DENIED" "$code $(err_code shared1)"
code=$(req shared2 "http://$R1/v2/team/app/blobs/uploads/" -X POST -H "Host: dev.test" -H "Authorization: Bearer $TOK")
check "the same token opens one on dev.test" eq 202 "$code"

# ============================================================ 2. bounded bodies
echo "=== 2. bounded bodies"
hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }
echo "RSS peak before: $(hwm "$TOKEN_PID") MiB" >>"$LOG"
code=$(head -c 768M /dev/zero | curl -sS -o "$W/big.body" -w '%{http_code}' -X POST -H 'Transfer-Encoding: chunked' -H 'Expect:' \
  -H 'Content-Type: application/x-www-form-urlencoded' -T - "http://$R1/token" 2>>"$LOG")
peak=$(hwm "$TOKEN_PID")
echo "chunked 768 MiB POST /token: $code, RSS peak $peak MiB" >>"$LOG"
# The server answers 413 after 64 KiB and closes lingeringly, so curl, still sending,
# reads the answer instead of a reset.
check "an unauthenticated chunked 768 MiB POST /token: 413 ($code), dockyard alive, RSS peak ${peak} MiB < 150 MiB" \
  bash -c "kill -0 $TOKEN_PID && [ ${peak:-9999} -lt 150 ] && [ '$code' = 413 ]"
code=$(head -c 1M /dev/zero | tr '\0' a | sed 's/^/grant_type=password\&username=alice\&password=alice-pw\&pad=/' |
  req form1 "http://$R1/token" -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data-binary @-)
check "a 1 MiB token form: 413 SIZE_INVALID" eq "413 SIZE_INVALID" "$code $(err_code form1)"

P2=$(free_port)
cat >"$F/open.yaml" <<EOF
listen: 127.0.0.1:$P2
data: $F/open-data
http: {read_timeout: 2s, upload_timeout: 1h}
EOF
dy open "$F/open.yaml"
# stalled METHOD PATH WAIT: sends headers and the first 16 KiB of a 100 KiB body (past
# the 8 KiB fasthttp reads before any handler, under the short timeout whatever the
# route), then stalls; succeeds when the server closes the connection within WAIT s.
stalled() {
  timeout "$3" bash -c "exec 3<>/dev/tcp/127.0.0.1/$P2
    printf '%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 102400\r\n\r\n{' '$1' '$2' >&3
    head -c 16384 /dev/zero | tr '\\0' ' ' >&3
    cat <&3 >/dev/null"
}
check "a stalled manifest body is cut off by the 2s read timeout (closed within 6s)" stalled PUT /v2/a/manifests/v1 6
new_upload() { curl -sS -X POST -D - -o /dev/null "http://127.0.0.1:$P2/v2/a/blobs/uploads/" | tr -d '\r' | sed -n 's/^Location: //Ip'; }
loc=$(new_upload)
check "a stalled upload chunk too, although the upload timeout is 1h (closed within 6s)" stalled PATCH "$loc" 6
# trickled PATH WAIT: a PATCH whose body, after its first 16 KiB, comes a byte every half
# second; succeeds when the server still has the connection open after WAIT s.
trickled() {
  [ -n "$1" ] && ! timeout "$2" bash -c "exec 3<>/dev/tcp/127.0.0.1/$P2
    printf 'PATCH %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 102400\r\n\r\n' '$1' >&3
    head -c 16384 /dev/zero >&3
    while sleep 0.5; do printf x >&3 || exit; done &
    cat <&3 >/dev/null"
}
loc=$(new_upload)
check "a slow upload chunk, a byte every 0.5s, is not (still open after 5s)" trickled "$loc" 5

# ============================================================ 3. behind a reverse proxy
echo "=== 3. lockouts and the admin endpoint behind nginx"
# nginx_front NAME BACKEND: nginx in front of BACKEND on a free port; sets FRONT.
nginx_front() {
  local name=$1 backend=$2 port d
  port=$(free_port); d="$F/nginx-$name"; mkdir -p "$d"
  cat >"$d/nginx.conf" <<EOF
daemon off;
pid $d/nginx.pid;
error_log $d/error.log;
events {}
http {
  access_log $d/access.log;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  server {
    listen 127.0.0.1:$port;
    client_max_body_size 0;
    location / {
      proxy_pass http://$backend;
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
  "$NGINX" -c "$d/nginx.conf" >>"$d/stderr.log" 2>&1 &
  PIDS+=($!)
  FRONT=127.0.0.1:$port
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://$FRONT/" && return 0; sleep 0.1; done
  echo "nginx $name did not start"; cat "$d/error.log"; return 1
}
P3=$(free_port)
cat >"$F/basic.yaml" <<EOF
listen: 127.0.0.1:$P3
data: $F/basic-data
http: {trusted_proxies: [127.0.0.1]}
auth:
  mode: basic
  users_file: $F/users
  rate_limit: {failures: 5, window: 1m, lockout: 5m}
  rules:
    - {subjects: [authenticated], registries: ["*"], repositories: ["**"], actions: [pull]}
EOF
dy basic "$F/basic.yaml"
nginx_front basic "127.0.0.1:$P3"
from() { # from ADDR USER:PASSWORD: GET /v2/ through nginx from a loopback source address
  curl -sS -o /dev/null -w '%{http_code}' --interface "$1" -u "$2" "http://$FRONT/v2/" 2>>"$LOG"
}
bad=()
for _ in 1 2 3 4 5; do bad+=("$(from 127.0.0.2 alice:guess)"); done
check "five wrong passwords for alice from 127.0.0.2 (through nginx) → 401" eq "401 401 401 401 401" "${bad[*]}"
check "alice's right password from 127.0.0.2 → 429 (that pair is locked out)" eq 429 "$(from 127.0.0.2 alice:alice-pw)"
check "alice's right password from 127.0.0.3 → 200 (others are not locked out of her account)" eq 200 "$(from 127.0.0.3 alice:alice-pw)"
check "bob from 127.0.0.2 → 200 (the lockout is alice's there, not the address's)" eq 200 "$(from 127.0.0.2 bob:bob-pw)"

admin() { curl -sS -o /dev/null -w '%{http_code}' -X POST "$@" 2>>"$LOG"; }
P4=$(free_port)
printf 'listen: 127.0.0.1:%s\ndata: %s\nhttp: {trusted_proxies: [127.0.0.1]}\n' "$P4" "$F/admin-data" >"$F/admin.yaml"
dy admin "$F/admin.yaml"
nginx_front admin "127.0.0.1:$P4"
check "admin endpoint (auth off), 127.0.0.1 a trusted proxy, a direct request naming no client → 403 (unknown client)" \
  eq 403 "$(admin "http://127.0.0.1:$P4/-/admin/gc?dry_run=true")"
check "the same through a trusted nginx for a client at 127.0.0.2 → 200 (loopback)" eq 200 \
  "$(admin --interface 127.0.0.2 "http://$FRONT/-/admin/gc?dry_run=true")"
check "through a trusted nginx, a client claiming X-Forwarded-For: 127.0.0.1 from 203.0.113.9 is not local → 403" eq 403 \
  "$(admin -H 'X-Forwarded-For: 127.0.0.1, 203.0.113.9' "http://127.0.0.1:$P4/-/admin/gc?dry_run=true")"
P5=$(free_port)
printf 'listen: 127.0.0.1:%s\ndata: %s\n' "$P5" "$F/admin2-data" >"$F/admin2.yaml"
dy admin2 "$F/admin2.yaml"
nginx_front admin2 "127.0.0.1:$P5"
check "without trusted_proxies, a request nginx forwarded (from loopback) is not taken for local → 403" eq 403 \
  "$(admin "http://$FRONT/-/admin/gc?dry_run=true")"
check "without trusted_proxies, admin endpoint (auth off) directly on loopback → 200" eq 200 \
  "$(admin "http://127.0.0.1:$P5/-/admin/gc?dry_run=true")"

# ============================================================ 4. groups over public registries
echo "=== 4. groups over upstreams answering like Docker Hub and ghcr.io"
upstream public
PUBLIC=$UP_ADDR
TOOL=$(image "$PUBLIC/lib/tool:2.0")
check "the public backend holds lib/tool:2.0" test -n "$TOOL"
go build -o "$F/publicreg" ./test/peers/publicreg >>"$LOG" 2>&1
HUB_PORT=$(free_port) GHCR_PORT=$(free_port)
"$F/publicreg" -listen 127.0.0.1:$HUB_PORT -backend "http://$PUBLIC" -mode hub >>"$F/hub.log" 2>&1 &
PIDS+=($!)
"$F/publicreg" -listen 127.0.0.1:$GHCR_PORT -backend "http://$PUBLIC" -mode ghcr >>"$F/ghcr.log" 2>&1 &
PIDS+=($!)
sleep 0.3
code=$(req hubunknown "http://127.0.0.1:$HUB_PORT/v2/nobody/has/manifests/latest" -H "Authorization: Bearer anonymous-public-token")
check "the Docker-Hub-like peer answers 401 insufficient_scope for an unknown repository" eq "401 insufficient_scope" \
  "$code $(header hubunknown WWW-Authenticate | sed -n 's/.*error="\([^"]*\)".*/\1/p')"
P6=$(free_port)
cat >"$F/group.yaml" <<EOF
listen: 127.0.0.1:$P6
data: $F/group-data
registries:
  - {name: dev, type: hosted}
  - {name: prod, type: hosted}
  - {name: hub, type: proxy, upstream: {url: "http://127.0.0.1:$HUB_PORT"}}
  - {name: ghcr, type: proxy, upstream: {url: "http://127.0.0.1:$GHCR_PORT"}}
  - {name: allhub, type: group, members: [dev, prod, hub], push_to: dev}
  - {name: allghcr, type: group, members: [dev, prod, ghcr], push_to: dev}
routes:
  - {host: hub.test, registry: allhub}
  - {host: ghcr.test, registry: allghcr}
  - {host: "*", registry: dev}
EOF
dy group "$F/group.yaml"
R6=127.0.0.1:$P6
check "team/devonly:1.0 pushed to dev" test -n "$(image "$R6/team/devonly:1.0")"
for g in hub ghcr; do
  H="Host: $g.test"
  code=$(req "$g-tags" "http://$R6/v2/team/devonly/tags/list" -H "$H")
  check "$g group: tags of a dev-only repository → 200 with 1.0" eq "200 1.0" "$code $(jq -r '.tags | join(",")' "$W/$g-tags.body" 2>/dev/null)"
  code=$(req "$g-notag" "http://$R6/v2/team/devonly/manifests/9.9" -H "$H")
  check "$g group: a tag no member has → 404 MANIFEST_UNKNOWN" eq "404 MANIFEST_UNKNOWN" "$code $(err_code "$g-notag")"
  code=$(req "$g-norepo" "http://$R6/v2/nobody/has/manifests/latest" -H "$H")
  check "$g group: a repository nobody has → 404 MANIFEST_UNKNOWN" eq "404 MANIFEST_UNKNOWN" "$code $(err_code "$g-norepo")"
  code=$(req "$g-notags" "http://$R6/v2/nobody/has/tags/list" -H "$H")
  check "$g group: tags of a repository nobody has → 404 NAME_UNKNOWN" eq "404 NAME_UNKNOWN" "$code $(err_code "$g-notags")"
  code=$(req "$g-cat" "http://$R6/v2/_catalog" -H "$H")
  check "$g group: catalog → 200 listing team/devonly" eq "200 yes" "$code $(jq -r 'if (.repositories | index("team/devonly")) then "yes" else "no" end' "$W/$g-cat.body" 2>/dev/null)"
  code=$(req "$g-tool" "http://$R6/v2/lib/tool/manifests/2.0" -H "$H" -H "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
  check "$g group: lib/tool:2.0 from the upstream → 200 with the upstream's digest" eq "200 $TOOL" "$code $(header "$g-tool" Docker-Content-Digest)"
done
# crane names registries by host and port: a second instance routes every host to the
# Docker-Hub-like group.
P7=$(free_port)
sed -e "s/^listen: .*/listen: 127.0.0.1:$P7/" -e "s#^data: .*#data: $F/group2-data#" -e 's/{host: "\*", registry: dev}/{host: "*", registry: allhub}/' \
  "$F/group.yaml" >"$F/group2.yaml"
dy group2 "$F/group2.yaml"
check "crane pulls lib/tool:2.0 through the Docker-Hub-like group and validates every layer" \
  crane validate --insecure --remote "127.0.0.1:$P7/lib/tool:2.0"
check "crane's digest through the group equals the upstream's" eq "$TOOL" "$(crane digest --insecure "127.0.0.1:$P7/lib/tool:2.0" 2>>"$LOG")"

echo "isolation e2e took $((SECONDS - T0))s"
summary
