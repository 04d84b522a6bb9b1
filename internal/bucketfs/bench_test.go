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

// BenchmarkColdReadVsClient puts a cold read through the mount next to the
// same object read by one GET with the S3 client itself: the ceiling of any
// mounter on this server. Caches are dropped before each read.
func BenchmarkColdReadVsClient(b *testing.B) {
	e := newEnv(b)
	cfg := e.config()
	_, mnt := e.mount(b, "w", cfg)
	if err := writeFile(filepath.Join(mnt, "big"), random(b, benchFileSize)); err != nil {
		b.Fatal(err)
	}
	drop := func() {
		syscall.Sync()
		_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
	}
	var mount, client []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, cold := e.mount(b, fmt.Sprintf("r%d", i), cfg)
		drop()
		mount = append(mount, mbps(benchFileSize, timeIt(b, func() error { _, err := os.ReadFile(filepath.Join(cold, "big")); return err })))
		drop()
		client = append(client, mbps(benchFileSize, timeIt(b, func() error {
			obj, err := e.cl.GetObject(context.Background(), bucket, "big", minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			defer obj.Close()
			_, err = io.Copy(io.Discard, obj)
			return err
		})))
	}
	b.StopTimer()
	var m, c float64
	for i := range mount {
		m += mount[i] / float64(len(mount))
		c += client[i] / float64(len(client))
	}
	b.ReportMetric(m, "mount_MB/s")
	b.ReportMetric(c, "client_MB/s")
	b.ReportMetric(m/c, "ratio")
}
