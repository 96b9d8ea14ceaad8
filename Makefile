# dockyard — see README.md.
GO      ?= go
BIN     := bin/dockyard
DATA    ?= ./data
LISTEN  ?= :5000

.PHONY: build run test unit e2e bench tools lint clean

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/dockyard

# Run dockyard on its embedded default: one hosted registry, local disk + Badger.
run: build
	./$(BIN) serve --listen $(LISTEN) --data $(DATA)

tools:
	./scripts/install-tools.sh

# Everything: installs missing tools, then unit/integration tests and the
# end-to-end suite (conformance, real clients, restarts).
test: tools lint unit e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

unit:
	DOCKYARD_S3_TESTS=1 DOCKYARD_PG_TESTS=1 $(GO) test -race -count=1 ./...
	# The store's semantics once more, on the PostgreSQL index driver.
	DOCKYARD_PG_TESTS=1 DOCKYARD_CACHE_TESTS_INDEX=postgres $(GO) test -race -count=1 ./cache

# The race detector makes big transfers slow, so unit runs shrink the proxy's cold-pull
# test; the end-to-end run does it at full size (32 clients, one 256 MiB blob).
e2e: tools build
	$(GO) test -count=1 -run 'TestConcurrentColdPullsShareOneUpstreamFetch' ./vhost
	./test/e2e/run.sh

bench: tools build
	./test/bench/run.sh

clean:
	rm -rf bin test-results
