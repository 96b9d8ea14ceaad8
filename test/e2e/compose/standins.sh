#!/usr/bin/env bash
# Builds stand-ins for the Docker Hub images of docker-compose.yml, which cannot be
# pulled here, from this machine's own programs (FROM scratch, each binary with the
# shared libraries ldd names):
#   dockyard-e2e/postgres:standin   Debian's PostgreSQL, with an entrypoint that does
#                                   what the official image's does on an empty volume
#                                   (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB;
#                                   password auth over TCP), then runs its command
#   dockyard-e2e/versitygw:standin  .tools/versitygw with /bin/sh, mkdir and wget, the
#                                   tools the compose file's command and health check
#                                   use from the versitygw image (Alpine)
#   dockyard-e2e/nginx:standin      Debian's nginx, run as the official image runs it
# Usage: standins.sh WORKDIR (from the repository root).
set -eu
W=$1
rm -rf "$W"; mkdir -p "$W"

# add ROOT FILE...: copies each file and the libraries it loads under ROOT.
add() {
  local root=$1 f lib; shift
  for f in "$@"; do
    cp --parents -L "$f" "$root/"
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true); do
      [ -e "$lib" ] && cp --parents -L -n "$lib" "$root/"
    done
  done
}
finish() { # ROOT: directories traversable, /tmp sticky
  mkdir -p "$1/tmp"
  find "$1" -type d -exec chmod a+rx {} +
  chmod 1777 "$1/tmp"
}
build() { docker build -q -t "$1" "$2" >/dev/null; echo "built $1"; }

# ----------------------------------------------------------------------- PostgreSQL
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDIR=$(dirname "$PGBIN") PGVER=$(basename "$(dirname "$PGBIN")")
R="$W/postgres/root"; mkdir -p "$R/etc" "$W/postgres/empty"
add "$R" /bin/dash "$(command -v rm)" "$PGBIN/postgres" "$PGBIN/initdb" "$PGBIN/pg_isready"
mkdir -p "$R$PGDIR" "$R/usr/share/postgresql"
cp -a "$PGDIR/lib" "$R$PGDIR/"
rm -rf "$R$PGDIR"/lib/bitcode "$R$PGDIR"/lib/llvmjit* # JIT (LLVM, 150 MB): not needed
for so in "$R$PGDIR"/lib/*.so; do add "$R" "${so#"$R"}"; done
cp -a "/usr/share/postgresql/$PGVER" "$R/usr/share/postgresql/"
if [ -d /usr/share/zoneinfo ]; then # Debian's PostgreSQL uses the system's time zones
  cp -a /usr/share/zoneinfo "$R/usr/share/" && rm -rf "$R/usr/share/zoneinfo/right"
fi
ln -s dash "$R/bin/sh"
echo 'postgres:x:999:999::/var/lib/postgresql:/bin/sh' >"$R/etc/passwd"
echo 'postgres:x:999:' >"$R/etc/group"
cat >"$R/entrypoint.sh" <<'SH'
#!/bin/sh
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "$POSTGRES_PASSWORD" >/tmp/pw
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pw --auth-local=trust \
    --auth-host=scram-sha-256 --locale=C -E UTF8 >/dev/null
  rm /tmp/pw
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec "$@"
SH
chmod 755 "$R/entrypoint.sh"
finish "$R"
cat >"$W/postgres/Dockerfile" <<EOF
FROM scratch
COPY root/ /
COPY --chown=999:999 empty/ /var/lib/postgresql/data/
COPY --chown=999:999 empty/ /var/run/postgresql/
ENV PATH=$PGBIN:/usr/bin:/bin PGDATA=/var/lib/postgresql/data
USER 999:999
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["/entrypoint.sh"]
CMD ["postgres"]
EOF
build dockyard-e2e/postgres:standin "$W/postgres"

# ------------------------------------------------------------------------ versitygw
R="$W/versitygw/root"; mkdir -p "$R/usr/local/bin"
add "$R" /bin/dash "$(command -v mkdir)" "$(command -v wget)"
ln -s dash "$R/bin/sh"
cp "$(command -v versitygw)" "$R/usr/local/bin/versitygw"
finish "$R"
cat >"$W/versitygw/Dockerfile" <<'EOF'
FROM scratch
COPY root/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["/usr/local/bin/versitygw"]
EOF
build dockyard-e2e/versitygw:standin "$W/versitygw"

# ---------------------------------------------------------------------------- nginx
R="$W/nginx/root"; mkdir -p "$R/etc/nginx" "$R/var/log/nginx" "$R/var/lib/nginx" "$R/run"
add "$R" "$(command -v nginx || echo /usr/sbin/nginx)"
printf 'root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\nwww-data:x:33:33::/:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\nwww-data:x:33:\n' >"$R/etc/group"
finish "$R"
cat >"$W/nginx/Dockerfile" <<'EOF'
FROM scratch
COPY root/ /
ENTRYPOINT ["/usr/sbin/nginx"]
CMD ["-g", "daemon off;"]
EOF
build dockyard-e2e/nginx:standin "$W/nginx"
