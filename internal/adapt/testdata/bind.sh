#!/bin/bash
# A FlexVolume driver in the seed's style: init, mount and unmount only.
# mount bind-mounts the directory named by the volume attribute "source".
set -u
ok() { echo '{"status":"Success"}'; exit 0; }
fail() { printf '{"status":"Failure","message":"%s"}\n' "$1"; exit 1; }
case "${1:-}" in
init) echo '{"status":"Success","capabilities":{"attach":false}}'; exit 0 ;;
mount)
	dir=$2
	src=$(jq -r '.source // empty' <<<"$3") || fail "bad json"
	[ -d "$src" ] || fail "source $src is not a directory"
	mkdir -p "$dir"
	mount --bind "$src" "$dir" >/dev/null 2>&1 || fail "bind $src"
	if [ "$(jq -r '."kubernetes.io/readwrite"' <<<"$3")" = ro ]; then
		mount -o remount,bind,ro "$dir" >/dev/null 2>&1 || fail "remount ro"
	fi
	# What kubelet passed, for the test to read (never do this with secrets
	# in a real driver: it is the test's way of seeing the JSON).
	[ -n "${FLEX_TEST_ECHO:-}" ] && printf '%s' "$3" >"$FLEX_TEST_ECHO"
	ok ;;
unmount)
	umount "$2" >/dev/null 2>&1 || fail "umount $2"
	ok ;;
*) echo '{"status":"Not supported"}'; exit 1 ;;
esac
