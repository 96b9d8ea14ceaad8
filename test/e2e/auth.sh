#!/usr/bin/env bash
# Authentication and authorisation end-to-end, against a real OpenLDAP and real clients,
# over TLS with a test CA (registry.auth.test and prod.auth.test in /etc/hosts):
#  1. slapd (test/ldap/) with users in groups dev, ops, readers, and a nested group:
#     platform is a member of dev, carol is in platform only. A bcrypt users file (htpasswd
#     -B -C 10) with local users builder, admin and temp.
#  2. A permission matrix (subject × registry × repository × pull/push/delete, exact
#     statuses) over HTTP against two hosted registries, dev and prod, routed by Host and by
#     namespace; in basic mode, then in token mode through GET /token and Bearer. Catalog
#     and tag lists filtered by pull rights; cross-repository mounts need pull on the source.
#  3. docker login/push/pull with LDAP users (allowed and denied) in basic and in token
#     mode; skopeo, crane and regctl with credentials; digests and bytes compared.
#  4. Token scope: a token for A:pull does not pull B nor push A, is bound to its host,
#     tampered and alg=none tokens are refused, an expired one (ttl 2s) is refused.
#  5. LDAP hung (SIGSTOP) and stopped: LDAP logins fail within a bound with a 401 naming the
#     directory and a log line; users-file users still work. Filter-injection user names
#     never authenticate.
#  6. CI tokens: `dockyard token create` (server stopped) → docker login -u USER -p TOKEN
#     works within the scope only; after `dockyard token revoke` it does not work at all.
#  7. The OCI conformance suite with credentials under token auth.
# Also: refresh tokens (and that they stop working for users removed from the users file or
# from LDAP), groups from memberOf (with nesting), the login rate limit.
# Adds lines to /etc/hosts and CA directories under /etc/docker/certs.d; both are put back
# as they were (checked). Leaves dockerd running (starts it if needed).
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
# A failing client must become a FAIL line, not end the script before summary.
set +e

A="$RESULTS/auth"
W="$A/work"
LOG="$A/commands.log"
rm -rf "$A"
mkdir -p "$W"
: >"$LOG"
T0=$SECONDS
SLAPD=/usr/sbin/slapd
export DOCKER_CONFIG="$A/docker-config"
export CONTAINERS_REGISTRIES_CONF="$A/registries.conf"
mkdir -p "$DOCKER_CONFIG"; echo "{}" >"$DOCKER_CONFIG/config.json"
: >"$CONTAINERS_REGISTRIES_CONF"
POLICY="$A/policy.json"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"

REG_HOST=registry.auth.test # registry dev (and prod under the namespace prod/)
PROD_HOST=prod.auth.test    # registry prod
PORT=$(free_port)
REG="$REG_HOST:$PORT" PROD="$PROD_HOST:$PORT"
LDAP_PORT=$(free_port)
LDAP_URL="ldap://127.0.0.1:$LDAP_PORT"
CA="$A/tls/ca.crt"
CERT_DIR="$A/tls/client-certs" # for skopeo --*cert-dir: holds ca.crt
MT=application/vnd.oci.image.manifest.v1+json
ACCEPT="$MT, application/vnd.docker.distribution.manifest.v2+json"

# Passwords. LDAP ones are in test/ldap/data.ldif; local ones are made per run.
declare -A PW=([alice]=alice-ldap-pw [bob]=bob-ldap-pw [carol]=carol-ldap-pw [dave]=dave-ldap-pw
  [erin]=erin-ldap-pw [builder]="builder-$RANDOM$RANDOM$RANDOM" [admin]="admin-$RANDOM$RANDOM$RANDOM"
  [temp]="temp-$RANDOM$RANDOM")

# ---------------------------------------------------------------------------- helpers

# req NAME METHOD URL [curl args...]: one HTTPS request verified with the test CA; prints
# the status, keeps NAME.h and NAME.body.
req() {
  local name=$1 method=$2 url=$3; shift 3
  local m=(-X "$method"); [ "$method" = HEAD ] && m=(--head)
  echo "+ curl ${m[*]} $url $*" >>"$LOG"
  curl -sS --max-time "${REQ_TIMEOUT:-30}" --cacert "$CA" "${m[@]}" -o "$W/$name.body" -D "$W/$name.h" -w '%{http_code}' \
    "$@" "$url" 2>>"$LOG" </dev/null
}
header() { grep -i "^$2:" "$W/$1.h" 2>/dev/null | head -1 | cut -d: -f2- | sed -e 's/^ *//' -e 's/\r$//'; }
err_code() { jq -r '.errors[0].code // empty' "$W/$1.body" 2>/dev/null; }
err_message() { jq -r '.errors[0].message // empty' "$W/$1.body" 2>/dev/null; }
scheme() { header "$1" WWW-Authenticate | cut -d' ' -f1; }
# verdict NAME CODE: what a response says, compared with want_verdict.
verdict() {
  case $2 in
    2??) echo "$2" ;;
    401) echo "401 $(err_code "$1") $(scheme "$1")" ;;
    *) echo "$2 $(err_code "$1")" ;;
  esac
}
# A HEAD response has no body: its status, and the challenge scheme of a 401.
verdict_head() { case $2 in 401) echo "401 $(scheme "$1")" ;; *) echo "$2" ;; esac; }
want_verdict() { case $1 in 401) echo "401 UNAUTHORIZED $SCHEME" ;; 403) echo "403 DENIED" ;; *) echo "$1" ;; esac; }
want_head() { case $1 in 401) echo "401 $SCHEME" ;; 403) echo 403 ;; *) echo "$1" ;; esac; }
basic() { echo "Authorization: Basic $(printf '%s:%s' "$1" "$2" | base64 -w0)"; }
ADMIN_AUTH=(-H "$(basic admin "${PW[admin]}")")
b64url_decode() { local p; p=$(tr '_-' '/+' <<<"$1"); while [ $((${#p} % 4)) -ne 0 ]; do p="$p="; done; base64 -d <<<"$p" 2>/dev/null; }
b64url() { base64 -w0 | tr '/+' '_-' | tr -d '='; }
jwt_payload() { b64url_decode "$(cut -d. -f2 <<<"$1")"; }
# get_token HOST SCOPE [curl args...]: GET /token on HOST for SCOPE (space separated scopes
# allowed); prints the token, keeps the response as token.body / token.h and the status in
# $W/token.code.
get_token() {
  local host=$1 scope=$2 q; shift 2
  local scopes s
  q="service=$(jq -rn --arg s "$host" '$s|@uri')"
  read -ra scopes <<<"$scope"
  for s in "${scopes[@]}"; do q="$q&scope=$(jq -rn --arg s "$s" '$s|@uri')"; done
  req token GET "https://$host/token?$q" "$@" >"$W/token.code"
  jq -r '.token // empty' "$W/token.body" 2>/dev/null
}
# granted TOKEN NAME: the actions the token's access claim gives on repository NAME, sorted.
granted() { jwt_payload "$1" | jq -r --arg n "$2" '[.access[]? | select(.type=="repository" and .name==$n) | .actions[]] | sort | join(",")'; }
section() { echo "=== $* (at $((SECONDS - T0))s)"; }
elapsed_ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# ------------------------------------------------------------------ blobs and manifests

mkdir -p "$W/blobs"
echo '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$W/blobs/config.json"
head -c 4096 /dev/urandom >"$W/blobs/layer.bin"
head -c 4096 /dev/urandom >"$W/blobs/ops-layer.bin" # only in dev ops/tools: the mount tests' source
CFG_DIGEST="sha256:$(file_sha "$W/blobs/config.json")" CFG_SIZE=$(stat -c %s "$W/blobs/config.json")
OPS_LAYER="sha256:$(file_sha "$W/blobs/ops-layer.bin")"
# make_manifest LABEL [LAYER-FILE]: an image manifest of the config and one layer, with an
# annotation making its digest unique; writes $W/m-LABEL.json and sets M_FILE, M_DIGEST.
make_manifest() {
  local label=$1 layer=${2:-$W/blobs/layer.bin}
  M_FILE="$W/m-$label.json"
  jq -cn --arg cd "$CFG_DIGEST" --argjson cs "$CFG_SIZE" --arg ld "sha256:$(file_sha "$layer")" \
    --argjson ls "$(stat -c %s "$layer")" --arg l "$label" \
    '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",
      config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$cd,size:$cs},
      layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar",digest:$ld,size:$ls}],
      annotations:{"dockyard.e2e":$l}}' >"$M_FILE"
  M_DIGEST="sha256:$(file_sha "$M_FILE")"
}
# post_blob NAME HOST REPO FILE [curl args]: monolithic upload (POST ?digest=); prints the status.
post_blob() {
  local name=$1 host=$2 repo=$3 file=$4; shift 4
  req "$name" POST "https://$host/v2/$repo/blobs/uploads/?digest=sha256:$(file_sha "$file")" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$file" "$@"
}
put_manifest() { # NAME HOST REPO REF FILE [curl args]
  local name=$1 host=$2 repo=$3 ref=$4 file=$5; shift 5
  req "$name" PUT "https://$host/v2/$repo/manifests/$ref" -H "Content-Type: $MT" --data-binary "@$file" "$@"
}
# seed HOST REPO [LAYER-FILE]: admin pushes config, layer and manifest "v1"; prints its digest.
declare -A SEED
seed() {
  local host=$1 repo=$2 layer=${3:-$W/blobs/layer.bin} c1 c2 c3
  make_manifest "seed-$host-${repo//\//_}" "$layer"
  c1=$(post_blob seed "$host" "$repo" "$W/blobs/config.json" "${ADMIN_AUTH[@]}")
  c2=$(post_blob seed "$host" "$repo" "$layer" "${ADMIN_AUTH[@]}")
  c3=$(put_manifest seed "$host" "$repo" v1 "$M_FILE" "${ADMIN_AUTH[@]}")
  echo "seed $host/$repo: $c1 $c2 $c3 $M_DIGEST" >>"$LOG"
  [ "$c1 $c2 $c3" = "201 201 201" ] && SEED[$host/$repo]=$M_DIGEST
}
# admin_state HOST REPO REF: "200 DIGEST" or the status, as the admin sees it.
admin_state() {
  local code; code=$(req admin-state GET "https://$1/v2/$2/manifests/$3" -H "Accept: $ACCEPT" "${ADMIN_AUTH[@]}")
  if [ "$code" = 200 ]; then echo "200 $(header admin-state Docker-Content-Digest)"; else echo "$code"; fi
}

# ---------------------------------------------------------------- processes and cleanup

SLAPD_PID="" DY_PID="" DY_NAME=""
start_slapd() {
  "$SLAPD" -d 256 -f "$A/ldap/slapd.conf" -h "$LDAP_URL/" >>"$A/ldap/slapd.log" 2>&1 </dev/null &
  SLAPD_PID=$!
  for _ in $(seq 1 50); do
    ldapsearch -x -H "$LDAP_URL" -D cn=admin,dc=example,dc=org -w admin-ldap-pw -b "" -s base \
      >/dev/null 2>&1 && return 0
    kill -0 "$SLAPD_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "slapd did not start; log:"; tail -20 "$A/ldap/slapd.log"
  return 1
}
stop_slapd() {
  [ -n "$SLAPD_PID" ] || return 0
  kill -CONT "$SLAPD_PID" 2>/dev/null; kill -TERM "$SLAPD_PID" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$SLAPD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SLAPD_PID" 2>/dev/null; wait "$SLAPD_PID" 2>/dev/null
  SLAPD_PID=""
}
# start_dy NAME CONFIG: bin/dockyard on $PORT over TLS, data in $A/NAME/data (kept across
# restarts); ready when https://registry.auth.test:PORT/v2/ answers 401.
start_dy() {
  local name=$1 cfg=$2 code
  DY_NAME=$name
  mkdir -p "$A/$name"
  echo "=== $(date +%T) serve --config $cfg" >>"$A/$name/dockyard.log"
  "$ROOT/bin/dockyard" serve --config "$cfg" --listen "127.0.0.1:$PORT" --data "$A/$name/data" \
    >>"$A/$name/dockyard.log" 2>&1 </dev/null &
  DY_PID=$!
  for _ in $(seq 1 100); do
    kill -0 "$DY_PID" 2>/dev/null || break
    code=$(curl -s --max-time 2 --cacert "$CA" -o /dev/null -w '%{http_code}' "https://$REG/v2/" 2>/dev/null)
    [ "$code" = 401 ] && return 0
    sleep 0.1
  done
  echo "dockyard ($name) did not start; log:"; tail -20 "$A/$name/dockyard.log"
  return 1
}
stop_dy() { [ -n "$DY_PID" ] && stop_dockyard; DY_PID=""; }

# /etc/hosts: our lines are added and removed; the file must end up byte-identical.
HOSTS_MARK="# dockyard-e2e-auth"
HOSTS_LINES="$A/hosts.lines"
printf '127.0.0.1 %s %s\n' "$REG_HOST" "$HOSTS_MARK" "$PROD_HOST" "$HOSTS_MARK" >"$HOSTS_LINES"
remove_hosts_lines() { # rewritten in place: /etc/hosts may be a bind mount
  local tmp; tmp=$(mktemp)
  grep -v -- "$HOSTS_MARK\$" /etc/hosts >"$tmp"
  cat "$tmp" >/etc/hosts; rm -f "$tmp"
}
# /etc/docker/certs.d: the CA for HOST:PORT; created directories are removed again.
CERTS_D=/etc/docker/certs.d
CREATED_DIRS=() # removed in reverse order
snapshot_certs_d() { if [ -d "$CERTS_D" ]; then (cd "$CERTS_D" && find . -printf '%p %y %s %m\n' | sort); else echo absent; fi; }
install_ca_dir() { # HOST:PORT
  local d
  for d in /etc/docker "$CERTS_D" "$CERTS_D/$1"; do
    if [ ! -d "$d" ]; then mkdir "$d" && CREATED_DIRS+=("$d"); fi
  done
  cp "$CA" "$CERTS_D/$1/ca.crt" && echo "$CERTS_D/$1/ca.crt" >>"$A/certs-installed"
}
restore_etc() {
  remove_hosts_lines
  if [ -f "$A/certs-installed" ]; then xargs -r rm -f <"$A/certs-installed"; rm -f "$A/certs-installed"; fi
  local i
  for ((i = ${#CREATED_DIRS[@]} - 1; i >= 0; i--)); do rmdir "${CREATED_DIRS[$i]}" 2>/dev/null; done
  CREATED_DIRS=()
}
IMAGE_IDS=()
cleanup() {
  trap - EXIT INT TERM
  echo "cleaning up"
  stop_dy
  stop_slapd
  if docker info >/dev/null 2>&1 && [ ${#IMAGE_IDS[@]} -gt 0 ]; then
    docker rmi -f "${IMAGE_IDS[@]}" >/dev/null 2>&1
  fi
  restore_etc
  echo "auth.sh took $((SECONDS - T0))s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ======================================================================== 0. set-up

section "0. test CA, hostnames, OpenLDAP, users file"
HOSTS_BEFORE="$A/hosts.before"
remove_hosts_lines # lines a killed run may have left
cp /etc/hosts "$HOSTS_BEFORE"
CERTS_BEFORE=$(snapshot_certs_d)

mkdir -p "$A/tls" "$CERT_DIR"
(
  cd "$A/tls" &&
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout ca.key -out ca.crt -subj "/CN=dockyard e2e auth test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server.key -out server.csr -subj "/CN=$REG_HOST" &&
  printf 'subjectAltName=DNS:%s,DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
    "$REG_HOST" "$PROD_HOST" >server.ext &&
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.crt
) >>"$LOG" 2>&1
cp "$CA" "$CERT_DIR/ca.crt"
check "test CA signed a server certificate for $REG_HOST and $PROD_HOST" \
  openssl verify -CAfile "$CA" -verify_hostname "$PROD_HOST" "$A/tls/server.crt"

cat "$HOSTS_LINES" >>/etc/hosts
resolves_to_loopback() {
  local h
  for h in "$REG_HOST" "$PROD_HOST"; do
    echo "$h -> $(getent ahostsv4 "$h" | head -1)"
    [ "$(getent ahostsv4 "$h" | awk 'NR==1{print $1}')" = 127.0.0.1 ] || return 1
  done
}
check "/etc/hosts: $REG_HOST and $PROD_HOST resolve to 127.0.0.1" resolves_to_loopback
install_ca_dir "$REG"
install_ca_dir "$PROD"
check "test CA installed for the Docker daemon under $CERTS_D/$REG and $CERTS_D/$PROD" \
  cmp "$CA" "$CERTS_D/$PROD/ca.crt"

# OpenLDAP: our own slapd on a free port, its database under $A/ldap.
mkdir -p "$A/ldap/data"
sed "s#@LDAP_DIR@#$A/ldap#g" test/ldap/slapd.conf >"$A/ldap/slapd.conf"
if start_slapd; then pass "slapd started on $LDAP_URL"; else fail "slapd started (see $A/ldap/slapd.log)"; fi
run ldapadd -x -H "$LDAP_URL" -D cn=admin,dc=example,dc=org -w admin-ldap-pw -f test/ldap/data.ldif
SVC=(-x -H "$LDAP_URL" -D cn=dockyard,ou=services,dc=example,dc=org -w dockyard-svc-pw)
ldap_groups_of() { # the cn of every group listing DN as member or uniqueMember
  ldapsearch "${SVC[@]}" -LLL -b ou=groups,dc=example,dc=org "(|(member=$1)(uniqueMember=$1))" cn 2>>"$LOG" |
    sed -n 's/^cn: //p' | sort | tr '\n' ' ' | sed 's/ $//'
}
check "LDAP: alice in dev, bob in ops, dave in readers (uniqueMember), carol only in platform" \
  eq "dev|ops|readers|platform|" "$(ldap_groups_of uid=alice,ou=people,dc=example,dc=org)|$(ldap_groups_of uid=bob,ou=people,dc=example,dc=org)|$(ldap_groups_of uid=dave,ou=people,dc=example,dc=org)|$(ldap_groups_of uid=carol,ou=people,dc=example,dc=org)|$(ldap_groups_of uid=erin,ou=people,dc=example,dc=org)"
check "LDAP: group platform is a member of group dev (nesting)" \
  eq dev "$(ldap_groups_of cn=platform,ou=groups,dc=example,dc=org)"
check "LDAP: user passwords bind (carol)" \
  ldapwhoami -x -H "$LDAP_URL" -D uid=carol,ou=people,dc=example,dc=org -w "${PW[carol]}"
anonymous_sees_nothing() {
  local n; n=$(ldapsearch -x -H "$LDAP_URL" -LLL -b dc=example,dc=org '(uid=*)' dn 2>>"$LOG" | grep -c '^dn:')
  echo "anonymous search found $n entries"; [ "$n" = 0 ]
}
check "LDAP: anonymous searches find nothing (dockyard must bind as its service account)" anonymous_sees_nothing

printf '%s\n' dockyard-svc-pw >"$A/ldap-bind-password"
htpasswd -B -C 10 -bn builder "${PW[builder]}" >"$A/users.htpasswd" 2>>"$LOG"
htpasswd -B -C 10 -bn admin "${PW[admin]}" >>"$A/users.htpasswd" 2>>"$LOG"
htpasswd -B -C 10 -bn temp "${PW[temp]}" >>"$A/users.htpasswd" 2>>"$LOG"
sed -i '/^$/d' "$A/users.htpasswd"
check "users file: builder, admin and temp with bcrypt cost 10" \
  eq 3 "$(grep -cE '^(builder|admin|temp):\$2y\$10\$' "$A/users.htpasswd")"

# ------------------------------------------------------------------ configurations

# write_config FILE MODE TOKEN-TTL LDAP-TIMEOUT RATE-FAILURES [MEMBER-OF-ATTR]
write_config() {
  cat >"$1" <<EOF
log: {level: info}
tls: {cert_file: "$A/tls/server.crt", key_file: "$A/tls/server.key"}
registries:
  - {name: dev, type: hosted}
  - {name: prod, type: hosted}
routes:
  - {host: $PROD_HOST, registry: prod}
  - {host: "*", registry: dev, namespaces: {prod: prod}}
auth:
  mode: $2
  users_file: "$A/users.htpasswd"
  ldap:
    url: $LDAP_URL
    bind_dn: cn=dockyard,ou=services,dc=example,dc=org
    bind_password_file: "$A/ldap-bind-password"
    user_base: ou=people,dc=example,dc=org
    user_filter: "(&(objectClass=inetOrgPerson)(uid={username}))"
    group_base: ou=groups,dc=example,dc=org
    group_filter: "(|(member={dn})(uniqueMember={dn}))"
    group_name_attr: cn
    member_of_attr: "${6:-}"
    nested: true
    timeout: $4
    pool_size: 2
    cache_ttl: 1m
  token: {issuer: dockyard-e2e, ttl: $3, refresh_ttl: 1h}
  rate_limit: {failures: $5, window: 1m, lockout: 1m}
  rules:
    - {subjects: [user:admin], registries: ["*"], repositories: ["**"], actions: [pull, push, delete]}
    - {subjects: [anonymous], registries: [dev], repositories: ["public/**"], actions: [pull]}
    - {subjects: [authenticated], registries: [dev], repositories: ["shared/*"], actions: [pull]}
    - {subjects: [group:dev], registries: [dev], repositories: ["team/**"], actions: [pull, push]}
    - {subjects: [group:ops], registries: [dev, prod], repositories: ["team/**", "ops/*"], actions: [pull, push, delete]}
    - {subjects: [group:readers], registries: ["*"], repositories: ["team/**", "public/**"], actions: [pull]}
    - {subjects: [user:alice], registries: [prod], repositories: ["foo/img/*"], actions: [pull, push]}
    - {subjects: [user:builder], registries: [dev], repositories: ["foo/img/*", "conformance/**"], actions: [pull, push, delete]}
EOF
}
write_config "$A/basic.yaml" basic 5m 5s 1000
write_config "$A/token.yaml" token 5m 5s 1000
write_config "$A/short.yaml" token 2s 2s 3
write_config "$A/memberof.yaml" basic 5m 5s 1000 memberOf
for c in basic token short memberof; do
  check "dockyard check-config accepts $c.yaml" bin/dockyard check-config --config "$A/$c.yaml"
done

# The permission matrix: subject, host (reg = registry.auth.test → dev, with prod/… → prod;
# prod = prod.auth.test → prod), repository as the client names it, and the status of a
# pull (GET and HEAD of the manifest v1), a push (POST monolithic blob upload and PUT of a
# new manifest) and a delete (DELETE of a manifest by digest). badpw is alice with a wrong
# password.
MATRIX="
anonymous reg  public/base        200 401 401
anonymous reg  shared/lib         401 401 401
anonymous reg  team/app           401 401 401
anonymous prod public/base        401 401 401
anonymous reg  prod/public/base   401 401 401
erin      reg  public/base        200 403 403
erin      reg  shared/lib         200 403 403
erin      reg  team/app           403 403 403
alice     reg  team/app           200 201 403
alice     reg  team/sub/deep      200 201 403
alice     prod team/app           403 403 403
alice     reg  prod/foo/img/a     200 201 403
alice     prod foo/img/a          200 201 403
alice     prod foo/img/a/b        403 403 403
alice     reg  foo/img/a          403 403 403
alice     reg  ops/tools          403 403 403
carol     reg  team/sub/deep      200 201 403
carol     prod team/app           403 403 403
bob       reg  team/app           200 201 202
bob       prod team/sub/deep      200 201 202
bob       reg  ops/tools          200 201 202
bob       reg  shared/lib         200 403 403
dave      prod team/app           200 403 403
dave      reg  public/base        200 403 403
dave      prod public/base        200 403 403
builder   reg  foo/img/a          200 201 202
builder   reg  foo/img/a/b        403 403 403
builder   prod foo/img/a          403 403 403
badpw     reg  public/base        401 401 401
"
# seed_key HOST REPO: the registry and repository a client name reaches.
seed_key() {
  if [ "$1" = "$REG" ] && [[ $2 == prod/* ]]; then echo "$PROD/${2#prod/}"; else echo "$1/$2"; fi
}

# matrix_row MODE N SUBJECT HOST REPO PULL PUSH DELETE: three checks (pull, push, delete)
# with the credentials in AUTH (set by the caller).
matrix_row() {
  local mode=$1 n=$2 subj=$3 host=$4 repo=$5 wpull=$6 wpush=$7 wdel=$8
  local what="$mode: $subj → $host/$repo" key c1 c2 code dig
  key=$(seed_key "$host" "$repo")
  local layer="$W/blobs/layer.bin" # manifests must name a layer linked to the repository
  [ "$key" = "$REG/ops/tools" ] && layer="$W/blobs/ops-layer.bin"
  # pull: GET and HEAD of manifest v1
  c1=$(req pull-get GET "https://$host/v2/$repo/manifests/v1" -H "Accept: $ACCEPT" "${AUTH[@]}")
  c2=$(req pull-head HEAD "https://$host/v2/$repo/manifests/v1" -H "Accept: $ACCEPT" "${AUTH[@]}")
  dig=""; [ "$c1" = 200 ] && dig=" $(header pull-get Docker-Content-Digest)"
  local wd=""; [ "$wpull" = 200 ] && wd=" ${SEED[$key]:-unseeded}"
  check "$what: pull (GET, HEAD manifest) → $wpull" \
    eq "$(want_verdict "$wpull")$wd | $(want_head "$wpull")" "$(verdict pull-get "$c1")$dig | $(verdict_head pull-head "$c2")"
  # push: POST ?digest= of the config blob, PUT of a new manifest; the admin then sees it or not
  make_manifest "push-$mode-$n" "$layer"
  c1=$(post_blob push-post "$host" "$repo" "$W/blobs/config.json" "${AUTH[@]}")
  c2=$(put_manifest push-put "$host" "$repo" "pushed-$mode-$n" "$M_FILE" "${AUTH[@]}")
  local landed; landed=$(admin_state "$host" "$repo" "pushed-$mode-$n")
  local wl="404"; [ "$wpush" = 201 ] && wl="200 $M_DIGEST"
  check "$what: push (POST blob upload, PUT manifest) → $wpush" \
    eq "$(want_verdict "$wpush") | $(want_verdict "$wpush") | $wl" "$(verdict push-post "$c1") | $(verdict push-put "$c2") | $landed"
  # delete: the admin pushes a manifest of its own, the subject deletes it by digest
  make_manifest "del-$mode-$n" "$layer"
  code=$(put_manifest del-seed "$host" "$repo" "del-$mode-$n" "$M_FILE" "${ADMIN_AUTH[@]}")
  c1=$(req del "DELETE" "https://$host/v2/$repo/manifests/$M_DIGEST" "${AUTH[@]}")
  local after; after=$(admin_state "$host" "$repo" "$M_DIGEST")
  local wa="200 $M_DIGEST"; [ "$wdel" = 202 ] && wa=404
  check "$what: delete (DELETE manifest by digest) → $wdel" \
    eq "201 | $(want_verdict "$wdel") | $wa" "$code | $(verdict del "$c1") | $after"
}
host_of() { if [ "$1" = prod ]; then echo "$PROD"; else echo "$REG"; fi; }
creds_of() { # SUBJECT: curl args for Basic credentials
  case $1 in
    anonymous) ;;
    badpw) echo "-u"; echo "alice:not-alices-password" ;;
    *) echo "-u"; echo "$1:${PW[$1]}" ;;
  esac
}

run_matrix_basic() {
  local n=0 subj where repo p u d
  SCHEME=Basic
  while read -r subj where repo p u d <&3; do
    [ -n "$subj" ] || continue
    n=$((n + 1))
    mapfile -t AUTH < <(creds_of "$subj")
    matrix_row basic "$n" "$subj" "$(host_of "$where")" "$repo" "$p" "$u" "$d"
  done 3<<<"$MATRIX"
}

# Token mode: users get a token from GET /token with Basic credentials for all three
# actions; the token's access must be exactly what the row allows, and the requests carry
# it as Bearer. Anonymous requests without a token are challenged with the exact Bearer
# header (scope of the action); then the anonymous token flow runs the row.
challenge() { # HOST REPO ACTIONS WANT-CODE: the exact Bearer challenge of a 401
  if [ "$4" = 401 ]; then
    echo "401 Bearer realm=\"https://$1/token\",service=\"$1\",scope=\"repository:$2:$3\""
  else echo "$4"; fi
}
got_c() { if [ "$2" = 401 ]; then echo "401 $(header "$1" WWW-Authenticate)"; else echo "$2"; fi; }
run_matrix_token() {
  local n=0 subj where repo p u d host tok want got
  SCHEME=Bearer
  while read -r subj where repo p u d <&3; do
    [ -n "$subj" ] || continue
    n=$((n + 1))
    host=$(host_of "$where")
    if [ "$subj" = anonymous ]; then
      local c1 c2 c3 fake="sha256:$(head -c 32 /dev/urandom | sha256_of)"
      c1=$(req nt-pull GET "https://$host/v2/$repo/manifests/v1" -H "Accept: $ACCEPT")
      c2=$(req nt-push POST "https://$host/v2/$repo/blobs/uploads/")
      c3=$(req nt-del DELETE "https://$host/v2/$repo/manifests/$fake")
      check "token: anonymous → $host/$repo without a token: pull $p, push and delete challenged with their scopes" \
        eq "$(challenge "$host" "$repo" pull "$p") | $(challenge "$host" "$repo" pull,push 401) | $(challenge "$host" "$repo" delete 401)" \
        "$(got_c nt-pull "$c1") | $(got_c nt-push "$c2") | $(got_c nt-del "$c3")"
    fi
    if [ "$subj" = badpw ]; then
      get_token "$host" "repository:$repo:pull" -u alice:not-alices-password >/dev/null
      check "token: GET /token with a wrong password → 401 UNAUTHORIZED" \
        eq "401 UNAUTHORIZED" "$(cat "$W/token.code") $(err_code token)"
      mapfile -t AUTH < <(creds_of badpw)
    else
      mapfile -t CRED < <(creds_of "$subj")
      tok=$(get_token "$host" "repository:$repo:pull,push,delete" "${CRED[@]}")
      want=$(for a in pull:$p push:$u delete:$d; do [ "${a#*:}" -lt 300 ] && echo "${a%%:*}"; done | LC_ALL=C sort | tr '\n' ',' | sed 's/,$//')
      got=$(granted "$tok" "$repo")
      check "token: $subj asks $host for $repo:pull,push,delete → granted exactly '${want:-nothing}'" \
        eq "200 ${want:-none}" "$(cat "$W/token.code") ${got:-none}"
      AUTH=(-H "Authorization: Bearer $tok")
    fi
    matrix_row token "$n" "$subj" "$host" "$repo" "$p" "$u" "$d"
  done 3<<<"$MATRIX"
}

# Every repository the matrix, catalog and mount tests read.
seed_all() {
  local r ok=0 total=0
  for r in public/base shared/lib team/app team/sub/deep foo/img/a foo/img/a/b; do
    total=$((total + 1)); seed "$REG" "$r" && ok=$((ok + 1))
  done
  total=$((total + 1)); seed "$REG" ops/tools "$W/blobs/ops-layer.bin" && ok=$((ok + 1))
  for r in public/base team/app team/sub/deep foo/img/a foo/img/a/b; do
    total=$((total + 1)); seed "$PROD" "$r" && ok=$((ok + 1))
  done
  eq "$total" "$ok" "repositories seeded by the admin"
}
catalog_of() { # NAME HOST [curl args]: "STATUS repo repo …" (sorted)
  local name=$1 host=$2 code; shift 2
  code=$(req "$name" GET "https://$host/v2/_catalog?n=1000" "$@")
  echo "$code $(jq -r '.repositories[]?' "$W/$name.body" 2>/dev/null | sort | tr '\n' ' ' | sed 's/ $//')" | sed 's/ $//'
}

# Docker image helpers
docker_image() { # NAME REF: imports a small random rootfs as REF; sets IMG_ID
  local d="$W/img-$1"
  mkdir -p "$d/data"
  head -c 60000 /dev/urandom >"$d/data/$1.bin"
  IMG_ID=$(tar -C "$d" -c data | docker import - "$2" 2>>"$LOG")
  [ -n "$IMG_ID" ] && IMAGE_IDS+=("$IMG_ID")
}
# docker_cmd OUT CMD...: runs docker CMD, output to $W/OUT and the log; returns its status.
docker_cmd() {
  local out="$W/$1"; shift
  echo "+ docker $*" >>"$LOG"
  docker "$@" >"$out" 2>&1 </dev/null
  local rc=$?
  cat "$out" >>"$LOG"
  return $rc
}
docker_login() { # USER PASSWORD OUT
  echo "+ docker login $REG -u $1" >>"$LOG"
  printf '%s' "$2" | docker login "$REG" -u "$1" --password-stdin >"$W/$3" 2>&1
  local rc=$?; cat "$W/$3" >>"$LOG"; return $rc
}
pushed_digest() { sed -nE 's/^[^ ]+: digest: (sha256:[0-9a-f]{64}) size: [0-9]+$/\1/p' "$W/$1" | tail -1; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>>"$LOG"; }
image_gone() { ! docker image inspect "$1" >/dev/null 2>&1; }
# fails_with OUT PATTERN RC: the command failed (RC≠0) and its output matches PATTERN.
fails_with() { echo "exit $3; output: $(cat "$W/$1")"; [ "$3" -ne 0 ] && grep -qiE -- "$2" "$W/$1"; }

# docker_round MODE USER DENIED-REPO: login as USER, push team/docker-MODE, pull it back
# by image ID; the push to DENIED-REPO fails with "denied"; a reader pulls; anonymous
# and wrong-password attempts fail.
docker_round() {
  local mode=$1 user=$2 denied=$3 ref="$REG/team/docker-$1:1" rc dig
  docker_login "$user" "${PW[$user]}" login.out
  check "docker login $REG -u $user ($mode mode, LDAP user): Login Succeeded" grep -q 'Login Succeeded' "$W/login.out"
  docker_image "docker-$mode" "$ref"; local id=$IMG_ID
  docker_cmd push.out push "$ref"
  dig=$(pushed_digest push.out)
  check "docker push $ref as $user ($mode): dockyard serves the digest docker reported" \
    eq "$dig" "$(admin_state "$REG" "team/docker-$mode" 1 | cut -d' ' -f2)"
  docker_cmd rmi.out rmi "$ref"
  check "docker rmi $ref: the image is gone locally before the pull" image_gone "$id"
  docker_cmd pull.out pull "$ref"
  check "docker pull $ref as $user ($mode): same image ID" eq "$id" "$(image_id "$ref")"
  docker tag "$ref" "$REG/$denied" 2>>"$LOG"
  docker_cmd push-denied.out push "$REG/$denied"; rc=$?
  check "docker push $REG/$denied as $user ($mode): refused with 'denied'" fails_with push-denied.out denied $rc
  check "docker push $REG/$denied: nothing landed (admin gets 404)" \
    eq 404 "$(admin_state "$REG" "${denied%:*}" "${denied##*:}")"
  docker_cmd rmi2.out rmi "$REG/$denied" "$ref"
  # dave (readers) pulls what was pushed and may not push
  docker_login dave "${PW[dave]}" login-dave.out
  docker_cmd pull-dave.out pull "$ref"
  check "docker login as dave (readers) and pull $ref ($mode): same image ID" eq "$id" "$(image_id "$ref")"
  docker tag "$ref" "$REG/team/dave-$mode:1" 2>>"$LOG"
  docker_cmd push-dave.out push "$REG/team/dave-$mode:1"; rc=$?
  check "docker push $REG/team/dave-$mode:1 as dave ($mode): refused with 'denied'" fails_with push-dave.out denied $rc
  docker_cmd rmi3.out rmi "$ref" "$REG/team/dave-$mode:1"
  # wrong password, then anonymous
  docker_login alice wrong-password login-bad.out; rc=$?
  check "docker login with a wrong password ($mode): fails with 'unauthorized'" fails_with login-bad.out unauthorized $rc
  docker_cmd logout.out logout "$REG"
  docker_cmd pull-anon.out pull "$ref"; rc=$?
  check "docker pull $ref without login ($mode): fails, image not pulled" \
    eq "failed gone" "$([ $rc -ne 0 ] && echo failed || echo pulled) $(image_gone "$ref" && echo gone || echo present)"
}

# docker_search MODE WHO TERM WANT: `docker search REG/TERM` (as the current docker
# login, or none) lists exactly WANT (names, space-separated, sorted; "" for none).
docker_search() {
  local mode=$1 who=$2 term=$3 want=$4 got
  local rc
  docker_cmd search.out search --no-trunc --limit 100 --format '{{.Name}}' "$REG/$term"; rc=$?
  got=$(sort "$W/search.out" | tr '\n' ' ' | sed 's/ $//')
  # an empty answer must be one: exit 0 and no output (eq refuses empty values)
  [ $rc -eq 0 ] && [ -z "$got" ] && got=none
  [ $rc -eq 0 ] || got="exit $rc: $got"
  check "docker search $REG/$term as $who ($mode): finds [${want:-none}]" eq "${want:-none}" "$got"
}

# docker_search_all MODE WHO CURL-CREDENTIALS…: `docker search REG//` (every name has a
# slash) lists what the catalog lists to the same user.
docker_search_all() {
  local mode=$1 who=$2 cat; shift 2
  cat=$(catalog_of "search-cat-$who-$mode" "$REG" "$@")
  docker_cmd search-all.out search --no-trunc --limit 100 --format '{{.Name}}' "$REG//"
  check "docker search $REG// as $who ($mode): the repositories the catalog shows $who (${cat#200 })" \
    eq "$cat" "200 $(sort "$W/search-all.out" | tr '\n' ' ' | sed 's/ $//')"
}

# An OCI image layout (one image, one gzip layer) for skopeo, crane and regctl; sets
# SRC_MANIFEST and writes the payload to $W/layout.payload.
make_layout() {
  local dir=$1 tmp="$W/layout-tmp"
  rm -rf "$dir" "$tmp"; mkdir -p "$dir/blobs/sha256" "$tmp/rootfs"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  head -c 90000 /dev/urandom >"$tmp/rootfs/payload"
  cp "$tmp/rootfs/payload" "$W/layout.payload"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/rootfs" -cf "$tmp/layer.tar" .
  local diffid; diffid=$(file_sha "$tmp/layer.tar")
  gzip -n -c "$tmp/layer.tar" >"$tmp/layer.tgz"
  local ld ls; ld=$(file_sha "$tmp/layer.tgz"); ls=$(stat -c %s "$tmp/layer.tgz")
  cp "$tmp/layer.tgz" "$dir/blobs/sha256/$ld"
  jq -cn --arg d "sha256:$diffid" '{architecture:"amd64",os:"linux",config:{},rootfs:{type:"layers",diff_ids:[$d]}}' >"$tmp/config.json"
  local cd cs; cd=$(file_sha "$tmp/config.json"); cs=$(stat -c %s "$tmp/config.json")
  cp "$tmp/config.json" "$dir/blobs/sha256/$cd"
  jq -cn --arg cd "sha256:$cd" --argjson cs "$cs" --arg ld "sha256:$ld" --argjson ls "$ls" \
    '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",
      config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$cd,size:$cs},
      layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar+gzip",digest:$ld,size:$ls}]}' >"$tmp/manifest.json"
  local md ms; md=$(file_sha "$tmp/manifest.json"); ms=$(stat -c %s "$tmp/manifest.json")
  cp "$tmp/manifest.json" "$dir/blobs/sha256/$md"
  jq -cn --arg d "sha256:$md" --argjson s "$ms" \
    '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",digest:$d,size:$s,
      annotations:{"org.opencontainers.image.ref.name":"v1"}}]}' >"$dir/index.json"
  SRC_MANIFEST="sha256:$md"
  rm -rf "$tmp"
}
# layout_has_source OUTDIR: an OCI layout written from dockyard maps v1 to the source
# manifest and holds every source blob byte-identical.
layout_has_source() {
  local f got
  got=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="v1") | .digest' "$1/index.json" 2>/dev/null | head -1)
  eq "$SRC_MANIFEST" "$got" "index.json of $1" || return 1
  for f in "$W/layout/blobs/sha256"/*; do same_bytes "$f" "$1/blobs/sha256/$(basename "$f")" || return 1; done
}
# dir_has_source DIR: a skopeo dir: copy holds the source manifest and blobs.
dir_has_source() {
  local f
  eq "$SRC_MANIFEST" "sha256:$(file_sha "$1/manifest.json")" "manifest.json of $1" || return 1
  for f in $(jq -r '.config.digest, .layers[].digest' "$1/manifest.json"); do
    same_bytes "$W/layout/blobs/sha256/${f#sha256:}" "$1/${f#sha256:}" || return 1
  done
}
# crane as a user: its own DOCKER_CONFIG, the test CA as the only trusted root.
cr() { local u=$1; shift; DOCKER_CONFIG="$A/crane-$u" SSL_CERT_FILE="$CA" crane "$@"; }
crane_login() { # USER PASSWORD
  mkdir -p "$A/crane-$1"; echo '{}' >"$A/crane-$1/config.json"
  run cr "$1" auth login "$REG" -u "$1" -p "$2"
}
exported_payload() { # USER REF: crane export; the payload equals the layout's
  local d; d=$(mktemp -d "$W/export.XXXX")
  cr "$1" export "$2" - 2>>"$LOG" | tar -x -C "$d" && same_bytes "$W/layout.payload" "$d/payload"
}

make_layout "$W/layout"
DOCKER_UP=0
if ensure_docker; then DOCKER_UP=1; pass "docker daemon is up"; else fail "docker daemon is up"; fi

# ====================================================================== 1-2. basic mode

section "1-2. basic mode: seeding, /v2/, catalog, tags, the permission matrix, mounts"
if start_dy main "$A/basic.yaml" && kill -0 "$DY_PID" 2>/dev/null; then
  pass "dockyard (basic mode, TLS) serves https://$REG"
else
  fail "dockyard (basic mode, TLS) started (see $A/main/dockyard.log)"
fi
check "admin seeds 12 repositories in dev and prod (users-file user, rule '**' on '*')" seed_all

code=$(req v2-anon GET "https://$REG/v2/")
check "basic: GET /v2/ anonymous → 401 with WWW-Authenticate: Basic realm=\"dockyard\"" \
  eq "401 UNAUTHORIZED Basic realm=\"dockyard\"" "$code $(err_code v2-anon) $(header v2-anon WWW-Authenticate)"
check "basic: GET /v2/ as alice (LDAP) → 200" eq 200 "$(req v2-alice GET "https://$REG/v2/" -u "alice:${PW[alice]}")"
check "basic: GET /v2/ as builder (users file) → 200" eq 200 "$(req v2-builder GET "https://$REG/v2/" -u "builder:${PW[builder]}")"
code=$(req v2-bad GET "https://$REG/v2/" -u "builder:wrong")
check "basic: GET /v2/ with a wrong users-file password → 401 UNAUTHORIZED" eq "401 UNAUTHORIZED" "$code $(err_code v2-bad)"
code=$(req v2-empty GET "https://$REG/v2/" -u "alice:")
check "basic: GET /v2/ as alice with an empty password (no unauthenticated LDAP bind) → 401" eq 401 "$code"
check "plain HTTP on the TLS port is not served" \
  eq "not-200" "$(c=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$REG/v2/" -u "alice:${PW[alice]}"); [ "$c" = 200 ] && echo 200 || echo not-200)"

check "basic: anonymous catalog shows only public/base" eq "200 public/base" "$(catalog_of cat-anon "$REG")"
check "basic: alice's catalog of dev: what she may pull" \
  eq "200 public/base shared/lib team/app team/sub/deep" "$(catalog_of cat-alice "$REG" -u "alice:${PW[alice]}")"
check "basic: alice's catalog of prod: foo/img/a only" eq "200 foo/img/a" "$(catalog_of cat-alice-prod "$PROD" -u "alice:${PW[alice]}")"
check "basic: carol's catalog of dev (nested group): same as alice's" \
  eq "200 public/base shared/lib team/app team/sub/deep" "$(catalog_of cat-carol "$REG" -u "carol:${PW[carol]}")"
check "basic: bob's catalog of dev adds ops/tools" \
  eq "200 ops/tools public/base shared/lib team/app team/sub/deep" "$(catalog_of cat-bob "$REG" -u "bob:${PW[bob]}")"
check "basic: dave's catalog of prod" eq "200 public/base team/app team/sub/deep" "$(catalog_of cat-dave "$PROD" -u "dave:${PW[dave]}")"
check "basic: admin's catalog of dev: all seven" \
  eq "200 foo/img/a foo/img/a/b ops/tools public/base shared/lib team/app team/sub/deep" "$(catalog_of cat-admin "$REG" "${ADMIN_AUTH[@]}")"
code=$(req tags-alice GET "https://$REG/v2/ops/tools/tags/list" -u "alice:${PW[alice]}")
check "basic: alice lists tags of ops/tools → 403 DENIED" eq "403 DENIED" "$code $(err_code tags-alice)"
code=$(req tags-bob GET "https://$REG/v2/ops/tools/tags/list" -u "bob:${PW[bob]}")
check "basic: bob lists tags of ops/tools → 200 [v1]" eq "200 v1" "$code $(jq -r '.tags | join(",")' "$W/tags-bob.body" 2>/dev/null)"

run_matrix_basic

# Mount: pull on the source is required; without it the POST is an ordinary upload (202).
mount_as() { # NAME TARGET-REPO AUTH...: POST ?mount=OPS_LAYER&from=ops/tools; "STATUS linked|not-linked"
  local name=$1 target=$2 code after; shift 2
  code=$(req "$name" POST "https://$REG/v2/$target/blobs/uploads/?mount=$OPS_LAYER&from=ops/tools" "$@")
  after=$(req "$name-head" HEAD "https://$REG/v2/$target/blobs/$OPS_LAYER" "${ADMIN_AUTH[@]}")
  echo "$code $([ "$after" = 200 ] && echo linked || echo not-linked)"
}
check "basic: alice (no pull on ops/tools) mounts its layer into team/mount-basic → 202 upload, not linked" \
  eq "202 not-linked" "$(mount_as mount-alice team/mount-basic -u "alice:${PW[alice]}")"
check "basic: bob (pull on ops/tools) mounts its layer into team/mount-basic → 201, linked" \
  eq "201 linked" "$(mount_as mount-bob team/mount-basic -u "bob:${PW[bob]}")"

# crane with Basic credentials
crane_login alice "${PW[alice]}"
run cr alice push "$W/layout" "$REG/team/crane-basic:1"
check "basic: crane push (alice, TLS with the test CA): digest is the source manifest's" \
  eq "$SRC_MANIFEST" "$(cr alice digest "$REG/team/crane-basic:1" 2>>"$LOG")"
check "basic: crane export as alice: payload byte-identical" exported_payload alice "$REG/team/crane-basic:1"

if [ "$DOCKER_UP" = 1 ]; then
  docker_round basic alice ops/docker-denied:1
  # docker search over TLS sends the login's Basic credentials (/v1/_ping: standalone).
  docker_login alice "${PW[alice]}" login-search.out
  docker_search basic alice team/sub team/sub/deep
  docker_search basic alice lib shared/lib
  docker_search basic alice ops ""
  docker_search_all basic alice -u "alice:${PW[alice]}"
  docker_cmd logout-search.out logout "$REG"
  docker_search basic anonymous base public/base
  docker_search basic anonymous lib ""
fi

# CI tokens are created while the server is stopped: with it running the index is locked.
out=$(bin/dockyard token create --config "$A/token.yaml" --data "$A/main/data" --user alice --scope 'dev/team/**:pull' 2>&1); rc=$?
echo "token create while serving: exit $rc: $out" >>"$LOG"
check "dockyard token create while the server runs: refused, says the server may be running" \
  eq "failed yes" "$([ $rc -ne 0 ] && echo failed || echo created) $(grep -qi 'server running' <<<"$out" && echo yes || echo no)"
stop_dy

# ====================================================================== 6a. CI token

section "6. CI token created with the server stopped"
bin/dockyard token create --config "$A/token.yaml" --data "$A/main/data" --user alice --group dev \
  --scope 'dev/team/**:pull,push' --expires 1d >"$W/ci-token.out" 2>>"$LOG"
cat "$W/ci-token.out" >>"$LOG"
CI_TOKEN=$(head -1 "$W/ci-token.out")
CI_ID=$(sed -nE 's/^# id ([^ ]+) .*/\1/p' "$W/ci-token.out")
check "dockyard token create (alice, group dev, dev/team/**:pull,push) printed a secret and an id" \
  eq "dyt_ $CI_ID" "${CI_TOKEN:0:4} $(cut -d_ -f2 <<<"$CI_TOKEN")"
bin/dockyard token list --config "$A/token.yaml" --data "$A/main/data" >"$W/ci-list.out" 2>>"$LOG"
check "dockyard token list: the token is active for alice with its scope" \
  eq "$CI_ID alice dev/team/**:pull,push active" "$(awk -v id="$CI_ID" '$1==id {print $1, $2, $3, $NF}' "$W/ci-list.out")"

# ====================================================================== 2. token mode

section "2. token mode: the same matrix through GET /token and Bearer"
if start_dy main "$A/token.yaml" && kill -0 "$DY_PID" 2>/dev/null; then
  pass "dockyard (token mode, same data) serves https://$REG"
else
  fail "dockyard (token mode) started (see $A/main/dockyard.log)"
fi
code=$(req v2-anon-t GET "https://$REG/v2/")
check "token: GET /v2/ anonymous → 401 with the Bearer challenge of this host" \
  eq "401 Bearer realm=\"https://$REG/token\",service=\"$REG\"" "$code $(header v2-anon-t WWW-Authenticate)"
code=$(req v2-anon-prod GET "https://$PROD/v2/")
check "token: GET /v2/ on $PROD_HOST → its own realm and service" \
  eq "401 Bearer realm=\"https://$PROD/token\",service=\"$PROD\"" "$code $(header v2-anon-prod WWW-Authenticate)"

run_matrix_token

tok=$(get_token "$REG" "registry:catalog:* repository:team/app:pull" -u "alice:${PW[alice]}")
# what basic mode added since: crane and docker pushes, the mount target
want="public/base shared/lib team/app team/crane-basic$([ "$DOCKER_UP" = 1 ] && echo " team/docker-basic") team/mount-basic team/sub/deep"
check "token: alice's catalog with a registry:catalog:* token: what she may pull" \
  eq "200 $want" "$(catalog_of cat-t-alice "$REG" -H "Authorization: Bearer $tok")"
tok=$(get_token "$REG" "repository:team/app:pull" -u "alice:${PW[alice]}")
code=$(req cat-t-noscope GET "https://$REG/v2/_catalog" -H "Authorization: Bearer $tok")
check "token: catalog with a token lacking registry:catalog:* → 401 insufficient_scope" \
  eq "401 yes" "$code $(header cat-t-noscope WWW-Authenticate | grep -q 'error="insufficient_scope"' && echo yes || echo no)"

# ------------------------------------------------------------- 4. a token and its scope
section "4. tokens are useless outside their scope"
TOK_A=$(get_token "$REG" "repository:team/app:pull" -u "alice:${PW[alice]}")
check "token for team/app:pull (alice has pull,push there): grants pull only" eq pull "$(granted "$TOK_A" team/app)"
BEARER=(-H "Authorization: Bearer $TOK_A")
check "team/app:pull token: GET team/app:v1 → 200" eq 200 "$(req sc-pull GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" "${BEARER[@]}")"
# 401 insufficient_scope (the user could get a better token) or 403 both refuse.
refused_scope() { # NAME CODE
  echo "$2 $(header "$1" WWW-Authenticate) $(cat "$W/$1.body")"
  [ "$2" = 403 ] || { [ "$2" = 401 ] && header "$1" WWW-Authenticate | grep -q 'error="insufficient_scope"'; }
}
code=$(req sc-other GET "https://$REG/v2/team/sub/deep/manifests/v1" -H "Accept: $ACCEPT" "${BEARER[@]}")
check "team/app:pull token: pull of team/sub/deep (alice may, the token may not) → 401 insufficient_scope or 403" refused_scope sc-other "$code"
code=$(req sc-push POST "https://$REG/v2/team/app/blobs/uploads/" "${BEARER[@]}")
check "team/app:pull token: push to team/app (POST upload) → 401 insufficient_scope or 403" refused_scope sc-push "$code"
make_manifest scope-put
code=$(put_manifest sc-put "$REG" team/app scope-put "$M_FILE" "${BEARER[@]}")
check "team/app:pull token: PUT manifest to team/app → 401 insufficient_scope or 403" refused_scope sc-put "$code"
code=$(req sc-host GET "https://$PROD/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" "${BEARER[@]}")
check "team/app:pull token of $REG_HOST used on $PROD_HOST (other audience) → 401 invalid_token" \
  eq "401 yes" "$code $(header sc-host WWW-Authenticate | grep -q 'error="invalid_token"' && echo yes || echo no)"
# The service a client names must not let it carry one registry's grant to another.
req token GET "https://$REG/token?service=$PROD&scope=repository:team/app:pull,push" -u "alice:${PW[alice]}" >/dev/null
TOK_X=$(jq -r '.token // empty' "$W/token.body" 2>/dev/null)
xjwt_aud=$(jwt_payload "$TOK_X" | jq -r '.aud | if type=="array" then .[0] else . end' 2>/dev/null)
code=$(req sc-xsvc GET "https://$PROD/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -H "Authorization: Bearer $TOK_X")
echo "token asked at $REG with service=$PROD: aud=$xjwt_aud access=$(jwt_payload "$TOK_X" | jq -c .access)" >>"$LOG"
check "a token asked at $REG_HOST naming service=$PROD_HOST does not let alice pull prod's team/app" \
  eq "refused" "$([ "${code:0:1}" = 2 ] && echo "allowed ($code)" || echo refused)"
code=$(post_blob sc-xsvc-push "$PROD" team/app "$W/blobs/config.json" -H "Authorization: Bearer $TOK_X")
check "... nor push to prod's team/app" eq "refused" "$([ "${code:0:1}" = 2 ] && echo "allowed ($code)" || echo refused)"
# Tampering: a character in the middle of the signature, the payload widened to push.
sig=$(cut -d. -f3 <<<"$TOK_A"); i=$((${#sig} / 2)); ch=${sig:$i:1}; [ "$ch" = A ] && nch=B || nch=A
TAMPERED_SIG="$(cut -d. -f1-2 <<<"$TOK_A").${sig:0:$i}$nch${sig:$((i + 1))}"
code=$(req sc-tsig GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -H "Authorization: Bearer $TAMPERED_SIG")
check "token with one signature character changed → 401 invalid_token" \
  eq "401 UNAUTHORIZED yes" "$code $(err_code sc-tsig) $(header sc-tsig WWW-Authenticate | grep -q 'error="invalid_token"' && echo yes || echo no)"
wide=$(jwt_payload "$TOK_A" | jq -c '.access = [{type:"repository",name:"team/app",actions:["pull","push","delete"]}]' | b64url)
TAMPERED_PAYLOAD="$(cut -d. -f1 <<<"$TOK_A").$wide.$sig"
code=$(post_blob sc-tpay "$REG" team/app "$W/blobs/config.json" -H "Authorization: Bearer $TAMPERED_PAYLOAD")
check "token with its payload widened to push,delete (old signature) → push refused with 401" eq "401 UNAUTHORIZED" "$code $(err_code sc-tpay)"
code=$(req sc-tpay-get GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -H "Authorization: Bearer $TAMPERED_PAYLOAD")
check "token with a tampered payload → even its original pull is refused (401)" eq 401 "$code"
nonehdr=$(b64url_decode "$(cut -d. -f1 <<<"$TOK_A")" | jq -c '.alg = "none"' | b64url)
code=$(post_blob sc-none "$REG" team/app "$W/blobs/config.json" -H "Authorization: Bearer $nonehdr.$wide.")
check "unsigned token (alg none) granting push → 401" eq 401 "$code"
code=$(req sc-garbage GET "https://$REG/v2/team/app/manifests/v1" -H "Authorization: Bearer not-a-jwt")
check "garbage bearer token → 401 (not treated as anonymous)" eq 401 "$code"

# Refresh tokens, the OAuth2 POST flow docker login uses.
code=$(req post-pw POST "https://$REG/token" --data-urlencode grant_type=password --data-urlencode username=carol \
  --data-urlencode "password=${PW[carol]}" --data-urlencode "service=$REG" --data-urlencode access_type=offline \
  --data-urlencode client_id=e2e --data-urlencode "scope=repository:team/app:pull")
REFRESH=$(jq -r '.refresh_token // empty' "$W/post-pw.body" 2>/dev/null)
check "POST /token grant_type=password (carol, offline) → 200 with a refresh token" eq "200 yes" "$code $([ -n "$REFRESH" ] && echo yes || echo no)"
code=$(req post-rt POST "https://$REG/token" --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$REFRESH" \
  --data-urlencode "service=$REG" --data-urlencode client_id=e2e --data-urlencode "scope=repository:team/sub/deep:pull,push")
RT_TOK=$(jq -r '.access_token // .token // empty' "$W/post-rt.body" 2>/dev/null)
check "POST /token grant_type=refresh_token → a token with carol's rights (nested dev: pull,push)" \
  eq "200 pull,push" "$code $(granted "$RT_TOK" team/sub/deep)"
code=$(req rt-as-bearer GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -H "Authorization: Bearer $REFRESH")
check "a refresh token is not an access token (Bearer → 401)" eq 401 "$code"

# Mounts with tokens: the token must carry pull on the source, so the challenge of a mount
# asks for it (clients such as the conformance suite request exactly the challenged scope).
code=$(req mount-challenge POST "https://$REG/v2/team/mount-token/blobs/uploads/?mount=$OPS_LAYER&from=ops/tools")
check "token: the 401 challenge of POST ?mount=…&from=ops/tools asks for repository:ops/tools:pull too" \
  eq "401 yes yes" "$code $(header mount-challenge WWW-Authenticate | grep -q 'repository:team/mount-token:pull,push' && echo yes || echo no) $(header mount-challenge WWW-Authenticate | grep -q 'repository:ops/tools:pull' && echo yes || echo no)"
MOUNT_SCOPE="repository:team/mount-token:pull,push repository:ops/tools:pull"
tok=$(get_token "$REG" "$MOUNT_SCOPE" -u "alice:${PW[alice]}")
check "token: alice's mount token carries nothing for ops/tools" eq "|pull,push" "$(granted "$tok" ops/tools)|$(granted "$tok" team/mount-token)"
check "token: alice mounts ops/tools' layer into team/mount-token → 202 upload, not linked" \
  eq "202 not-linked" "$(mount_as mount-t-alice team/mount-token -H "Authorization: Bearer $tok")"
tok=$(get_token "$REG" "$MOUNT_SCOPE" -u "bob:${PW[bob]}")
check "token: bob (pull on ops/tools in his token) mounts it → 201, linked" \
  eq "201 linked" "$(mount_as mount-t-bob team/mount-token -H "Authorization: Bearer $tok")"

# ------------------------------------------------------------- 5a. filter injection
section "5. LDAP filter injection"
for u in '*' '*)(uid=*' 'alice)(|(uid=*' 'alice)(uid=*' 'alice*' 'al*ce' '*)(|(objectClass=*' 'alice)(objectClass=*'; do
  c1=$(req inj-v2 GET "https://$REG/v2/" -H "$(basic "$u" "${PW[alice]}")")
  get_token "$REG" "repository:team/app:pull,push" -H "$(basic "$u" "${PW[alice]}")" >/dev/null
  check "user name '$u' with alice's password: 401 on /v2/ and at /token" eq "401 401" "$c1 $(cat "$W/token.code")"
done
c1=$(req inj-ok GET "https://$REG/v2/" -u "alice:${PW[alice]}")
check "... while alice herself still logs in (200)" eq 200 "$c1"

# ------------------------------------------------------------- 3. clients, token mode
section "3. docker, skopeo, crane, regctl with token auth over TLS"
if [ "$DOCKER_UP" = 1 ]; then
  docker_round token carol ops/docker-denied-t:1
  # docker login keeps a refresh token (identitytoken) in token mode
  docker_login bob "${PW[bob]}" login-bob.out
  check "docker login in token mode stores an identity (refresh) token, not the password" \
    eq "yes no" "$(jq -r --arg h "$REG" '.auths[$h].identitytoken // empty' "$DOCKER_CONFIG/config.json" | grep -q . && echo yes || echo no) $(grep -qF "${PW[bob]}" "$DOCKER_CONFIG/config.json" && echo yes || echo no)"
  # with an identity token, docker search asks /token for registry:catalog:search
  docker_search token bob ops ops/tools
  docker_search token bob lib shared/lib
  docker_search_all token bob -u "bob:${PW[bob]}"
  docker_cmd logout-bob.out logout "$REG"
  docker_login dave "${PW[dave]}" login-dave-search.out
  docker_search token dave ops ""
  docker_search token dave team/sub team/sub/deep
  docker_cmd logout-dave.out logout "$REG"
fi

SK_CERTS=(--cert-dir "$CERT_DIR")
run skopeo --policy "$POLICY" copy --dest-creds "bob:${PW[bob]}" --dest-cert-dir "$CERT_DIR" \
  "oci:$W/layout:v1" "docker://$REG/team/skopeo:1"
check "skopeo copy (bob, --dest-creds, --dest-cert-dir) into team/skopeo:1: manifest digest is the source's" \
  eq "$SRC_MANIFEST" "sha256:$(skopeo inspect --raw --creds "dave:${PW[dave]}" "${SK_CERTS[@]}" "docker://$REG/team/skopeo:1" 2>>"$LOG" | sha256_of)"
rm -rf "$W/skopeo-out"
run skopeo --policy "$POLICY" copy --src-creds "dave:${PW[dave]}" --src-cert-dir "$CERT_DIR" \
  "docker://$REG/team/skopeo:1" "dir:$W/skopeo-out"
check "skopeo copy out as dave (readers): manifest and blobs byte-identical" dir_has_source "$W/skopeo-out"
echo "+ skopeo copy as dave to team/skopeo-denied" >>"$LOG"
skopeo --policy "$POLICY" copy --dest-creds "dave:${PW[dave]}" --dest-cert-dir "$CERT_DIR" \
  "oci:$W/layout:v1" "docker://$REG/team/skopeo-denied:1" >"$W/skopeo-denied.out" 2>&1; rc=$?
cat "$W/skopeo-denied.out" >>"$LOG"
check "skopeo copy as dave (no push) → fails with denied" fails_with skopeo-denied.out denied $rc
echo "+ skopeo inspect with a wrong password" >>"$LOG"
skopeo inspect --raw --creds "bob:wrong" "${SK_CERTS[@]}" "docker://$REG/team/skopeo:1" >"$W/skopeo-bad.out" 2>&1; rc=$?
check "skopeo inspect with a wrong password → fails (unauthorized)" fails_with skopeo-bad.out 'unauthorized|authentication required' $rc

crane_login carol "${PW[carol]}"
run cr carol push "$W/layout" "$REG/team/crane-token:1"
check "crane push as carol (nested group, token flow): digest is the source manifest's" \
  eq "$SRC_MANIFEST" "$(cr carol digest "$REG/team/crane-token:1" 2>>"$LOG")"
crane_login dave "${PW[dave]}"
check "crane export as dave: payload byte-identical" exported_payload dave "$REG/team/crane-token:1"
cr dave copy "$REG/team/crane-token:1" "$REG/team/crane-dave:1" >"$W/crane-denied.out" 2>&1; rc=$?
cat "$W/crane-denied.out" >>"$LOG"
check "crane copy as dave into team/crane-dave → fails with 403 DENIED" fails_with crane-denied.out 'DENIED|403 Forbidden' $rc

RG_HOME="$A/regctl-home"; mkdir -p "$RG_HOME"
rg() { HOME="$RG_HOME" regctl "$@"; }
run rg registry set "$REG" --cacert "$(cat "$CA")"
printf '%s' "${PW[alice]}" | HOME="$RG_HOME" regctl registry login "$REG" -u alice --pass-stdin >>"$LOG" 2>&1
run rg image copy "ocidir://$W/layout:v1" "$REG/team/regctl:1"
check "regctl image copy as alice into team/regctl:1: digest is the source manifest's" \
  eq "$SRC_MANIFEST" "$(rg image digest "$REG/team/regctl:1" 2>>"$LOG")"
rm -rf "$W/regctl-out"
run rg image copy "$REG/team/regctl:1" "ocidir://$W/regctl-out:v1"
check "regctl image copy out of dockyard: every blob byte-identical" layout_has_source "$W/regctl-out"
rg image copy "ocidir://$W/layout:v1" "$REG/ops/regctl:1" >"$W/regctl-denied.out" 2>&1; rc=$?
cat "$W/regctl-denied.out" >>"$LOG"
check "regctl image copy as alice into ops/regctl → fails (denied)" fails_with regctl-denied.out 'denied|forbidden|403' $rc

# ------------------------------------------------------------- 6b. the CI token in use
section "6. CI token: within its scope only"
CI_AUTH=(-u "alice:$CI_TOKEN")
check "CI token as Basic password: pull dev team/app:v1 → 200" \
  eq 200 "$(req ci-pull GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" "${CI_AUTH[@]}")"
code=$(req ci-prod GET "https://$PROD/v2/foo/img/a/manifests/v1" -H "Accept: $ACCEPT" "${CI_AUTH[@]}")
check "CI token: pull of prod foo/img/a (alice's own rule, outside the token's scope) → 403" eq "403 DENIED" "$code $(err_code ci-prod)"
code=$(req ci-other-user GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -u "bob:$CI_TOKEN")
check "CI token presented with another user name → 401" eq 401 "$code"
tok=$(get_token "$REG" "repository:team/app:pull,push,delete repository:ops/tools:pull" -u "alice:$CI_TOKEN")
check "CI token at /token: team/app gets pull,push (no delete), ops/tools nothing" \
  eq "200 pull,push|" "$(cat "$W/token.code") $(granted "$tok" team/app)|$(granted "$tok" ops/tools)"
if [ "$DOCKER_UP" = 1 ]; then
  docker_login alice "$CI_TOKEN" login-ci.out
  check "docker login -u alice with the CI token: Login Succeeded" grep -q 'Login Succeeded' "$W/login-ci.out"
  docker_image ci "$REG/team/ci-app:1"; CI_IMG=$IMG_ID
  docker_cmd push-ci.out push "$REG/team/ci-app:1"
  check "docker push team/ci-app:1 with the CI token: dockyard serves the pushed digest" \
    eq "$(pushed_digest push-ci.out)" "$(admin_state "$REG" team/ci-app 1 | cut -d' ' -f2)"
  docker tag "$REG/team/ci-app:1" "$REG/prod/foo/img/ci:1" 2>>"$LOG"
  docker_cmd push-ci-out.out push "$REG/prod/foo/img/ci:1"; rc=$?
  check "docker push prod/foo/img/ci:1 with the CI token (alice's rule allows, the scope does not) → denied" \
    fails_with push-ci-out.out denied $rc
  docker_cmd rmi-ci.out rmi "$REG/team/ci-app:1" "$REG/prod/foo/img/ci:1"
fi
mkdir -p "$A/crane-ci"; echo '{}' >"$A/crane-ci/config.json"
run cr ci auth login "$REG" -u alice -p "$CI_TOKEN"
check "crane with the CI token: digest of team/app:v1" eq "${SEED[$REG/team/app]:-}" "$(cr ci digest "$REG/team/app:v1" 2>>"$LOG")"
cr ci copy "$REG/team/app:v1" "$REG/ops/ci-copy:1" >"$W/crane-ci-denied.out" 2>&1; rc=$?
check "crane copy into ops/ci-copy with the CI token → fails with 403 DENIED" fails_with crane-ci-denied.out 'DENIED|403 Forbidden' $rc

# ------------------------------------------------------------- 7. conformance
section "7. OCI conformance suite with credentials (builder) under token auth"
out="$A/conformance"
mkdir -p "$out"
(
  . test/conformance/env.sh
  export OCI_REGISTRY=$REG OCI_TLS=enabled SSL_CERT_FILE="$CA" OCI_RESULTS_DIR="$out/results"
  export OCI_USERNAME=builder OCI_PASSWORD="${PW[builder]}"
  cd "$out" && timeout 600 conformance >"$out/conformance.log" 2>&1
)
conformance_result "token auth, builder" "$out/conformance.log"
. test/conformance/env.sh
code=$(req conf-anon GET "https://$REG/v2/$OCI_REPO1/tags/list")
check "conformance repositories are not readable anonymously (401)" eq 401 "$code"

# The directory matches names whatever their case or spaces; the token carries the
# canonical uid, so rules, lockouts and revocations see one user.
tok=$(get_token "$REG" "repository:team/app:pull" -u "ALICE:${PW[alice]}")
check "LDAP: a login spelled ALICE gets a token for alice (the directory's uid)" \
  eq "200 alice" "$(cat "$W/token.code") $(jwt_payload "$tok" | jq -r '.sub // empty')"

dockyard_alive() { kill -0 "$DY_PID" && [ "$(curl -s --cacert "$CA" -o /dev/null -w '%{http_code}' "https://$REG/v2/")" = 401 ]; }
check "dockyard (token mode) still running after all of that" dockyard_alive
stop_dy

# ====================================================================== 6c. revoke

section "6. CI token revoked"
run bin/dockyard token revoke --config "$A/token.yaml" --data "$A/main/data" "$CI_ID"
bin/dockyard token list --config "$A/token.yaml" --data "$A/main/data" >"$W/ci-list2.out" 2>>"$LOG"
check "dockyard token list: the token is revoked" eq "$CI_ID revoked" "$(awk -v id="$CI_ID" '$1==id {print $1, $NF}' "$W/ci-list2.out")"
start_dy main "$A/token.yaml" || fail "dockyard (token mode) restarted after the revocation"
code=$(req ci-revoked GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" "${CI_AUTH[@]}")
check "revoked CI token as Basic password → 401" eq 401 "$code"
get_token "$REG" "repository:team/app:pull" "${CI_AUTH[@]}" >/dev/null
check "revoked CI token at /token → 401" eq 401 "$(cat "$W/token.code")"
if [ "$DOCKER_UP" = 1 ]; then
  docker_cmd pull-ci-revoked.out pull "$REG/team/ci-app:1"; rc=$?
  check "docker pull with the stored (revoked) CI token → fails" \
    eq "failed gone" "$([ $rc -ne 0 ] && echo failed || echo pulled) $(image_gone "$REG/team/ci-app:1" && echo gone || echo present)"
  docker_login alice "$CI_TOKEN" login-ci2.out; rc=$?
  check "docker login with the revoked CI token → fails (unauthorized)" fails_with login-ci2.out unauthorized $rc
  docker_cmd logout-ci.out logout "$REG"
fi
check "crane with the revoked CI token → fails" eq failed "$(cr ci digest "$REG/team/app:v1" >>"$LOG" 2>&1 && echo worked || echo failed)"
stop_dy

# ================================================== groups from memberOf (overlay-filled)

section "groups from the users' memberOf attribute (member_of_attr: memberOf, nested: true)"
if start_dy memberof "$A/memberof.yaml" && kill -0 "$DY_PID" 2>/dev/null; then
  pass "dockyard (basic mode, member_of_attr: memberOf) started on fresh data"
else
  fail "dockyard (memberof) started (see $A/memberof/dockyard.log)"
fi
seed "$REG" team/app
check "LDAP: carol's memberOf is platform only, platform's memberOf is dev (the overlay filled both)" \
  eq "cn=platform,ou=groups,dc=example,dc=org|cn=dev,ou=groups,dc=example,dc=org" \
  "$(ldapsearch "${SVC[@]}" -LLL -b uid=carol,ou=people,dc=example,dc=org -s base memberOf 2>>"$LOG" | sed -n 's/^memberOf: //p')|$(ldapsearch "${SVC[@]}" -LLL -b cn=platform,ou=groups,dc=example,dc=org -s base memberOf 2>>"$LOG" | sed -n 's/^memberOf: //p')"
make_manifest memberof-alice
check "memberOf: alice (memberOf dev) pulls and pushes team/app" \
  eq "200 201" "$(req mo-alice GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -u "alice:${PW[alice]}") $(put_manifest mo-alice-put "$REG" team/app alice "$M_FILE" -u "alice:${PW[alice]}")"
check "memberOf: bob (memberOf ops) pulls team/app" \
  eq 200 "$(req mo-bob GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -u "bob:${PW[bob]}")"
check "LDAP: erin's memberOf is a self-service group named dev outside group_base" \
  eq "cn=dev,ou=selfservice,dc=example,dc=org" \
  "$(ldapsearch "${SVC[@]}" -LLL -b uid=erin,ou=people,dc=example,dc=org -s base memberOf 2>>"$LOG" | sed -n 's/^memberOf: //p')"
code=$(req mo-erin GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -u "erin:${PW[erin]}")
check "memberOf: erin (memberOf only a 'dev' outside group_base) → 403 DENIED on team/app" eq "403 DENIED" "$code $(err_code mo-erin)"
make_manifest memberof-carol
check "memberOf with nested: true: carol (platform, a member of dev) pulls and pushes team/app" \
  eq "200 201" "$(req mo-carol GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -u "carol:${PW[carol]}") $(put_manifest mo-carol-put "$REG" team/app carol "$M_FILE" -u "carol:${PW[carol]}")"
stop_dy

# ======================================================= 4-5. short-lived tokens, LDAP down

section "4. token ttl 2s; 5. LDAP hung and stopped (timeout 2s)"
if start_dy short "$A/short.yaml" && kill -0 "$DY_PID" 2>/dev/null; then
  pass "dockyard (token mode, ttl 2s, LDAP timeout 2s) started on fresh data"
else
  fail "dockyard (short) started (see $A/short/dockyard.log)"
fi
seed "$REG" team/app
TOK_S=$(get_token "$REG" "repository:team/app:pull" -u "alice:${PW[alice]}")
check "ttl 2s: the token says expires_in 2 (or less)" eq yes "$(jq -r '.expires_in <= 2 and .expires_in >= 1' "$W/token.body" 2>/dev/null | sed 's/true/yes/')"
check "ttl 2s: the fresh token pulls team/app:v1 (200)" \
  eq 200 "$(req ttl-fresh GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -H "Authorization: Bearer $TOK_S")"
sleep 3
code=$(req ttl-expired GET "https://$REG/v2/team/app/manifests/v1" -H "Accept: $ACCEPT" -H "Authorization: Bearer $TOK_S")
check "ttl 2s: 3s later the same token → 401 invalid_token" \
  eq "401 yes" "$code $(header ttl-expired WWW-Authenticate | grep -q 'error="invalid_token"' && echo yes || echo no)"

# Refresh tokens of users who are gone.
refresh_of() { # USER PASSWORD: a refresh token from POST /token
  req "rt-$1" POST "https://$REG/token" --data-urlencode grant_type=password --data-urlencode "username=$1" \
    --data-urlencode "password=$2" --data-urlencode "service=$REG" --data-urlencode access_type=offline \
    --data-urlencode client_id=e2e >/dev/null
  jq -r '.refresh_token // empty' "$W/rt-$1.body" 2>/dev/null
}
use_refresh() { # NAME REFRESH: status of a refresh grant
  req "$1" POST "https://$REG/token" --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$2" \
    --data-urlencode "service=$REG" --data-urlencode client_id=e2e --data-urlencode "scope=repository:team/app:pull"
}
RT_TEMP=$(refresh_of temp "${PW[temp]}")
RT_ERIN=$(refresh_of erin "${PW[erin]}")
check "refresh tokens for temp (users file) and erin (LDAP) work" eq "200 200" "$(use_refresh rt1 "$RT_TEMP") $(use_refresh rt2 "$RT_ERIN")"
sed -i '/^temp:/d' "$A/users.htpasswd"; touch -d '+2 seconds' "$A/users.htpasswd"; sleep 1.2
check "temp removed from the users file: its refresh token → 401" eq 401 "$(use_refresh rt3 "$RT_TEMP")"
run ldapdelete -x -H "$LDAP_URL" -D cn=admin,dc=example,dc=org -w admin-ldap-pw uid=erin,ou=people,dc=example,dc=org
check "erin deleted from LDAP: her refresh token → 401" eq 401 "$(use_refresh rt4 "$RT_ERIN")"

# LDAP hung: slapd stopped with SIGSTOP, connections are accepted but never answered.
code=$(req ldap-up GET "https://$REG/v2/" -u "alice:${PW[alice]}")
check "LDAP up: alice logs in (200)" eq 200 "$code"
kill -STOP "$SLAPD_PID"
# The bound: ldap.timeout (2 s) for the one operation that hangs, plus a margin for a
# busy machine; a login waiting for a second timed-out operation, or for curl's 20 s,
# is over it.
LDAP_BOUND_MS=3500
within() { echo "took $1 ms, bound $2 ms"; [ "$1" -gt 0 ] && [ "$1" -lt "$2" ]; }
t=$(date +%s%N)
code=$(timeout 20 curl -sS --cacert "$CA" -o "$W/ldap-hung.body" -D "$W/ldap-hung.h" -w '%{http_code}' -u "bob:${PW[bob]}" "https://$REG/v2/" 2>>"$LOG")
ms=$(elapsed_ms "$t")
echo "LDAP hung: bob's login answered $code after $ms ms (ldap.timeout 2s)" | tee -a "$LOG"
check "LDAP hung: bob's login → 401, message names the LDAP directory" \
  eq "401 UNAUTHORIZED yes" "$code $(err_code ldap-hung) $(err_message ldap-hung | grep -qi 'ldap\|directory' && echo yes || echo no)"
check "LDAP hung: bob's 401 came within ldap.timeout plus a margin ($ms ms < $LDAP_BOUND_MS ms)" within "$ms" "$LDAP_BOUND_MS"
t=$(date +%s%N)
REQ_TIMEOUT=20 get_token "$REG" "repository:team/app:pull" -u "carol:${PW[carol]}" >/dev/null
ms=$(elapsed_ms "$t")
echo "LDAP hung: carol's /token answered $(cat "$W/token.code") after $ms ms" | tee -a "$LOG"
check "LDAP hung: GET /token as carol → 401 naming the LDAP directory" \
  eq "401 yes" "$(cat "$W/token.code") $(err_message token | grep -qi 'ldap\|directory' && echo yes || echo no)"
check "LDAP hung: carol's 401 came within ldap.timeout plus a margin ($ms ms < $LDAP_BOUND_MS ms)" within "$ms" "$LDAP_BOUND_MS"
t=$(date +%s%N)
check "LDAP hung: builder (users file) still logs in (200)" eq 200 "$(req ldap-hung-builder GET "https://$REG/v2/" -u "builder:${PW[builder]}")"
ms=$(elapsed_ms "$t")
echo "LDAP hung: builder's login took $ms ms" >>"$LOG"
check "LDAP hung: builder's login did not wait for LDAP ($ms ms < 1500 ms)" within "$ms" 1500
check "LDAP hung: dockyard logged the unavailable directory" grep -qi 'LDAP unavailable' "$A/short/dockyard.log"
kill -CONT "$SLAPD_PID"
stop_slapd
code=$(timeout 20 curl -sS --cacert "$CA" -o "$W/ldap-down.body" -w '%{http_code}' -u "dave:${PW[dave]}" "https://$REG/v2/" 2>>"$LOG")
check "LDAP stopped: dave's login → 401 naming the LDAP directory" \
  eq "401 yes" "$code $(err_message ldap-down | grep -qi 'ldap\|directory' && echo yes || echo no)"
if [ "$DOCKER_UP" = 1 ]; then
  echo "+ docker login -u dave (LDAP stopped)" >>"$LOG"
  printf '%s' "${PW[dave]}" | timeout 60 docker login "$REG" -u dave --password-stdin >"$W/login-ldapdown.out" 2>&1; rc=$?
  cat "$W/login-ldapdown.out" >>"$LOG"
  check "LDAP stopped: docker login as dave fails, saying the LDAP directory is unavailable" \
    fails_with login-ldapdown.out 'ldap|directory' $rc
  docker_login builder "${PW[builder]}" login-builder.out
  check "LDAP stopped: docker login as builder (users file) succeeds" grep -q 'Login Succeeded' "$W/login-builder.out"
  docker_cmd logout-builder.out logout "$REG"
fi
n=$(grep -ci 'LDAP unavailable' "$A/short/dockyard.log")
check "dockyard logged each failed LDAP login (at least 3 lines)" eq yes "$([ "$n" -ge 3 ] && echo yes || echo "no ($n)")"
check "the log never contains a password" eq 0 "$(grep -cF -e "${PW[bob]}" -e "${PW[dave]}" -e "${PW[carol]}" -e "${PW[builder]}" "$A/short/dockyard.log")"
# LDAP back: logins work again.
if start_slapd; then
  check "LDAP restarted: dave logs in again (200)" eq 200 "$(req ldap-back GET "https://$REG/v2/" -u "dave:${PW[dave]}")"
else
  fail "slapd restarted"
fi

# Rate limit (failures: 3): the fourth login after three bad passwords is refused even with
# the right one from the same address (the lockout is per user and address).
for i in 1 2 3; do req rl-bad GET "https://$REG/v2/" -u "dave:wrong-$i" >/dev/null; done
code=$(req rl GET "https://$REG/v2/" -u "dave:${PW[dave]}")
check "rate limit: after 3 failed logins dave is refused with 429 TOOMANYREQUESTS and Retry-After" \
  eq "429 TOOMANYREQUESTS yes" "$code $(err_code rl) $([ -n "$(header rl Retry-After)" ] && echo yes || echo no)"
stop_dy

# ==================================================== no secret in any log

# Every password, CI token and token dockyard issued in this run (collected from every
# token response body), looked for in every dockyard log.
SECRETS="$A/secrets"
: >"$SECRETS"
for u in "${!PW[@]}"; do printf '%s\n' "${PW[$u]}" >>"$SECRETS"; done
[ -n "${CI_TOKEN:-}" ] && printf '%s\n' "$CI_TOKEN" >>"$SECRETS"
{
  for f in "$W"/*.body "$W"/*.json; do
    [ -f "$f" ] && jq -r '.token?, .access_token?, .refresh_token? | select(type == "string" and length > 20)' "$f" 2>/dev/null
  done
  for v in $(compgen -v); do # tokens the script kept (TOK_*, RT_*, …)
    case "${!v}" in ey*.*.*) printf '%s\n' "${!v}" ;; esac
  done
} | sort -u >>"$SECRETS"
LOGS=("$A"/*/dockyard.log)
n_secrets=$(grep -c . "$SECRETS")
tokens=$(grep -c '^ey' "$SECRETS")
echo "secrets: $n_secrets ($tokens issued tokens) in ${#LOGS[@]} logs" >>"$LOG"
check "secrets collected: every password, the CI token and issued tokens ($n_secrets, $tokens tokens)" \
  eq yes "$([ "$n_secrets" -ge $((${#PW[@]} + 1 + 5)) ] && [ "$tokens" -ge 5 ] && echo yes || echo no)"
check "no dockyard log contains a password, CI token or issued token (${#LOGS[@]} logs)" \
  eq 0 "$(cat "${LOGS[@]}" | grep -cF -f "$SECRETS")"

# ============================================================================ cleanup

section "/etc restored"
restore_etc
check "/etc/hosts is byte-identical to before" cmp "$HOSTS_BEFORE" /etc/hosts
check "/etc/docker/certs.d is as before" eq "$CERTS_BEFORE" "$(snapshot_certs_d)"
summary
