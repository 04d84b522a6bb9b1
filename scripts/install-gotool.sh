#!/usr/bin/env bash
# Installs a Go tool the tests need into bin/tools/ of the repository, built
# from the Go module proxy, only when that exact version is missing, so
# running it again costs nothing. Tests find it through internal/testutil
# (ToolPath).
#
# Usage: scripts/install-gotool.sh NAME PACKAGE VERSION
#   e.g. scripts/install-gotool.sh helm helm.sh/helm/v3/cmd/helm v3.22.0
set -euo pipefail

name=$1 pkg=$2 version=$3
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/bin/tools"
stamp="$dir/$name.version"

if [ -x "$dir/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
mkdir -p "$dir"
echo "install-gotool: building $pkg $version (a few minutes)"
# Built in a temporary GOBIN and moved into place, so an interrupted build
# never leaves a half-written binary that the check above would accept.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-mod=mod go install "$pkg@$version"
mv "$tmp/$name" "$dir/$name"
echo "$version" >"$stamp"
