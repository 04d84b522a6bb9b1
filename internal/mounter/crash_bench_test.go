package mounter_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Crash failover, measured: the mounter is killed with SIGKILL b.N times
// (-benchtime=20x) with a stat of a name no one looked up waiting on the
// mount; a new mounter is started at once. Reported: the time from the
// kill to the stat's answer, p50 and p99, each as a ratio to one statfs
// round trip through the mount in the same run; and the resident memory
// of the mounter and the keeper with 1 and with 50 mounted volumes.
func BenchmarkCrashFailover(b *testing.B) {
	e := newCrashEnv(b, time.Minute)
	e.startMounter()
	target := e.mount("vol0")
	defer func() {
		if !e.running {
			e.startMounter()
		}
		for i := 0; i < 50; i++ {
			_ = e.client.Unmount(context.Background(), filepath.Join(e.dir, "mnt", fmt.Sprintf("vol%d", i)))
		}
		e.stopMounter()
	}()
	statfs := func() time.Duration {
		var st syscall.Statfs_t
		var ds []time.Duration
		for i := 0; i < 200; i++ {
			start := time.Now()
			if err := syscall.Statfs(target, &st); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	base := statfs()
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.kill()
		killed := time.Now()
		done := make(chan error, 1)
		go func() { _, err := os.Stat(filepath.Join(target, "probe-"+strconv.Itoa(i))); done <- err }()
		e.startMounter()
		if err := <-done; !os.IsNotExist(err) {
			b.Fatalf("kill %d: the probe: %v", i, err)
		}
		took = append(took, time.Since(killed))
	}
	b.StopTimer()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	p50, p99 := took[len(took)/2], took[(len(took)*99)/100]
	b.ReportMetric(float64(base.Microseconds()), "statfs-µs")
	b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(p99.Milliseconds()), "p99-ms")
	b.ReportMetric(float64(p50)/float64(base), "p50/statfs")
	b.ReportMetric(float64(p99)/float64(base), "p99/statfs")
	b.ReportMetric(float64(rss(b, e.pid))/1024, "mounter-MiB-1vol")
	b.ReportMetric(float64(rss(b, e.keeperPid))/1024, "keeper-MiB-1vol")
	for i := 1; i < 50; i++ {
		e.mount(fmt.Sprintf("vol%d", i))
	}
	// Each mount in use: a file written and read back.
	for i := 0; i < 50; i++ {
		p := filepath.Join(e.dir, "mnt", fmt.Sprintf("vol%d", i), "f")
		if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 4096), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rss(b, e.pid))/1024, "mounter-MiB-50vol")
	b.ReportMetric(float64(rss(b, e.keeperPid))/1024, "keeper-MiB-50vol")
	// And all 50 come back after one more kill.
	e.kill()
	killed := time.Now()
	e.startMounter()
	list, err := e.client.List(context.Background())
	if err != nil || len(list) != 50 {
		b.Fatalf("after a kill with 50 mounts: %d listed, %v", len(list), err)
	}
	for _, m := range list {
		if !m.Alive {
			b.Errorf("%s is not alive after the kill", m.Target)
		}
	}
	b.ReportMetric(float64(time.Since(killed).Milliseconds()), "recover50-ms")
	b.ReportMetric(float64(rss(b, e.pid))/1024, "mounter-MiB-50vol-recovered")
}

// rss is a process's resident memory in KiB.
func rss(tb testing.TB, pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if f := bytes.Fields(line); len(f) >= 2 && string(f[0]) == "VmRSS:" {
			n, _ := strconv.Atoi(string(f[1]))
			return n
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}
