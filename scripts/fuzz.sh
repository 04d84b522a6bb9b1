#!/bin/sh
# Runs every Go fuzz target (func FuzzXxx) in the module for a few
# seconds each: `go test -fuzz` takes one target per run. FUZZTIME sets
# how long (default 2s); a failure leaves its input in the package's
# testdata/fuzz/<target>/, which `go test` then replays every run.
set -e
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-2s}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //'); do
		echo "fuzz $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/volplug-fuzz.$$ 2>&1 || { cat /tmp/volplug-fuzz.$$; rm -f /tmp/volplug-fuzz.$$; exit 1; }
	done
done
rm -f /tmp/volplug-fuzz.$$
