#!/usr/bin/env bash
# Installs what dockyard's tests and benchmarks need, once: Debian packages through
# apt-get and Go tools under .tools/. Each step is skipped when its tool is present.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose) # validates and runs the compose files (test/e2e/compose.sh)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v wget >/dev/null 2>&1 || need_apt+=(wget) # the health check of the S3 stand-in in test/e2e/compose.sh
command -v jq >/dev/null 2>&1 || need_apt+=(jq)
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v htpasswd >/dev/null 2>&1 || need_apt+=(apache2-utils) # bcrypt htpasswd for upstreams with auth
# A real OpenLDAP for the auth end-to-end test (test/e2e/auth.sh starts its own slapd; the
# package's own service is not used). slapd lives in /usr/sbin, which may not be in PATH.
[ -x /usr/sbin/slapd ] || command -v slapd >/dev/null 2>&1 || need_apt+=(slapd)
command -v ldapadd >/dev/null 2>&1 || need_apt+=(ldap-utils)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl) # test CA and server certificate for TLS
# A reverse proxy in front of dockyard for test/e2e/isolation.sh (X-Forwarded-For, trusted proxies).
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql) # throwaway clusters for the PostgreSQL index tests
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-tools: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

go_tool() { # name module@version
  if [ ! -x "$TOOLS/$1" ]; then
    echo "install-tools: go install $2"
    GOBIN="$TOOLS" go install "$2"
  fi
}
go_tool conformance github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111
go_tool crane github.com/google/go-containerregistry/cmd/crane@v0.22.1
go_tool regctl github.com/regclient/regclient/cmd/regctl@v0.11.7
go_tool oras oras.land/oras/cmd/oras@v1.3.6
go_tool registry github.com/distribution/distribution/v3/cmd/registry@v3.1.2
go_tool versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0 # S3 server for the S3 blob store tests
go_tool cosign github.com/sigstore/cosign/v2/cmd/cosign@v2.6.1 # signatures and attestations for the accessories test (builds for minutes; cached here)
