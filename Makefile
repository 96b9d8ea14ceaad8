# dockyard — see README.md.
GO      ?= go
BIN     := bin/dockyard
DATA    ?= ./data
LISTEN  ?= :5000

.PHONY: build run test unit fuzz fuzz-short e2e bench soak tools lint clean image

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/dockyard

# Run dockyard on its embedded default: one hosted registry, local disk + Badger.
run: build
	./$(BIN) serve --listen $(LISTEN) --data $(DATA)

# The container image (Dockerfile, FROM scratch): a static binary, an empty /data owned
# by the image's user, and the host's CA bundle, assembled in $(IMAGE_CTX).
IMAGE     ?= dockyard:local
IMAGE_CTX := build/image
image:
	rm -rf $(IMAGE_CTX)
	mkdir -p $(IMAGE_CTX)/data $(IMAGE_CTX)/etc/ssl/certs
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags='-s -w' -o $(IMAGE_CTX)/dockyard ./cmd/dockyard
	if [ -f /etc/ssl/certs/ca-certificates.crt ]; then \
	  cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_CTX)/etc/ssl/certs/; \
	else echo "image: no /etc/ssl/certs/ca-certificates.crt here; the image has no CA bundle"; fi
	docker build -t $(IMAGE) -f Dockerfile $(IMAGE_CTX)

tools:
	./scripts/install-tools.sh

# Everything: installs missing tools, then unit/integration tests, a short run of every
# fuzzer and the end-to-end suite (conformance, real clients, restarts).
test: tools lint unit fuzz-short e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

unit:
	DOCKYARD_S3_TESTS=1 DOCKYARD_PG_TESTS=1 DOCKYARD_REGISTRY_TESTS=1 DOCKYARD_MOUNT_TESTS=1 $(GO) test -race -count=1 ./...
	# The store's semantics once more, on the PostgreSQL index driver.
	DOCKYARD_PG_TESTS=1 DOCKYARD_CACHE_TESTS_INDEX=postgres $(GO) test -race -count=1 ./cache

# Every fuzzer for FUZZTIME, one after the other (README, "Fuzzing"). The unit run
# already replays their seeds and the inputs kept under testdata/fuzz/.
FUZZTIME ?= 5m
fuzz: tools
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

# What make test runs: every fuzzer for a few seconds, one worker each.
fuzz-short: tools
	FUZZTIME=3s FUZZPARALLEL=1 FUZZOUT=test-results/fuzz-short ./scripts/fuzz.sh

# The race detector makes big transfers slow, so unit runs shrink the proxy's cold-pull
# test; the end-to-end run does it at full size (32 clients, one 256 MiB blob).
e2e: tools build
	$(GO) test -count=1 -run 'TestConcurrentColdPullsShareOneUpstreamFetch' ./vhost
	./test/e2e/run.sh

bench: tools build
	./test/bench/run.sh

# The soak test: a mixed workload against one instance and a 3-instance cluster for
# DURATION, resources sampled into test-results/soak/{single,cluster}.{csv,png}.
DURATION ?= 30m
soak: tools build
	DURATION=$(DURATION) ./test/soak/run.sh

clean:
	rm -rf bin build test-results
