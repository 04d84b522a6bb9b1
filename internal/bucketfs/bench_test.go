package bucketfs_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"

	"github.com/volplug/volplug/internal/bucketfs"
)

// The benchmarks put the mount next to its floor, the server's backing
// directory (where versitygw keeps the objects), and report both and
// their ratio. Run: go test -run '^$' -bench . -benchtime 3x ./internal/bucketfs/

const benchFileSize = 256 << 20

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

func timeIt(b *testing.B, f func() error) time.Duration {
	b.Helper()
	start := time.Now()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func report(b *testing.B, unit string, mount, floor []float64) {
	var m, f float64
	for i := range mount {
		m += mount[i]
		f += floor[i]
	}
	m /= float64(len(mount))
	f /= float64(len(floor))
	b.ReportMetric(m, "mount_"+unit)
	b.ReportMetric(f, "floor_"+unit)
	b.ReportMetric(m/f, "ratio")
}

func writeFile(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func BenchmarkSequentialWrite(b *testing.B) {
	e := newEnv(b)
	_, mnt := e.mount(b, "m", e.config())
	data := random(b, benchFileSize)
	floorDir := filepath.Join(e.s3.Dir, "floor")
	if err := os.Mkdir(floorDir, 0o755); err != nil {
		b.Fatal(err)
	}
	var mount, floor []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("big%d", i)
		mount = append(mount, mbps(benchFileSize, timeIt(b, func() error { return writeFile(filepath.Join(mnt, name), data) })))
		floor = append(floor, mbps(benchFileSize, timeIt(b, func() error { return writeFile(filepath.Join(floorDir, name), data) })))
	}
	report(b, "MB/s", mount, floor)
}

func BenchmarkColdRead(b *testing.B) {
	e := newEnv(b)
	cfg := e.config()
	_, mnt := e.mount(b, "w", cfg)
	if err := writeFile(filepath.Join(mnt, "big"), random(b, benchFileSize)); err != nil {
		b.Fatal(err)
	}
	stored := filepath.Join(e.s3.Dir, bucket, "big")
	var mount, floor []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A new mount: nothing of the file cached in it or in the kernel.
		_, cold := e.mount(b, fmt.Sprintf("r%d", i), cfg)
		mount = append(mount, mbps(benchFileSize, timeIt(b, func() error { _, err := os.ReadFile(filepath.Join(cold, "big")); return err })))
		floor = append(floor, mbps(benchFileSize, timeIt(b, func() error { _, err := os.ReadFile(stored); return err })))
	}
	report(b, "MB/s", mount, floor)
}

func BenchmarkSmallFiles(b *testing.B) {
	const n = 500
	e := newEnv(b)
	_, mnt := e.mount(b, "m", e.config())
	data := random(b, 4096)
	floorDir := filepath.Join(e.s3.Dir, "floor")
	var mount, floor []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, c := range []struct {
			dir  string
			into *[]float64
		}{{filepath.Join(mnt, fmt.Sprint(i)), &mount}, {filepath.Join(floorDir, fmt.Sprint(i)), &floor}} {
			if err := os.MkdirAll(c.dir, 0o755); err != nil {
				b.Fatal(err)
			}
			d := timeIt(b, func() error {
				for j := 0; j < n; j++ {
					if err := writeFile(filepath.Join(c.dir, fmt.Sprint(j)), data); err != nil {
						return err
					}
				}
				return nil
			})
			*c.into = append(*c.into, float64(n)/d.Seconds())
		}
	}
	report(b, "creates/s", mount, floor)
}

// `ls -l` of 1000 files on a fresh mount: one listing, then stats.
func BenchmarkListCold(b *testing.B) {
	const n = 1000
	e := newEnv(b)
	for i := 0; i < n; i++ {
		if _, err := e.cl.PutObject(context.Background(), bucket, fmt.Sprintf("d/%04d", i), bytes.NewReader(nil), 0, minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
			b.Fatal(err)
		}
	}
	lsl := func(dir string) error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, de := range ents {
			if _, err := os.Lstat(filepath.Join(dir, de.Name())); err != nil {
				return err
			}
		}
		if len(ents) != n {
			return fmt.Errorf("%s: %d entries", dir, len(ents))
		}
		return nil
	}
	var mount, floor []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, cold := e.mount(b, fmt.Sprintf("m%d", i), e.config())
		mount = append(mount, float64(timeIt(b, func() error { return lsl(filepath.Join(cold, "d")) }).Microseconds())/1000)
		floor = append(floor, float64(timeIt(b, func() error { return lsl(filepath.Join(e.s3.Dir, bucket, "d")) }).Microseconds())/1000)
	}
	report(b, "ms", mount, floor)
}

// BenchmarkColdReadVsClient puts cold reads through the mount, with
// read-ahead fetching one part at a time (the default) and four, beside the
// same object read by the S3 client itself, with one GET and with ranged
// GETs four at a time: the ceiling of any mounter on this server. The four
// alternate, caches dropped before each read, so load on a shared machine
// falls on all of them alike.
func BenchmarkColdReadVsClient(b *testing.B) {
	e := newEnv(b)
	cfg := e.config()
	_, mnt := e.mount(b, "w", cfg)
	if err := writeFile(filepath.Join(mnt, "big"), random(b, benchFileSize)); err != nil {
		b.Fatal(err)
	}
	four := cfg
	four.ReadParallel = 4
	drop := func() {
		syscall.Sync()
		_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	}
	rows := map[string][]float64{}
	timeRead := func(name string, read func() error) {
		drop()
		rows[name] = append(rows[name], mbps(benchFileSize, timeIt(b, read)))
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, m := range []struct {
			name string
			cfg  bucketfs.Config
		}{{"mount", cfg}, {"mount4", four}} {
			_, cold := e.mount(b, fmt.Sprintf("%s-%d", m.name, i), m.cfg)
			timeRead(m.name, func() error { _, err := os.ReadFile(filepath.Join(cold, "big")); return err })
		}
		timeRead("client1", func() error {
			obj, err := e.cl.GetObject(ctx, bucket, "big", minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			defer obj.Close()
			_, err = io.Copy(io.Discard, obj)
			return err
		})
		timeRead("client", func() error {
			g, ctx := errgroup.WithContext(ctx)
			g.SetLimit(4)
			for off := int64(0); off < benchFileSize; off += 8 << 20 {
				g.Go(func() error {
					opts := minio.GetObjectOptions{}
					if err := opts.SetRange(off, min(off+8<<20, benchFileSize)-1); err != nil {
						return err
					}
					obj, err := e.cl.GetObject(ctx, bucket, "big", opts)
					if err != nil {
						return err
					}
					defer obj.Close()
					_, err = io.Copy(io.Discard, obj)
					return err
				})
			}
			return g.Wait()
		})
	}
	b.StopTimer()
	mean := func(xs []float64) float64 {
		var m float64
		for _, x := range xs {
			m += x / float64(len(xs))
		}
		return m
	}
	for _, name := range []string{"mount", "mount4", "client1", "client"} {
		b.ReportMetric(mean(rows[name]), name+"_MB/s")
	}
	b.ReportMetric(mean(rows["mount4"])/mean(rows["mount"]), "four_parts_vs_one")
	b.ReportMetric(mean(rows["mount"])/mean(rows["client"]), "vs_client")
}
