package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

func (r *rig) restore(name, source string, size int64, fromVolume bool) *backend.Volume {
	r.t.Helper()
	req := &backend.CreateRequest{Name: name, MinSize: size, SourceSnapshot: source}
	if fromVolume {
		req.SourceSnapshot, req.SourceVolume = "", source
	}
	v, err := r.b.CreateVolume(context.Background(), req)
	r.must(err)
	return v
}

func (r *rig) read(v *backend.Volume, file string) string {
	r.t.Helper()
	data, err := os.ReadFile(filepath.Join(r.target(v.ID), file))
	if errors.Is(err, os.ErrNotExist) {
		return "<none>"
	}
	r.must(err)
	return string(data)
}

// A snapshot holds the data of its instant: later writes to the volume do
// not reach it, and a restore shows exactly what was there.
func TestSnapshotHoldsPointInTime(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs", "btrfs"} {
		t.Run(fs, func(t *testing.T) {
			r := newRig(t)
			ctx := context.Background()
			v := r.create("src-"+fs, 512*MiB, fs, false)
			r.must(r.stage(v, false))
			r.must(r.publish(v, false, false))
			r.must(os.WriteFile(filepath.Join(r.target(v.ID), "a"), []byte("before"), 0o644))

			snap, err := r.b.CreateSnapshot(ctx, "snap-"+fs, v.ID) // while published: frozen for the copy
			r.must(err)
			again, err := r.b.CreateSnapshot(ctx, "snap-"+fs, v.ID)
			r.must(err)
			if again.ID != snap.ID {
				t.Fatalf("repeat snapshot gave another ID")
			}
			if _, err := r.b.CreateSnapshot(ctx, "snap-"+fs, "vol-other"); !errors.Is(err, backend.ErrAlreadyExists) {
				t.Fatalf("same snapshot name, other volume: %v", err)
			}
			r.must(os.WriteFile(filepath.Join(r.target(v.ID), "a"), []byte("after"), 0o644))
			r.must(os.WriteFile(filepath.Join(r.target(v.ID), "b"), []byte("new"), 0o644))

			// Restored while the source is still mounted: xfs and btrfs
			// must cope with the duplicate filesystem UUID.
			restored := r.restore("restored-"+fs, snap.ID, 0, false)
			r.must(r.stage(restored, false))
			r.must(r.publish(restored, false, false))
			if got := r.read(restored, "a"); got != "before" {
				t.Errorf("restored a = %q, want the data at snapshot time", got)
			}
			if got := r.read(restored, "b"); got != "<none>" {
				t.Errorf("restored b = %q: written after the snapshot", got)
			}
			clone := r.restore("clone-"+fs, v.ID, 0, true)
			r.must(r.stage(clone, false))
			r.must(r.publish(clone, false, false))
			if got := r.read(clone, "a"); got != "after" {
				t.Errorf("clone a = %q, want the source's current data", got)
			}

			for _, x := range []*backend.Volume{clone, restored, v} {
				r.down(x)
			}
			// Deleting the volume kept its snapshot.
			if _, err := r.b.GetSnapshot(ctx, snap.ID); err != nil {
				t.Fatalf("snapshot gone with its volume: %v", err)
			}
			r.must(r.b.DeleteSnapshot(ctx, snap.ID))
			r.must(r.b.DeleteSnapshot(ctx, snap.ID)) // idempotent
			testutil.CheckClean(t, r.dir)
		})
	}
}

// A snapshot taken while a writer is busy restores to a filesystem that
// mounts and checks clean: the freeze makes it consistent, not just
// crash-consistent.
func TestSnapshotUnderWriteIsConsistent(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("busy", 256*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 256<<10)
		for i := 0; !stop.Load(); i++ {
			_, _ = rand.Read(buf)
			name := filepath.Join(r.target(v.ID), "f"+string(rune('a'+i%20)))
			_ = os.WriteFile(name, buf, 0o644)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	snap, err := r.b.CreateSnapshot(ctx, "busy-snap", v.ID)
	stop.Store(true)
	wg.Wait()
	r.must(err)

	restored := r.restore("busy-restored", snap.ID, 0, false)
	// Check the restored image before anything mounts it: fsck -n changes
	// nothing and exits 0 only for a clean filesystem.
	out, err := exec.Command("e2fsck", "-fn", r.b.pool.image(restored.ID)).CombinedOutput()
	if err != nil {
		t.Fatalf("restored filesystem is not clean: %v\n%s", err, out)
	}
	r.must(r.stage(restored, false))
	r.must(r.publish(restored, false, false))
	r.down(restored)
	r.down(v)
	r.must(r.b.DeleteSnapshot(ctx, snap.ID))
	testutil.CheckClean(t, r.dir)
}

// A restore into a larger volume has the larger filesystem once staged; a
// smaller one is refused.
func TestRestoreLargerGrowsFilesystem(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("small-src", 64*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))
	snap, err := r.b.CreateSnapshot(ctx, "small-snap", v.ID)
	r.must(err)
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "too-small", MinSize: 32 * MiB, MaxSize: 32 * MiB, SourceSnapshot: snap.ID}); !errors.Is(err, backend.ErrOutOfRange) {
		t.Errorf("restore into a smaller volume: got %v, want out of range", err)
	}
	big := r.restore("big", snap.ID, 256*MiB, false)
	r.must(r.stage(big, false))
	r.must(r.publish(big, false, false))
	if size := fsSize(t, r.target(big.ID)); size < 200*MiB {
		t.Errorf("restored filesystem is %d bytes, want about 256 MiB", size)
	}
	r.down(big)
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	r.must(r.b.DeleteSnapshot(ctx, snap.ID))
	testutil.CheckClean(t, r.dir)
}

func fsSize(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

// A group snapshot copies every member inside one freeze, and the group
// goes away as a whole.
func TestGroupSnapshot(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a := r.create("ga", 64*MiB, "ext4", false)
	b := r.create("gb", 64*MiB, "ext4", false)
	for _, v := range []*backend.Volume{a, b} {
		r.must(r.stage(v, false))
		r.must(r.publish(v, false, false))
		r.must(os.WriteFile(filepath.Join(r.target(v.ID), "x"), []byte(v.Name), 0o644))
	}
	g, err := r.b.CreateGroupSnapshot(ctx, "group", []string{a.ID, b.ID})
	r.must(err)
	if len(g.Snapshots) != 2 || g.Snapshots[0].GroupID != g.ID {
		t.Fatalf("group %+v", g)
	}
	if _, err := r.b.CreateGroupSnapshot(ctx, "group", []string{a.ID}); !errors.Is(err, backend.ErrAlreadyExists) {
		t.Errorf("same group name, other members: %v", err)
	}
	if err := r.b.DeleteSnapshot(ctx, g.SnapshotIDs[0]); !errors.Is(err, backend.ErrPrecondition) {
		t.Errorf("deleting one member of a group: %v", err)
	}
	for i, s := range g.Snapshots {
		v := r.restore("gr"+string(rune('0'+i)), s.ID, 0, false)
		r.must(r.stage(v, false))
		r.must(r.publish(v, false, false))
		want := map[string]string{a.ID: a.Name, b.ID: b.Name}[s.SourceVolumeID]
		if got := r.read(v, "x"); got != want {
			t.Errorf("member %d restored %q, want %q", i, got, want)
		}
		r.down(v)
	}
	r.must(r.b.DeleteGroupSnapshot(ctx, g.ID))
	r.must(r.b.DeleteGroupSnapshot(ctx, g.ID))
	snaps, err := r.b.ListSnapshots(ctx)
	r.must(err)
	if len(snaps) != 0 {
		t.Errorf("%d snapshots left after deleting the group", len(snaps))
	}
	r.down(a)
	r.down(b)
	testutil.CheckClean(t, r.dir)
}

// On a pool that can share blocks (xfs here), a snapshot is a reflink: the
// source and its copy share their extents and the pool barely shrinks.
func TestReflinkPool(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	xfsImg := filepath.Join(r.dir, "xfs.img")
	r.must(makeImage(xfsImg, 2*GiB))
	out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", xfsImg).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.xfs: %v %s", err, out)
	}
	dev, err := loop.Attach(xfsImg, loop.Options{})
	r.must(err)
	poolDir := filepath.Join(r.dir, "xfs-pool")
	r.must(os.MkdirAll(poolDir, 0o700))
	r.must(unix.Mount(dev, poolDir, "xfs", 0, "")) // on failure, the rig's Cleanup takes it down
	b, err := New(poolDir, "node-a")
	r.must(err)
	r.b = b

	v := r.create("reflinked", 256*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	data := make([]byte, 64*MiB)
	_, _ = rand.Read(data)
	r.must(os.WriteFile(filepath.Join(r.target(v.ID), "data"), data, 0o644))
	unix.Sync() // the data reaches the image now, not during the snapshot
	var before unix.Statfs_t
	r.must(unix.Statfs(poolDir, &before))
	snap, err := r.b.CreateSnapshot(ctx, "reflink-snap", v.ID)
	r.must(err)
	var after unix.Statfs_t
	r.must(unix.Statfs(poolDir, &after))
	if used := int64(before.Bfree-after.Bfree) * after.Bsize; used > 16*MiB {
		t.Errorf("a reflink snapshot of 64 MiB of data used %d bytes of the pool", used)
	}
	got, err := r.b.GetVolume(ctx, v.ID, nil)
	r.must(err)
	if !got.Shared {
		t.Error("the source is not marked as sharing blocks, so capacity would undercount it")
	}
	restored := r.restore("reflink-restored", snap.ID, 0, false)
	r.must(r.stage(restored, false))
	r.must(r.publish(restored, false, false))
	if !bytes.Equal([]byte(r.read(restored, "data")), data) {
		t.Error("restored data differs")
	}
	r.down(restored)
	r.down(v)
	r.must(r.b.DeleteSnapshot(ctx, snap.ID))
	r.must(unix.Unmount(poolDir, 0))
	r.must(loop.Detach(dev, xfsImg))
	testutil.CheckClean(t, r.dir)
}
