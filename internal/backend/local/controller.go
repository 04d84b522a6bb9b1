package local

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

const (
	MiB = int64(1) << 20
	GiB = int64(1) << 30

	// DefaultSize is what a volume gets when the request names no size.
	DefaultSize = GiB
)

// minSize is the smallest volume each filesystem's mkfs accepts.
var minSize = map[string]int64{
	"ext4":  8 * MiB,
	"ext3":  8 * MiB,
	"xfs":   300 * MiB,
	"btrfs": 128 * MiB,
	"":      4096, // raw block
}

// Backend is the local disk-image backend.
type Backend struct {
	pool  *pool
	node  string
	mount *mount.Mounter

	// spaceMu makes "is there room?" and "take the room" one step, so two
	// concurrent creates cannot both spend the last free gigabyte. It is
	// held only for a statfs and a truncate.
	spaceMu sync.Mutex
	// attachMu makes counting a node's attachments and adding one atomic.
	attachMu sync.Mutex
	// formatSem bounds concurrent mkfs runs, which each take memory and a core.
	formatSem chan struct{}
}

// New opens (or creates) the pool at dir for the node named node.
func New(dir, node string) (*Backend, error) {
	p, err := openPool(dir)
	if err != nil {
		return nil, err
	}
	return &Backend{
		pool:      p,
		node:      node,
		mount:     mount.New(),
		formatSem: make(chan struct{}, 8),
	}, nil
}

// Dir returns the pool's resolved path.
func (b *Backend) Dir() string { return b.pool.dir }

// CreateVolume makes a sparse image of the asked size, or returns the volume
// of the same name when its properties fit the request.
func (b *Backend) CreateVolume(ctx context.Context, req *backend.CreateRequest) (*backend.Volume, error) {
	fsType := req.FsType
	if req.Block {
		fsType = ""
	} else if fsType == "" {
		fsType = "ext4"
	}
	if !req.Block && !mount.Supported(fsType) {
		return nil, fmt.Errorf("filesystem %q: use ext4, xfs or btrfs: %w", fsType, backend.ErrInvalid)
	}
	size, err := chooseSize(req.MinSize, req.MaxSize, minSize[fsType])
	if err != nil {
		return nil, err
	}
	id := volumeID(req.Name)
	if v, err := b.pool.readVolume(id); err == nil {
		if v.Name != req.Name || v.Size < req.MinSize || (req.MaxSize > 0 && v.Size > req.MaxSize) ||
			v.Block != req.Block || v.FsType != fsType || !maps.Equal(v.Parameters, req.Parameters) {
			return nil, fmt.Errorf("volume %q: %w", req.Name, backend.ErrAlreadyExists)
		}
		return v, nil
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, err
	}

	v := &backend.Volume{
		ID: id, Name: req.Name, Size: size, FsType: fsType, Block: req.Block,
		Node: b.node, Parameters: req.Parameters, Created: time.Now().UTC(),
	}
	tmp := filepath.Join(b.pool.dir, tmpDir, id+"."+randomSuffix())
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	defer os.RemoveAll(tmp) // a no-op once the rename below succeeded
	if err := b.reserve(filepath.Join(tmp, imageFile), size); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	if err := writeVolume(tmp, v); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	if err := os.Rename(tmp, b.pool.volumeDir(id)); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	if err := syncDir(filepath.Join(b.pool.dir, volumesDir)); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	return v, nil
}

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
	for _, align := range []int64{MiB, 4096, 512} {
		size := (required + align - 1) / align * align
		if limit == 0 || size <= limit {
			return size, nil
		}
	}
	return 0, fmt.Errorf("no size between %d and %d bytes fits (the minimum is %d, in 512-byte sectors): %w",
		required, limit, floor, backend.ErrOutOfRange)
}

// reserve makes the sparse image if the pool can hold all of it. Images are
// sparse, but the space they may still grow into is counted as taken, so
// the pool never promises more than its disk has: a full volume gets ENOSPC
// inside itself, never an I/O error from an overcommitted host.
func (b *Backend) reserve(path string, size int64) error {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	free, err := b.capacity()
	if err != nil {
		return err
	}
	if size > free {
		return fmt.Errorf("%d bytes asked, %d free in the pool: %w", size, free, backend.ErrNoSpace)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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
	return max(free-promised, 0), nil
}

// promised sums what the images may still grow by: their sizes less what
// they already occupy on disk.
func (b *Backend) promised() (int64, error) {
	var total int64
	err := b.walkImages(func(path string) error {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil // deleted meanwhile
			}
			return fmt.Errorf("stat %s: %w", path, err)
		}
		total += max(st.Size-st.Blocks*512, 0)
		return nil
	})
	return total, err
}

func (b *Backend) walkImages(fn func(path string) error) error {
	for _, d := range []string{volumesDir, tmpDir} {
		entries, err := os.ReadDir(filepath.Join(b.pool.dir, d))
		if err != nil {
			return fmt.Errorf("list pool: %w", err)
		}
		for _, e := range entries {
			if err := fn(filepath.Join(b.pool.dir, d, e.Name(), imageFile)); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteVolume removes the volume's directory. A volume still attached to a
// loop device (staged) or to a node is in use and stays.
func (b *Backend) DeleteVolume(ctx context.Context, id string) error {
	v, err := b.pool.readVolume(id)
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if dev, err := loop.Find(b.pool.image(id)); err != nil {
		return err
	} else if dev != "" {
		return fmt.Errorf("volume %s is staged on %s: %w", id, dev, backend.ErrInUse)
	}
	if len(v.AttachedTo) > 0 {
		return fmt.Errorf("volume %s is attached to %v: %w", id, v.AttachedTo, backend.ErrInUse)
	}
	trash := filepath.Join(b.pool.dir, trashDir, id+"."+randomSuffix())
	if err := os.Rename(b.pool.volumeDir(id), trash); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	if err := syncDir(filepath.Join(b.pool.dir, volumesDir)); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	return nil
}

// GetVolume returns one volume's metadata.
func (b *Backend) GetVolume(ctx context.Context, id string) (*backend.Volume, error) {
	return b.pool.readVolume(id)
}

// ListVolumes returns every volume, sorted by ID.
func (b *Backend) ListVolumes(ctx context.Context) ([]*backend.Volume, error) {
	entries, err := os.ReadDir(filepath.Join(b.pool.dir, volumesDir))
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := make([]*backend.Volume, 0, len(entries))
	for _, e := range entries {
		v, err := b.pool.readVolume(e.Name())
		if errors.Is(err, backend.ErrNotFound) {
			continue // deleted while we listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Attach records that node uses the volume. A disk image can only be
// attached on the node whose pool holds it.
func (b *Backend) Attach(ctx context.Context, id, node string, maxPerNode int) error {
	b.attachMu.Lock()
	defer b.attachMu.Unlock()
	v, err := b.pool.readVolume(id)
	if err != nil {
		return err
	}
	if node != b.node {
		return fmt.Errorf("node %q: volume %s lives on node %q: %w", node, id, b.node, backend.ErrNotFound)
	}
	if slices.Contains(v.AttachedTo, node) {
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
	return writeVolume(b.pool.volumeDir(id), v)
}

// Detach forgets that node uses the volume.
func (b *Backend) Detach(ctx context.Context, id, node string) error {
	b.attachMu.Lock()
	defer b.attachMu.Unlock()
	v, err := b.pool.readVolume(id)
	if err != nil {
		return err
	}
	i := slices.Index(v.AttachedTo, node)
	if i < 0 {
		return nil
	}
	v.AttachedTo = slices.Delete(v.AttachedTo, i, i+1)
	return writeVolume(b.pool.volumeDir(id), v)
}
