package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/volplug/volplug/internal/testutil"
)

func TestFioRowsMediansAndRatios(t *testing.T) {
	rows := []*FioRow{
		{Pool: "ext4", Target: "pool filesystem", Baseline: true, Samples: [][]float64{{100, 300}, {10, 10, 40}, {1000}, {5}}},
		{Pool: "ext4", Target: "volume", Samples: [][]float64{{100}, {5}, {950}, {10}}},
		{Pool: "btrfs", Target: "native", Samples: [][]float64{{50}, {50}, {50}, {50}}},
		{Pool: "btrfs", Target: "pool filesystem", Baseline: true, Samples: [][]float64{{100}, {100}, {100}, {100}}},
		{Pool: "btrfs", Target: "broken", Skipped: "no"},
	}
	finishFioRows(rows)
	if got := rows[0].Values; got[0] != 200 || got[1] != 10 {
		t.Errorf("medians %v, want 200 (mean of the middle two) and 10", got)
	}
	want := []float64{0.5, 0.5, 0.95, 2}
	for j, w := range want {
		if math.Abs(rows[1].Ratios[j]-w) > 1e-9 {
			t.Errorf("ratio %d: %v, want %v", j, rows[1].Ratios[j], w)
		}
	}
	if rows[2].Ratios[0] != 0.5 {
		t.Errorf("a baseline listed after its row: ratio %v, want 0.5", rows[2].Ratios[0])
	}
	if rows[4].Values != nil || rows[4].Ratios != nil {
		t.Error("a skipped row got figures")
	}
	rep := &DiskReport{Fio: rows, FioRuntime: JSONSeconds(time.Second), FioFileBytes: 64 << 20}
	var out bytes.Buffer
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"| ext4 | volume | 100 MiB/s (0.50x) |", "950 IOPS (0.95x)", "| btrfs | broken | skipped: no |"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}
}

// The spread is each round's ratio against the baseline's same round.
func TestFioRowsSpread(t *testing.T) {
	rows := []*FioRow{
		{Pool: "btrfs", Target: "pool filesystem", Baseline: true, Samples: [][]float64{{100, 200, 400}, {1}, {1}, {1}}},
		{Pool: "btrfs", Target: "native", Samples: [][]float64{{90, 100, 400}, {1}, {1}, {1}}},
	}
	finishFioRows(rows)
	if r := rows[1]; r.Ratios[0] != 0.5 || r.RatioMin[0] != 0.5 || r.RatioMax[0] != 1 {
		t.Errorf("ratio %v, spread %v-%v; want 0.5 (median over median), 0.5-1 (per round)", r.Ratios[0], r.RatioMin[0], r.RatioMax[0])
	}
	if rows[0].RatioMin != nil {
		t.Error("the baseline got a spread")
	}
	rep := &DiskReport{Fio: rows, FioRuntime: JSONSeconds(time.Second), FioFileBytes: 64 << 20}
	var out bytes.Buffer
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "| btrfs | native | 100 MiB/s (0.50x, 0.50x-1.00x) | 1 MiB/s (1.00x) |") {
		t.Errorf("table:\n%s", out.String())
	}
}

// A cycle's time is the sum of its steps, so a stage delay is not in it;
// with a delay, speed compares p50s.
func TestLifeRowLeavesTheDelayOut(t *testing.T) {
	ms := time.Millisecond
	r := LevelResult{
		Wall:   10 * time.Second, // mostly delay
		Totals: []time.Duration{2 * time.Second, 2 * time.Second},
		Steps:  [][]time.Duration{{1 * ms, 3 * ms}, {2 * ms, 2 * ms}},
	}
	row := lifeRow("ext4", "image", 1, r, []string{"a", "b"}, true)
	if row.P50MS != 3 || row.P99MS != 5 || row.PerSec != 0 {
		t.Errorf("row %+v: want p50 3 ms, p99 5 ms, no rate", row)
	}
	floor := &LifeRow{P50MS: 6}
	if got := speedRatio(row, floor); got != 2 {
		t.Errorf("speed vs a 6 ms floor: %v, want 2", got)
	}
	row = lifeRow("ext4", "image", 1, r, []string{"a", "b"}, false)
	if row.PerSec != 0.2 {
		t.Errorf("no delay: %v cycles/s, want 0.2", row.PerSec)
	}
}

func TestDirFloorCycle(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	f := &DirFloor{Dir: dir, Timeout: time.Minute}
	r := RunLevel(context.Background(), f, 2, 6, "f", 0)
	if len(r.Errors) > 0 || len(r.Totals) != 6 || len(r.Steps) != len(dirFloorSteps) {
		t.Fatalf("floor: %d cycles, errors %v", len(r.Totals), r.Errors)
	}
	checkClean(t, dir)
	if left, err := os.ReadDir(dir); err != nil || len(left) > 0 {
		t.Errorf("left %v (%v)", left, err)
	}
}

// The disk bench end to end, lifecycle only (fio takes minutes): every
// layout's cycle goes through the real driver with a stage delay, and
// nothing is left behind.
func TestRunDiskLifecycle(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildVolplug(t)
	parent := t.TempDir()
	rep, err := RunDisk(context.Background(), DiskConfig{
		Binary: bin, TempParent: parent, Lifecycle: true, Levels: []int{1}, Cycles: 2, Rounds: 1,
		StageDelay: 50 * time.Millisecond, BtrfsPoolBytes: 2 << 30,
	})
	if err != nil {
		t.Fatalf("%v\n%+v", err, rep)
	}
	layouts := map[string]bool{}
	for _, r := range rep.Lifecycle {
		layouts[r.Pool+" "+r.Layout] = true
		if r.Cycles != 2 || r.Errors != 0 || r.P50MS <= 0 {
			t.Errorf("row %+v", r)
		}
	}
	for _, want := range []string{"ext4 bare directory (floor)", "ext4 image", "btrfs native", "btrfs image"} {
		if !layouts[want] {
			t.Errorf("no row for %s: %v", want, layouts)
		}
	}
	if left, err := os.ReadDir(parent); err != nil || len(left) > 0 {
		t.Errorf("left %v (%v)", left, err)
	}
}
