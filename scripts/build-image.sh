#!/usr/bin/env bash
# Builds volplug's container image as an OCI image archive, with no Docker
# engine and no registry (`make image`):
#
#   1. the Debian rootfs, from packages, with mmdebstrap: the variant's base
#      plus scripts/image-packages (no recommends), docs and man pages left
#      out as in debian:bookworm-slim, the installed versions written to
#      /usr/share/volplug/packages;
#   2. the static volplug binary;
#   3. cmd/mkimage: both as layers of one image (entrypoint, labels with the
#      package versions), written as an OCI layout tar that also carries a
#      docker-style manifest.json, so ctr/k3s import, kind load, podman load
#      and docker load all take it.
#
# Reproducible: SOURCE_DATE_EPOCH (default: the commit's time) fixes every
# timestamp, so two builds of one commit from the same Debian mirror state
# give the same image digest (test/image checks). The .debs of the last
# build are kept in VOLPLUG_DEB_CACHE, so a rebuild only fetches the
# package lists (and what Debian updated since).
#
# Usage: scripts/build-image.sh OUT.tar   (as root; IMAGE names the tag)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: build-image.sh OUT.tar}
image=${IMAGE:-ghcr.io/volplug/volplug:dev}
variant=${IMAGE_VARIANT:-minbase}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${VOLPLUG_DEB_CACHE:-/var/cache/volplug/debs}
version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: mmdebstrap needs root here (it installs packages in a chroot)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/volplug-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM # so the EXIT trap runs on these too
mkdir -p "$cache" "$(dirname "$out")"
# One build at a time per cache: one's sync-out would race another's sync-in.
exec 9>"$cache.lock"
flock 9

mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/image-packages)
[ ${#pkgs[@]} -gt 0 ] || { echo "build-image: no packages in scripts/image-packages" >&2; exit 1; }
include=$(IFS=,; echo "${pkgs[*]}")

# What debian:bookworm-slim leaves out (debuerreotype's slimify), so the
# Dockerfile's image and this one have the same files.
slim=(
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/linda/*'
  --dpkgopt='path-exclude=/usr/share/lintian/overrides/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/man/*'
)

# dpkg syncs every file it unpacks: on a busy disk that is most of the time
# a build takes. mmdebstrap builds in $TMPDIR, so point it at a tmpfs when
# one has room (the result is the same; only the output tar goes to disk).
build_tmp=${TMPDIR:-/tmp}
if [ -z "${IMAGE_BUILD_TMPDIR:-}" ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] &&
   [ "$(df -k --output=avail /dev/shm | tail -1)" -gt $((2 * 1024 * 1024)) ]; then
  build_tmp=/dev/shm
fi
build_tmp=${IMAGE_BUILD_TMPDIR:-$build_tmp}

# apt's lock and partial downloads must not travel from the cache into the
# image: their times are the host's (a build once differed by the lock's).
rm -rf "$cache/lock" "$cache/partial"

echo "build-image: rootfs (mmdebstrap $variant, $suite: ${pkgs[*]}; building in $build_tmp)"
# The cache goes in before the download and comes out before the cleanup;
# --skip=essential/unlink keeps the base's .debs for sync-out. The host's
# resolv.conf and hostname are dropped: they would make the image differ
# between hosts, and every runtime provides its own. So are the .pyc files
# python3's postinst compiles (python3 is there for xfsprogs' xfs_scrub_all),
# as a precaution: Python's marshal output is a known reproducible-builds
# trouble spot (two builds here gave the same ones), dpkg owns none of them,
# and python makes them again when needed.
TMPDIR=$build_tmp mmdebstrap --quiet --mode=root --variant="$variant" --include="$include" "${slim[@]}" \
  --skip=essential/unlink \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="sync-in $cache /var/cache/apt/archives" \
  --customize-hook="sync-out /var/cache/apt/archives $cache" \
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
  --customize-hook='find "$1/usr" -depth -type d -name __pycache__ -exec rm -rf {} +' \
  --customize-hook='mkdir -p "$1/usr/share/volplug"' \
  --customize-hook='dpkg-query --admindir="$1/var/lib/dpkg" -W -f="\${Package} \${Version}\n" | LC_ALL=C sort > "$1/usr/share/volplug/packages"' \
  "$suite" "$work/rootfs.tar" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security $suite-security main"
rm -f "$cache/lock"
rm -rf "$cache/partial"

# Prune the cache to the .debs this build installed (apt names them
# NAME_VERSION_ARCH.deb, an epoch's ':' written %3a): the others are old
# versions earlier builds kept, and without this the cache grows with every
# Debian update. A build of another variant downloads its own again.
declare -A keep=()
while read -r name ver; do
  keep["${name}_${ver//:/%3a}"]=1
done < <(tar -xOf "$work/rootfs.tar" --wildcards '*usr/share/volplug/packages')
[ ${#keep[@]} -gt 0 ] || { echo "build-image: no package list in the rootfs" >&2; exit 1; }
pruned=0
for deb in "$cache"/*.deb; do
  [ -e "$deb" ] || continue
  base=${deb##*/}
  if [ -z "${keep[${base%_*}]:-}" ]; then
    rm -f "$deb"
    pruned=$((pruned + 1))
  fi
done
[ "$pruned" -eq 0 ] || echo "build-image: removed $pruned old .debs from $cache"

echo "build-image: volplug $version"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$work/volplug" ./cmd/volplug

echo "build-image: $out ($image)"
go run ./cmd/mkimage --rootfs "$work/rootfs.tar" --binary "$work/volplug" \
  --ref "$image" --version "$version" --revision "$revision" \
  --base "debian:$suite ($variant, mmdebstrap)" --out "$out"
