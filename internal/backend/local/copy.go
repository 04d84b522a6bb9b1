package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

// The freeze ioctls, _IOWR('X', 119, int) and _IOWR('X', 120, int), which
// x/sys does not name.
const (
	ioctlFreeze = 0xC0045877
	ioctlThaw   = 0xC0045878
)

// cloneImage copies src to a new file dst. On a pool filesystem that can
// share blocks (xfs, btrfs) it is a reflink: instant, and no space is used
// until either side is overwritten. Elsewhere it copies only the extents
// that hold data, so a sparse image stays sparse. It reports whether
// blocks are now shared.
func cloneImage(src, dst string) (shared bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("clone %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, fmt.Errorf("clone to %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if err := imageNoCow(out, in); err != nil {
		return false, err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return true, out.Sync()
	}
	if err := sparseCopy(in, out); err != nil {
		return false, fmt.Errorf("copy %s: %w", src, err)
	}
	return false, out.Sync()
}

// sparseCopy walks the data extents of in (SEEK_DATA/SEEK_HOLE) and copies
// each with copy_file_range, which stays in the kernel.
func sparseCopy(in, out *os.File) error {
	st, err := in.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for r, w := data, data; r < hole; {
			n, err := unix.CopyFileRange(int(in.Fd()), &r, int(out.Fd()), &w, int(hole-r), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
		}
		failpoint.Hit("local.copy.extent-done")
		off = hole
	}
	return nil
}

// quiesce makes the volumes' images consistent on disk for the instant of
// a copy and returns the function that lets them go on. A mounted
// filesystem is frozen (FIFREEZE: dirty data written, new writes held), so
// every member of a group is captured at the same instant; a raw block
// device's cache is flushed.
func (b *Backend) quiesce(vols []*backend.Volume) (thaw func(), err error) {
	var frozen []*os.File
	thaw = func() {
		for _, f := range frozen {
			_ = unix.IoctlSetInt(int(f.Fd()), ioctlThaw, 0)
			f.Close()
		}
	}
	for _, v := range vols {
		dev, err := loop.Find(b.pool.image(v.ID))
		if err != nil {
			thaw()
			return nil, err
		}
		if dev == "" {
			continue // not attached: the image is at rest
		}
		if err := flushDevice(dev); err != nil {
			thaw()
			return nil, err
		}
		at, err := fsMountOf(dev)
		if err != nil || at == "" {
			if err != nil {
				thaw()
			}
			continue
		}
		f, err := os.Open(at)
		if err != nil {
			thaw()
			return nil, fmt.Errorf("freeze %s: %w", at, err)
		}
		if err := unix.IoctlSetInt(int(f.Fd()), ioctlFreeze, 0); err != nil {
			f.Close()
			thaw()
			return nil, fmt.Errorf("freeze %s: %w", at, err)
		}
		frozen = append(frozen, f)
		failpoint.Hit("local.freeze.one-frozen")
	}
	return thaw, nil
}

// thawAll thaws every filesystem on the pool's loop devices. A driver that
// died while a snapshot held a filesystem frozen would otherwise leave the
// pods above it blocked; at start nothing of ours should be frozen.
func (b *Backend) thawAll() {
	vols, err := b.ListVolumes(context.Background())
	if err != nil {
		return
	}
	for _, v := range vols {
		dev, _ := loop.Find(b.pool.image(v.ID))
		if dev == "" {
			continue
		}
		if at, _ := fsMountOf(dev); at != "" {
			if f, err := os.Open(at); err == nil {
				_ = unix.IoctlSetInt(int(f.Fd()), ioctlThaw, 0) // EINVAL when not frozen
				f.Close()
			}
		}
	}
}

// fsMountOf returns one mount point of the filesystem on dev, or "".
func fsMountOf(dev string) (string, error) {
	users, err := mount.UsersOf(dev)
	if err != nil {
		return "", err
	}
	for path, info := range users {
		if info.FSType != "devtmpfs" {
			return path, nil
		}
	}
	return "", nil
}

func flushDevice(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("flush %s: %w", dev, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", dev, err)
	}
	return nil
}
