package local

import (
	"context"
	"fmt"
	"os"
	"strings"

	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

// ExpandVolume grows the disk image, and the loop device's view of it when
// the volume is staged. The filesystem is grown by ExpandFilesystem, or at
// the next stage if the volume is not staged now.
func (b *Backend) ExpandVolume(ctx context.Context, id string, size int64, _ backend.Secrets) (int64, bool, error) {
	if err := b.waitFormat(ctx, id); err != nil { // the format rewrites the metadata
		return 0, false, err
	}
	v, err := b.pool.readVolume(id)
	if err != nil {
		return 0, false, err
	}
	if size <= v.Size { // never shrink; asking for less is already done
		if size < v.Size {
			// An xfs volume asked for less than 300 MiB got 300 MiB: growing
			// it to 250 MiB is done already.
			klog.V(2).InfoS("Volume already larger than asked", "id", id, "requestedBytes", size, "capacityBytes", v.Size)
		}
		return v.Size, v.ResizePending, nil
	}
	if isNative(v) {
		// The limit is the size: nothing to grow on the node.
		if err := b.expandNative(v, size); err != nil {
			return 0, false, fmt.Errorf("expand %s: %w", id, err)
		}
		failpoint.Hit("local.expand.native-limited")
		v.Size = size
		if err := writeVolume(b.pool.volumeDir(id), v); err != nil {
			return 0, false, fmt.Errorf("expand %s: %w", id, err)
		}
		return size, false, nil
	}
	size = (size + 511) / 512 * 512 // whole sectors: what a loop device can show
	if err := b.growImage(v, size); err != nil {
		return 0, false, fmt.Errorf("expand %s: %w", id, err)
	}
	failpoint.Hit("local.expand.image-grown")
	v.Size = size
	v.ResizePending = !v.Block
	if err := writeVolume(b.pool.volumeDir(id), v); err != nil {
		return 0, false, fmt.Errorf("expand %s: %w", id, err)
	}
	failpoint.Hit("local.expand.meta-written")
	if dev, err := loop.Find(b.pool.image(id)); err != nil {
		return 0, false, err
	} else if dev != "" {
		if err := loop.Refresh(dev); err != nil {
			return 0, false, fmt.Errorf("expand %s: %w", id, err)
		}
	}
	return size, !v.Block, nil
}

// growImage extends the image if the pool has room for the difference.
func (b *Backend) growImage(v *backend.Volume, size int64) error {
	return b.grow(v, size, func() error { return os.Truncate(b.pool.image(v.ID), size) })
}

// grow runs apply (which makes v size bytes) if the pool has room for the
// difference, holding the space lock so that two growths or a growth and a
// create cannot both take the same free bytes.
func (b *Backend) grow(v *backend.Volume, size int64, apply func() error) error {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	free, err := b.capacity()
	if err != nil {
		return err
	}
	if more := size - v.Size; more > free {
		return fmt.Errorf("%d more bytes asked, %d free in the pool: %w", more, free, backend.ErrNoSpace)
	}
	return apply()
}

// ExpandFilesystem grows the filesystem mounted at path (online) to fill
// the disk, first making the loop device see the disk's current size. The
// disk's size is the volume's: the CO's size is not needed.
func (b *Backend) ExpandFilesystem(ctx context.Context, id, path string, _ int64) (int64, error) {
	v, err := b.pool.readVolume(id)
	if err != nil {
		return 0, err
	}
	if isNative(v) {
		// Its limit was raised by ExpandVolume; the node has nothing to do,
		// but the volume must be where the CO says.
		users, err := b.nativeUsers(id)
		if err != nil {
			return 0, err
		}
		if _, ok := users[path]; !ok {
			return 0, fmt.Errorf("volume %s is not mounted at %s: %w", id, path, backend.ErrNotFound)
		}
		return v.Size, nil
	}
	dev, err := loop.Find(b.pool.image(id))
	if err != nil {
		return 0, err
	}
	if dev == "" {
		return 0, fmt.Errorf("volume %s is not staged on this node: %w", id, backend.ErrNotFound)
	}
	users, err := mount.UsersOf(dev)
	if err != nil {
		return 0, err
	}
	info, ok := users[path]
	if !ok {
		return 0, fmt.Errorf("volume %s is not mounted at %s: %w", id, path, backend.ErrNotFound)
	}
	if err := loop.Refresh(dev); err != nil {
		return 0, err
	}
	if v.Block || info.FSType == "devtmpfs" {
		return v.Size, nil // a raw device has nothing more to grow
	}
	if err := b.resize(v, dev, path); err != nil {
		return 0, err
	}
	return v.Size, nil
}

// resize grows the filesystem on dev, mounted at path, and clears the
// volume's pending flag. Growing a filesystem that already fills its device
// is a no-op, so a repeat after a crash is harmless.
func (b *Backend) resize(v *backend.Volume, dev, path string) error {
	if strings.HasPrefix(v.FsType, "ext") && !mount.CanGrowExtOnline() {
		if need, err := mount.ExtNeedsGrowth(context.Background(), dev); err == nil && !need {
			return b.clearPending(v) // already the device's size
		}
		return fmt.Errorf("grow %s online: this driver lacks CAP_SYS_RESOURCE, which growing a mounted %s needs; "+
			"the filesystem grows when the volume is next staged: %w", v.ID, v.FsType, backend.ErrPrecondition)
	}
	if _, err := b.resizer.Resize(dev, path); err != nil {
		return fmt.Errorf("grow filesystem of %s: %w", v.ID, err)
	}
	failpoint.Hit("local.expand.fs-grown")
	return b.clearPending(v)
}

func (b *Backend) clearPending(v *backend.Volume) error {
	if !v.ResizePending {
		return nil
	}
	v.ResizePending = false
	return writeVolume(b.pool.volumeDir(v.ID), v)
}
