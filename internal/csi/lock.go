package csi

import "github.com/volplug/volplug/internal/csirpc"

// keyLocks is csirpc's per-volume lock: one operation per volume (or name
// being created) at a time, a second one answered ABORTED.
type keyLocks struct{ l *csirpc.Locks }

func newKeyLocks() *keyLocks { return &keyLocks{l: csirpc.NewLocks()} }

// acquire takes every key, or none and returns an ABORTED status.
func (l *keyLocks) acquire(keys ...string) (release func(), err error) {
	return l.l.Acquire(keys...)
}
