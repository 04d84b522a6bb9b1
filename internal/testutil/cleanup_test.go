package testutil_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/backend/local"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// Cleanup must take down what a test that died halfway leaves, even the
// worst case: a volume staged from a pool that is itself a mounted loop
// device, so nothing outlives the test on the machine.
func TestCleanupTakesDownNestedPools(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<30); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.xfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v %s", err, out)
	}
	dev, err := loop.Attach(img, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	poolDir := filepath.Join(dir, "pool")
	if err := os.Mkdir(poolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, poolDir, "xfs", 0, ""); err != nil {
		testutil.Cleanup(dir)
		t.Fatal(err)
	}
	b, err := local.New(poolDir, "n")
	if err != nil {
		testutil.Cleanup(dir)
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := b.CreateVolume(ctx, &backend.CreateRequest{Name: "left", MinSize: 32 << 20})
	if err == nil {
		err = b.Stage(ctx, &backend.StageRequest{ID: v.ID, StagingPath: filepath.Join(dir, "staging")})
	}
	if err == nil {
		err = b.Publish(ctx, &backend.PublishRequest{ID: v.ID, StagingPath: filepath.Join(dir, "staging"), TargetPath: filepath.Join(dir, "pod")})
	}
	testutil.Cleanup(dir) // as if the test had died here
	if err != nil {
		t.Fatal(err)
	}
	testutil.CheckClean(t, dir)
}
