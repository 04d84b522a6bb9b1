package bench

import (
	"github.com/volplug/volplug/internal/testutil"

	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildVolplug builds the real binary: the benchmark measures the driver
// as shipped, not the test binary.
func buildVolplug(tb testing.TB) string { return testutil.BuildVolplug(tb, tb.TempDir()) }

// checkClean fails the benchmark if a mount or loop device is left under dir.
func checkClean(tb testing.TB, dir string) {
	tb.Helper()
	l, err := FindLeftovers(dir)
	if err != nil {
		tb.Error(err)
		return
	}
	if !l.Empty() {
		tb.Errorf("LEFTOVERS: %s", l)
		if err := ForceCleanup(l); err != nil {
			tb.Error(err)
		}
	}
}

// reportCycles adds the percentiles the issue asks for to the ns/op that
// the testing package prints.
func reportCycles(b *testing.B, totals []time.Duration) {
	s := Summarize(totals)
	b.ReportMetric(ms(s.P50), "p50-ms")
	b.ReportMetric(ms(s.P99), "p99-ms")
}

// BenchmarkCycleDriver runs b.N full volume cycles, one at a time, through
// the real driver's CSI API, with the same code as `volplug bench`.
func BenchmarkCycleDriver(b *testing.B) {
	testutil.RequireRoot(b)
	bin := buildVolplug(b)
	dir := b.TempDir()
	drv, err := StartDriver(b.Context(), DriverOptions{
		Binary: bin, Dir: filepath.Join(dir, "d"), NodeID: "bench-node",
		LogPath: filepath.Join(dir, "driver.log"), StartTimeout: 30 * time.Second,
		RPCTimeout: 2 * time.Minute, SizeBytes: 1 << 30, FsType: "ext4",
	})
	if err != nil {
		b.Fatal(err)
	}
	// Cleanups run last-in first-out: stop the driver, then check.
	b.Cleanup(func() { checkClean(b, dir) })
	b.Cleanup(func() {
		if err := drv.Stop(); err != nil {
			b.Error(err)
		}
	})
	var totals []time.Duration
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if _, err := drv.Cycle(b.Context(), fmt.Sprintf("bench-%d", i)); err != nil {
			b.Fatal(errors.Join(err, errors.New(drv.logTail())))
		}
		totals = append(totals, time.Since(t0))
	}
	reportCycles(b, totals)
}

// BenchmarkCycleFloor runs b.N floor cycles (system tools), the baseline
// for BenchmarkCycleDriver.
func BenchmarkCycleFloor(b *testing.B) {
	testutil.RequireRoot(b)
	dir := b.TempDir()
	b.Cleanup(func() { checkClean(b, dir) })
	f := &Floor{Dir: dir, SizeBytes: 1 << 30, FsType: "ext4", Timeout: 2 * time.Minute}
	var totals []time.Duration
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if _, err := f.Cycle(b.Context(), fmt.Sprintf("floor-%d", i)); err != nil {
			b.Fatal(err)
		}
		totals = append(totals, time.Since(t0))
	}
	reportCycles(b, totals)
}

// BenchmarkSnapshotPlain runs b.N CreateSnapshot+DeleteSnapshot pairs of a
// staged, published 1 GiB volume holding 512 MiB, on a pool in the test's
// temp dir (the machine's filesystem: a sparse copy unless it reflinks).
func BenchmarkSnapshotPlain(b *testing.B) { benchSnapshot(b, false) }

// BenchmarkSnapshotReflink is BenchmarkSnapshotPlain on an xfs pool with
// reflink=1, made on a loop device for the benchmark.
func BenchmarkSnapshotReflink(b *testing.B) { benchSnapshot(b, true) }

func benchSnapshot(b *testing.B, reflink bool) {
	testutil.RequireRoot(b)
	dir, err := filepath.EvalSymlinks(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	const timeout = 2 * time.Minute
	// Cleanups run last-in first-out: the source volume goes, then the
	// driver, then the xfs pool, and the leftover check comes last.
	b.Cleanup(func() { checkClean(b, dir) })
	pool := filepath.Join(dir, "pool")
	if reflink {
		if _, err := exec.LookPath("mkfs.xfs"); err != nil {
			b.Skip("mkfs.xfs not found: install xfsprogs")
		}
		xp, err := setupXFSPool(b.Context(), filepath.Join(dir, "xfs.img"), filepath.Join(dir, "xfs-pool"), 8<<30, timeout)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := xp.teardown(); err != nil {
				b.Error(err)
			}
		})
		pool = filepath.Join(xp.Mount, "pool")
	}
	drv, err := StartDriver(b.Context(), DriverOptions{
		Binary: buildVolplug(b), Dir: filepath.Join(dir, "d"), Pool: pool, NodeID: "bench-node",
		LogPath: filepath.Join(dir, "driver.log"), StartTimeout: 30 * time.Second,
		RPCTimeout: timeout, SizeBytes: 1 << 30, FsType: "ext4",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := drv.Stop(); err != nil {
			b.Error(err)
		}
	})
	if missing := snapCapsMissing(drv.Info); missing != "" {
		b.Fatal("the driver does not advertise " + missing)
	}
	src, err := prepareSnapSource(b.Context(), drv, "bench-src", 512<<20)
	if err != nil {
		b.Fatal(errors.Join(err, errors.New(drv.logTail())))
	}
	b.Cleanup(func() {
		if err := src.close(); err != nil {
			b.Error(err)
		}
	})
	var totals []time.Duration
	for i := 0; b.Loop(); i++ {
		s := &snapRef{name: fmt.Sprintf("bench-snap-%d", i), source: src.v.id}
		t0 := time.Now()
		err := drv.createSnapshot(b.Context(), s)
		if err == nil {
			err = drv.deleteSnapshot(b.Context(), s)
		}
		if err != nil {
			b.Fatal(errors.Join(err, drv.dropSnapshot(s), errors.New(drv.logTail())))
		}
		totals = append(totals, time.Since(t0))
	}
	reportCycles(b, totals)
}
