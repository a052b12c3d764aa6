# Lockstep build. `make demo` and `make test` are the README's two commands.
GO ?= go
BIN := bin/lockstep
FUZZTIME ?= 10s

.PHONY: build deps lint test test-short fuzz bench demo clean

build:
	$(GO) build -o $(BIN) ./cmd/lockstep

deps:
	./scripts/install-deps.sh

lint:
	./scripts/lint.sh

# The full test run: installs dependencies, lints, runs every test with the
# race detector, then each fuzz target briefly.
test: deps lint build
	$(GO) test -race -timeout 25m ./...
	./scripts/fuzz-short.sh $(FUZZTIME)

test-short:
	$(GO) test -short ./...

fuzz:
	./scripts/fuzz-short.sh 60s

bench:
	./scripts/bench.sh

clean:
	rm -rf bin
