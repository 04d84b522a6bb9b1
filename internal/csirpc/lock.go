package csirpc

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Locks lets one operation at a time work on a volume (or a name being
// created). A second operation on a busy key is answered ABORTED at once,
// as the CSI spec asks, and the CO retries it later; nothing waits, so no
// lock is ever held across another volume's slow work.
type Locks struct {
	mu   sync.Mutex
	busy map[string]struct{}
}

func NewLocks() *Locks { return &Locks{busy: map[string]struct{}{}} }

// Acquire takes every key, or none and returns an ABORTED status naming
// the busy one. Taking all at once, or failing at once, is what keeps a
// clone (its name and its source) and a group snapshot (all its members)
// from ever deadlocking with each other.
func (l *Locks) Acquire(keys ...string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, key := range keys {
		if _, ok := l.busy[key]; ok {
			return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress", key)
		}
	}
	for _, key := range keys {
		l.busy[key] = struct{}{}
	}
	return func() {
		l.mu.Lock()
		for _, key := range keys {
			delete(l.busy, key)
		}
		l.mu.Unlock()
	}, nil
}
