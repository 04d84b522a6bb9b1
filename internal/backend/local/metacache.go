package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
)

// metaCache keeps each volume's parsed metadata, keyed by the identity of
// its volume.json, for the calls that read every volume (GetCapacity, and
// every CreateVolume's "is there room?" under spaceMu). Reading and
// parsing a thousand files took ~250 ms on this machine, per call and
// under the lock, so creating volumes grew quadratic in the volumes
// already there; a stat per volume is a few microseconds. Metadata is only
// ever replaced by a rename (writeFileAtomic), so a file with the same
// inode, size and mtime has the same content, whichever process wrote it.
type metaCache struct {
	mu sync.Mutex
	m  map[string]cachedMeta
}

type cachedMeta struct {
	ino, size int64
	mtime     unix.Timespec
	v         backend.Volume
}

// volumes returns every volume's metadata, fresh as of this call: the
// cached copy where the file is the one parsed before, else read again.
// The returned volumes are copies; callers must not rely on their maps
// being private.
func (c *metaCache) volumes(p *pool) ([]*backend.Volume, error) {
	entries, err := os.ReadDir(filepath.Join(p.dir, volumesDir))
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedMeta{}
	}
	seen := make(map[string]bool, len(entries))
	out := make([]*backend.Volume, 0, len(entries))
	for _, e := range entries {
		id := e.Name()
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(p.volumeDir(id), metaFile), &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // deleted, or not yet renamed in
			}
			return nil, fmt.Errorf("volume %s: %w", id, err)
		}
		seen[id] = true
		if m, ok := c.m[id]; ok && m.ino == int64(st.Ino) && m.size == st.Size && m.mtime == st.Mtim {
			v := m.v
			out = append(out, &v)
			continue
		}
		v, err := p.readVolume(id)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		c.m[id] = cachedMeta{ino: int64(st.Ino), size: st.Size, mtime: st.Mtim, v: *v}
		out = append(out, v)
	}
	for id := range c.m {
		if !seen[id] {
			delete(c.m, id)
		}
	}
	return out, nil
}
