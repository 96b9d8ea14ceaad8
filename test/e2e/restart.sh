#!/usr/bin/env bash
# Restart safety with the real binary: what was acknowledged stays pullable and
# byte-identical after a clean stop and after SIGKILL, and a chunked upload interrupted
# by a restart resumes from the offset the registry reports.
cd "$(dirname "$0")/../.."
. test/e2e/lib.sh
W="$RESULTS/restart"
mkdir -p "$W"

make_layer() { # dir name size_kib
  mkdir -p "$1/rootfs"
  head -c "$(($3 * 1024))" /dev/urandom >"$1/rootfs/$2"
  tar -C "$1/rootfs" -cf "$1/$2.tar" "$2"
}

# snapshot REF FILE: the manifest's sha256 and, for every blob, its digest and the
# sha256 of the bytes read back from the registry. It fails (leaving FILE holding
# "snapshot failed") when crane fails, when the manifest lists no blob, or when a blob's
# bytes do not hash to its digest: two failed reads must never compare equal.
snapshot() {
  local ref=$1 out=$2 d sum n=0
  if ! crane manifest "$ref" >"$out.manifest" 2>>"$W/crane.err" || [ ! -s "$out.manifest" ]; then
    echo "snapshot failed: crane manifest $ref" | tee "$out"; return 1
  fi
  {
    sha256sum <"$out.manifest"
    for d in $(jq -r '.config.digest, .layers[].digest' "$out.manifest"); do
      sum=$(set -o pipefail; crane blob "${ref%:*}@$d" 2>>"$W/crane.err" | sha256sum | cut -d' ' -f1) || { echo "snapshot failed: blob $d"; return 1; }
      [ "sha256:$sum" = "$d" ] || { echo "snapshot failed: blob $d reads back as sha256:$sum"; return 1; }
      echo "$d $sum"
      n=$((n + 1))
    done
    [ "$n" -ge 2 ] || { echo "snapshot failed: $n blobs"; return 1; }
  } >"$out" || { cat "$out"; return 1; }
}

start_dockyard restart
ADDR=$DY_ADDR
export DY_PORT=${ADDR##*:}

make_layer "$W" one 300
crane append --insecure -f "$W/one.tar" -t "$ADDR/restart/app:v1" --oci-empty-base >/dev/null 2>&1
check "snapshot of restart/app:v1 (every blob hashes to its digest)" snapshot "$ADDR/restart/app:v1" "$W/v1.before"

stop_dockyard TERM
start_dockyard restart
check "snapshot after a clean restart" snapshot "$ADDR/restart/app:v1" "$W/v1.after-stop"
check "image identical after a clean restart" cmp "$W/v1.before" "$W/v1.after-stop"

make_layer "$W" two 500
crane append --insecure -f "$W/two.tar" -t "$ADDR/restart/app:v2" --oci-empty-base >/dev/null 2>&1
check "snapshot of restart/app:v2" snapshot "$ADDR/restart/app:v2" "$W/v2.before"
stop_dockyard KILL
start_dockyard restart
check "snapshot of v1 after SIGKILL" snapshot "$ADDR/restart/app:v1" "$W/v1.after-kill"
check "snapshot of v2 after SIGKILL" snapshot "$ADDR/restart/app:v2" "$W/v2.after-kill"
check "first image identical after SIGKILL" cmp "$W/v1.before" "$W/v1.after-kill"
check "image pushed just before SIGKILL identical" cmp "$W/v2.before" "$W/v2.after-kill"

# A chunked upload, interrupted by SIGKILL after its first chunk.
head -c $((3 * 1024 * 1024 + 123)) /dev/urandom >"$W/blob"
head -c $((2 * 1024 * 1024)) "$W/blob" >"$W/blob.1"
tail -c +$((2 * 1024 * 1024 + 1)) "$W/blob" >"$W/blob.2"
DIGEST="sha256:$(sha256sum <"$W/blob" | cut -d' ' -f1)"
loc=$(curl -fsS -X POST -o /dev/null -D - "http://$ADDR/v2/restart/blob/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
curl -fsS -X PATCH -H "Content-Type: application/octet-stream" -H "Content-Range: 0-$((2 * 1024 * 1024 - 1))" \
  --data-binary @"$W/blob.1" -o /dev/null "http://$ADDR$loc"
stop_dockyard KILL
start_dockyard restart
range=$(curl -fsS -o /dev/null -D - "http://$ADDR$loc" | tr -d '\r' | awk -F': ' 'tolower($1)=="range"{print $2}')
check "upload offset survives SIGKILL (Range $range)" test "$range" = "0-$((2 * 1024 * 1024 - 1))"
offset=$(( ${range#0-} + 1 ))
tail -c +$((offset + 1)) "$W/blob" >"$W/blob.rest"
curl -fsS -X PATCH -H "Content-Type: application/octet-stream" -H "Content-Range: $offset-$(( $(stat -c %s "$W/blob") - 1 ))" \
  --data-binary @"$W/blob.rest" -o /dev/null "http://$ADDR$loc"
status=$(curl -sS -X PUT -o /dev/null -w '%{http_code}' "http://$ADDR$loc?digest=$DIGEST")
check "resumed upload completes (status $status)" test "$status" = 201
curl -fsS "http://$ADDR/v2/restart/blob/blobs/$DIGEST" -o "$W/blob.pulled"
check "resumed blob is byte-identical" cmp "$W/blob" "$W/blob.pulled"
stop_dockyard TERM
summary
