#!/usr/bin/env bash
# The soak test (`make soak DURATION=30m`; `make test` runs it for 2 minutes through
# test/e2e/soak.sh). Two deployments at once, each under the same mixed workload
# (test/soak: pushes, deletes, pulls, retention and GC runs, cold pulls through a proxy
# registry whose upstream sits behind a fault-injecting proxy, token logins, searches):
#  - single: one instance on its embedded default (local disk + Badger);
#  - cluster: three instances sharing PostgreSQL and an S3 bucket (versitygw), behind
#    nginx.
# Every few seconds each instance's RSS, goroutines and open files and the index's
# size are sampled into test-results/soak/NAME.csv and drawn in NAME.png. The run fails
# when any of them grows without bound over the second half, when an acknowledged push
# is not there byte-identical at the end, and when `fsck --verify-digests` is not clean.
cd "$(dirname "$0")/../.."
RESULTS=${SOAK_RESULTS:-$PWD/test-results/soak}
. test/e2e/lib.sh
set +e

DURATION=${DURATION:-30m}
S="$RESULTS"
rm -rf "$S"; mkdir -p "$S"
BIN=${DOCKYARD_BIN:-$ROOT/bin/dockyard}
LOG="$S/commands.log"; : >"$LOG"
declare -a PIDS

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ -n "${NGINX_PID:-}" ] && kill -TERM "$NGINX_PID" 2>/dev/null
  for p in "${PIDS[@]}" "${NGINX_PID:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
  stop_s3
  remove_pg
}
trap cleanup EXIT

go build -o "$S/soak" ./test/soak || { fail "the soak driver builds"; summary; exit 1; }
go build -o "$S/faultyproxy" ./test/peers/faultyproxy || { fail "the fault-injecting proxy builds"; summary; exit 1; }
start_pg || { fail "PostgreSQL started"; summary; exit 1; }
start_s3 "$S/versitygw" || { fail "versitygw started"; summary; exit 1; }
export DY_PG_DSN=$PG_DSN

# wait_http URL: until it answers.
wait_http() {
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# The proxies' upstream: a CNCF registry, behind the fault-injecting proxy, which
# breaks a share of what passes: latency, resets and clean closes mid-body, bit flips,
# throttling, 429 storms (faultyproxy -help).
UP_PORT=$(free_port)
mkdir -p "$S/upstream/data"
cat >"$S/upstream/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text}
storage:
  filesystem: {rootdirectory: $S/upstream/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$UP_PORT}
YAML
registry serve "$S/upstream/config.yml" >"$S/upstream/log" 2>&1 &
PIDS+=($!)
UP="127.0.0.1:$UP_PORT"
FP_PORT=$(free_port)
# Rules are tried in order, the first that matches and draws its probability applies.
FAULTS='[
  {"path":"/blobs/","cut":"reset","cut_at":-1,"probability":0.05},
  {"path":"/blobs/","cut":"close","cut_at":-1,"probability":0.05},
  {"path":"/blobs/","flip":true,"flip_at":-1,"probability":0.05},
  {"path":"/blobs/","bytes_per_second":1000000,"probability":0.1},
  {"path":"/manifests/","flip":true,"flip_at":-1,"probability":0.03},
  {"status":429,"retry_after":"1","probability":0.05},
  {"status":503,"probability":0.02},
  {"latency":"200ms","probability":0.1}]'
"$S/faultyproxy" -listen "127.0.0.1:$FP_PORT" -upstream "http://$UP" -rules "$FAULTS" >"$S/faultyproxy.log" 2>&1 &
PIDS+=($!)
wait_http "http://$UP/v2/" || { fail "the upstream registry started"; summary; exit 1; }
grep -q "listening on" "$S/faultyproxy.log" || sleep 1
grep -q "listening on" "$S/faultyproxy.log" || { fail "the fault-injecting proxy started"; cat "$S/faultyproxy.log"; summary; exit 1; }

PW=soak-$RANDOM$RANDOM
htpasswd -B -C 10 -bn soak "$PW" 2>>"$LOG" | sed '/^$/d' >"$S/users.htpasswd"
chmod 600 "$S/users.htpasswd"

# common YAML: everything but the index and the blobs.
common() {
  cat <<YAML
auth:
  mode: token
  users_file: $S/users.htpasswd
  rules:
    - {subjects: [user:soak], registries: ["*"], repositories: ["**"], actions: [pull, push, delete]}
lifecycle:
  admins: [user:soak]
  gc: {interval: 0s, grace: 5s}
  uploads: {purge_after: 2m, interval: 30s}
  retention:
    # On demand only (the driver runs them): the newest 5 tags of soak/ret*, and every
    # tag but no untagged manifest of soak/app* (what overwritten tags leave behind).
    - name: soak
      registries: [default]
      repositories: ["soak/ret*"]
      keep_last: 5
      untagged_grace: 5s
    - name: soak-untagged
      registries: [default]
      repositories: ["soak/app*"]
      keep: [".*"]
      untagged_grace: 5s
registries:
  - {name: default, type: hosted}
  - {name: up, type: proxy, upstream: {url: "http://127.0.0.1:$FP_PORT", tag_ttl: 10s}, cache: {max_size: 32MiB}}
routes:
  - {host: "*", registry: default, namespaces: {upstream: up}}
YAML
}
common >"$S/single.yaml"
{
  cat <<YAML
index:
  driver: postgres
  postgres: {dsn_env: DY_PG_DSN, max_conns: 16, timeout: 10s}
storage:
  driver: s3
  s3: {endpoint: $S3_ENDPOINT, bucket: dockyard, prefix: soak, path_style: true, part_size: 5MiB,
       access_key_id: e2e, secret_access_key_env: DY_S3_SECRET}
YAML
  common
} >"$S/cluster.yaml"

# serve NAME CONFIG: starts an instance; sets ADDR and PID.
serve() {
  local port; port=$(free_port)
  ADDR="127.0.0.1:$port"
  "$BIN" serve --config "$2" --listen "$ADDR" --data "$S/$1" >>"$S/$1.log" 2>&1 &
  PID=$!
  PIDS+=($PID)
  wait_http "http://$ADDR/-/healthy" || { echo "$1 did not start:"; tail -20 "$S/$1.log"; return 1; }
}

serve single "$S/single.yaml" || { fail "single instance started"; summary; exit 1; }
SINGLE_ADDR=$ADDR SINGLE_PID=$PID
declare -a CA CP
for i in 1 2 3; do
  serve "dy$i" "$S/cluster.yaml" || { fail "cluster instance $i started"; summary; exit 1; }
  CA[$i]=$ADDR CP[$i]=$PID
done
LB_PORT=$(free_port)
NGINX_ACCESS_LOG=off start_nginx "$S/nginx" "$LB_PORT" "${CA[1]}" "${CA[2]}" "${CA[3]}" || { fail "nginx started"; summary; exit 1; }
LB="127.0.0.1:$LB_PORT"
echo "soak for $DURATION: single $SINGLE_ADDR; cluster ${CA[*]} behind $LB; upstream $UP behind faulty proxy :$FP_PORT"

"$S/soak" -name single -addr "$SINGLE_ADDR" -instances "single=$SINGLE_PID@$SINGLE_ADDR" \
  -index-dir "$S/single/index" -upstream "$UP" -user soak -password "$PW" -duration "$DURATION" -op-timeout "${SOAK_OP_TIMEOUT:-2m}" \
  -out "$S" >"$S/single.out" 2>&1 &
D1=$!
"$S/soak" -name cluster -addr "$LB" \
  -instances "dy1=${CP[1]}@${CA[1]},dy2=${CP[2]}@${CA[2]},dy3=${CP[3]}@${CA[3]}" \
  -pg-dsn "$PG_DSN" -upstream "$UP" -user soak -password "$PW" -duration "$DURATION" -op-timeout "${SOAK_OP_TIMEOUT:-2m}" \
  -out "$S" >"$S/cluster.out" 2>&1 &
D2=$!
wait $D1; wait $D2

# The driver's checks, counted as ours.
for r in single cluster; do
  while IFS= read -r line; do
    case "$line" in
      PASS:*) pass "${line#PASS: }" ;;
      FAIL:*) fail "${line#FAIL: }" ;;
      soak*) echo "$line" ;;
    esac
  done <"$S/$r.out"
  grep -q "^soak $r: [0-9]* passed" "$S/$r.out" || fail "$r: the driver ended without its summary (see $S/$r.out)"
done

# Offline fsck of the single instance (its Badger index is its own), online of the
# cluster (PostgreSQL and S3 are shared).
kill -TERM "$SINGLE_PID"; wait "$SINGLE_PID" 2>/dev/null
fsck_clean() {
  local out
  out=$("$BIN" fsck --verify-digests "$@" 2>&1); local rc=$?
  echo "$out" | tail -5
  [ $rc -eq 0 ] && grep -qE 'checked; 0 problems$' <<<"$out"
}
check "single: fsck --verify-digests clean after the soak" fsck_clean --config "$S/single.yaml" --data "$S/single"
check "cluster: fsck --verify-digests clean after the soak" fsck_clean --config "$S/cluster.yaml" --data "$S/fsck"
for r in single cluster; do
  check "$r: samples in $r.csv and the plot $r.png" test -s "$S/$r.csv" -a -s "$S/$r.png"
done
summary
