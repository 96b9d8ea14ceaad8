# dockyard's container image: the static binary and nothing else.
#
# Build it with `make image` (IMAGE=dockyard:local by default). The Makefile builds the
# binary first (CGO_ENABLED=0 go build -trimpath -ldflags='-s -w') into a build context
# of its own, build/image/:
#   dockyard                             the binary
#   data/                                an empty directory, the volume's mount point
#   etc/ssl/certs/ca-certificates.crt    the build host's CA bundle, when it has one
#                                        (TLS to upstream registries, S3, LDAP)
# and runs `docker build -f Dockerfile build/image`. No base image is pulled: there is
# no shell, no package manager and no /etc/passwd in the image, so the user is numeric.
#
#   docker run -d -p 5000:5000 -v dockyard-data:/data dockyard:local
#   docker run -d -p 5000:5000 -v dockyard-data:/data -v $PWD/my.yaml:/etc/dockyard.yaml:ro \
#     dockyard:local serve --config /etc/dockyard.yaml --listen :5000 --data /data
FROM scratch

COPY etc/ /etc/
COPY dockyard /dockyard
# Owned by the user below, so that a new named volume mounted here is too.
COPY --chown=65532:65532 data/ /data/

USER 65532:65532
VOLUME /data
EXPOSE 5000

# GET /-/ready on the default port: 200 when the index and the blob store answer. A
# server configured on another port or with TLS needs the check overridden, e.g.
# ["/dockyard","healthcheck","--url","https://127.0.0.1:5443/-/ready","--insecure"].
HEALTHCHECK --interval=10s --timeout=5s --start-period=1m --retries=3 \
  CMD ["/dockyard", "healthcheck"]

ENTRYPOINT ["/dockyard"]
CMD ["serve", "--listen", ":5000", "--data", "/data"]
