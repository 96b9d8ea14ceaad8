# Servers the end-to-end tests and the benchmark start: a throwaway PostgreSQL cluster
# and nginx as a load balancer. Source it; free_port must be defined.
# start_pg: a throwaway PostgreSQL cluster (Debian's postgresql, run as the postgres
# user) on a free port with one database, dockyard; sets PG_DSN. Its files live under
# /tmp (the postgres user must reach them). restart_pg starts it again after stop_pg.
start_pg() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  PG_DIR=$(mktemp -d /tmp/dockyard-e2e-pg.XXXXXX)
  PG_PORT=$(free_port)
  chmod 755 "$PG_DIR"; chown postgres "$PG_DIR" 2>/dev/null
  as_postgres "$PG_BIN/initdb -D $PG_DIR/db -A trust -U postgres" >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log"; return 1; }
  restart_pg || return 1
  as_postgres "$PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT -U postgres dockyard" || return 1
  PG_DSN="postgres://postgres@127.0.0.1:$PG_PORT/dockyard?sslmode=disable"
}
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
restart_pg() {
  as_postgres "$PG_BIN/pg_ctl -D $PG_DIR/db -o '-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200' -l $PG_DIR/log -w -t 30 start" >/dev/null
}
# stop_pg [MODE]: stops PostgreSQL (immediate: as a crash would).
stop_pg() { as_postgres "$PG_BIN/pg_ctl -D $PG_DIR/db -m ${1:-immediate} -w stop" >/dev/null 2>&1; }
remove_pg() { stop_pg; rm -rf "$PG_DIR"; }

# start_nginx CONF_DIR PORT UPSTREAM...: nginx as a per-request round-robin balancer
# (no stickiness, streaming both ways) over the UPSTREAM host:port list; sets NGINX_PID.
# NGINX_WORKERS (1) and NGINX_ACCESS_LOG (a file in CONF_DIR; "off") tune it.
start_nginx() {
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir/tmp"
  {
    echo "daemon off; worker_processes ${NGINX_WORKERS:-1}; pid $dir/nginx.pid; error_log $dir/error.log;"
    echo "events { worker_connections 1024; }"
    echo "http {"
    echo "  access_log ${NGINX_ACCESS_LOG:-$dir/access.log}; client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp;"
    echo "  fastcgi_temp_path $dir/tmp; uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;"
    echo "  upstream dy {"
    for u in "$@"; do echo "    server $u max_fails=1 fail_timeout=5s;"; done
    echo "    keepalive 64;"
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:$port;"
    echo "    client_max_body_size 0; proxy_request_buffering off; proxy_buffering off;"
    echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host \$http_host;"
    echo "    proxy_read_timeout 300s; proxy_send_timeout 300s;"
    echo "    location / { proxy_pass http://dy; }"
    echo "  }"
    echo "}"
  } >"$dir/nginx.conf"
  "${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}" -c "$dir/nginx.conf" >>"$dir/nginx.out" 2>&1 &
  NGINX_PID=$!
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  echo "nginx did not start:"; cat "$dir/nginx.out" "$dir/error.log" 2>/dev/null | tail -20
  return 1
}
