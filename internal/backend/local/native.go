package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/mount"
)

// The native layout: on a btrfs pool, a volume can be a subvolume of the
// pool's own filesystem with a qgroup limit of its size, instead of a disk
// image behind a loop device. It is as fast as the pool (no second
// filesystem, no loop device), made and snapshotted in an instant, and
// staged by a bind mount.
//
//	<pool>/volumes/<id>/volume.json   metadata, as for images
//	<pool>/volumes/<id>/data          the subvolume
//	<pool>/snapshots/<id>/data        a read-only snapshot of it
//
// A limit is what makes it a volume: a pool that cannot enforce one (not
// btrfs, or quotas refused) gets no native volumes at all.
const (
	// paramLayout is the StorageClass parameter that picks the layout.
	paramLayout  = "layout"
	layoutImage  = "image" // the default: a disk image on a loop device
	layoutNative = "native"
	subvolName   = "data"
)

func isNative(v *backend.Volume) bool { return v.Layout == layoutNative }

func (p *pool) subvol(id string) string { return filepath.Join(p.volumeDir(id), subvolName) }

// chooseLayout returns the layout a request asks for ("" for the default,
// image), refusing a native volume the pool could not hold to its size.
func (b *Backend) chooseLayout(req *backend.CreateRequest, src *contentSource) (string, error) {
	asked, set := req.Parameters[paramLayout]
	switch asked {
	case "", layoutImage:
		asked = ""
	case layoutNative:
	default:
		return "", fmt.Errorf("parameter %s=%q: use %s (the default) or %s: %w", paramLayout, asked, layoutImage, layoutNative, backend.ErrInvalid)
	}
	if src != nil {
		have := ""
		if src.subvol != "" {
			have = layoutNative
		}
		if set && have != asked {
			return "", fmt.Errorf("the source is stored as %s, a copy of it cannot be %s: %w", layoutName(have), layoutName(asked), backend.ErrInvalid)
		}
		asked = have
	}
	if asked != layoutNative {
		return "", nil
	}
	if req.Block {
		return "", fmt.Errorf("layout %s holds a filesystem only; raw block volumes are disk images (layout %s): %w", layoutNative, layoutImage, backend.ErrInvalid)
	}
	fsType := req.FsType
	if fsType == "" {
		fsType = req.Parameters[paramFsType]
	}
	if fsType != "" && fsType != "btrfs" {
		return "", fmt.Errorf("layout %s is the pool's own filesystem, btrfs, not %s (use layout %s for %s): %w", layoutNative, fsType, layoutImage, fsType, backend.ErrInvalid)
	}
	if err := b.enableQuota(); err != nil {
		return "", err
	}
	return layoutNative, nil
}

func layoutName(l string) string {
	if l == "" {
		return layoutImage
	}
	return l
}

// enableQuota makes sure the pool can enforce a native volume's size: it is
// btrfs and its quotas (qgroups) are on. Enabling is done once per process
// (it is idempotent, but starts a rescan on a filesystem with data).
func (b *Backend) enableQuota() error {
	b.quotaMu.Lock()
	defer b.quotaMu.Unlock()
	if b.quotaOn {
		return nil
	}
	if ok, err := isBtrfs(b.pool.dir); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("layout %s needs a btrfs pool, whose quotas can hold a volume to its size; %s is not btrfs: %w", layoutNative, b.pool.dir, backend.ErrInvalid)
	}
	if _, err := runBtrfs(context.Background(), "quota", "enable", b.pool.dir); err != nil {
		return fmt.Errorf("layout %s needs btrfs quotas to hold a volume to its size, and they cannot be enabled: %v: %w", layoutNative, err, backend.ErrInvalid)
	}
	b.quotaOn = true
	return nil
}

// makeNative fills the new volume's directory dir with its subvolume: an
// empty one, or a writable snapshot of the source, limited to v.Size.
func makeNative(dir string, src *contentSource, v *backend.Volume) error {
	sub := filepath.Join(dir, subvolName)
	var err error
	if src == nil {
		err = createSubvolume(sub)
	} else {
		err = snapshotSubvolume(src.subvol, sub, false)
	}
	if err != nil {
		return err
	}
	failpoint.Hit("local.native.subvol-made")
	if src == nil && noDataCow(v) {
		// A snapshot keeps its source's flags, root and files alike: a
		// clone or restore is as copy-on-write as its source was.
		if err := setNoCow(sub); err != nil {
			return err
		}
	}
	return limitSubvolume(sub, v.Size)
}

// nativeUsers returns the mounts of the volume's subvolume: its staging
// bind and the binds of that, by identity (see mount.MountsOfDir).
func (b *Backend) nativeUsers(id string) (map[string]*mount.Info, error) {
	sub := b.pool.subvol(id)
	if _, err := os.Stat(sub); os.IsNotExist(err) {
		return map[string]*mount.Info{}, nil
	}
	return mount.MountsOfDir(sub)
}

// nativeAt reports whether path has the volume's subvolume mounted, and
// fails when something else is mounted there.
func (b *Backend) nativeAt(path, id string) (bool, error) {
	info, err := b.mount.Mounted(path)
	if err != nil || info == nil {
		return false, err
	}
	var at, sub unix.Stat_t
	if err := unix.Stat(path, &at); err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Stat(b.pool.subvol(id), &sub); err != nil {
		return false, fmt.Errorf("stat %s: %w", b.pool.subvol(id), err)
	}
	if at.Dev == sub.Dev && at.Ino == sub.Ino {
		return true, nil
	}
	return false, fmt.Errorf("%s has %s mounted: %w", path, info.Source, backend.ErrAlreadyExists)
}

// stageNative bind-mounts the subvolume at the staging path. There is
// nothing to attach, format or grow.
func (b *Backend) stageNative(req *backend.StageRequest) error {
	if req.Block {
		return fmt.Errorf("volume %s is a btrfs subvolume (layout %s), not a block device: %w", req.ID, layoutNative, backend.ErrInvalid)
	}
	staging := b.stagingPath(req.ID, req.StagingPath)
	if done, err := b.nativeAt(staging, req.ID); err != nil || done {
		return err
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return fmt.Errorf("stage %s: %w", req.ID, err)
	}
	failpoint.Hit("local.native.staging-made")
	if err := b.mount.Bind(b.pool.subvol(req.ID), staging, req.ReadOnly); err != nil {
		return fmt.Errorf("stage %s: %w", req.ID, err)
	}
	return nil
}

// unstageNative unmounts the staging bind, refusing while the volume is
// still published elsewhere.
func (b *Backend) unstageNative(id, stagingPath string) error {
	users, err := b.nativeUsers(id)
	if err != nil {
		return err
	}
	var stages []string
	for path := range users {
		if !sameDir(path, stagingPath) {
			return fmt.Errorf("volume %s is still published at %s: %w", id, path, backend.ErrPrecondition)
		}
		stages = append(stages, path)
	}
	if len(stages) == 0 {
		if info, err := b.mount.Mounted(stagingPath); err != nil {
			return err
		} else if info != nil {
			return fmt.Errorf("%s has %s mounted, not volume %s: %w", stagingPath, info.Source, id, backend.ErrInvalid)
		}
	}
	for _, path := range stages {
		if err := b.mount.Unmount(path); err != nil {
			return fmt.Errorf("unstage %s: %w", id, err)
		}
	}
	failpoint.Hit("local.native.unstage-unmounted")
	if stagingPath == b.stagingPath(id, "") {
		_ = os.Remove(stagingPath) // our own directory
	}
	return nil
}

// nativeStats reports the volume's own usage and limit from its qgroup:
// statfs inside a subvolume shows the whole pool.
func (b *Backend) nativeStats(ctx context.Context, v *backend.Volume, path string) (*backend.Stats, error) {
	users, err := b.nativeUsers(v.ID)
	if err != nil {
		return nil, err
	}
	if _, ok := users[path]; !ok {
		return nil, fmt.Errorf("volume %s is not at %s: %w", v.ID, path, backend.ErrNotFound)
	}
	used, limit, err := subvolumeUsage(ctx, b.pool.subvol(v.ID))
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		limit = v.Size
	}
	avail := max(limit-used, 0)
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err == nil {
		avail = min(avail, int64(st.Bavail)*st.Bsize) // the pool may run out first
	}
	return &backend.Stats{TotalBytes: limit, UsedBytes: used, AvailBytes: avail}, nil
}

// expandNative raises the limit if the pool has room for the difference.
func (b *Backend) expandNative(v *backend.Volume, size int64) error {
	return b.grow(v, size, func() error { return limitSubvolume(b.pool.subvol(v.ID), size) })
}

// nativeHealth checks that the subvolume is there.
func (b *Backend) nativeHealth(h *backend.Health, id string) {
	sub := b.pool.subvol(id)
	switch ok, err := isSubvolume(sub); {
	case err != nil:
		addProblem(h, backend.Inaccessible, "the subvolume %s cannot be read: %v", sub, err)
	case !ok:
		addProblem(h, backend.DataLoss, "the subvolume %s is missing", sub)
	}
}

// nativeVolumeAt names the native volume bound at the mount info, or "".
// The mount's root (relative to its filesystem, so the same in every mount
// namespace) nominates the volume; identity decides.
func (b *Backend) nativeVolumeAt(path string, info *mount.Info) (string, error) {
	if info.FSType != "btrfs" || filepath.Base(info.Root) != subvolName {
		return "", nil
	}
	id := filepath.Base(filepath.Dir(info.Root))
	if checkID(id) != nil {
		return "", nil
	}
	v, err := b.pool.readVolume(id)
	if err != nil || !isNative(v) {
		return "", nil
	}
	if ok, err := b.nativeAt(path, id); err != nil || !ok {
		return "", nil
	}
	return id, nil
}
