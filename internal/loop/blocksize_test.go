package loop_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// Options.BlockSize and DirectIO reach the kernel: sysfs shows the
// device's logical block size and direct I/O as asked.
func TestAttachSettings(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	for _, c := range []struct {
		name  string
		opts  loop.Options
		block string
	}{
		{"default", loop.Options{}, "512"},
		{"4k-direct", loop.Options{BlockSize: 4096, DirectIO: true}, "4096"},
	} {
		image := filepath.Join(dir, c.name+".img")
		if err := os.WriteFile(image, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		dev, err := loop.Attach(image, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		queue := filepath.Join("/sys/block", filepath.Base(dev), "queue")
		if b, err := os.ReadFile(filepath.Join(queue, "logical_block_size")); err != nil || strings.TrimSpace(string(b)) != c.block {
			t.Errorf("%s: logical block size %q %v, want %s", c.name, b, err, c.block)
		}
		if on, err := loop.DirectIO(dev); err != nil || on != c.opts.DirectIO {
			t.Errorf("%s: direct I/O %v %v, want %v", c.name, on, err, c.opts.DirectIO)
		}
		if err := loop.DetachImage(image); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckClean(t, dir)
}
