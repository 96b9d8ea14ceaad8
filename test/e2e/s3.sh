#!/usr/bin/env bash
# dockyard with its blobs in S3 (a real versitygw on loopback): the OCI conformance
# suite, every real client (plainly and with redirect: true), uploads in odd chunk
# sizes, an upload resumed after SIGKILL, S3 going away mid-upload, and a data
# directory that holds nothing but the index.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
set +e

S3R="$RESULTS/s3"
rm -rf "$S3R"; mkdir -p "$S3R"
W="$S3R/work"; mkdir -p "$W"
LOG="$S3R/commands.log"; : >"$LOG"
start_s3 "$S3R/versitygw" || { fail "versitygw did not start"; summary; exit 1; }
trap 'stop_dockyard; stop_s3' EXIT

# ------------------------------------------------------------------ conformance on S3
write_s3_config "$S3R/plain.yaml" false conformance
start_dockyard s3-conformance --config "$S3R/plain.yaml"
(
  . test/conformance/env.sh
  export OCI_REGISTRY=$DY_ADDR OCI_RESULTS_DIR="$S3R/conformance/results"
  mkdir -p "$S3R/conformance" && cd "$S3R/conformance" && conformance >"$S3R/conformance/conformance.log" 2>&1
) || true
stop_dockyard
conformance_result "s3" "$S3R/conformance/conformance.log"

# --------------------------------------------------------- real clients, both modes
# clients.sh runs whole against dockyard on S3; its counts join ours.
for mode in plain redirect; do
  write_s3_config "$S3R/clients-$mode.yaml" "$([ $mode = redirect ] && echo true || echo false)" "clients-$mode"
  clients_result "on S3 ($mode)" "$S3R/clients-$mode.out" RESULTS="$S3R/clients-$mode" \
    CLIENTS_SERVE_ARGS="--config $S3R/clients-$mode.yaml"
  # Nothing but the index (and the empty spool) under the data directory.
  left=$(find "$S3R/clients-$mode/clients/data" -type f -not -path '*/index/*' | head -5)
  check "S3 ($mode): the data directory holds only the index" eq "none" "${left:-none}"
done

# ------------------------------------------------- redirect: 307 to the S3 endpoint
write_s3_config "$S3R/redirect.yaml" true redirect
start_dockyard s3-redirect --config "$S3R/redirect.yaml"
R=$DY_ADDR
head -c 3000000 /dev/urandom >"$W/blob"
BD="sha256:$(file_sha "$W/blob")"
curl -sS -o /dev/null -X POST "http://$R/v2/r/blobs/uploads/?digest=$BD" --data-binary @"$W/blob" \
  -H 'Content-Type: application/octet-stream' -w '%{http_code}' >"$W/put.code"
check "redirect mode: monolithic push 201" eq 201 "$(cat "$W/put.code")"
curl -sS -o /dev/null -D "$W/get.h" "http://$R/v2/r/blobs/$BD"
loc=$(grep -i '^location:' "$W/get.h" | cut -d' ' -f2- | tr -d '\r')
check "redirect mode: blob GET is 307 to the S3 endpoint" \
  eq "307 $S3_ENDPOINT" "$(head -1 "$W/get.h" | cut -d' ' -f2) ${loc:0:${#S3_ENDPOINT}}"
check "redirect mode: the presigned URL serves the blob's bytes" \
  eq "$BD" "sha256:$(curl -sS "$loc" | sha256_of)"
check "redirect mode: HEAD answers from the index (200, size)" \
  eq "200 3000000" "$(curl -sS -I -o /dev/null -w '%{http_code}' "http://$R/v2/r/blobs/$BD") $(curl -sSI "http://$R/v2/r/blobs/$BD" | grep -i '^content-length' | tr -dc 0-9)"
stop_dockyard

# -------------------------------------------------- chunked uploads of odd sizes
write_s3_config "$S3R/chunks.yaml" false chunks
start_dockyard s3-chunks --config "$S3R/chunks.yaml"
R=$DY_ADDR
# closing LOCATION DIGEST: the URL of the PUT that closes an upload.
closing() { case $1 in *\?*) echo "http://$R$1&digest=$2" ;; *) echo "http://$R$1?digest=$2" ;; esac; }
# upload_chunks NAME SIZES...: one upload of random bytes in chunks of those sizes
# (PATCH with Content-Range), closed by PUT; then the blob is pulled and compared.
upload_chunks() {
  local name=$1; shift
  local f="$W/$name" loc off=0 code
  : >"$f"
  for n in "$@"; do head -c "$n" /dev/urandom >>"$f"; done
  local d; d="sha256:$(file_sha "$f")"
  loc=$(curl -sS -D - -o /dev/null -X POST "http://$R/v2/chunks/blobs/uploads/" | grep -i '^location:' | cut -d' ' -f2 | tr -d '\r')
  for n in "$@"; do
    tail -c +$((off + 1)) "$f" | head -c "$n" >"$W/chunk"
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PATCH "http://$R$loc" -H 'Content-Type: application/octet-stream' \
      -H "Content-Range: $off-$((off + n - 1))" --data-binary @"$W/chunk" -D "$W/patch.h")
    [ "$code" = 202 ] || { echo "PATCH $n at $off: $code"; return 1; }
    loc=$(grep -i '^location:' "$W/patch.h" | cut -d' ' -f2 | tr -d '\r')
    off=$((off + n))
  done
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$(closing "$loc" "$d")")
  [ "$code" = 201 ] || { echo "PUT: $code"; return 1; }
  eq "$d" "sha256:$(curl -sS "http://$R/v2/chunks/blobs/$d" | sha256_of)"
}
M=$((1 << 20))
check "chunks of 1 byte, 1023 bytes and 3 MiB round-trip" upload_chunks a 1 1023 $((3 * M))
check "chunks of 5 MiB and 7 MiB round-trip" upload_chunks b $((5 * M)) $((7 * M))
check "several 6 MiB chunks round-trip" upload_chunks c $((6 * M)) $((6 * M)) $((6 * M)) 17
mono() {
  head -c $((200 * M)) /dev/urandom >"$W/mono"
  local d; d="sha256:$(file_sha "$W/mono")"
  local code; code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://$R/v2/chunks/blobs/uploads/?digest=$d" \
    -H 'Content-Type: application/octet-stream' --data-binary @"$W/mono")
  [ "$code" = 201 ] || { echo "monolithic POST: $code"; return 1; }
  eq "$d" "sha256:$(curl -sS "http://$R/v2/chunks/blobs/$d" | sha256_of)"
}
check "a 200 MiB monolithic push round-trips" mono
rm -f "$W/mono"

# An upload interrupted by SIGKILL continues after the restart where its record says.
head -c $((12 * M)) /dev/urandom >"$W/killed"
KD="sha256:$(file_sha "$W/killed")"
loc=$(curl -sS -D - -o /dev/null -X POST "http://$R/v2/chunks/blobs/uploads/" | grep -i '^location:' | cut -d' ' -f2 | tr -d '\r')
head -c $((7 * M)) "$W/killed" >"$W/first"
curl -sS -o /dev/null -X PATCH "http://$R$loc" -H "Content-Range: 0-$((7 * M - 1))" --data-binary @"$W/first"
stop_dockyard KILL
DY_PORT=${R##*:} start_dockyard s3-chunks --config "$S3R/chunks.yaml"
check "after SIGKILL the upload reports its 7 MiB" \
  eq "0-$((7 * M - 1))" "$(curl -sS -D - -o /dev/null "http://$R$loc" | grep -i '^range:' | cut -d' ' -f2 | tr -d '\r')"
tail -c +$((7 * M + 1)) "$W/killed" >"$W/rest"
curl -sS -o /dev/null -X PATCH "http://$R$loc" -H "Content-Range: $((7 * M))-$((12 * M - 1))" --data-binary @"$W/rest" -D "$W/rest.h"
loc2=$(grep -i '^location:' "$W/rest.h" | cut -d' ' -f2 | tr -d '\r')
check "the resumed upload completes (201) byte-identical" eq "201 $KD" \
  "$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$(closing "$loc2" "$KD")") sha256:$(curl -sS "http://$R/v2/chunks/blobs/$KD" | sha256_of)"

# S3 goes away mid-upload: a clean 503 naming the storage, nothing committed; the same
# chunk again once S3 is back, without restarting dockyard.
head -c $((8 * M)) /dev/urandom >"$W/outage"
OD="sha256:$(file_sha "$W/outage")"
loc=$(curl -sS -D - -o /dev/null -X POST "http://$R/v2/chunks/blobs/uploads/" | grep -i '^location:' | cut -d' ' -f2 | tr -d '\r')
head -c $((3 * M)) "$W/outage" >"$W/o1"; tail -c +$((3 * M + 1)) "$W/outage" >"$W/o2"
curl -sS -o /dev/null -X PATCH "http://$R$loc" -H "Content-Range: 0-$((3 * M - 1))" --data-binary @"$W/o1" -D "$W/o1.h"
loc=$(grep -i '^location:' "$W/o1.h" | cut -d' ' -f2 | tr -d '\r')
stop_s3
start=$(date +%s)
code=$(curl -sS -o "$W/o2.body" -w '%{http_code}' -X PATCH "http://$R$loc" -H "Content-Range: $((3 * M))-$((8 * M - 1))" --data-binary @"$W/o2")
took=$(( $(date +%s) - start ))
check "S3 down: the chunk gets 503 with an OCI error naming the blob storage" \
  eq "503 UNKNOWN yes" "$code $(jq -r '.errors[0].code' "$W/o2.body" 2>/dev/null) $(grep -q 'blob storage' "$W/o2.body" && echo yes)"
check "S3 down: the error came within the retry bound (${took}s <= 40s)" test "$took" -le 40
check "S3 down: the secret is in no answer and no log" bash -c "! grep -rq '$DY_S3_SECRET' '$W/o2.body' '$RESULTS/s3-chunks/dockyard.log'"
restart_s3
check "S3 back: the upload still stands at 3 MiB" \
  eq "0-$((3 * M - 1))" "$(curl -sS -D - -o /dev/null "http://$R$loc" | grep -i '^range:' | cut -d' ' -f2 | tr -d '\r')"
curl -sS -o /dev/null -X PATCH "http://$R$loc" -H "Content-Range: $((3 * M))-$((8 * M - 1))" --data-binary @"$W/o2" -D "$W/o3.h"
loc=$(grep -i '^location:' "$W/o3.h" | cut -d' ' -f2 | tr -d '\r')
check "S3 back: the upload completes byte-identical without a restart" eq "201 $OD" \
  "$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$(closing "$loc" "$OD")") sha256:$(curl -sS "http://$R/v2/chunks/blobs/$OD" | sha256_of)"
stop_dockyard
summary
