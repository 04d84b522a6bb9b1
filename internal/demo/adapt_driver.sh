#!/bin/bash
# A FlexVolume driver as the seed writes them: init, mount and unmount,
# and "Not supported" for everything else. mount bind-mounts the directory
# named by the volume attribute "source". It logs to a file, never to the
# output kubelet (here: volplug adapt) parses, and logs option names only.
log() { echo "$(date +%T) $*" >>"$(dirname "$0")/driver.log"; }
case "$1" in
init)
	echo '{"status":"Success","capabilities":{"attach":false}}' ;;
mount)
	log "mount $2 with options: $(jq -c 'keys' <<<"$3")"
	src=$(jq -r '.source // empty' <<<"$3")
	if [ ! -d "$src" ] || ! mount --bind "$src" "$2" >/dev/null 2>&1; then
		echo "{\"status\":\"Failure\",\"message\":\"cannot bind $src\"}"; exit 1
	fi
	echo '{"status":"Success"}' ;;
unmount)
	log "unmount $2"
	if ! umount "$2" >/dev/null 2>&1; then
		echo "{\"status\":\"Failure\",\"message\":\"cannot unmount $2\"}"; exit 1
	fi
	echo '{"status":"Success"}' ;;
*)
	log "$1: not supported"
	echo '{"status":"Not supported"}'; exit 1 ;;
esac
