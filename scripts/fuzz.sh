#!/bin/sh
# Runs every Go fuzz target (func FuzzXxx) in the module for a few
# seconds each: `go test -fuzz` takes one target per run. FUZZTIME sets
# how much, as -fuzztime takes it (default 10000x: 10,000 inputs, 1-7 s a
# target here). A count, not a duration: with a duration, Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded"
# when the time runs out under load (go.dev/issue/75804, fixed in 1.27);
# this failed a CI run here. A failure leaves its input in the package's
# testdata/fuzz/<target>/, which `go test` then replays every run.
set -e
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10000x}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //'); do
		echo "fuzz $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/volplug-fuzz.$$ 2>&1 || { cat /tmp/volplug-fuzz.$$; rm -f /tmp/volplug-fuzz.$$; exit 1; }
	done
done
rm -f /tmp/volplug-fuzz.$$
