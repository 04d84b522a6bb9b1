package local

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

func TestParseWarmPool(t *testing.T) {
	got, err := ParseWarmPool("1Gi:ext4:2, 300Mi:xfs:1")
	if err != nil || len(got) != 2 || got[0] != (WarmSpec{GiB, "ext4", 2}) || got[1] != (WarmSpec{300 * MiB, "xfs", 1}) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if got, err := ParseWarmPool(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %+v, %v", got, err)
	}
	for _, bad := range []string{"1Gi:ext4", "x:ext4:1", "1Gi:ntfs:1", "1Gi:ext4:0", "1Gi:ext4:many", "-1Gi:ext4:1", "1Gi:ext4:1:9"} {
		if _, err := ParseWarmPool(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// The warm pool fills at start, is no one's volume, counts against the
// capacity, hands a create of its size a formatted image (whose stage
// only mounts), refills after, and a half-made warm image is discarded at
// the next start.
func TestWarmPool(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	poolDir := filepath.Join(dir, "pool")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	spec := WarmSpec{Size: 64 * MiB, FsType: "ext4", Count: 2}
	b, err := New(poolDir, "node-a", WarmPool([]WarmSpec{spec}), FormatOnCreate(true))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dir: dir, b: b}
	r.must(b.waitWarm(ctx))
	names, err := b.pool.listWarm()
	r.must(err)
	if len(names) != 2 {
		t.Fatalf("warm images %v, want 2", names)
	}
	for _, n := range names {
		if fs, err := b.mount.DiskFormat(b.pool.warmPath(n)); err != nil || fs != "ext4" {
			t.Errorf("warm image %s holds %q (%v)", n, fs, err)
		}
		if dev, err := loop.Find(b.pool.warmPath(n)); err != nil || dev != "" {
			t.Errorf("warm image %s still on %q (%v)", n, dev, err)
		}
	}
	if vols, err := b.ListVolumes(ctx); err != nil || len(vols) != 0 {
		t.Errorf("ListVolumes shows %d volumes (%v); warm images are no one's", len(vols), err)
	}
	// The images' unwritten part is promised (statfs counts what mkfs
	// wrote), so Capacity offers about 2 x 64 MiB less. (Compared through
	// promised: the pool's filesystem is shared with the machine.)
	promised, err := b.promised()
	r.must(err)
	if promised < 2*64*MiB-16*MiB || promised > 2*64*MiB {
		t.Errorf("promised %d bytes with two 64 MiB warm images and no volume", promised)
	}

	// A create of that size and filesystem takes one.
	v := r.create("warm", 64*MiB, "ext4", false)
	if !v.Fresh || r.jobs() != 0 {
		t.Errorf("created from the warm pool: fresh %v, background formats %d; want fresh and none", v.Fresh, r.jobs())
	}
	if fs, err := b.mount.DiskFormat(b.pool.image(v.ID)); err != nil || fs != "ext4" {
		t.Errorf("the volume holds %q (%v) at once", fs, err)
	}
	// Another size does not.
	other := r.create("other", 65*MiB, "ext4", false)
	if other.Fresh {
		t.Error("a 65 MiB volume took a 64 MiB warm image")
	}
	r.must(b.waitWarm(ctx)) // refilled
	if names, _ := b.pool.listWarm(); len(names) != 2 {
		t.Errorf("after a take: %d warm images, want 2 again", len(names))
	}
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	r.must(os.WriteFile(filepath.Join(r.target(v.ID), "f"), []byte("hello"), 0o600))
	r.down(v)
	r.must(b.DeleteVolume(ctx, other.ID, nil))
	r.must(b.Close())

	// A warm image half made when the process died is in .tmp and goes;
	// with no warm pool asked for, the ready ones go too.
	half := filepath.Join(poolDir, tmpDir, "warm.dead")
	r.must(os.Mkdir(half, 0o700))
	r.must(makeImage(filepath.Join(half, imageFile), 64*MiB))
	b, err = New(poolDir, "node-a")
	r.must(err)
	if _, err := os.Stat(half); !os.IsNotExist(err) {
		t.Errorf("half-made warm image still there: %v", err)
	}
	if names, _ := b.pool.listWarm(); len(names) != 0 {
		t.Errorf("warm images %v kept with no warm pool asked for", names)
	}
	if p, err := b.promised(); err != nil || p != 0 {
		t.Errorf("promised %d (%v) after the warm pool went, want 0", p, err)
	}
	r.must(b.Close())
	testutil.CheckClean(t, dir)
}
