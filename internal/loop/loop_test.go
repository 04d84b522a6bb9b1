package loop_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// A device is found by its image's identity, not by the path the kernel
// shows: after the image moves, sysfs still shows the old path, Find and
// Holds follow the file, and a new file at the old path is not it.
func TestFindByIdentity(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	image := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(image, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dev, err := loop.Attach(image, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := loop.Attach(image, loop.Options{})
	if err != nil || again != dev {
		t.Fatalf("a second attach gave %q %v, want %s", again, err, dev)
	}

	moved := filepath.Join(dir, "moved.img")
	if err := os.Rename(image, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(image, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := loop.Find(moved); err != nil || got != dev {
		t.Errorf("loop.Find(moved image) = %q %v, want %s", got, err, dev)
	}
	if got, err := loop.Find(image); err != nil || got != "" {
		t.Errorf("loop.Find(new file at the old path) = %q %v, want none", got, err)
	}
	if ok, err := loop.Holds(dev, moved); err != nil || !ok {
		t.Errorf("loop.Holds(moved image) = %v %v", ok, err)
	}
	if ok, err := loop.Holds(dev, image); err != nil || ok {
		t.Errorf("loop.Holds(new file at the old path) = %v %v", ok, err)
	}
	if got, err := loop.Find(filepath.Join(dir, "missing.img")); err != nil || got != "" {
		t.Errorf("loop.Find(missing) = %q %v", got, err)
	}
	if err := loop.Detach(dev, moved); err != nil {
		t.Fatal(err)
	}
	if got, err := loop.Find(moved); err != nil || got != "" {
		t.Errorf("Find after detach = %q %v", got, err)
	}
	testutil.CheckClean(t, dir)
}
