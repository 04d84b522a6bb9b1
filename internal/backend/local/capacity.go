package local

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
)

// chooseSize picks the image size for a request: the required size rounded
// up to a MiB when the limit allows, else to a 4 KiB block, else exactly.
func chooseSize(required, limit, floor int64) (int64, error) {
	if required < 0 || limit < 0 {
		return 0, fmt.Errorf("negative size: %w", backend.ErrOutOfRange)
	}
	if limit > 0 && limit < required {
		return 0, fmt.Errorf("limit %d is below required %d: %w", limit, required, backend.ErrOutOfRange)
	}
	if required == 0 {
		required = DefaultSize
		if limit > 0 && limit < required {
			required = limit
		}
	}
	if required < floor {
		required = floor
	}
	if required > math.MaxInt64-MiB {
		// Rounding up would overflow into a negative size; no pool is
		// this large anyway.
		return 0, fmt.Errorf("%d bytes: larger than any volume can be: %w", required, backend.ErrOutOfRange)
	}
	for _, align := range []int64{MiB, 4096, 512} {
		size := (required + align - 1) / align * align
		if limit == 0 || size <= limit {
			return size, nil
		}
	}
	return 0, fmt.Errorf("no size between %d and %d bytes fits (the minimum is %d, in 512-byte sectors): %w",
		required, limit, floor, backend.ErrOutOfRange)
}

// makeImage makes the sparse image. Images are sparse, but the space they
// may still grow into is counted as taken (see promised), so the pool never
// promises more than its disk has: a full volume gets ENOSPC inside itself,
// never an I/O error from an overcommitted host.
func makeImage(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = imageNoCow(f, nil) // while it is empty: see imageNoCow
	if err == nil {
		err = f.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// reserveSpace sets size bytes aside for a copy in progress, or fails with
// ErrNoSpace; the returned function gives them back.
func (b *Backend) reserveSpace(size int64) (release func(), err error) {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	free, err := b.capacity()
	if err != nil {
		return nil, err
	}
	if size > free {
		return nil, fmt.Errorf("%d bytes needed, %d free in the pool: %w", size, free, backend.ErrNoSpace)
	}
	b.reserved += size
	return func() {
		b.spaceMu.Lock()
		b.reserved -= size
		b.spaceMu.Unlock()
	}, nil
}

// Capacity returns the bytes a new volume could still get.
func (b *Backend) Capacity(ctx context.Context) (int64, error) {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	return b.capacity()
}

func (b *Backend) capacity() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(b.pool.dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", b.pool.dir, err)
	}
	free := int64(st.Bavail) * st.Bsize
	promised, err := b.promised()
	if err != nil {
		return 0, err
	}
	return max(free-promised-b.reserved, 0), nil
}

// promised sums what the images may still grow by: their sizes less what
// they already occupy on disk. An image that shares blocks (reflink) may
// need all of its size again when those blocks are overwritten; so may a
// copy-on-write image on btrfs (one made before images there were
// nodatacow: see imageNoCow), whose overwrites keep old extents.
func (b *Backend) promised() (int64, error) {
	vols, err := b.meta.volumes(b.pool)
	if err != nil {
		return 0, err
	}
	btrfs, err := isBtrfs(b.pool.dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, v := range vols {
		if isNative(v) {
			// Its qgroup lets it reference up to its size, and blocks it
			// shares with snapshots take new space when overwritten: the
			// whole size is promised, beside what it already holds.
			total += v.Size
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(b.pool.image(v.ID), &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // deleted meanwhile
			}
			return 0, fmt.Errorf("stat %s: %w", b.pool.image(v.ID), err)
		}
		size := max(v.Size, st.Size)
		if v.Shared || (btrfs && copiesOnWrite(b.pool.image(v.ID))) {
			total += size
		} else {
			total += max(size-st.Blocks*512, 0)
		}
	}
	warm, err := b.pool.warmPromised()
	if err != nil {
		return 0, err
	}
	return total + warm, nil
}
