package local

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/testutil"
)

// benchRig is a rig for benchmarks: a btrfs pool of its own.
func benchRig(b *testing.B) (*rig, func()) {
	testutil.RequireRoot(b)
	dir := b.TempDir()
	b.Cleanup(func() { testutil.Cleanup(dir) })
	pool, down := testutil.BtrfsPool(b, dir, "btrfs-pool", 8*GiB)
	// As `volplug csi` runs it by default.
	be, err := New(pool, "node-a", FormatOnCreate(true), DeleteInBackground(true))
	if err != nil {
		b.Fatal(err)
	}
	r := &rig{t: b, dir: dir, b: be}
	return r, func() {
		_ = be.Close() // background formats and removals end first
		if err := down(); err != nil {
			b.Error(err)
		}
		testutil.CheckClean(b, dir)
	}
}

// BenchmarkLifecycle runs a 1 GiB volume's whole life (create, stage,
// publish, unpublish, unstage, delete) on a btrfs pool, native and image,
// and, as "floor", what a driver handing out bare directories does in the
// same pool (mkdir, bind mount, unmount, rmdir, as system calls). Each
// step's median is reported (ms), so a profile needs no other tool.
func BenchmarkLifecycle(b *testing.B) {
	for _, layout := range []string{"floor", layoutNative, layoutImage} {
		b.Run(layout, func(b *testing.B) {
			r, clean := benchRig(b)
			ctx := context.Background()
			params := map[string]string{paramLayout: layout}
			names := []string{"create", "stage", "publish", "unpublish", "unstage", "delete"}
			var v *backend.Volume
			steps := []func() error{
				func() (err error) {
					v, err = r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "cycle", MinSize: GiB, Parameters: params})
					return err
				},
				func() error { return r.stage(v, false) },
				func() error { return r.publish(v, false, false) },
				func() error { return r.b.Unpublish(ctx, v.ID, r.target(v.ID)) },
				func() error { return r.b.Unstage(ctx, v.ID, r.staging(v.ID)) },
				func() error { return r.b.DeleteVolume(ctx, v.ID, nil) },
			}
			if layout == "floor" {
				names = []string{"mkdir", "bind", "unmount", "rmdir"}
				dir, target := filepath.Join(r.b.Dir(), "floor"), filepath.Join(r.dir, "floor-target")
				if err := os.Mkdir(target, 0o700); err != nil {
					b.Fatal(err)
				}
				steps = []func() error{
					func() error { return os.Mkdir(dir, 0o700) },
					func() error { return unix.Mount(dir, target, "", unix.MS_BIND, "") },
					func() error { return unix.Unmount(target, 0) },
					func() error { return os.Remove(dir) },
				}
				defer os.Remove(target)
			}
			durs := make([][]time.Duration, len(steps))
			for b.Loop() {
				for i, step := range steps {
					t0 := time.Now()
					if err := step(); err != nil {
						b.Fatalf("%s: %v", names[i], err)
					}
					durs[i] = append(durs[i], time.Since(t0))
				}
			}
			for i, d := range durs {
				slices.Sort(d)
				b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, names[i]+"-ms")
			}
			clean()
		})
	}
}

// BenchmarkRandWrite runs fio (random 4 KiB writes, queue depth 32, direct
// I/O, 10 s) in the pool's own filesystem and in published volumes, and
// reports each as IOPS and as a share of the pool's (about 100 s). "native"
// is a copy-on-write native volume (nodatacow "false"), as the pool's own
// directory is; "native-nocow" one of the default class (nodatacow);
// "native-nocow-snap" the same after a snapshot, where every first
// overwrite of a shared block is copied once more.
func BenchmarkRandWrite(b *testing.B) {
	if _, err := exec.LookPath("fio"); err != nil {
		b.Skip("needs fio")
	}
	r, clean := benchRig(b)
	ctx := context.Background()
	// The pool is measured as native volumes find it: with quotas on
	// (qgroup accounting costs every write to the filesystem).
	if err := r.b.enableQuota(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	// The pool and a native volume alternate three times (medians), as
	// the machine's other work makes single runs vary by 15%.
	nv, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "native", MinSize: GiB, Parameters: map[string]string{paramLayout: layoutNative, paramNoDataCow: "false"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.stage(nv, false); err != nil {
		b.Fatal(err)
	}
	if err := r.publish(nv, false, false); err != nil {
		b.Fatal(err)
	}
	var pools, natives []float64
	for range 3 {
		pools = append(pools, fio(b, filepath.Join(r.b.Dir(), "fio-pool")))
		natives = append(natives, fio(b, r.target(nv.ID)))
	}
	r.down(nv)
	slices.Sort(pools)
	slices.Sort(natives)
	pool := pools[1]
	b.ReportMetric(pool, "pool-iops")
	b.ReportMetric(natives[1], "native-iops")
	b.ReportMetric(natives[1]/pool, "native/pool")
	for _, c := range []struct {
		name   string
		layout string
		snap   bool
	}{{"native-nocow", layoutNative, false},
		{"native-nocow-snap", layoutNative, true}, {"image", layoutImage, false}} {
		v, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: c.name, MinSize: GiB, Parameters: map[string]string{paramLayout: c.layout}})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.stage(v, false); err != nil {
			b.Fatal(err)
		}
		if err := r.publish(v, false, false); err != nil {
			b.Fatal(err)
		}
		dir := r.target(v.ID)
		if c.snap {
			fio(b, dir, true) // lay the file out and write it, then share it all
			if _, err := r.b.CreateSnapshot(ctx, c.name, v.ID); err != nil {
				b.Fatal(err)
			}
		}
		iops := fio(b, dir)
		b.ReportMetric(iops, c.name+"-iops")
		b.ReportMetric(iops/pool, c.name+"/pool")
		r.down(v)
	}
	snaps, _ := r.b.ListSnapshots(ctx)
	for _, s := range snaps {
		if err := r.b.DeleteSnapshot(ctx, s.ID); err != nil {
			b.Fatal(err)
		}
	}
	_ = os.RemoveAll(filepath.Join(r.b.Dir(), "fio-pool"))
	clean()
}

// fio runs the job in dir and returns its write IOPS. The file is removed
// after the run unless keep: random writes fragment a btrfs file, and a
// file that earlier runs fragmented is slower by half.
func fio(b *testing.B, dir string, keep ...bool) float64 {
	b.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	out, err := exec.Command("fio", "--name=rw", "--directory="+dir, "--rw=randwrite", "--bs=4k",
		"--iodepth=32", "--ioengine=libaio", "--direct=1", "--size=256M", "--runtime=10",
		"--time_based", "--output-format=json", "--unlink="+map[bool]string{true: "0", false: "1"}[len(keep) > 0 && keep[0]]).Output()
	if err != nil {
		b.Fatalf("fio in %s: %v %s", dir, err, out)
	}
	var res struct {
		Jobs []struct {
			Write struct {
				IOPS float64 `json:"iops"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Jobs) == 0 {
		b.Fatalf("fio output: %v %s", err, out)
	}
	b.Logf("%s: %.0f IOPS (%s)", dir, res.Jobs[0].Write.IOPS, time.Since(start).Round(time.Second))
	return res.Jobs[0].Write.IOPS
}
