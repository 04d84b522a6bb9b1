package local

import (
	"context"
	"fmt"
	"slices"

	"github.com/volplug/volplug/internal/backend"
)

// Attach records that node uses the volume. A disk image can only be
// attached on the node whose pool holds it.
//
// The caller holds the volume's lock; attachMu is taken only to count a
// node's attachments against a limit, so without one attaches of different
// volumes proceed in parallel.
func (b *Backend) Attach(ctx context.Context, id, node string, readOnly bool, maxPerNode int) error {
	if err := b.waitFormat(ctx, id); err != nil { // the format rewrites the metadata
		return err
	}
	if maxPerNode > 0 {
		b.attachMu.Lock()
		defer b.attachMu.Unlock()
	}
	v, err := b.pool.readVolume(id)
	if err != nil {
		return err
	}
	if node != b.node {
		return fmt.Errorf("node %q: volume %s lives on node %q: %w", node, id, b.node, backend.ErrNotFound)
	}
	if slices.Contains(v.AttachedTo, node) {
		if v.AttachedReadOnly != readOnly {
			return fmt.Errorf("volume %s is attached to %s with read-only %v: %w", id, node, v.AttachedReadOnly, backend.ErrAlreadyExists)
		}
		return nil
	}
	if maxPerNode > 0 {
		all, err := b.ListVolumes(ctx)
		if err != nil {
			return err
		}
		n := 0
		for _, o := range all {
			if slices.Contains(o.AttachedTo, node) {
				n++
			}
		}
		if n >= maxPerNode {
			return fmt.Errorf("node %s has %d volumes attached: %w", node, n, backend.ErrLimit)
		}
	}
	v.AttachedTo = append(v.AttachedTo, node)
	v.AttachedReadOnly = readOnly
	return writeVolume(b.pool.volumeDir(id), v)
}

// Detach forgets that node uses the volume.
func (b *Backend) Detach(ctx context.Context, id, node string) error {
	if err := b.waitFormat(ctx, id); err != nil { // the format rewrites the metadata
		return err
	}
	v, err := b.pool.readVolume(id)
	if err != nil {
		return err
	}
	i := slices.Index(v.AttachedTo, node)
	if i < 0 {
		return nil
	}
	v.AttachedTo = slices.Delete(v.AttachedTo, i, i+1)
	v.AttachedReadOnly = v.AttachedReadOnly && len(v.AttachedTo) > 0
	return writeVolume(b.pool.volumeDir(id), v)
}
