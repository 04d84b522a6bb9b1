#!/bin/bash
# An attachable FlexVolume driver: attach answers the image file named by
# the volume attribute "image" as the device, waitforattach gives it a
# loop device, mountdevice formats (if blank) and mounts it; mount and
# unmount are "Not supported", so kubelet (here: the adapter) bind-mounts
# from the device mount path itself. With FLEX_TEST_DEFAULTS=1 it has no
# mountdevice either and asks for filesystem resize (with no expandfs), so
# kubelet's defaults do both: format-and-mount, and the generic resize.
set -u
defaults=${FLEX_TEST_DEFAULTS:-}
ok() { printf '{"status":"Success"%s}\n' "${1:-}"; exit 0; }
fail() { printf '{"status":"Failure","message":"%s"}\n' "$1"; exit 1; }
case "${1:-}" in
init)
	if [ -n "$defaults" ]; then ok ',"capabilities":{"attach":true}'; fi
	ok ',"capabilities":{"attach":true,"requiresFSResize":false}' ;;
attach)
	img=$(jq -r '.image // empty' <<<"$2")
	[ -f "$img" ] || fail "no image $img"
	ok ",\"device\":\"$img\"" ;;
detach) ok ;;
isattached) ok ',"attached":true' ;;
waitforattach)
	img=$2
	[ -f "$img" ] || fail "no image $img"
	dev=$(losetup -j "$img" | cut -d: -f1 | head -n1)
	[ -n "$dev" ] || dev=$(losetup -f --show "$img") || fail "losetup $img"
	ok ",\"device\":\"$dev\"" ;;
mountdevice)
	[ -n "$defaults" ] && { echo '{"status":"Not supported"}'; exit 1; }
	path=$2 dev=$3
	mkdir -p "$path"
	blkid "$dev" >/dev/null 2>&1 || mkfs.ext4 -q "$dev" >/dev/null 2>&1 || fail "mkfs $dev"
	mount "$dev" "$path" >/dev/null 2>&1 || fail "mount $dev"
	ok ;;
unmountdevice)
	path=$2
	dev=$(findmnt -n -o SOURCE --mountpoint "$path")
	umount "$path" >/dev/null 2>&1 || fail "umount $path"
	[ -n "$dev" ] && losetup -d "$dev" >/dev/null 2>&1
	ok ;;
*) echo '{"status":"Not supported"}'; exit 1 ;;
esac
