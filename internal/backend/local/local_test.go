package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/internal/testutil"
)

// rig is a pool in a temporary directory with a staging and target path per
// volume, torn down (and checked clean) when the test ends.
type rig struct {
	t   testing.TB
	dir string
	b   *Backend
}

func newRig(t *testing.T) *rig {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	b, err := New(filepath.Join(dir, "pool"), "node-a")
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, dir: dir, b: b}
}

func (r *rig) staging(id string) string { return filepath.Join(r.dir, "staging", id) }
func (r *rig) target(id string) string  { return filepath.Join(r.dir, "pods", id, "mount") }

func (r *rig) create(name string, size int64, fsType string, block bool) *backend.Volume {
	r.t.Helper()
	v, err := r.b.CreateVolume(context.Background(), &backend.CreateRequest{Name: name, MinSize: size, FsType: fsType, Block: block})
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

func (r *rig) stage(v *backend.Volume, block bool) error {
	return r.b.Stage(context.Background(), &backend.StageRequest{ID: v.ID, StagingPath: r.staging(v.ID), Block: block, FsType: v.FsType})
}

func (r *rig) publish(v *backend.Volume, block, ro bool) error {
	return r.b.Publish(context.Background(), &backend.PublishRequest{ID: v.ID, StagingPath: r.staging(v.ID), TargetPath: r.target(v.ID), Block: block, ReadOnly: ro})
}

func (r *rig) must(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

// down unpublishes, unstages and deletes, then checks nothing is left.
func (r *rig) down(v *backend.Volume) {
	r.t.Helper()
	ctx := context.Background()
	r.must(r.b.Unpublish(ctx, v.ID, r.target(v.ID)))
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	if _, err := os.Stat(r.target(v.ID)); !errors.Is(err, os.ErrNotExist) {
		r.t.Errorf("target %s still exists: %v", r.target(v.ID), err)
	}
}

func TestFilesystemLifecycle(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs", "btrfs"} {
		t.Run(fs, func(t *testing.T) {
			r := newRig(t)
			v := r.create("vol-"+fs, 512*MiB, fs, false)
			r.must(r.stage(v, false))
			r.must(r.stage(v, false)) // idempotent
			r.must(r.publish(v, false, false))
			r.must(r.publish(v, false, false)) // idempotent

			data := []byte("hello from " + fs)
			file := filepath.Join(r.target(v.ID), "hello.txt")
			r.must(os.WriteFile(file, data, 0o644))
			got, err := os.ReadFile(filepath.Join(r.staging(v.ID), "hello.txt"))
			r.must(err)
			if !bytes.Equal(got, data) {
				t.Fatalf("read back %q", got)
			}
			var st unix.Statfs_t
			r.must(unix.Statfs(r.target(v.ID), &st))
			size := int64(st.Blocks) * st.Bsize
			if size > v.Size || size < v.Size*8/10 {
				t.Errorf("filesystem is %d bytes, volume %d", size, v.Size)
			}
			if got := fsTypeAt(t, r.target(v.ID)); got != fs {
				t.Errorf("mounted as %s", got)
			}
			vs, err := r.b.Stats(context.Background(), v.ID, r.target(v.ID))
			r.must(err)
			if vs.Block || vs.TotalBytes != size || vs.UsedBytes <= 0 || vs.AvailBytes <= 0 || (fs != "btrfs" && vs.TotalInodes <= 0) {
				t.Errorf("stats %+v, want the volume's own filesystem (%d bytes)", vs, size)
			}
			if _, err := r.b.Stats(context.Background(), v.ID, r.dir); !errors.Is(err, backend.ErrNotFound) {
				t.Errorf("stats where the volume is not: %v", err)
			}
			r.down(v)
			testutil.CheckClean(t, r.dir)
		})
	}
}

func fsTypeAt(t *testing.T, path string) string {
	info, err := mount.New().Mounted(path)
	if err != nil || info == nil {
		t.Fatalf("%s is not mounted: %v", path, err)
	}
	return info.FSType
}

// A volume holds its size and no more: writing past it fails inside the
// volume, and the host's pool does not grow beyond the image.
func TestCapacityIsEnforced(t *testing.T) {
	r := newRig(t)
	v := r.create("small", 32*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	f, err := os.Create(filepath.Join(r.target(v.ID), "big"))
	r.must(err)
	chunk := bytes.Repeat([]byte{0xab}, 1<<20)
	var werr error
	for i := 0; i < 64 && werr == nil; i++ {
		_, werr = f.Write(chunk)
		if werr == nil {
			werr = f.Sync()
		}
	}
	f.Close()
	if !errors.Is(werr, unix.ENOSPC) {
		t.Fatalf("writing 64 MiB into a 32 MiB volume: got %v, want ENOSPC", werr)
	}
	var st unix.Stat_t
	r.must(unix.Stat(r.b.pool.image(v.ID), &st))
	if st.Size != 32*MiB || st.Blocks*512 > 33*MiB {
		t.Errorf("image is %d bytes, %d allocated; want at most 32 MiB", st.Size, st.Blocks*512)
	}
	r.must(os.Remove(filepath.Join(r.target(v.ID), "big")))
	r.down(v)
	testutil.CheckClean(t, r.dir)
}

// Data survives an unstage and a restage; a different filesystem, or bytes
// blkid does not recognise, are never formatted over.
func TestNeverFormatsOverData(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("keep", 64*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(os.WriteFile(filepath.Join(r.staging(v.ID), "precious"), []byte("data"), 0o644))
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))

	err := r.b.Stage(ctx, &backend.StageRequest{ID: v.ID, StagingPath: r.staging(v.ID), FsType: "xfs"})
	if !errors.Is(err, backend.ErrPrecondition) {
		t.Fatalf("staging ext4 data as xfs: got %v, want a precondition failure", err)
	}
	r.must(r.stage(v, false))
	if got, err := os.ReadFile(filepath.Join(r.staging(v.ID), "precious")); err != nil || string(got) != "data" {
		t.Fatalf("data lost across restage: %q %v", got, err)
	}
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))

	// Raw bytes no tool recognises: blkid says "blank", the image says otherwise.
	raw := r.create("raw", 64*MiB, "ext4", false)
	r.must(r.stage(raw, true))
	dev, err := loop.Find(r.b.pool.image(raw.ID))
	r.must(err)
	junk := bytes.Repeat([]byte("not a filesystem"), 4096)
	r.must(writeAt(dev, junk, 8<<20))
	r.must(r.b.Unstage(ctx, raw.ID, r.staging(raw.ID)))
	err = r.stage(raw, false)
	if !errors.Is(err, backend.ErrPrecondition) {
		t.Fatalf("staging unrecognised data as ext4: got %v, want a precondition failure", err)
	}
	got := make([]byte, len(junk))
	img, err := os.Open(r.b.pool.image(raw.ID))
	r.must(err)
	_, err = img.ReadAt(got, 8<<20)
	img.Close()
	r.must(err)
	if !bytes.Equal(got, junk) {
		t.Fatal("unrecognised data was overwritten")
	}
	for _, vol := range []*backend.Volume{v, raw} {
		r.must(r.b.DeleteVolume(ctx, vol.ID, nil))
	}
	testutil.CheckClean(t, r.dir)
}

func writeAt(path string, data []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		return err
	}
	return f.Sync()
}

// A restarted driver keeps no memory; it finds staged and published volumes
// from the kernel and carries on with them.
func TestRestartCarriesOn(t *testing.T) {
	r := newRig(t)
	v := r.create("survivor", 64*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))

	again, err := New(r.b.pool.dir, "node-a")
	r.must(err)
	r.b = again
	got, err := again.GetVolume(context.Background(), v.ID, nil)
	r.must(err)
	if got.Size != v.Size || got.Name != v.Name {
		t.Fatalf("metadata after restart: %+v", got)
	}
	if err := again.DeleteVolume(context.Background(), v.ID, nil); !errors.Is(err, backend.ErrInUse) {
		t.Fatalf("deleting a staged volume after restart: got %v, want in use", err)
	}
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	r.down(v)
	testutil.CheckClean(t, r.dir)
}

func TestBlockVolume(t *testing.T) {
	r := newRig(t)
	v := r.create("raw-block", 16*MiB, "", true)
	r.must(r.stage(v, true))
	r.must(r.publish(v, true, false))
	r.must(r.publish(v, true, false))
	var st unix.Stat_t
	r.must(unix.Stat(r.target(v.ID), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("target mode %o is not a block device", st.Mode)
	}
	r.must(writeAt(r.target(v.ID), []byte("block data"), 4096))
	st2, err := r.b.Stats(context.Background(), v.ID, r.target(v.ID))
	r.must(err)
	if !st2.Block || st2.TotalBytes != v.Size {
		t.Errorf("block stats %+v, want the device size %d", st2, v.Size)
	}
	r.down(v)
	testutil.CheckClean(t, r.dir)
}

func TestReadOnlyPublishAndMountFlags(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("ro", 64*MiB, "ext4", false)
	r.must(r.b.Stage(ctx, &backend.StageRequest{ID: v.ID, StagingPath: r.staging(v.ID), MountFlags: []string{"noatime"}}))
	r.must(r.publish(v, false, true))
	err := os.WriteFile(filepath.Join(r.target(v.ID), "x"), nil, 0o644)
	if !errors.Is(err, unix.EROFS) {
		t.Errorf("write to a read-only publish: got %v, want EROFS", err)
	}
	if err := r.publish(v, false, false); !errors.Is(err, backend.ErrAlreadyExists) {
		t.Errorf("republish read-write over read-only: got %v, want already exists", err)
	}
	info, err := r.b.mount.Mounted(r.staging(v.ID))
	r.must(err)
	if !strings.Contains(info.Options, "noatime") {
		t.Errorf("mount flag noatime not honoured: %s", info.Options)
	}
	r.down(v)
	testutil.CheckClean(t, r.dir)
}

// Many volumes through their whole life at once: nothing fails, nothing is
// left behind, and no operation waits on another volume's lock.
func TestConcurrentVolumes(t *testing.T) {
	r := newRig(t)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- r.cycle(fmt.Sprintf("par-%d", i))
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	vols, err := r.b.ListVolumes(context.Background())
	r.must(err)
	if len(vols) != 0 {
		t.Errorf("%d volumes left", len(vols))
	}
	testutil.CheckClean(t, r.dir)
}

func (r *rig) cycle(name string) error {
	ctx := context.Background()
	v, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: name, MinSize: 64 * MiB})
	if err != nil {
		return err
	}
	steps := []func() error{
		func() error { return r.stage(v, false) },
		func() error { return r.publish(v, false, false) },
		func() error { return os.WriteFile(filepath.Join(r.target(v.ID), "f"), []byte(name), 0o644) },
		func() error { return r.b.Unpublish(ctx, v.ID, r.target(v.ID)) },
		func() error { return r.b.Unstage(ctx, v.ID, r.staging(v.ID)) },
		func() error { return r.b.DeleteVolume(ctx, v.ID, nil) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("%s step %d: %w", name, i, err)
		}
	}
	return nil
}

func TestCreateIsIdempotentAndBounded(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a := r.create("same", 64*MiB, "ext4", false)
	b := r.create("same", 64*MiB, "ext4", false)
	if a.ID != b.ID {
		t.Fatalf("repeat create gave %s then %s", a.ID, b.ID)
	}
	_, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "same", MinSize: 128 * MiB})
	if !errors.Is(err, backend.ErrAlreadyExists) {
		t.Errorf("same name, larger size: got %v", err)
	}
	_, err = r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "odd", MinSize: 64 * MiB, Parameters: map[string]string{"color": "blue"}})
	if !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("an unknown parameter: got %v, want invalid", err)
	}
	free, err := r.b.Capacity(ctx)
	r.must(err)
	_, err = r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "huge", MinSize: free + GiB})
	if !errors.Is(err, backend.ErrNoSpace) {
		t.Errorf("volume larger than the pool: got %v, want no space", err)
	}
	// A reservation counts: the new volume's whole size is promised even
	// though its image is sparse. (Compared through promised, not free
	// space, which other processes change under the test.)
	before, err := r.b.promised()
	r.must(err)
	r.create("reserve", GiB, "ext4", false)
	after, err := r.b.promised()
	r.must(err)
	if after-before != GiB {
		t.Errorf("promised grew by %d after a 1 GiB volume", after-before)
	}
	if _, err := r.b.GetVolume(ctx, "../../etc", nil); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("ID with a path: got %v, want invalid", err)
	}
}

// A crash halfway through a create or delete leaves a directory in .tmp or
// .trash; opening the pool clears it.
func TestOpenClearsCrashLeftovers(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	_, err := New(dir, "n")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{tmpDir, trashDir} {
		if err := os.MkdirAll(filepath.Join(dir, d, "vol-x.abc"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(dir, "n"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{tmpDir, trashDir} {
		entries, _ := os.ReadDir(filepath.Join(dir, d))
		if len(entries) != 0 {
			t.Errorf("%s not cleared: %v", d, entries)
		}
	}
}

// A driver that died between attaching the loop device and mounting it
// leaves a device no one uses: the next start, or a DeleteVolume, lets it go.
func TestOrphanDeviceIsReleased(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("orphan", 32*MiB, "ext4", false)
	if _, err := loop.Attach(r.b.pool.image(v.ID), loop.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(r.b.pool.dir, "node-a"); err != nil { // the restart
		t.Fatal(err)
	}
	if dev, _ := loop.Find(r.b.pool.image(v.ID)); dev != "" {
		t.Errorf("restart kept the orphan %s", dev)
	}
	if _, err := loop.Attach(r.b.pool.image(v.ID), loop.Options{}); err != nil {
		t.Fatal(err)
	}
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	testutil.CheckClean(t, r.dir)
}

// A first format cut short leaves written blocks and no signature. The
// mark in the metadata says only mkfs wrote there, so the next stage wipes
// and formats; without the mark the same bytes would be refused.
func TestInterruptedFirstFormatIsRedone(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("half-formatted", 64*MiB, "ext4", false)
	r.must(writeAt(r.b.pool.image(v.ID), bytes.Repeat([]byte{0x5a}, 1<<20), 0))
	if err := r.stage(v, false); !errors.Is(err, backend.ErrPrecondition) {
		t.Fatalf("unknown bytes, no mark: %v", err)
	}
	v.Formatting = true // as formatIfBlank leaves it when mkfs is killed
	r.must(writeVolume(r.b.pool.volumeDir(v.ID), v))
	r.must(r.stage(v, false))
	got, err := r.b.GetVolume(ctx, v.ID, nil)
	r.must(err)
	if got.Formatting {
		t.Error("the mark outlived the format")
	}
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	testutil.CheckClean(t, r.dir)
}

// Unstaging a volume a pod still uses is refused, for filesystem and raw
// block volumes alike, and nothing is torn down.
func TestUnstageWhilePublishedIsRefused(t *testing.T) {
	for _, block := range []bool{false, true} {
		r := newRig(t)
		ctx := context.Background()
		v := r.create(fmt.Sprintf("busy-%v", block), 16*MiB, "ext4", block)
		r.must(r.stage(v, block))
		r.must(r.publish(v, block, false))
		if err := r.b.Unstage(ctx, v.ID, r.staging(v.ID)); !errors.Is(err, backend.ErrPrecondition) {
			t.Errorf("block=%v: unstage while published: %v", block, err)
		}
		if dev, _ := r.b.Device(v.ID); dev == "" {
			t.Errorf("block=%v: the refused unstage detached the device", block)
		}
		r.down(v)
		testutil.CheckClean(t, r.dir)
	}
}

// The directories the driver makes for staging and publishing (when the CO
// has not made them: kubelet makes the staging directory itself, 0750) are
// root's alone, as README says.
func TestStagingDirectoriesArePrivate(t *testing.T) {
	r := newRig(t)
	v := r.create("private", 16*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	for _, dir := range []string{filepath.Dir(r.staging(v.ID)), filepath.Dir(r.target(v.ID))} {
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %o, want 700", dir, st.Mode().Perm())
		}
	}
	r.down(v)
	testutil.CheckClean(t, r.dir)
}
