# Lockstep build. `make demo` and `make test` are the README's two commands.
GO ?= go
BIN := bin/lockstep
FUZZTIME ?= 10s

.PHONY: build deps lint test test-short crash fuzz bench demo clean proto

build:
	$(GO) build -o $(BIN) ./cmd/lockstep

deps:
	./scripts/install-deps.sh

lint:
	./scripts/lint.sh

# The full test run: installs dependencies, lints, runs every test with the
# race detector, each fuzz target briefly, then the crash suite at full count.
test: deps lint build
	$(GO) test -race -count=1 -timeout 25m ./...
	./scripts/fuzz-short.sh $(FUZZTIME)
	$(GO) test -count=1 -timeout 20m -run 'TestCrash' ./engine/store/ -args -crash.points=$(CRASHPOINTS)

# The crash tests at full count (200 SIGKILL and 200 power-loss points);
# under the race detector above they run scaled down.
CRASHPOINTS ?= 200
crash:
	$(GO) test -count=1 -timeout 20m -run 'TestCrash' ./engine/store/ -args -crash.points=$(CRASHPOINTS)

test-short:
	$(GO) test -short ./...

fuzz:
	./scripts/fuzz-short.sh 60s

bench:
	./scripts/bench.sh

# The first-run demo: a real PostgreSQL on a Lockstep volume, a marker,
# damage, a restore, a report. Installs what it needs.
demo:
	./scripts/install-deps.sh base demo
	$(GO) build -o $(BIN) ./cmd/lockstep
	./$(BIN) demo

clean:
	rm -rf bin

# Regenerates the plugin protocol's Go code (checked in, so only needed after
# editing a .proto). Needs protoc (Debian protobuf-compiler); the Go
# generators are installed at pinned versions into a temporary GOBIN.
PROTOC_GEN_GO_VERSION ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.5.1
proto:
	@command -v protoc >/dev/null || { echo "make proto: protoc not found; apt-get install protobuf-compiler" >&2; exit 1; }
	@gobin=$$(mktemp -d) && trap 'rm -rf "$$gobin"' EXIT && \
	GOBIN=$$gobin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION) && \
	GOBIN=$$gobin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION) && \
	cd plugins/proto && PATH=$$gobin:$$PATH protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		$$(find . -name '*.proto' | sed 's|^\./||')
