#!/usr/bin/env bash
# Installs the system tools volplug's demo and tests use, and only those that
# are missing, so running it again is cheap. Debian/Ubuntu, as root.
set -euo pipefail

# command -> Debian package that provides it
declare -A need=(
  [mkfs.ext4]=e2fsprogs [e2fsck]=e2fsprogs [resize2fs]=e2fsprogs [dumpe2fs]=e2fsprogs
  [mkfs.xfs]=xfsprogs [xfs_growfs]=xfsprogs [xfs_io]=xfsprogs
  [mkfs.btrfs]=btrfs-progs [btrfs]=btrfs-progs
  [blkid]=util-linux [losetup]=util-linux [wipefs]=util-linux [blockdev]=util-linux
  [mount]=mount
  [s3fs]=s3fs [rclone]=rclone
  [fio]=fio [chattr]=e2fsprogs
  [jq]=jq # bash flex drivers under `volplug adapt`, and `volplug demo adapt`
)

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# FUSE userspace (fusermount) for s3fs and rclone, the object-storage peers
# `make bench` measures. fuse3 replaces fuse 2 in Debian, so either counts.
if ! command -v fusermount3 >/dev/null 2>&1 && ! command -v fusermount >/dev/null 2>&1; then
  missing+=(fuse3)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${missing[*]}; run as root to install them" >&2
  exit 1
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
