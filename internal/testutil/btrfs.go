package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/loop"
)

// BtrfsPool mounts a fresh btrfs filesystem of size bytes, on a loop device
// over a sparse image in dir, at dir/name, and returns that path. It comes
// down when the test ends (or, after a failure, with Cleanup(dir)), or
// earlier with down, which a test calls before CheckClean.
func BtrfsPool(t testing.TB, dir, name string, size int64) (path string, down func() error) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, name+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v %s", err, out)
	}
	dev, err := loop.Attach(img, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := filepath.Join(dir, name)
	if err := os.MkdirAll(at, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, at, "btrfs", 0, ""); err != nil {
		_ = loop.DetachImage(img)
		t.Fatal(err)
	}
	down = func() error {
		if err := unix.Unmount(at, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("unmount %s: %w", at, err)
		}
		// By the image, not by dev: once detached, dev's name may already
		// belong to another process's device (a second down, from
		// t.Cleanup after the test's own, once detached a demo's volume).
		return loop.DetachImage(img)
	}
	// Whatever still uses the pool is the test's to report; Cleanup takes
	// it down then.
	t.Cleanup(func() { _ = down() })
	return at, down
}
