package local

import (
	"context"
	"os/exec"
	"testing"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/testutil"
)

func hasProblem(h *backend.Health, kind backend.ProblemKind) bool {
	for _, p := range h.Problems {
		if p.Kind == kind {
			return true
		}
	}
	return false
}

// A filesystem that shut down under its mount (xfs after a fatal error) is
// reported inaccessible, and the volume still comes down cleanly.
func TestHealthSeesCorruptedMount(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("shutdown", 320*MiB, "xfs", false)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	h, err := r.b.NodeHealth(ctx, v.ID, r.staging(v.ID), r.target(v.ID))
	r.must(err)
	if len(h.Problems) != 0 {
		t.Fatalf("healthy volume: %+v", h.Problems)
	}
	if out, err := exec.Command("xfs_io", "-x", "-c", "shutdown", r.staging(v.ID)).CombinedOutput(); err != nil {
		t.Fatalf("xfs_io shutdown: %v %s", err, out)
	}
	h, err = r.b.NodeHealth(ctx, v.ID)
	r.must(err)
	if !hasProblem(h, backend.Inaccessible) {
		t.Errorf("after a shutdown: %+v, want inaccessible", h.Problems)
	}
	r.down(v)
	testutil.CheckClean(t, r.dir)
}

// When the loop device is gone (a reboot, a stray losetup -d) while the CO
// still believes the volume staged, the node reports it.
func TestHealthSeesLostDevice(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	v := r.create("lost", 32*MiB, "ext4", false)
	r.must(r.stage(v, false))
	r.must(r.b.Unstage(ctx, v.ID, r.staging(v.ID))) // behind the CO's back
	h, err := r.b.NodeHealth(ctx, v.ID, r.staging(v.ID))
	r.must(err)
	if !hasProblem(h, backend.Inaccessible) {
		t.Errorf("lost device: %+v, want inaccessible", h.Problems)
	}
	r.must(r.b.DeleteVolume(ctx, v.ID, nil))
	testutil.CheckClean(t, r.dir)
}
