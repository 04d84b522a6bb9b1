// Package testutil holds what tests of real mounts and devices share.
package testutil

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

// RequireRoot skips a test that needs root, except under CI (CI=true), where
// a test that cannot run is a failure: CI runs as root, so a skip there would
// hide a broken set-up.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (CI=true, so it may not be skipped)")
	}
	t.Skip("needs root: real loop devices and mounts")
}

// CheckClean fails the test when a mount point or an attached loop device
// remains under dir: every path of the driver must leave nothing behind.
func CheckClean(t testing.TB, dir string) {
	t.Helper()
	mounts, err := mount.MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		t.Errorf("mount left behind: %s", m)
	}
	devs, err := leftLoops(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		t.Errorf("loop device %s left attached to %s", d.Path, d.Backing.Path)
	}
}

// leftLoops lists the loop devices that hold a file under dir, known by its
// path as sysfs shows it or by its identity: a device attached through a
// mount namespace that is gone shows a path that names nothing here.
func leftLoops(dir string) ([]loop.Device, error) {
	devs, err := loop.Devices()
	if err != nil || len(devs) == 0 {
		return nil, err
	}
	ids := map[loop.FileID]bool{}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if id, err := loop.IdentityOf(path); err == nil {
				ids[id] = true
			}
		}
		return nil // a corrupted mount or a vanished file: look on
	})
	var out []loop.Device
	for _, d := range devs {
		if ids[d.Backing.FileID] || under(dir, strings.TrimSuffix(d.Backing.Path, " (deleted)")) {
			out = append(out, d)
		}
	}
	return out, nil
}

// Cleanup tears down whatever a failed test left under dir, so one failure
// does not leak into the machine. Register it with t.Cleanup before
// CheckClean runs. Mounts come off deepest first, then the loop devices
// they freed; a pool that is itself a mounted loop device (reflink tests)
// takes a second round. Only what is still busy after that is unmounted
// lazily.
func Cleanup(dir string) {
	for round := 0; round < 3; round++ {
		mounts, _ := mount.MountsUnder(dir)
		for i := len(mounts) - 1; i >= 0; i-- {
			_ = unix.Unmount(mounts[i], 0)
		}
		devs, _ := leftLoops(dir)
		for _, d := range devs {
			_ = loop.Release(d)
		}
	}
	mounts, _ := mount.MountsUnder(dir)
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(mounts[i], unix.MNT_DETACH)
	}
}

func under(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && filepath.IsLocal(rel)
}
