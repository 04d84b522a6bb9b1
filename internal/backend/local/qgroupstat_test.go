package local

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestQgroupStatsFromSysfs: the figures NodeGetVolumeStats takes from
// sysfs are those `btrfs qgroup show` prints, and without sysfs the tool
// still answers.
func TestQgroupStatsFromSysfs(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	v := r.createNative("stats", 64*MiB)
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	if _, err := fill(filepath.Join(r.target(v.ID), "f"), 5*MiB); err != nil {
		t.Fatal(err)
	}
	sub := r.b.pool.subvol(v.ID)
	// The accounting happens at commit: make one before both reads.
	if out, err := exec.Command("btrfs", "filesystem", "sync", sub).CombinedOutput(); err != nil {
		t.Fatalf("btrfs filesystem sync: %v %s", err, out)
	}
	used, limit, err := qgroupSysfs(sub)
	if err != nil {
		t.Fatalf("sysfs: %v (this kernel should publish qgroups there)", err)
	}
	toolUsed, toolLimit, err := qgroupUsage(ctx, sub)
	r.must(err)
	if used != toolUsed || limit != toolLimit {
		t.Errorf("sysfs says %d used of %d, btrfs qgroup show %d of %d", used, limit, toolUsed, toolLimit)
	}
	if used < 5*MiB || limit != 64*MiB {
		t.Errorf("used %d, limit %d: want at least 5 MiB of 64 MiB", used, limit)
	}
	st, err := r.b.Stats(ctx, v.ID, r.target(v.ID))
	r.must(err)
	if st.UsedBytes != used || st.TotalBytes != limit {
		t.Errorf("Stats %+v, want used %d of %d", st, used, limit)
	}

	// Expansion shows at once.
	r.must(r.b.expandNative(v, 96*MiB))
	if _, limit, err := qgroupSysfs(sub); err != nil || limit != 96*MiB {
		t.Errorf("after expansion: limit %d, %v; want 96 MiB", limit, err)
	}

	// No sysfs: the tool.
	saved := sysfsBtrfs
	sysfsBtrfs = t.TempDir()
	if _, _, err := qgroupSysfs(sub); err == nil {
		t.Error("qgroupSysfs read a missing sysfs")
	}
	u2, l2, err := subvolumeUsage(ctx, sub)
	sysfsBtrfs = saved
	if err != nil || u2 != used || l2 != 96*MiB {
		t.Errorf("fallback: %d of %d, %v; want %d of 96 MiB", u2, l2, err, used)
	}
	r.down(v)
	clean()
}
