package local

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/failpoint"
)

// Asynchronous delete: DeleteVolume renames the volume into .trash, which
// is the delete (the volume is gone for every reader at once), and removes
// the directory in the background. Until it is removed its blocks are still
// allocated, so statfs, and with it Capacity, keeps counting them; a create
// that finds too little room waits for the removals in flight and tries
// once more. A crash leaves the directory in .trash, which the next start
// clears.

// DeleteInBackground turns the background removal of deleted volumes on or
// off.
func DeleteInBackground(on bool) Option { return func(b *Backend) { b.deleteInBackground = on } }

// discard removes dir, a volume already renamed into .trash: in the
// background when so configured and the backend is open.
func (b *Backend) discard(dir string) error {
	b.bgMu.Lock()
	if !b.deleteInBackground || b.bgCtx.Err() != nil {
		b.bgMu.Unlock()
		return removeTree(dir)
	}
	done := make(chan struct{})
	b.removals[dir] = done
	b.bgWG.Add(1) // under bgMu, before Close can start waiting
	b.bgMu.Unlock()
	go func() {
		defer b.bgWG.Done()
		failpoint.Hit("local.trash.removing")
		if err := removeTree(dir); err != nil {
			// Not lost: the next start clears .trash.
			klog.Warningf("remove deleted volume %s: %v", dir, err)
		}
		b.bgMu.Lock()
		delete(b.removals, dir)
		b.bgMu.Unlock()
		close(done)
	}()
	return nil
}

// waitRemovals waits for the removals in flight now; it reports whether
// there were any.
func (b *Backend) waitRemovals(ctx context.Context) (bool, error) {
	b.bgMu.Lock()
	pending := make([]chan struct{}, 0, len(b.removals))
	for _, done := range b.removals {
		pending = append(pending, done)
	}
	b.bgMu.Unlock()
	for _, done := range pending {
		select {
		case <-done:
		case <-ctx.Done():
			return true, fmt.Errorf("waiting for deleted volumes to be removed: %w", ctx.Err())
		}
	}
	return len(pending) > 0, nil
}
