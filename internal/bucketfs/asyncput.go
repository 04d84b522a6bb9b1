package bucketfs

import (
	"bytes"
	"context"
	"time"

	"k8s.io/klog/v2"
)

// Write-back of small files. A file that ends within its first part and
// is closed goes up with one PUT in the background: close(2) returns once
// the PUT is queued, so creating many small files is not one round trip
// each. Until the PUT ends the file is pending here: this mount finds,
// lists and stats it from memory, and every other operation on it (read,
// write, truncate, fsync, unlink, rename) waits for the PUT first, so the
// store never sees operations out of order. fsync waits and returns the
// PUT's error; a failure is also logged and returned by the file's next
// flush. Unmount waits for every PUT (Server.Wait returns after them).

const (
	// asyncPutMax is the largest file stored in the background. Larger
	// ones are stored by close itself: their PUT costs more than the
	// round trip saved, and the bound keeps the memory small.
	asyncPutMax = 1 << 20
	// asyncPuts bounds the PUTs in flight (and their goroutines) per
	// mount; close waits for a slot. Memory: at most asyncPuts x
	// asyncPutMax (32 MiB).
	asyncPuts = 32
)

// asyncPut is one background PUT.
type asyncPut struct {
	key  string
	done chan struct{} // closed when the PUT has ended; err is set then
	err  error
}

// putBack starts storing data as key in the background, once a slot is
// free. dir and name are the file's directory listing and name in it,
// updated when the PUT succeeds. The caller holds n.mu; the PUT ends by
// settling n (n.up) unless someone waiting on it has done so first.
func (b *bfs) putBack(ctx context.Context, n *fileNode, key, dir, name string, data []byte) (*asyncPut, error) {
	select {
	case b.putSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p := &asyncPut{key: key, done: make(chan struct{})}
	size := int64(len(data))
	b.pmu.Lock()
	b.pending[p] = struct{}{}
	b.pmu.Unlock()
	b.putsWG.Add(1)
	go func() {
		defer b.putsWG.Done()
		// Not the close's context: close has returned already.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		p.err = b.st.put(ctx, key, bytes.NewReader(data), size)
		cancel()
		if p.err != nil {
			klog.ErrorS(p.err, "bucketfs: background upload failed", "key", key)
		} else if dir != "" || name != "" {
			// Before done: a lookup that waited for this PUT must find
			// the file in a fresh listing.
			b.cache.set(dir, name, &entry{size: size, mtime: time.Now()})
		}
		b.pmu.Lock()
		delete(b.pending, p)
		b.pmu.Unlock()
		<-b.putSlots
		// The node's lock is taken only after done is closed: whoever
		// holds it may be waiting on done.
		close(p.done)
		n.mu.Lock()
		n.settleLocked(p)
		n.mu.Unlock()
	}()
	return p, nil
}

// waitPuts waits for the background PUTs of key, or of every key if key
// is "", that are in flight now.
func (b *bfs) waitPuts(key string) {
	b.pmu.Lock()
	var ps []*asyncPut
	for p := range b.pending {
		if key == "" || p.key == key {
			ps = append(ps, p)
		}
	}
	b.pmu.Unlock()
	for _, p := range ps {
		<-p.done
	}
}

// waitUpLocked waits for the file's background PUT, if any, and settles
// it. The caller holds n.mu.
func (n *fileNode) waitUpLocked() {
	if p := n.up; p != nil {
		<-p.done
		n.settleLocked(p)
	}
}

// settleLocked takes in the end of the background PUT p: the store has
// the file now, or the PUT failed and the store has what it had before
// (as when a stream fails), the error kept for the next fsync or flush.
func (n *fileNode) settleLocked(p *asyncPut) {
	if n.up != p {
		return // settled already
	}
	n.up = nil
	n.dirty = false
	if p.err != nil {
		n.upErr = p.err
		return
	}
	n.mtime = time.Now()
}
