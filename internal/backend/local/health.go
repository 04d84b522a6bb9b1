package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	mountutils "k8s.io/mount-utils"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

// Stats reports the volume's own filesystem at path (not the host's), or
// the device size of a raw block volume.
func (b *Backend) Stats(ctx context.Context, id, path string) (*backend.Stats, error) {
	v, err := b.pool.readVolume(id)
	if err != nil {
		return nil, err
	}
	if isNative(v) {
		return b.nativeStats(ctx, v, path)
	}
	dev, err := loop.Find(b.pool.image(id))
	if err != nil {
		return nil, err
	}
	if dev == "" {
		return nil, fmt.Errorf("volume %s is not staged on this node: %w", id, backend.ErrNotFound)
	}
	users, err := mount.UsersOf(dev)
	if err != nil {
		return nil, err
	}
	info, ok := users[path]
	if !ok {
		return nil, fmt.Errorf("volume %s is not at %s: %w", id, path, backend.ErrNotFound)
	}
	if info.FSType == "devtmpfs" {
		size, err := deviceSize(dev)
		if err != nil {
			return nil, err
		}
		return &backend.Stats{Block: true, TotalBytes: size}, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	total, free, avail := int64(st.Blocks)*st.Bsize, int64(st.Bfree)*st.Bsize, int64(st.Bavail)*st.Bsize
	return &backend.Stats{
		TotalBytes: total, UsedBytes: total - free, AvailBytes: avail,
		TotalInodes: int64(st.Files), FreeInodes: int64(st.Ffree), UsedInodes: int64(st.Files - st.Ffree),
	}, nil
}

func deviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	size, err := f.Seek(0, 2)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dev, err)
	}
	return size, nil
}

// VolumeHealth checks what the controller owns: the metadata and the image.
func (b *Backend) VolumeHealth(ctx context.Context, id string) (*backend.Health, error) {
	v, err := b.pool.readVolume(id)
	if err != nil {
		return nil, err
	}
	h := &backend.Health{}
	if isNative(v) {
		b.nativeHealth(h, id)
		return h, nil
	}
	var st unix.Stat_t
	switch err := unix.Stat(b.pool.image(id), &st); {
	case errors.Is(err, unix.ENOENT):
		addProblem(h, backend.DataLoss, "the disk image %s is missing", b.pool.image(id))
	case err != nil:
		addProblem(h, backend.Inaccessible, "the disk image cannot be read: %v", err)
	case st.Size < v.Size:
		addProblem(h, backend.DataLoss, "the disk image is %d bytes, the volume %d", st.Size, v.Size)
	}
	return h, nil
}

// NodeHealth adds what the node sees: the loop device, every mount of the
// volume (a corrupted mount, or a filesystem the kernel switched to
// read-only after errors), and whether it is really at the paths where the
// CO believes it is (a reboot or a stray detach loses both).
func (b *Backend) NodeHealth(ctx context.Context, id string, paths ...string) (*backend.Health, error) {
	h, err := b.VolumeHealth(ctx, id)
	if err != nil {
		return nil, err
	}
	image := b.pool.image(id)
	if err := b.deletedImages(h, id); err != nil {
		return nil, err
	}
	dev, err := loop.Find(image)
	if err != nil {
		return nil, err
	}
	users := map[string]*mount.Info{}
	if v, err := b.pool.readVolume(id); err == nil && isNative(v) {
		if users, err = b.nativeUsers(id); err != nil {
			return nil, err
		}
		dev = "(none: a subvolume)" // served by no device; "" reads as lost
	} else if dev != "" {
		if users, err = mount.UsersOf(dev); err != nil {
			return nil, err
		}
	}
	for _, p := range paths {
		switch _, at := users[p]; {
		case p == "" || at:
		case dev == "":
			addProblem(h, backend.Inaccessible, "the volume should be at %s, but no loop device serves its image (detached, or lost in a reboot)", p)
		default:
			addProblem(h, backend.Inaccessible, "the volume should be at %s, but is not mounted there", p)
		}
	}
	for path, info := range users {
		if _, err := os.Stat(path); err != nil && mountutils.IsCorruptedMnt(err) {
			addProblem(h, backend.Inaccessible, "the mount at %s is corrupted: %v", path, err)
			continue
		}
		// Kernels since 6.x say "emergency_ro" for a read-only switch after
		// errors; older ones just "ro".
		super := strings.Split(info.VFSOptions, ",")
		superRO := slices.Contains(super, "ro") || slices.Contains(super, "emergency_ro")
		mountRW := slices.Contains(strings.Split(info.Options, ","), "rw")
		if superRO && mountRW {
			addProblem(h, backend.Degraded, "the filesystem at %s was made read-only by the kernel, most likely after I/O errors", path)
		}
	}
	return h, nil
}

// deletedImages reports loop devices that still serve a deleted image of
// volume id. The file is gone, so there is no identity to compare: the
// names its path still ends in (which are the dentry's own, whatever
// mount it was opened through) and the pool's filesystem must both match.
func (b *Backend) deletedImages(h *backend.Health, id string) error {
	pool, err := loop.IdentityOf(b.pool.dir)
	if err != nil {
		return err
	}
	devs, err := loop.Ending("/" + id + "/" + imageFile + " (deleted)")
	if err != nil {
		return err
	}
	for _, d := range devs {
		if d.Backing.Dev == pool.Dev {
			addProblem(h, backend.DataLoss, "%s still serves the disk image, which was deleted", d.Path)
		}
	}
	return nil
}

func addProblem(h *backend.Health, kind backend.ProblemKind, format string, args ...any) {
	h.Problems = append(h.Problems, backend.Problem{Kind: kind, Message: fmt.Sprintf(format, args...)})
}

// VolumeAt names the volume whose loop device is mounted (or bound) at
// path, from the kernel's mount table: "" when none of ours is there.
func (b *Backend) VolumeAt(ctx context.Context, path string) (string, error) {
	info, err := b.mount.Mounted(path)
	if err != nil || info == nil {
		return "", err
	}
	if id, err := b.nativeVolumeAt(path, info); err != nil || id != "" {
		return id, err
	}
	return b.VolumeOfDevice(mount.SourceDevice(info))
}

// VolumeOfDevice names the volume whose image backs loop device dev, or ""
// when dev is not one of this pool's. The path sysfs shows only nominates
// a volume (its last names are the image's own, whichever mount it was
// opened through); the image's identity decides.
func (b *Backend) VolumeOfDevice(dev string) (string, error) {
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", nil
	}
	backing, err := loop.BackingFile(dev)
	if err != nil || backing == "" {
		return "", err
	}
	dir, file := filepath.Split(backing)
	id := filepath.Base(dir)
	if file != imageFile || checkID(id) != nil {
		return "", nil // a loop device, but not one of a volume's images
	}
	if ours, err := loop.Holds(dev, b.pool.image(id)); err != nil || !ours {
		return "", err
	}
	return id, nil
}

// Device returns the loop device of a staged volume, "" when not staged.
func (b *Backend) Device(id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	return loop.Find(b.pool.image(id))
}

// StorageHealth checks the pool: that it can be written, and that it is
// not nearly full (sparse images fail inside their volumes when the pool
// runs out, although capacity accounting makes that unlikely).
func (b *Backend) StorageHealth(ctx context.Context) (*backend.Health, error) {
	h := &backend.Health{}
	probe := filepath.Join(b.pool.dir, tmpDir, "probe."+randomSuffix())
	if err := os.WriteFile(probe, []byte("ok"), 0o600); err != nil {
		addProblem(h, backend.Inaccessible, "the pool %s cannot be written: %v", b.pool.dir, err)
		return h, nil
	}
	_ = os.Remove(probe)
	var st unix.Statfs_t
	if err := unix.Statfs(b.pool.dir, &st); err != nil {
		addProblem(h, backend.Inaccessible, "the pool %s cannot be read: %v", b.pool.dir, err)
		return h, nil
	}
	if st.Blocks > 0 && st.Bavail*20 < st.Blocks {
		addProblem(h, backend.Degraded, "the pool %s has less than 5%% of its disk free", b.pool.dir)
	}
	return h, nil
}
