package local

import (
	"context"
	"fmt"
	"testing"

	"github.com/volplug/volplug/internal/backend"
)

// GetCapacity, and every CreateVolume's check for room under spaceMu,
// reads every volume's metadata. BenchmarkCapacity/N against
// BenchmarkListVolumes/N (which parses every file, as Capacity did before
// the metadata cache) shows what the cache saves; both grow linearly in N.
func BenchmarkCapacity(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		be := poolWith(b, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := be.Capacity(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkListVolumes(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		be := poolWith(b, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := be.ListVolumes(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// poolWith opens a pool holding n small volumes (sparse images, never
// attached: no root needed).
func poolWith(b *testing.B, n int) *Backend {
	b.Helper()
	be, err := Open(b.TempDir(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	for i := range n {
		if _, err := be.CreateVolume(context.Background(), &backend.CreateRequest{Name: fmt.Sprint("v", i), MinSize: 16 * MiB}); err != nil {
			b.Fatal(err)
		}
	}
	return be
}

// The cache sees every change of a volume's metadata, made by this
// process or another sharing the pool, and forgets deleted volumes.
func TestCapacityFollowsMetadata(t *testing.T) {
	be, err := Open(t.TempDir(), "n")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	v, err := be.CreateVolume(ctx, &backend.CreateRequest{Name: "a", MinSize: 16 * MiB})
	if err != nil {
		t.Fatal(err)
	}
	// The promise, not Capacity: the pool's free space moves with
	// whatever else runs on this filesystem (other test packages do).
	before, err := be.promised()
	if err != nil {
		t.Fatal(err)
	}
	other, err := Open(be.Dir(), "n") // another process's view of the pool
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.ExpandVolume(ctx, v.ID, 48*MiB, nil); err != nil {
		t.Fatal(err)
	}
	after, err := be.promised()
	if err != nil {
		t.Fatal(err)
	}
	if grown := after - before; grown < 31*MiB || grown > 33*MiB {
		t.Errorf("promised %d before, %d after growing a volume by 32 MiB elsewhere", before, after)
	}
	if err := other.DeleteVolume(ctx, v.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Capacity(ctx); err != nil {
		t.Fatal(err)
	}
	if len(be.meta.m) != 0 {
		t.Errorf("the cache still holds %d deleted volumes", len(be.meta.m))
	}
}
