#!/bin/bash
# Hangs in mount after forking a child that would outlive it: the adapter
# must kill the whole process group when the call times out.
case "$1" in
init) echo '{"status":"Success","capabilities":{"attach":false}}' ;;
mount)
	sleep 1000 &
	echo $! >"$FLEX_TEST_PIDFILE"
	sleep 1000 ;;
*) echo '{"status":"Not supported"}'; exit 1 ;;
esac
