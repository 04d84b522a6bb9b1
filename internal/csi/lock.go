package csi

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// keyLocks lets one operation at a time work on a volume (or a name being
// created). A second operation on a busy key is answered ABORTED at once,
// as the CSI spec asks, and the CO retries it later; nothing waits, so no
// lock is ever held across another volume's slow work.
type keyLocks struct {
	mu   sync.Mutex
	busy map[string]struct{}
}

func newKeyLocks() *keyLocks { return &keyLocks{busy: map[string]struct{}{}} }

// acquire takes key, or returns an ABORTED status naming it.
func (l *keyLocks) acquire(key string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.busy[key]; ok {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress", key)
	}
	l.busy[key] = struct{}{}
	return func() {
		l.mu.Lock()
		delete(l.busy, key)
		l.mu.Unlock()
	}, nil
}
