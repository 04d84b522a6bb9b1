package local

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
)

// TestNativeOverwritesFitTheLimit: a native volume of the default class
// holds a file of most of its size and takes any number of overwrites of
// it, random and sequential. With copy-on-write (nodatacow "false") the
// same file hits EDQUOT: btrfs keeps a whole extent, and its qgroup counts
// it, while any part of it is still in the file, so overwritten data is
// counted twice, and a preallocated file (one extent of hundreds of MiB)
// can never be rewritten at all.
func TestNativeOverwritesFitTheLimit(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	const size, file = 256 * MiB, 200 * MiB

	v, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "db", MinSize: size, Parameters: nativeParams})
	r.must(err)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	path := filepath.Join(r.target(v.ID), "data")
	if err := overwrites(path, file, 3); err != nil {
		t.Errorf("default native volume of %d MiB, file of %d MiB: %v", size/MiB, file/MiB, err)
	}
	if used, limit, err := subvolumeUsage(ctx, r.b.pool.subvol(v.ID)); err != nil || used > limit {
		t.Errorf("usage %d of limit %d (%v): the data is counted more than once", used, limit, err)
	}
	r.down(v)

	cow, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "db-cow", MinSize: size,
		Parameters: map[string]string{paramLayout: layoutNative, paramNoDataCow: "false"}})
	r.must(err)
	r.must(r.stage(cow, false))
	r.must(r.publish(cow, false, false))
	if err := overwrites(filepath.Join(r.target(cow.ID), "data"), file, 1); !errors.Is(err, unix.EDQUOT) {
		t.Errorf("copy-on-write native volume: overwrites got %v, want EDQUOT (the README says so)", err)
	}
	r.down(cow)
	clean()
}

// overwrites preallocates a file of n bytes (as databases and logs do),
// writes it, then rewrites it rounds times: 4 KiB blocks at random places
// (half the file's worth) and then the whole file in 1 MiB writes. All
// direct I/O, so nothing waits in the page cache; fsync after each pass.
func overwrites(path string, n int64, rounds int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_DIRECT, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		return err
	}
	// An anonymous mapping is page aligned, as O_DIRECT wants.
	buf, err := unix.Mmap(-1, 0, int(MiB), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	sequential := func(pass string) error {
		for off := int64(0); off < n; off += MiB {
			buf[0] = byte(off >> 20)
			if _, err := f.WriteAt(buf, off); err != nil {
				return fmt.Errorf("%s at %d MiB: %w", pass, off/MiB, err)
			}
		}
		return f.Sync()
	}
	if err := sequential("first write"); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range rounds {
		for i := range n / 2 / 4096 {
			off := rng.Int64N(n/4096) * 4096
			if _, err := f.WriteAt(buf[:4096], off); err != nil {
				return fmt.Errorf("round %d: random write %d at %d: %w", round, i, off, err)
			}
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := sequential(fmt.Sprintf("round %d: rewrite", round)); err != nil {
			return err
		}
	}
	return nil
}
