package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/internal/testutil"
)

// holdFormats takes every mkfs slot, so background formats wait until the
// returned release.
func holdFormats(r *rig) (release func()) {
	for range cap(r.b.formatSem) {
		r.b.formatSem <- struct{}{}
	}
	return func() {
		for range cap(r.b.formatSem) {
			<-r.b.formatSem
		}
	}
}

// diskseq is the kernel's sequence number of dev's current medium: a new
// one at every LOOP_CONFIGURE, so a detach and attach again shows, even on
// the same device number.
func diskseq(t *testing.T, dev string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "diskseq"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A stage that waits for the background format gets the format's own
// loop device, attached and formatted, not a detach and a fresh attach.
func TestStageTakesTheFormatsDevice(t *testing.T) {
	r := newBgRig(t)
	release := holdFormats(r)
	v := r.create("handoff", 300*MiB, "ext4", false)
	staged := make(chan error, 1)
	go func() { staged <- r.stage(v, false) }()
	waitFor(t, func() bool {
		r.b.bgMu.Lock()
		defer r.b.bgMu.Unlock()
		return r.b.bgJobs[v.ID] != nil && r.b.bgJobs[v.ID].stages == 1
	})
	release()
	image := r.b.pool.image(v.ID)
	var dev, seq string
	waitFor(t, func() bool {
		if d, err := loop.Find(image); err == nil && d != "" {
			dev, seq = d, diskseq(t, d)
			return true
		}
		return false
	})
	r.must(<-staged)
	info, err := mount.New().Mounted(r.staging(v.ID))
	if err != nil || info == nil {
		t.Fatalf("not staged: %v", err)
	}
	if info.FSType != "ext4" || mount.SourceDevice(info) != dev || diskseq(t, dev) != seq {
		t.Fatalf("staged %s from %s (diskseq %s); the format had %s (diskseq %s)", info.FSType, mount.SourceDevice(info), diskseq(t, dev), dev, seq)
	}
	r.must(r.publish(v, false, false))
	r.down(v)
	testutil.CheckClean(t, r.dir)
}

// A stage that gives up waiting leaves no device behind: the format
// detaches its own when no stage waits any more.
func TestStageGivesUpDuringFormat(t *testing.T) {
	r := newBgRig(t)
	release := holdFormats(r)
	v := r.create("given-up", 300*MiB, "ext4", false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := r.b.Stage(ctx, &backend.StageRequest{ID: v.ID, StagingPath: r.staging(v.ID), FsType: v.FsType})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stage while formatting: %v, want the deadline", err)
	}
	release()
	r.must(r.b.waitFormat(context.Background(), v.ID))
	if dev, err := loop.Find(r.b.pool.image(v.ID)); err != nil || dev != "" {
		t.Fatalf("loop device %q (%v) left after the format", dev, err)
	}
	r.must(r.b.DeleteVolume(context.Background(), v.ID, nil))
	testutil.CheckClean(t, r.dir)
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
