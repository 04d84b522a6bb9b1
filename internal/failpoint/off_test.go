//go:build !failpoints

package failpoint_test

import (
	"testing"

	"github.com/volplug/volplug/internal/failpoint"
)

// The release build's Hit costs what an empty loop body does: it is
// inlined to nothing. Compare BenchmarkHit with BenchmarkEmpty, or see
// `go build -gcflags=-m ./internal/backend/local 2>&1 | grep failpoint.Hit`
// ("inlining call to failpoint.Hit").
func BenchmarkHit(b *testing.B) {
	for b.Loop() {
		failpoint.Hit("bench.point")
	}
}

func BenchmarkEmpty(b *testing.B) {
	for b.Loop() {
	}
}

func TestReleaseBuildHasNoFailpoints(t *testing.T) {
	if failpoint.Enabled {
		t.Fatal("failpoints enabled without the build tag")
	}
	failpoint.Hit("anything") // must do nothing, even when armed
}
