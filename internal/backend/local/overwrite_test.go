package local

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
)

// TestNativeOverwritesFitTheLimit: a native volume of the default class
// holds a file of most of its size and takes any number of overwrites of
// it, random and sequential. With copy-on-write (nodatacow "false") the
// same file hits EDQUOT: btrfs keeps a whole extent, and its qgroup counts
// it, while any part of it is still in the file, so overwritten data is
// counted twice, and a preallocated file (one extent of hundreds of MiB)
// can never be rewritten at all.
func TestNativeOverwritesFitTheLimit(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	const size, file = 256 * MiB, 200 * MiB

	v, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "db", MinSize: size, Parameters: nativeParams})
	r.must(err)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	path := filepath.Join(r.target(v.ID), "data")
	if err := overwrites(path, file, 3); err != nil {
		t.Errorf("default native volume of %d MiB, file of %d MiB: %v", size/MiB, file/MiB, err)
	}
	if used, limit, err := subvolumeUsage(ctx, r.b.pool.subvol(v.ID)); err != nil || used > limit {
		t.Errorf("usage %d of limit %d (%v): the data is counted more than once", used, limit, err)
	}
	r.down(v)

	cow, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "db-cow", MinSize: size,
		Parameters: map[string]string{paramLayout: layoutNative, paramNoDataCow: "false"}})
	r.must(err)
	r.must(r.stage(cow, false))
	r.must(r.publish(cow, false, false))
	if err := overwrites(filepath.Join(r.target(cow.ID), "data"), file, 1); !errors.Is(err, unix.EDQUOT) {
		t.Errorf("copy-on-write native volume: overwrites got %v, want EDQUOT (the README says so)", err)
	}
	r.down(cow)
	clean()
}

// TestImageHoldsItsSizeOnBtrfs: an image volume on a btrfs pool takes no
// more of the pool than its size, however its data is overwritten. A
// copy-on-write image would keep the old extents beside the new blocks
// (about 300 MiB of pool for this 256 MiB volume), while capacity promises
// it only its size. Its snapshot is still a reflink.
func TestImageHoldsItsSizeOnBtrfs(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	const size, file = 256 * MiB, 200 * MiB
	before := poolDataUsed(t, r.b.Dir())
	v := r.create("img", size, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	if on, err := hasNoCow(r.b.pool.image(v.ID)); err != nil || !on {
		t.Errorf("image on btrfs: nodatacow = %v, %v; want true", on, err)
	}
	f, err := layOut(filepath.Join(r.target(v.ID), "data"), file)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		if err := randomWrites(f, file, round); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	used := poolDataUsed(t, r.b.Dir()) - before
	t.Logf("the image holds %d MiB of the pool", used/MiB)
	if used > size {
		t.Errorf("the image holds %d MiB of the pool, more than its %d MiB", used/MiB, size/MiB)
	}
	// Its snapshot and a restore of that are reflinks still: they share
	// the image's blocks and barely take any of the pool. And an overwrite
	// in place after the snapshot does not reach it (btrfs copies a shared
	// block once, nodatacow or not).
	marker := filepath.Join(r.target(v.ID), "marker")
	r.must(os.WriteFile(marker, []byte("before the snapshot"), 0o600))
	unix.Sync()
	before = poolDataUsed(t, r.b.Dir())
	snap, err := r.b.CreateSnapshot(ctx, "img-snap", v.ID)
	r.must(err)
	restored := r.restore("img-restored", snap.ID, 0, false)
	if used := poolDataUsed(t, r.b.Dir()) - before; used > 16*MiB {
		t.Errorf("a snapshot and a restore of 200 MiB took %d MiB of the pool: not reflinks", used/MiB)
	}
	r.must(os.WriteFile(marker, []byte("after the snapshot!"), 0o600))
	unix.Sync()
	r.must(r.stage(restored, false))
	r.must(r.publish(restored, false, false))
	if got := r.read(restored, "marker"); got != "before the snapshot" {
		t.Errorf("the restore of the snapshot has %q", got)
	}
	for what, path := range map[string]string{"snapshot": filepath.Join(r.b.pool.snapshotDir(snap.ID), imageFile), "restore": r.b.pool.image(restored.ID)} {
		if on, err := hasNoCow(path); err != nil || !on {
			t.Errorf("its %s: nodatacow = %v, %v; want true", what, on, err)
		}
	}
	if got, err := r.b.GetVolume(ctx, v.ID, nil); err != nil || !got.Shared {
		t.Errorf("the source is not marked as sharing blocks (%v), so capacity would undercount it", err)
	}
	r.down(restored)
	r.must(r.b.DeleteSnapshot(ctx, snap.ID))
	r.down(v)
	clean()
}

// poolDataUsed is what btrfs has allocated to data in the pool, after a
// sync.
func poolDataUsed(t *testing.T, pool string) int64 {
	t.Helper()
	unix.Sync()
	out, err := exec.Command("btrfs", "filesystem", "df", "-b", pool).Output()
	if err != nil {
		t.Fatalf("btrfs filesystem df: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "Data,") {
			_, used, _ := strings.Cut(line, "used=")
			n, err := strconv.ParseInt(strings.TrimSpace(used), 10, 64)
			if err != nil {
				t.Fatalf("btrfs filesystem df: %q", line)
			}
			return n
		}
	}
	t.Fatalf("btrfs filesystem df: no data line in %q", out)
	return 0
}

// overwrites preallocates a file of n bytes (as databases and logs do),
// writes it, then rewrites it rounds times: 4 KiB blocks at random places
// (half the file's worth) and then the whole file in 1 MiB writes. All
// direct I/O, so nothing waits in the page cache; fsync after each pass.
func overwrites(path string, n int64, rounds int) error {
	f, err := layOut(path, n)
	if err != nil {
		return err
	}
	defer f.Close()
	for round := range rounds {
		if err := randomWrites(f, n, round); err != nil {
			return err
		}
		if err := sequential(f, n, fmt.Sprintf("round %d: rewrite", round)); err != nil {
			return err
		}
	}
	return nil
}

// layOut preallocates and writes a file of n bytes, opened for direct I/O.
func layOut(path string, n int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_DIRECT, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		f.Close()
		return nil, err
	}
	if err := sequential(f, n, "first write"); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// directBuf is a page-aligned buffer, as O_DIRECT wants: an anonymous
// mapping, never freed (tests only).
func directBuf(n int) []byte {
	buf, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return buf
}

func sequential(f *os.File, n int64, pass string) error {
	buf := directBuf(int(MiB))
	defer unix.Munmap(buf)
	for off := int64(0); off < n; off += MiB {
		buf[0] = byte(off >> 20)
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("%s at %d MiB: %w", pass, off/MiB, err)
		}
	}
	return f.Sync()
}

// randomWrites writes half the file's worth of 4 KiB blocks at random
// places, then fsyncs.
func randomWrites(f *os.File, n int64, round int) error {
	buf := directBuf(4096)
	defer unix.Munmap(buf)
	rng := rand.New(rand.NewPCG(1, uint64(round)))
	for i := range n / 2 / 4096 {
		off := rng.Int64N(n/4096) * 4096
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("round %d: random write %d at %d: %w", round, i, off, err)
		}
	}
	return f.Sync()
}

// TestCopyOnWriteImageCountsWhole: a copy-on-write image on a btrfs pool
// (as made before images there were nodatacow) is promised its whole size,
// not its size less what it holds, since its overwrites keep old extents.
func TestCopyOnWriteImageCountsWhole(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	v := r.create("old", 256*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	if _, err := fill(filepath.Join(r.target(v.ID), "data"), 100*MiB); err != nil {
		t.Fatal(err)
	}
	r.must(r.b.Unpublish(ctx, v.ID, r.target(v.ID)))
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID)))
	inPlace, err := r.b.promised()
	r.must(err)

	// The same image, copy-on-write: a copy made in the volume's
	// directory, which has no FS_NOCOW_FL to inherit.
	image := r.b.pool.image(v.ID)
	old := image + ".cow"
	if out, err := exec.Command("cp", "--sparse=always", "--reflink=never", image, old).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	r.must(os.Rename(old, image))
	if on, err := hasNoCow(image); err != nil || on {
		t.Fatalf("the copy: nodatacow = %v, %v; want false", on, err)
	}
	cow, err := r.b.promised()
	r.must(err)
	if cow-inPlace < 100*MiB {
		t.Errorf("promised %d MiB for the copy-on-write image, %d MiB in place: want its whole size, at least the 100 MiB it holds more",
			cow/MiB, inPlace/MiB)
	}
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	clean()
}
