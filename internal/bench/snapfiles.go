package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// newBenchVolume is a volume of the bench's own, outside RunLevel's naming.
func newBenchVolume(d *Driver, name string) *volume {
	v := &volume{name: name, dir: filepath.Join(d.volDir, name)}
	v.staging = filepath.Join(v.dir, "staging")
	v.target = filepath.Join(v.dir, "pod", "target")
	return v
}

// makeVolumeDirs makes what the CO makes: the staging path, and the
// target's parent (the driver makes the target itself).
func makeVolumeDirs(v *volume, staging bool) error {
	if err := os.MkdirAll(filepath.Dir(v.target), 0o750); err != nil {
		return fmt.Errorf("volume %s: %w", v.name, err)
	}
	if staging {
		if err := os.Mkdir(v.staging, 0o750); err != nil {
			return fmt.Errorf("volume %s: %w", v.name, err)
		}
	}
	return nil
}

// writeRandomFile writes n bytes that no filesystem or copy could
// compress or deduplicate, then fsyncs them: the snapshot must copy real
// data, not holes or zeroes.
func writeRandomFile(ctx context.Context, path string, n int64) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write data: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write data: %w", cerr)
		}
	}()
	var seed [32]byte
	copy(seed[:], path)
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, 4<<20)
	for left := n; left > 0; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("write data: %w", err)
		}
		chunk := buf[:min(int64(len(buf)), left)]
		_, _ = rng.Read(chunk) // never fails
		if _, err := f.Write(chunk); err != nil {
			return fmt.Errorf("write data: %w", err)
		}
		left -= int64(len(chunk))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write data: fsync: %w", err)
	}
	return nil
}

// readAll reads a file once, to put it in the page cache.
func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// imageOfMount finds the disk image behind a mount: the mount's source
// device from mountinfo, then that loop device's backing file. It asks the
// kernel rather than knowing the driver's pool layout.
func imageOfMount(path string) (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	dev := mountSource(string(data), filepath.Clean(path))
	if dev == "" {
		return "", fmt.Errorf("%s is not a mount point", path)
	}
	loops, err := loopDevices()
	if err != nil {
		return "", err
	}
	for _, l := range loops {
		if l.Dev == dev {
			return l.Backing, nil
		}
	}
	return "", fmt.Errorf("%s is mounted from %s, not from an attached loop device", path, dev)
}

// mountSource returns the source (field after " - " and the fs type) of
// the last mount at mountPoint in mountinfo text, or "". The last one is
// the one visible when mounts are stacked.
func mountSource(mountinfo, mountPoint string) string {
	src := ""
	for line := range strings.SplitSeq(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMountInfo(f[4]) != mountPoint {
			continue
		}
		for i, x := range f {
			if x == "-" && i+2 < len(f) {
				src = unescapeMountInfo(f[i+2])
				break
			}
		}
	}
	return src
}
