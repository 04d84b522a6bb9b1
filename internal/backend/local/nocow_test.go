package local

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/volplug/volplug/internal/backend"
)

// TestNoDataCow: the parameter (true by default) sets FS_NOCOW_FL on the
// new subvolume before any data, so files written in the published volume are
// nodatacow; restores keep it; junk and image layouts are refused.
func TestNoDataCow(t *testing.T) {
	r, clean := newNativeRig(t)
	ctx := context.Background()
	params := map[string]string{paramLayout: layoutNative, paramNoDataCow: "true"}
	v, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "nocow", MinSize: 64 * MiB, Parameters: params})
	r.must(err)
	if on, err := hasNoCow(r.b.pool.subvol(v.ID)); err != nil || !on {
		t.Fatalf("subvolume root nodatacow = %v, %v; want true", on, err)
	}
	r.must(r.stage(v, false))
	r.must(r.publish(v, false, false))
	file := filepath.Join(r.target(v.ID), "f")
	if _, err := fill(file, 4*MiB); err != nil {
		t.Fatal(err)
	}
	if on, err := hasNoCow(file); err != nil || !on {
		t.Errorf("a file written in the volume: nodatacow = %v, %v; want true", on, err)
	}
	// The limit still holds.
	if n, err := fill(filepath.Join(r.target(v.ID), "big"), 128*MiB); err == nil || n >= 128*MiB {
		t.Errorf("wrote %d bytes past a 64 MiB limit (err %v)", n, err)
	}
	snap, err := r.b.CreateSnapshot(ctx, "nocow-snap", v.ID)
	r.must(err)
	restored, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "nocow-restored", MinSize: 64 * MiB, Parameters: params, SourceSnapshot: snap.ID})
	r.must(err)
	if on, err := hasNoCow(filepath.Join(r.b.pool.subvol(restored.ID), "f")); err != nil || !on {
		t.Errorf("a restored file: nodatacow = %v, %v; want true", on, err)
	}
	r.down(v)
	r.must(r.b.DeleteVolume(ctx, restored.ID, nil))
	r.must(r.b.DeleteSnapshot(ctx, snap.ID))

	// Without the parameter a native volume is nodatacow; with false it
	// keeps copy-on-write.
	dflt, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "default", MinSize: 64 * MiB, Parameters: nativeParams})
	r.must(err)
	if on, err := hasNoCow(r.b.pool.subvol(dflt.ID)); err != nil || !on {
		t.Errorf("no parameter: flag = %v, %v; want true (the default)", on, err)
	}
	r.must(r.b.DeleteVolume(ctx, dflt.ID, nil))
	plain, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "cow", MinSize: 64 * MiB,
		Parameters: map[string]string{paramLayout: layoutNative, paramNoDataCow: "false"}})
	r.must(err)
	if on, err := hasNoCow(r.b.pool.subvol(plain.ID)); err != nil || on {
		t.Errorf("nodatacow=false: flag = %v, %v; want false", on, err)
	}
	r.must(r.b.DeleteVolume(ctx, plain.ID, nil))

	for _, p := range []map[string]string{
		{paramLayout: layoutNative, paramNoDataCow: "yes please"},
		{paramNoDataCow: "true"}, // image: it means nothing there
		{paramLayout: layoutImage, paramNoDataCow: "true"},
	} {
		if _, err := r.b.CreateVolume(ctx, &backend.CreateRequest{Name: "bad", MinSize: 64 * MiB, Parameters: p}); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("%v: got %v, want invalid", p, err)
		}
	}
	clean()
}
