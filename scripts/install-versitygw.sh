#!/usr/bin/env bash
# Installs the test S3 server (versitygw, pinned) into bin/tools/ of the
# repository, only when that exact version is missing, so running it again
# costs nothing. It is built from the Go module proxy (about 2.5 min on two
# cores); tests find it through internal/testutil (S3Server).
set -euo pipefail

version=v1.8.0
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/bin/tools"
stamp="$dir/versitygw.version"

if [ -x "$dir/versitygw" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
mkdir -p "$dir"
echo "install-versitygw: building github.com/versity/versitygw $version (a few minutes)"
# Built in a temporary GOBIN and moved into place, so an interrupted build
# never leaves a half-written binary that the check above would accept.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@$version"
mv "$tmp/versitygw" "$dir/versitygw"
echo "$version" >"$stamp"
