#!/bin/bash
# mount bind-mounts like bind.sh and leaves a "daemon" (a FUSE server, say)
# running that still holds stdout, which hangs kubelet forever.
case "$1" in
init) echo '{"status":"Success","capabilities":{"attach":false}}' ;;
mount)
	mkdir -p "$2"
	mount -t tmpfs tmpfs "$2" || exit 1
	sleep 1000 &
	echo $! >"$FLEX_TEST_PIDFILE"
	echo '{"status":"Success"}' ;;
unmount) umount "$2" && echo '{"status":"Success"}' ;;
*) echo '{"status":"Not supported"}'; exit 1 ;;
esac
