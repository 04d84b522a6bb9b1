package local

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"k8s.io/klog/v2"
	mountutils "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
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
	pool    *pool
	node    string
	mount   *mount.Mounter
	resizer *mountutils.ResizeFs

	// spaceMu makes "is there room?" and "take the room" one step, so two
	// concurrent creates cannot both spend the last free gigabyte. It is
	// held only for a statfs and a truncate.
	spaceMu sync.Mutex
	// reserved is space promised to copies in progress (snapshots, clones).
	reserved int64
	// meta caches parsed metadata for the calls that read every volume.
	meta metaCache
	// attachMu makes counting a node's attachments and adding one atomic.
	attachMu sync.Mutex
	// formatSem bounds concurrent mkfs runs, which each take memory and a core.
	formatSem chan struct{}
	// quotaOn is set once btrfs quotas are known to be on in the pool
	// (native layout).
	quotaMu sync.Mutex
	quotaOn bool

	// formatOnCreate starts a background format after CreateVolume (see
	// bgformat.go); bgJobs are the formats in flight, by volume ID, and
	// bgCtx ends them all at Close.
	formatOnCreate bool
	bgMu           sync.Mutex
	bgJobs         map[string]*formatJob
	// deleteInBackground removes deleted volumes in the background (see
	// trash.go); removals are those in flight, by trash path.
	deleteInBackground bool
	removals           map[string]chan struct{}
	// warmSpecs are the kinds of images kept formatted ahead (warm.go);
	// warmKick wakes the worker that refills them.
	warmSpecs []WarmSpec
	warmKick  chan struct{}
	bgCtx     context.Context
	bgStop    context.CancelFunc
	bgWG      sync.WaitGroup
}

// New opens (or creates) the pool at dir for the node named node, as the
// pool's one long-running owner: it recovers from a crash first (clears
// half-done work, thaws filesystems a dead snapshot left frozen).
//
// Close it to stop its background work.
func New(dir, node string, opts ...Option) (*Backend, error) {
	b, err := Open(dir, node)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(b)
	}
	if err := b.pool.recover(); err != nil {
		return nil, err
	}
	b.thawAll()
	vols, err := b.ListVolumes(context.Background())
	if err != nil {
		return nil, err
	}
	devs, err := loop.Devices() // one pass, not one per volume
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		if err := b.releaseOrphan(v, devs); err != nil {
			return nil, err
		}
	}
	if devs, err = loop.Devices(); err != nil {
		return nil, err
	}
	b.requeueFormats(vols, devs)
	if err := b.startWarm(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Open opens the pool without recovering it, for short-lived processes
// that share a pool with others (each FlexVolume call is one).
func Open(dir, node string) (*Backend, error) {
	p, err := openPool(dir)
	if err != nil {
		return nil, err
	}
	b := &Backend{
		pool:      p,
		node:      node,
		mount:     mount.New(),
		resizer:   mountutils.NewResizeFs(utilexec.New()),
		formatSem: make(chan struct{}, 8),
		bgJobs:    map[string]*formatJob{},
		removals:  map[string]chan struct{}{},
	}
	b.bgCtx, b.bgStop = context.WithCancel(context.Background())
	return b, nil
}

// Capabilities: a disk image can do everything a cloud disk can.
func (b *Backend) Capabilities() backend.Capabilities {
	return backend.Capabilities{NodeLocal: true, Listing: true, Attach: true,
		Snapshots: true, GroupSnapshots: true, Clones: true, Expansion: true,
		Stats: true, Health: true, Block: true, Ephemeral: true, Modify: true}
}

// paramFsType is a StorageClass parameter: the filesystem to format with
// when the claim's capability names none. (The other is paramLayout.)
const paramFsType = "fsType"

// Dir returns the pool's resolved path.
func (b *Backend) Dir() string { return b.pool.dir }

// CreateVolume makes a sparse image of the asked size, or a copy of a
// snapshot or volume, or returns the volume of the same name when its
// properties fit the request.
func (b *Backend) CreateVolume(ctx context.Context, req *backend.CreateRequest) (*backend.Volume, error) {
	for k := range req.Parameters {
		if k != paramFsType && k != paramLayout && k != paramNoDataCow {
			return nil, fmt.Errorf("unknown parameter %q (known: %s, %s, %s): %w", k, paramFsType, paramLayout, paramNoDataCow, backend.ErrInvalid)
		}
	}
	fsType := req.FsType
	if fsType == "" {
		fsType = req.Parameters[paramFsType]
	}
	if req.Block {
		fsType = ""
	} else if fsType == "" {
		fsType = "ext4"
	}
	if !req.Block && !mount.Supported(fsType) {
		return nil, fmt.Errorf("filesystem %q: use ext4, xfs or btrfs: %w", fsType, backend.ErrInvalid)
	}
	src, err := b.source(ctx, req)
	if err != nil {
		return nil, err
	}
	layout, err := b.chooseLayout(req, src)
	if err != nil {
		return nil, err
	}
	if _, err := checkNoDataCow(req.Parameters, layout); err != nil {
		return nil, err
	}
	minimum := minSize[fsType]
	if layout == layoutNative {
		fsType, minimum = "btrfs", MiB // no mkfs: any limit will do
	}
	if src != nil {
		if !req.Block && req.FsType != "" && src.fsType != "" && req.FsType != src.fsType {
			return nil, fmt.Errorf("the source holds %s, not %s: %w", src.fsType, req.FsType, backend.ErrInvalid)
		}
		if src.fsType != "" {
			fsType = src.fsType
		}
		minimum = max(minimum, src.size)
	}
	mutable, err := checkMutable(req.Mutable)
	if err != nil {
		return nil, err
	}
	size, err := chooseSize(req.MinSize, req.MaxSize, minimum)
	if err != nil {
		return nil, err
	}
	id := volumeID(req.Name)
	if v, err := b.pool.readVolume(id); err == nil {
		if v.Name != req.Name || v.Layout != layout || v.Size < req.MinSize || (req.MaxSize > 0 && v.Size > req.MaxSize) ||
			v.Block != req.Block || v.FsType != fsType || !maps.Equal(v.Parameters, req.Parameters) ||
			v.Source != sourceName(req) {
			return nil, fmt.Errorf("volume %q: %w", req.Name, backend.ErrAlreadyExists)
		}
		return v, nil
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, err
	}

	if req.MinSize > 0 && req.MinSize < minimum {
		// Legitimate CSI (capacity_bytes may exceed required_bytes), but a
		// surprise to whoever asked: the PV and the claim show this size.
		reason := "the smallest " + fsType + " filesystem mkfs makes"
		if src != nil && minimum == src.size {
			reason = "the size of its source"
		}
		klog.InfoS("Volume made larger than asked", "name", req.Name, "requiredBytes", req.MinSize,
			"capacityBytes", size, "reason", reason)
	}
	v := &backend.Volume{
		ID: id, Name: req.Name, Size: size, FsType: fsType, Block: req.Block,
		Node: b.node, Parameters: req.Parameters, Created: time.Now().UTC(),
		Source: sourceName(req), Ephemeral: req.Ephemeral, Mutable: mutable,
		Layout: layout,
	}
	tmp := filepath.Join(b.pool.dir, tmpDir, id+"."+randomSuffix())
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	defer removeTree(tmp) // a no-op once the rename below succeeded
	failpoint.Hit("local.create.dir-made")
	// The space is set aside until the volume is in place, where promised
	// counts it.
	release, err := b.reserveSpace(size)
	if errors.Is(err, backend.ErrNoSpace) {
		// Deleted volumes still being removed hold space that is about
		// to be free.
		if waited, werr := b.waitRemovals(ctx); werr == nil && waited {
			release, err = b.reserveSpace(size)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	defer release()
	image := filepath.Join(tmp, imageFile)
	if layout == layoutNative {
		err = makeNative(tmp, src, v)
	} else if src == nil {
		if b.takeWarm(v, image) {
			v.Fresh = true // formatted ahead, never mounted
		} else {
			err = makeImage(image, size)
		}
	} else {
		err = b.copyFrom(src, image, v)
	}
	if err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	failpoint.Hit("local.create.image-made")
	if err := writeNewVolume(tmp, v); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	failpoint.Hit("local.create.meta-written")
	var lock *os.File
	if b.formatOnCreate && wantsBackgroundFormat(v, src) {
		// Locked before the volume appears, so no stage can come between.
		if lock, err = lockDir(tmp); err != nil {
			return nil, fmt.Errorf("create volume %s: %w", id, err)
		}
	}
	if err := os.Rename(tmp, b.pool.volumeDir(id)); err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	failpoint.Hit("local.create.renamed")
	if lock != nil {
		b.startFormat(v, lock, true)
	}
	if err := syncDir(filepath.Join(b.pool.dir, volumesDir)); err != nil {
		return nil, fmt.Errorf("create volume %s: %w", id, err)
	}
	return v, nil
}

// contentSource is what a new volume copies.
type contentSource struct {
	image  string
	subvol string // set when the source is native: a subvolume
	size   int64
	fsType string
	volume *backend.Volume // set when the source is a live volume
}

func sourceName(req *backend.CreateRequest) string {
	switch {
	case req.SourceSnapshot != "":
		return "snapshot/" + req.SourceSnapshot
	case req.SourceVolume != "":
		return "volume/" + req.SourceVolume
	}
	return ""
}

func (b *Backend) source(ctx context.Context, req *backend.CreateRequest) (*contentSource, error) {
	switch {
	case req.SourceSnapshot != "":
		s, err := b.pool.readSnapshot(req.SourceSnapshot)
		if err != nil {
			return nil, err
		}
		c := &contentSource{image: filepath.Join(b.pool.snapshotDir(s.ID), imageFile), size: s.Size, fsType: s.FsType}
		if s.Layout == layoutNative {
			c.image, c.subvol = "", filepath.Join(b.pool.snapshotDir(s.ID), subvolName)
		}
		return c, nil
	case req.SourceVolume != "":
		if err := b.waitFormat(ctx, req.SourceVolume); err != nil {
			return nil, err
		}
		v, err := b.pool.readVolume(req.SourceVolume)
		if err != nil {
			return nil, err
		}
		c := &contentSource{image: b.pool.image(v.ID), size: v.Size, fsType: v.FsType, volume: v}
		if isNative(v) {
			c.image, c.subvol = "", b.pool.subvol(v.ID)
		}
		return c, nil
	}
	return nil, nil
}

// copyFrom fills image from the source, then grows it to v.Size. A live
// source volume is quiesced for the copy, like a snapshot.
func (b *Backend) copyFrom(src *contentSource, image string, v *backend.Volume) (err error) {
	thaw := func() {}
	if src.volume != nil {
		if thaw, err = b.quiesce([]*backend.Volume{src.volume}); err != nil {
			return err
		}
	}
	failpoint.Hit("local.clone.frozen")
	shared, err := cloneImage(src.image, image)
	failpoint.Hit("local.clone.copied")
	thaw()
	if err != nil {
		return err
	}
	if v.Size > src.size {
		if err := os.Truncate(image, v.Size); err != nil {
			return err
		}
		v.ResizePending = !v.Block
	}
	failpoint.Hit("local.clone.grown")
	v.Shared = shared
	if shared && src.volume != nil && !src.volume.Shared {
		src.volume.Shared = true
		return writeVolume(b.pool.volumeDir(src.volume.ID), src.volume)
	}
	return nil
}

// DeleteVolume removes the volume's directory. A volume still attached to a
// loop device (staged) or to a node is in use and stays.
func (b *Backend) DeleteVolume(ctx context.Context, id string, _ backend.Secrets) error {
	// A volume nobody has staged yet need not be formatted: stop, so that
	// its loop device is gone before the checks below.
	if err := b.cancelFormat(ctx, id); err != nil {
		return err
	}
	v, err := b.pool.readVolume(id)
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if isNative(v) {
		// No image, so no loop device can hold it: listing the node's
		// loop devices (a read per device in sysfs, a thousand on a
		// busy node) would be most of the delete.
		if users, err := b.nativeUsers(id); err != nil {
			return err
		} else if len(users) > 0 {
			return fmt.Errorf("volume %s is staged or published at %v: %w", id, keys(users), backend.ErrInUse)
		}
	} else if err := b.imageInUse(v); err != nil {
		return err
	}
	if len(v.AttachedTo) > 0 {
		return fmt.Errorf("volume %s is attached to %v: %w", id, v.AttachedTo, backend.ErrInUse)
	}
	trash := filepath.Join(b.pool.dir, trashDir, id+"."+randomSuffix())
	if err := os.Rename(b.pool.volumeDir(id), trash); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	failpoint.Hit("local.delete.trashed")
	if err := syncDir(filepath.Join(b.pool.dir, volumesDir)); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	if err := b.discard(trash); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	return nil
}

// imageInUse detaches the loop device a cut-short stage left on the
// volume's image, then fails with ErrInUse if a device still holds it.
func (b *Backend) imageInUse(v *backend.Volume) error {
	devs, err := loop.Ending("/" + v.ID + "/" + imageFile)
	if err != nil {
		return err
	}
	if err := b.releaseOrphan(v, devs); err != nil {
		return err
	}
	// By identity: whatever path the kernel shows for a device attached in
	// another mount namespace, an image it still holds is in use.
	if dev, err := loop.Find(b.pool.image(v.ID)); err != nil {
		return err
	} else if dev != "" {
		return fmt.Errorf("volume %s is staged on %s: %w", v.ID, dev, backend.ErrInUse)
	}
	return nil
}

// GetVolume returns one volume's metadata.
func (b *Backend) GetVolume(ctx context.Context, id string, _ backend.Secrets) (*backend.Volume, error) {
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

var _ backend.Backend = (*Backend)(nil)

// releaseOrphan detaches the loop device of a filesystem volume that is not
// mounted anywhere: a staged filesystem volume is always mounted, so such a
// device is what a stage cut short by a crash left. (A raw block volume's
// device is its stage, mounted or not, and stays.) devs is a listing of
// the node's loop devices.
func (b *Backend) releaseOrphan(v *backend.Volume, devs []loop.Device) error {
	if v.Block {
		return nil
	}
	id, err := loop.IdentityOf(b.pool.image(v.ID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, d := range devs {
		if d.Backing.FileID != id {
			continue
		}
		users, err := mount.UsersOf(d.Path)
		if err != nil || len(users) > 0 {
			return err
		}
		if err := loop.Release(d); err != nil {
			return err
		}
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
