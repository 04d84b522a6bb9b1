package local

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// newBgRig is a rig whose backend formats in the background after create.
func newBgRig(t *testing.T) *rig {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	b, err := New(filepath.Join(dir, "pool"), "node-a", FormatOnCreate(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &rig{t: t, dir: dir, b: b}
}

func (r *rig) jobs() int {
	r.b.bgMu.Lock()
	defer r.b.bgMu.Unlock()
	return len(r.b.bgJobs)
}

// After CreateVolume alone the image holds the filesystem, the mark is
// cleared and no loop device is left; the stage then only mounts.
func TestBackgroundFormatAfterCreate(t *testing.T) {
	r := newBgRig(t)
	ctx := context.Background()
	for _, fs := range []string{"ext4", "xfs"} {
		v := r.create("bg-"+fs, 300*MiB, fs, false)
		r.must(r.b.waitFormat(ctx, v.ID))
		image := r.b.pool.image(v.ID)
		if got, err := r.b.mount.DiskFormat(image); err != nil || got != fs {
			t.Fatalf("%s: image holds %q (%v) before any stage", fs, got, err)
		}
		if dev, err := loop.Find(image); err != nil || dev != "" {
			t.Fatalf("%s: loop device %q (%v) left after the format", fs, dev, err)
		}
		got, err := r.b.GetVolume(ctx, v.ID, nil)
		r.must(err)
		if got.Formatting || !got.Fresh {
			t.Fatalf("%s: after the format: formatting %v, fresh %v", fs, got.Formatting, got.Fresh)
		}
		r.must(r.stage(v, false))
		if got, err = r.b.GetVolume(ctx, v.ID, nil); err != nil || got.Fresh {
			t.Fatalf("%s: still fresh once mounted (%v)", fs, err)
		}
		if fsTypeAt(t, r.staging(v.ID)) != fs {
			t.Fatalf("%s: staged filesystem is not %s", fs, fs)
		}
		r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))
		r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	}
	testutil.CheckClean(t, r.dir)
}

// A stage (and an attach) that comes while the format runs waits for it
// and succeeds; so do several at once.
func TestStageWaitsForBackgroundFormat(t *testing.T) {
	r := newBgRig(t)
	ctx := context.Background()
	const n = 4
	vols := make([]*backend.Volume, n)
	for i := range vols {
		vols[i] = r.create("race-"+string(rune('a'+i)), 300*MiB, "xfs", false)
	}
	errs := make(chan error, n)
	for _, v := range vols {
		go func() {
			if err := r.b.Attach(ctx, v.ID, "node-a", false, 0); err != nil {
				errs <- err
				return
			}
			errs <- r.stage(v, false)
		}()
	}
	for range vols {
		r.must(<-errs)
	}
	for _, v := range vols {
		if fsTypeAt(t, r.staging(v.ID)) != "xfs" {
			t.Fatalf("%s: not xfs", v.ID)
		}
		got, err := r.b.GetVolume(ctx, v.ID, nil)
		r.must(err)
		if len(got.AttachedTo) != 1 || got.Formatting {
			t.Fatalf("%s: metadata after the race: attached %v, formatting %v", v.ID, got.AttachedTo, got.Formatting)
		}
		r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))
		r.must(r.b.Detach(ctx, v.ID, "node-a"))
		r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	}
	testutil.CheckClean(t, r.dir)
}

// DeleteVolume right after create stops the format and leaves nothing:
// no loop device, no volume.
func TestDeleteDuringBackgroundFormat(t *testing.T) {
	r := newBgRig(t)
	ctx := context.Background()
	for i := range 4 {
		v := r.create("gone-"+string(rune('a'+i)), 300*MiB, "xfs", false)
		r.must(r.b.DeleteVolume(ctx, v.ID, nil))
		if _, err := r.b.GetVolume(ctx, v.ID, nil); err == nil {
			t.Fatalf("%s still there", v.ID)
		}
	}
	if n := r.jobs(); n != 0 {
		t.Fatalf("%d formats still registered", n)
	}
	testutil.CheckClean(t, r.dir)
}

// Raw block volumes and copies are not formatted ahead: one holds no
// filesystem of ours, the other holds its source's.
func TestNoBackgroundFormatForBlockOrCopies(t *testing.T) {
	r := newBgRig(t)
	ctx := context.Background()
	blk := r.create("raw", 64*MiB, "", true)
	if n := r.jobs(); n != 0 {
		t.Fatalf("a raw block volume started %d formats", n)
	}
	src := r.create("src", 64*MiB, "ext4", false)
	r.must(r.b.waitFormat(ctx, src.ID))
	clone, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "clone", MinSize: 64 * MiB, FsType: "ext4", SourceVolume: src.ID})
	r.must(err)
	if n := r.jobs(); n != 0 {
		t.Fatalf("a clone started %d formats", n)
	}
	for _, v := range []*backend.Volume{blk, src, clone} {
		r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	}
	testutil.CheckClean(t, r.dir)
}

// Close stops a format in flight and detaches its device; a format cut
// short (by Close, or by a kill: the same mark) is redone by the next
// stage of a new backend on the pool.
func TestCloseDuringBackgroundFormat(t *testing.T) {
	r := newBgRig(t)
	ctx := context.Background()
	v := r.create("closed", 300*MiB, "xfs", false)
	// Let it reach mkfs, as a kill would find it, when the machine allows.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := r.b.GetVolume(ctx, v.ID, nil); err == nil && got.Formatting {
			t.Log("closing with the mark set")
			break
		}
		time.Sleep(time.Millisecond)
	}
	r.must(r.b.Close())
	if dev, err := loop.Find(r.b.pool.image(v.ID)); err != nil || dev != "" {
		t.Fatalf("loop device %q (%v) left after Close", dev, err)
	}
	again, err := New(r.b.pool.dir, "node-a", FormatOnCreate(true))
	r.must(err)
	defer again.Close()
	r.b = again
	r.must(r.stage(v, false))
	if fsTypeAt(t, r.staging(v.ID)) != "xfs" {
		t.Fatal("not xfs after the redo")
	}
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	testutil.CheckClean(t, r.dir)
}

// With delete in the background the volume is gone when DeleteVolume
// returns; its directory leaves .trash soon after, and Close waits for
// that.
func TestDeleteInBackground(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	b, err := New(filepath.Join(dir, "pool"), "node-a", FormatOnCreate(true), DeleteInBackground(true))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dir: dir, b: b}
	ctx := context.Background()
	trash := filepath.Join(b.pool.dir, trashDir)
	for i, last := range []bool{false, true} {
		v := r.create("async-"+string(rune('a'+i)), 64*MiB, "ext4", false)
		r.must(r.stage(v, false))
		r.must(os.WriteFile(filepath.Join(r.staging(v.ID), "data"), make([]byte, 8<<20), 0o600))
		r.must(b.Unstage(ctx, v.ID, r.staging(v.ID)))
		r.must(b.DeleteVolume(ctx, v.ID, nil))
		if _, err := b.GetVolume(ctx, v.ID, nil); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("volume after delete: %v", err)
		}
		if last {
			r.must(b.Close()) // waits for the removal
		} else if _, err := b.waitRemovals(ctx); err != nil {
			t.Fatal(err)
		}
		if entries, err := os.ReadDir(trash); err != nil || len(entries) != 0 {
			t.Fatalf(".trash after the removal: %v %v", entries, err)
		}
	}
	testutil.CheckClean(t, dir)
}

// A create that finds too little room because a deleted volume's blocks
// are not reclaimed yet waits for that removal and succeeds. The removal
// is staged by hand, so the space is surely held when the create starts.
func TestCreateWaitsForRemovals(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	at := ext4Pool(t, dir, 256*MiB)
	b, err := New(at, "node-a", DeleteInBackground(true))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	before, err := b.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A deleted volume's image, its blocks still allocated, and its removal.
	gone := filepath.Join(b.pool.dir, trashDir, "vol-gone.1")
	if err := os.Mkdir(gone, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(gone, imageFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, before/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan struct{})
	b.bgMu.Lock()
	b.removals[gone] = done
	b.bgMu.Unlock()
	go func() {
		time.Sleep(200 * time.Millisecond)
		_ = removeTree(gone)
		unix.Sync()
		b.bgMu.Lock()
		delete(b.removals, gone)
		b.bgMu.Unlock()
		close(done)
	}()
	if free, err := b.Capacity(ctx); err != nil || free > before*3/4 {
		t.Fatalf("capacity while the removal is pending: %d (%v), of %d", free, err, before)
	}
	start := time.Now()
	size := before * 3 / 4 / MiB * MiB
	v, err := b.CreateVolume(ctx, &backend.CreateRequest{Name: "after", MinSize: size, MaxSize: size, Block: true})
	if err != nil {
		t.Fatalf("create after the removal: %v", err)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatal("the create did not wait for the removal")
	}
	if err := b.DeleteVolume(ctx, v.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.waitRemovals(ctx); err != nil {
		t.Fatal(err)
	}
}

// ext4Pool mounts a fresh ext4 of size bytes on a loop device at dir/pool.
func ext4Pool(t *testing.T, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "pool.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	dev, err := loop.Attach(img, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := filepath.Join(dir, "pool")
	if err := os.MkdirAll(at, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, at, "ext4", 0, ""); err != nil {
		_ = loop.DetachImage(img)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(at, 0)
		_ = loop.DetachImage(img)
	})
	return at
}
