#!/usr/bin/env bash
# gofmt, go vet, and the layering rules: the data plane (engine/) never
# imports the control plane, the plugins or the HCL parser; policies/ imports
# none of ours; plugins/ imports only plugins/.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "lint: gofmt needed on:" >&2
  echo "$unformatted" >&2
  exit 1
fi

go vet ./...

mod=$(go list -m)
bad=$(go list -deps -f '{{.ImportPath}}' ./engine/... | grep -E "^($mod/(orchestrator|plugins|policies/parse)|github.com/hashicorp/hcl)" || true)
if [ -n "$bad" ]; then
  echo "lint: engine/ must not import the orchestrator, plugins or the HCL parser; found:" >&2
  echo "$bad" >&2
  exit 1
fi
bad=$(go list -deps -f '{{.ImportPath}}' ./policies/... | grep -E "^$mod/(engine|orchestrator|plugins)" || true)
if [ -n "$bad" ]; then
  echo "lint: policies/ must not import engine, orchestrator or plugins; found:" >&2
  echo "$bad" >&2
  exit 1
fi
# plugins/ is what vendors build against: it imports nothing of ours but
# other plugins/ packages (the SDK, the protocol, the built-ins). Tests may
# use internal/ helpers; -deps without -test does not see them.
bad=$(go list -deps -f '{{.ImportPath}}' ./plugins/... | grep -E "^$mod/" | grep -vE "^$mod/plugins(/|$)" || true)
if [ -n "$bad" ]; then
  echo "lint: plugins/ must import only plugins/ packages of this module; found:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "lint: ok"
