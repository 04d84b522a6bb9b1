package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/testutil"
)

var nativeParams = map[string]string{paramLayout: layoutNative}

// newNativeRig is a rig whose pool is a btrfs filesystem of its own;
// clean takes the pool down and checks nothing else is left.
func newNativeRig(t *testing.T) (r *rig, clean func()) {
	r = newRig(t)
	dir, down := testutil.BtrfsPool(t, r.dir, "btrfs-pool", 2*GiB)
	b, err := New(dir, "node-a")
	r.must(err)
	r.b = b
	return r, func() {
		t.Helper()
		r.must(down())
		testutil.CheckClean(t, r.dir)
	}
}

func (r *rig) createNative(name string, size int64) *backend.Volume {
	r.t.Helper()
	v, err := r.b.CreateVolume(context.Background(), &backend.CreateRequest{Name: name, MinSize: size, Parameters: nativeParams})
	r.must(err)
	return v
}

// fill writes up to n bytes into file and returns how many were written
// and the error that stopped it.
func fill(path string, n int64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	var done int64
	for done < n && err == nil {
		var w int
		w, err = f.Write(chunk)
		done += int64(w)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return done, err
}

func TestNativeLifecycle(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	v := r.createNative("native", 32*MiB)
	if v.Layout != layoutNative || v.FsType != "btrfs" {
		t.Fatalf("created %+v, want a native btrfs volume", v)
	}
	if again := r.createNative("native", 32*MiB); again.ID != v.ID {
		t.Fatal("a repeated create made another volume")
	}
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "native", MinSize: 32 * MiB}); !errors.Is(err, backend.ErrAlreadyExists) {
		t.Errorf("same name as an image: %v", err)
	}
	r.must(r.stage(v, false))
	r.must(r.stage(v, false)) // idempotent
	r.must(r.publish(v, false, false))
	r.must(r.publish(v, false, false))
	if id, err := r.b.VolumeAt(ctx, r.target(v.ID)); err != nil || id != v.ID {
		t.Errorf("VolumeAt(target) = %q, %v", id, err)
	}
	r.must(os.WriteFile(filepath.Join(r.target(v.ID), "hello"), []byte("hi"), 0o644))
	if got, err := os.ReadFile(filepath.Join(r.staging(v.ID), "hello")); err != nil || string(got) != "hi" {
		t.Fatalf("read through the staging path: %q %v", got, err)
	}

	// Writing past the size fails inside the volume.
	n, err := fill(filepath.Join(r.target(v.ID), "big"), 64*MiB)
	if !errors.Is(err, unix.EDQUOT) {
		t.Fatalf("wrote %d bytes into a 32 MiB volume: %v", n, err)
	}
	if n > 32*MiB {
		t.Errorf("wrote %d bytes into a 32 MiB volume", n)
	}
	unix.Sync() // qgroup figures are the last transaction's
	st, err := r.b.Stats(ctx, v.ID, r.target(v.ID))
	r.must(err)
	if st.TotalBytes != v.Size || st.UsedBytes < 24*MiB || st.UsedBytes > v.Size || st.AvailBytes > v.Size-st.UsedBytes {
		t.Errorf("stats %+v, want the volume's own limit %d and usage", st, v.Size)
	}
	if _, err := r.b.Stats(ctx, v.ID, r.dir); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("stats where the volume is not: %v", err)
	}

	// Expansion raises the limit, online, with nothing for the node to do.
	size, node, err := r.b.ExpandVolume(ctx, v.ID, 64*MiB, nil)
	r.must(err)
	if size != 64*MiB || node {
		t.Errorf("expand gave %d, node step %v", size, node)
	}
	if got, err := r.b.ExpandFilesystem(ctx, v.ID, r.target(v.ID), size); err != nil || got != size {
		t.Errorf("node expansion: %d %v", got, err)
	}
	r.must(os.Remove(filepath.Join(r.target(v.ID), "big")))
	if n, err := fill(filepath.Join(r.target(v.ID), "big"), 48*MiB); err != nil {
		t.Errorf("after expansion to 64 MiB, 48 MiB failed at %d: %v", n, err)
	}
	unix.Sync()
	st, err = r.b.Stats(ctx, v.ID, r.staging(v.ID))
	r.must(err)
	if st.TotalBytes != 64*MiB || st.UsedBytes < 48*MiB {
		t.Errorf("stats after expansion %+v", st)
	}
	h, err := r.b.NodeHealth(ctx, v.ID, r.staging(v.ID), r.target(v.ID))
	r.must(err)
	if len(h.Problems) > 0 {
		t.Errorf("a healthy native volume has problems: %+v", h.Problems)
	}

	if err := r.b.Unstage(ctx, v.ID, r.staging(v.ID)); !errors.Is(err, backend.ErrPrecondition) {
		t.Errorf("unstage while published: %v", err)
	}
	if err := r.b.DeleteVolume(ctx, v.ID, nil); !errors.Is(err, backend.ErrInUse) {
		t.Errorf("delete while published: %v", err)
	}
	r.down(v)
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID))) // idempotent, volume gone
	if _, err := os.Stat(r.b.pool.volumeDir(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("volume directory left: %v", err)
	}
	clean()
}

// Snapshots are read-only subvolume snapshots of one instant; restores and
// clones are writable snapshots with the new volume's limit.
func TestNativeSnapshots(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	v := r.createNative("src", 64*MiB)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	r.must(os.WriteFile(filepath.Join(r.target(v.ID), "a"), []byte("before"), 0o644))
	snap, err := r.b.CreateSnapshot(ctx, "snap", v.ID)
	r.must(err)
	if snap.Layout != layoutNative {
		t.Errorf("snapshot layout %q", snap.Layout)
	}
	if err := os.WriteFile(filepath.Join(r.b.pool.snapshotDir(snap.ID), subvolName, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing into the snapshot: %v, want EROFS", err)
	}
	r.must(os.WriteFile(filepath.Join(r.target(v.ID), "a"), []byte("after"), 0o644))

	restored := r.restore("restored", snap.ID, 128*MiB, false)
	clone := r.restore("clone", v.ID, 64*MiB, true)
	if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "as-image", SourceSnapshot: snap.ID,
		Parameters: map[string]string{paramLayout: layoutImage}}); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("an image from a native snapshot: %v", err)
	}
	for _, c := range []struct {
		v    *backend.Volume
		want string
		size int64
	}{{restored, "before", 128 * MiB}, {clone, "after", 64 * MiB}} {
		if !isNative(c.v) || c.v.Size != c.size {
			t.Errorf("%s: %+v", c.v.Name, c.v)
		}
		r.must(r.stage(c.v, false))
		r.must(r.publish(c.v, false, false))
		if got := r.read(c.v, "a"); got != c.want {
			t.Errorf("%s: a = %q, want %q", c.v.Name, got, c.want)
		}
		// Writable, and held to its own limit.
		if n, err := fill(filepath.Join(r.target(c.v.ID), "big"), 2*c.size); !errors.Is(err, unix.EDQUOT) || n > c.size {
			t.Errorf("%s: wrote %d bytes of a %d-byte volume: %v", c.v.Name, n, c.size, err)
		}
	}
	// A group mixes layouts: each member is snapshotted its own way, all
	// inside one quiesce.
	img := r.create("image-member", 32*MiB, "ext4", false)
	g, err := r.b.CreateGroupSnapshot(ctx, "group", []string{v.ID, img.ID})
	r.must(err)
	if len(g.Snapshots) != 2 || g.Snapshots[0].Layout != layoutNative || g.Snapshots[1].Layout != "" {
		t.Errorf("group members %+v", g.Snapshots)
	}
	fromGroup := r.restore("from-group", g.Snapshots[0].ID, 64*MiB, false)
	r.must(r.stage(fromGroup, false))
	r.must(r.publish(fromGroup, false, false))
	if got := r.read(fromGroup, "a"); got != "after" {
		t.Errorf("restored group member: a = %q", got)
	}
	r.down(fromGroup)
	r.must(r.b.DeleteGroupSnapshot(ctx, g.ID))
	r.must(r.b.DeleteVolume(ctx, img.ID, nil))

	for _, x := range []*backend.Volume{clone, restored, v} {
		r.down(x)
	}
	r.must(r.b.DeleteSnapshot(ctx, snap.ID))
	r.must(r.b.DeleteSnapshot(ctx, snap.ID))
	entries, err := os.ReadDir(filepath.Join(r.b.pool.dir, snapshotsDir))
	r.must(err)
	if len(entries) != 0 {
		t.Errorf("snapshots left: %v", entries)
	}
	clean()
}

// A layout the pool cannot hold to its size is refused, never made without
// its limit.
func TestNativeInvalid(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	for name, req := range map[string]*backend.CreateRequest{
		"block":  {Block: true, Parameters: nativeParams},
		"xfs":    {FsType: "xfs", Parameters: nativeParams},
		"xfs-sc": {Parameters: map[string]string{paramLayout: layoutNative, paramFsType: "xfs"}},
		"other":  {Parameters: map[string]string{paramLayout: "zfs"}},
	} {
		req.Name = name
		if _, err := r.b.CreateVolume(ctx, req); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	// A native volume is a filesystem, not a device.
	v := r.createNative("not-block", 16*MiB)
	if err := r.stage(v, true); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("staging a native volume as a block device: %v", err)
	}
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))

	plain, err := New(filepath.Join(r.dir, "plain-pool"), "node-a")
	r.must(err)
	if ok, _ := isBtrfs(plain.Dir()); ok {
		t.Skip("the temporary directory is on btrfs: no non-btrfs pool to refuse")
	}
	if _, err := plain.CreateVolume(ctx, &backend.CreateRequest{Name: "x", Parameters: nativeParams}); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("native on a pool that is not btrfs: %v", err)
	}
	clean()
}

// A subvolume half-made (in .tmp) or half-removed (in .trash) when the
// driver died is removed at the next start.
func TestNativeRecovery(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	kept := r.createNative("kept", 16*MiB)
	for _, d := range []string{tmpDir, trashDir} {
		dir := filepath.Join(r.b.pool.dir, d, "vol-x."+randomSuffix())
		r.must(os.Mkdir(dir, 0o700))
		r.must(createSubvolume(filepath.Join(dir, subvolName)))
		r.must(os.WriteFile(filepath.Join(dir, subvolName, "f"), []byte("x"), 0o644))
	}
	b, err := New(r.b.pool.dir, "node-a")
	r.must(err)
	for _, d := range []string{tmpDir, trashDir} {
		if entries, _ := os.ReadDir(filepath.Join(b.pool.dir, d)); len(entries) != 0 {
			t.Errorf("%s still holds %v", d, entries)
		}
	}
	if _, err := b.GetVolume(ctx, kept.ID, nil); err != nil {
		t.Errorf("a finished volume went with the crash's leftovers: %v", err)
	}
	r.must(b.DeleteVolume(ctx, kept.ID, nil))
	clean()
}

// A restarted driver finds a staged and published native volume from the
// kernel's mount table alone, and takes it down.
func TestNativeRestart(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	v := r.createNative("survivor", 16*MiB)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	b, err := New(r.b.pool.dir, "node-a")
	r.must(err)
	r.b = b
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	if id, err := r.b.VolumeAt(ctx, r.staging(v.ID)); err != nil || id != v.ID {
		t.Errorf("VolumeAt(staging) after restart = %q, %v", id, err)
	}
	if err := r.b.DeleteVolume(ctx, v.ID, nil); !errors.Is(err, backend.ErrInUse) {
		t.Errorf("delete of a staged volume after restart: %v", err)
	}
	r.down(v)
	clean()
}
