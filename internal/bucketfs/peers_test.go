package bucketfs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// s3fsMount mounts the bucket with s3fs (Debian's 1.90) in the
// foreground, keys in a 0600 file, and takes it down when the test ends.
func (e *env) s3fsMount(tb testing.TB, name string) string {
	tb.Helper()
	bin, err := exec.LookPath("s3fs")
	if err != nil {
		tb.Skip("s3fs not installed (make deps)")
	}
	mnt := filepath.Join(e.dir, name)
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	passwd := filepath.Join(tb.TempDir(), "passwd")
	if err := os.WriteFile(passwd, []byte(e.s3.AccessKey+":"+e.s3.SecretKey+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, bucket, mnt, "-f",
		"-o", "passwd_file="+passwd, "-o", "url="+e.s3.Endpoint, "-o", "use_path_request_style")
	// AWS_CA_BUNDLE is set in some environments and is no use over http.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "AWS_") })
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = unix.Unmount(mnt, 0)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		var st, parent unix.Stat_t
		if unix.Stat(mnt, &st) == nil && unix.Stat(e.dir, &parent) == nil && st.Dev != parent.Dev {
			return mnt
		}
		if time.Now().After(deadline) {
			tb.Fatal("s3fs did not mount in 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkVsS3fs measures bucketfs and s3fs in the same run, so the
// ratio holds however busy the machine is: 256 MiB written, then read on
// a fresh mount.
func BenchmarkVsS3fs(b *testing.B) {
	e := newEnv(b)
	data := random(b, benchFileSize)
	var writeB, writeS, readB, readS []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, mb := e.mount(b, fmt.Sprintf("b%d", i), e.config())
		ms := e.s3fsMount(b, fmt.Sprintf("s%d", i))
		nb, ns := fmt.Sprintf("viab%d", i), fmt.Sprintf("vias%d", i)
		writeB = append(writeB, mbps(benchFileSize, timeIt(b, func() error { return writeFile(filepath.Join(mb, nb), data) })))
		writeS = append(writeS, mbps(benchFileSize, timeIt(b, func() error { return writeFile(filepath.Join(ms, ns), data) })))
		_, cb := e.mount(b, fmt.Sprintf("cb%d", i), e.config())
		cs := e.s3fsMount(b, fmt.Sprintf("cs%d", i))
		readB = append(readB, mbps(benchFileSize, timeIt(b, func() error { _, err := os.ReadFile(filepath.Join(cb, ns)); return err })))
		readS = append(readS, mbps(benchFileSize, timeIt(b, func() error { _, err := os.ReadFile(filepath.Join(cs, nb)); return err })))
	}
	avg := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	b.ReportMetric(avg(writeB), "bucketfs_write_MB/s")
	b.ReportMetric(avg(writeS), "s3fs_write_MB/s")
	b.ReportMetric(avg(readB), "bucketfs_read_MB/s")
	b.ReportMetric(avg(readS), "s3fs_read_MB/s")
	b.ReportMetric(avg(writeB)/avg(writeS), "write_ratio")
	b.ReportMetric(avg(readB)/avg(readS), "read_ratio")
}
