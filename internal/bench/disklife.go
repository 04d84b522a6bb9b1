package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DirFloor is the lifecycle floor of the disk bench: what a driver that
// hands out bare directories (the reference hostpath driver) must do at
// least. mkdir and rmdir are system calls, as such a driver makes them;
// the bind mount and unmount are the mount tools, as mount-utils runs
// them for it.
type DirFloor struct {
	Dir     string
	Timeout time.Duration
}

var dirFloorSteps = []string{"mkdir", "mount --bind", "umount", "rmdir"}

// Steps lists the timed steps of one Cycle.
func (f *DirFloor) Steps() []string { return dirFloorSteps }

// Cycle makes a directory, binds it at a target, and undoes both.
func (f *DirFloor) Cycle(ctx context.Context, name string) (durs []time.Duration, err error) {
	vol := filepath.Join(f.Dir, name)
	target := filepath.Join(f.Dir, name+".target")
	if err := os.Mkdir(target, 0o750); err != nil { // the CO's part
		return nil, err
	}
	bound := false
	defer func() {
		if err != nil {
			if bound && isMountPoint(target) {
				_, uerr := runTool(context.Background(), f.Timeout, "umount", target)
				err = errors.Join(err, uerr)
			}
			err = errors.Join(err, os.Remove(vol), os.Remove(target))
		} else {
			err = os.Remove(target)
		}
	}()
	steps := []func() error{
		func() error { return os.Mkdir(vol, 0o750) },
		func() error {
			bound = true
			_, err := runTool(ctx, f.Timeout, "mount", "--bind", vol, target)
			return err
		},
		func() error { _, err := runTool(ctx, f.Timeout, "umount", target); return err },
		func() error { return os.Remove(vol) },
	}
	for i, s := range steps {
		t0 := time.Now()
		if err := s(); err != nil {
			return durs, fmt.Errorf("dir floor %s: %s: %w", name, dirFloorSteps[i], err)
		}
		durs = append(durs, time.Since(t0))
	}
	return durs, nil
}

// specCycler is a driver's cycle for one kind of volume.
type specCycler struct {
	d    *Driver
	spec VolumeSpec
}

func (c specCycler) Steps() []string { return c.d.Steps() }
func (c specCycler) Cycle(ctx context.Context, name string) ([]time.Duration, error) {
	return c.d.CycleWith(ctx, name, c.spec)
}

// LifeRow is one layout at one concurrency level.
type LifeRow struct {
	Pool        string    `json:"pool"`
	Layout      string    `json:"layout"`
	Concurrency int       `json:"concurrency"`
	Cycles      int       `json:"cycles"`
	Errors      int       `json:"errors"`
	P50MS       float64   `json:"p50_ms"` // of the cycle's own steps (a stage delay is not counted)
	P99MS       float64   `json:"p99_ms"`
	PerSec      float64   `json:"cycles_per_s"` // completed cycles over busy wall time; 0 with a stage delay
	VsFloor     float64   `json:"vs_floor"`     // PerSec (or 1/p50 with a stage delay) over the floor's
	VsImage     float64   `json:"vs_image"`     // the same over the image layout on the machine's filesystem
	StepP50MS   []float64 `json:"step_p50_ms"`
	Steps       []string  `json:"steps"`
}

// DefaultDiskCycles keeps each layout's level to seconds: 40 cycles one at
// a time, 10 per worker above.
func DefaultDiskCycles(c int) int {
	if c <= 1 {
		return 40
	}
	return 10 * c
}

// runLifecycleTable alternates the floor and every layout in rounds at
// each level.
func runLifecycleTable(ctx context.Context, cfg DiskConfig, root string, plain, btrfs *diskPool, progress func(string, ...any)) ([]*LifeRow, error) {
	floorDir := filepath.Join(root, "dirfloor")
	if err := os.Mkdir(floorDir, 0o700); err != nil {
		return nil, err
	}
	type side struct {
		pool, layout string
		c            Cycler
	}
	sides := []side{
		{plain.Name, "bare directory (floor)", &DirFloor{Dir: floorDir, Timeout: cfg.RPCTimeout}},
		{plain.Name, "image", specCycler{plain.drv, VolumeSpec{Capability: mountCap("ext4")}}},
	}
	if btrfs != nil {
		sides = append(sides,
			side{btrfs.Name, "native", specCycler{btrfs.drv, VolumeSpec{Parameters: map[string]string{"layout": "native"}, Capability: mountCap("")}}},
			side{btrfs.Name, "image", specCycler{btrfs.drv, VolumeSpec{Capability: mountCap("ext4")}}},
		)
	}
	// Untimed warm-up: first mounts, first qgroup, page cache.
	for i, s := range sides {
		if r := RunLevel(ctx, s.c, 1, 2, fmt.Sprintf("w%d", i), 0); len(r.Errors) > 0 {
			return nil, fmt.Errorf("warm-up %s %s: %w", s.pool, s.layout, r.Errors[0])
		}
	}
	var rows []*LifeRow
	var errs []error
	for _, c := range cfg.Levels {
		n := cfg.Cycles
		if n == 0 {
			n = DefaultDiskCycles(c)
		}
		rounds := Rounds(cfg.Rounds, c, n)
		res := make([]LevelResult, len(sides))
		for round := range rounds {
			share := n/rounds + btoi(round < n%rounds)
			for i, s := range sides {
				if ctx.Err() != nil {
					return rows, ctx.Err()
				}
				res[i].Merge(RunLevel(ctx, s.c, c, share, fmt.Sprintf("l%d-%d-%d", i, c, round), 0))
			}
		}
		level := make([]*LifeRow, len(sides))
		for i, s := range sides {
			level[i] = lifeRow(s.pool, s.layout, c, res[i], s.c.Steps(), cfg.StageDelay > 0)
			for _, e := range res[i].Errors {
				errs = append(errs, fmt.Errorf("%s %s c=%d: %w", s.pool, s.layout, c, e))
			}
		}
		for _, r := range level {
			r.VsFloor = speedRatio(r, level[0])
			r.VsImage = speedRatio(r, level[1])
			progress("lifecycle c=%-2d %-6s %-24s %4d cycles  p50 %7.1f ms  %6.1f/s  %.2fx floor",
				c, r.Pool, r.Layout, r.Cycles, r.P50MS, r.PerSec, r.VsFloor)
		}
		rows = append(rows, level...)
	}
	return rows, errors.Join(errs...)
}

// lifeRow summarizes a level. A cycle's time is the sum of its steps, so
// that a stage delay, which is no one's work, is left out.
func lifeRow(pool, layout string, c int, r LevelResult, steps []string, delayed bool) *LifeRow {
	row := &LifeRow{Pool: pool, Layout: layout, Concurrency: c, Cycles: len(r.Totals), Errors: len(r.Errors), Steps: steps}
	sums := make([]time.Duration, len(r.Totals))
	for _, s := range r.Steps {
		for i, d := range s {
			if i < len(sums) {
				sums[i] += d
			}
		}
		row.StepP50MS = append(row.StepP50MS, ms(Summarize(s).P50))
	}
	sum := Summarize(sums)
	row.P50MS, row.P99MS = ms(sum.P50), ms(sum.P99)
	if !delayed {
		row.PerSec = Throughput(len(r.Totals), r.Wall)
	}
	return row
}

// speedRatio compares throughput, or, when a stage delay makes the
// throughput the delay's, the inverse of the p50.
func speedRatio(r, base *LifeRow) float64 {
	if r.PerSec > 0 && base.PerSec > 0 {
		return Ratio(r.PerSec, base.PerSec)
	}
	return Ratio(base.P50MS, r.P50MS)
}
