# Lockstep build. `make demo` and `make test` are the README's two commands.
GO ?= go
BIN := bin/lockstep
FUZZTIME ?= 10s

.PHONY: build deps lint test test-short crash fuzz bench demo clean

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
demo: deps build
	./$(BIN) demo

clean:
	rm -rf bin
