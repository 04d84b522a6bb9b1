package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Config is one bench run.
type Config struct {
	Binary      string // volplug binary for the driver (os.Executable() from the CLI)
	TempParent  string // where the private temp dir goes ("" = os.TempDir())
	Levels      []int  // concurrency levels, in order
	Cycles      int    // cycles per level; 0 = DefaultCycles(level)
	Warmup      int    // untimed cycles of each side before the first level
	Attach      bool   // start the driver with --enable-attach
	FloorAll    bool   // measure the floor at every level, not only c=1
	SizeBytes   int64
	FsType      string
	RPCTimeout  time.Duration
	SampleEvery time.Duration // RSS sampling interval
	MaxErrors   int           // failed cycles tolerated per level before stopping
	Rounds      int           // alternating floor/driver rounds per level (see Rounds)
	DriverLog   string        // keep the driver's log here ("" = inside the temp dir, removed)
	Progress    io.Writer     // progress lines; nil = none

	// The snapshot and clone section (see runSnapshots).
	Snapshots       bool  // run it after the load
	SnapshotsOnly   bool  // run only it
	SnapIterations  int   // snapshots, restores and clones per pool (0 = 5)
	SnapVolumeBytes int64 // source volume size (0 = 1 GiB)
	SnapWriteBytes  int64 // data written to it first (0 = 512 MiB)
	SnapPoolBytes   int64 // the xfs reflink pool's image (0 = 8 GiB)
}

// DefaultCycles is enough cycles for a p99 that is not simply the maximum
// (at least 100 samples) while a default run (1,8,32, driver and floor)
// stays under a minute on two cores: 100 serial cycles, then 320 or 10 per
// worker so that the ramp-up of each wave does not dominate.
func DefaultCycles(c int) int {
	if c <= 1 {
		return 100
	}
	return max(320, 10*c)
}

func (c *Config) defaults() error {
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
		c.Binary = exe
	}
	if len(c.Levels) == 0 {
		c.Levels = []int{1, 8, 32}
	}
	for _, l := range c.Levels {
		if l < 1 {
			return fmt.Errorf("concurrency %d: must be at least 1", l)
		}
	}
	if c.SizeBytes == 0 {
		c.SizeBytes = 1 << 30
	}
	if c.FsType == "" {
		c.FsType = "ext4"
	}
	if c.RPCTimeout == 0 {
		c.RPCTimeout = 2 * time.Minute
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = 20 * time.Millisecond
	}
	if c.Rounds < 1 {
		c.Rounds = 1
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.SnapIterations < 1 {
		c.SnapIterations = 5
	}
	if c.SnapVolumeBytes == 0 {
		c.SnapVolumeBytes = 1 << 30
	}
	if c.SnapWriteBytes == 0 {
		c.SnapWriteBytes = 512 << 20
	}
	if c.SnapWriteBytes >= c.SnapVolumeBytes {
		return fmt.Errorf("snapshot data %d bytes: must be less than the volume (%d bytes), which holds a filesystem too", c.SnapWriteBytes, c.SnapVolumeBytes)
	}
	if c.SnapPoolBytes == 0 {
		// Room for the source, a restored volume and a clone at full
		// size (the driver counts shared images as such) and the floor.
		c.SnapPoolBytes = 8 << 30
	}
	return nil
}

// Run measures the driver and the floor and returns the report. The report
// is returned even with an error, holding whatever was measured, so the
// caller can print it; the error says what went wrong, including anything
// left behind.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench needs root: it attaches loop devices and mounts filesystems")
	}
	started := time.Now()
	root, err := os.MkdirTemp(cfg.TempParent, "volplug-bench-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	// The kernel reports mount points and backing files by their real
	// path; using it everywhere keeps the leftover checks exact.
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	rep = &Report{
		Started: started,
		Setup: Setup{
			Backend: "local", SizeBytes: cfg.SizeBytes, FsType: cfg.FsType,
			AccessMode: "SINGLE_NODE_WRITER", Warmup: cfg.Warmup,
			CPUs: runtime.NumCPU(), Dir: root,
		},
		FloorSteps: floorSteps,
		Memory:     Memory{TargetIdleMiB: TargetIdleMiB, TargetLoadedMiB: TargetLoadedMiB},
	}
	var errs []error
	fail := func(e error) {
		errs = append(errs, e)
		rep.Errors = append(rep.Errors, e.Error())
	}
	progress := func(format string, a ...any) { fmt.Fprintf(cfg.Progress, format+"\n", a...) }

	logPath := cfg.DriverLog
	if logPath == "" {
		logPath = filepath.Join(root, "driver.log")
	}
	driverDir := filepath.Join(root, "d")
	floor := &Floor{Dir: filepath.Join(root, "floor"), SizeBytes: cfg.SizeBytes, FsType: cfg.FsType, Timeout: cfg.RPCTimeout}

	var drv *Driver
	defer func() {
		if len(errs) > 0 && drv != nil && cfg.DriverLog == "" {
			// The log goes with the temp dir; show its end while it exists.
			progress("%s", drv.logTail())
		}
		for _, e := range finish(rep, drv, root, driverDir, progress) {
			fail(e)
		}
		rep.Duration = JSONSeconds(time.Since(started))
		err = errors.Join(errs...)
	}()

	// The load: driver and floor cycles at each concurrency level. A
	// return ends it early; fail has said why.
	load := func() {
		if err := os.Mkdir(floor.Dir, 0o700); err != nil {
			fail(fmt.Errorf("create floor dir: %w", err))
			return
		}
		progress("starting driver: %s csi --backend=local (dir %s)", cfg.Binary, root)
		drv, err = StartDriver(ctx, DriverOptions{
			Binary: cfg.Binary, Dir: driverDir, NodeID: "bench-node", Attach: cfg.Attach,
			LogPath: logPath, StartTimeout: 30 * time.Second, RPCTimeout: cfg.RPCTimeout,
			SizeBytes: cfg.SizeBytes, FsType: cfg.FsType,
		})
		if err != nil {
			drv = nil // StartDriver already stopped it
			fail(fmt.Errorf("start driver: %w", err))
			return
		}
		rep.Driver = drv.Info
		rep.Steps = drv.Steps()
		if cfg.Attach && !drv.Info.ControllerPublish {
			rep.Notes = append(rep.Notes, "--attach given but the driver does not advertise PUBLISH_UNPUBLISH_VOLUME")
		}

		// Idle: after start-up settled, before any volume work.
		time.Sleep(300 * time.Millisecond)
		idle, err := drv.RSSKiB()
		if err != nil {
			fail(fmt.Errorf("idle RSS: %w", err))
			return
		}
		rep.Memory.IdleMiB = KiBToMiB(idle)

		if cfg.Warmup > 0 {
			progress("warm-up: %d cycles each", cfg.Warmup)
			for _, side := range []struct {
				name string
				c    Cycler
			}{{"floor", floor}, {"driver", drv}} {
				r := RunLevel(ctx, side.c, 1, cfg.Warmup, "warm-"+side.name, 0)
				if len(r.Errors) > 0 {
					fail(fmt.Errorf("warm-up %s: %w", side.name, r.Errors[0]))
					return
				}
			}
		}

		var samples int
		for _, c := range cfg.Levels {
			n := cfg.Cycles
			if n == 0 {
				n = DefaultCycles(c)
			}
			lvl := Level{Concurrency: c}
			withFloor := cfg.FloorAll || c == 1
			// Floor and driver alternate in rounds so that whatever else
			// the machine does meanwhile weighs on both sides alike.
			rounds := 1
			if withFloor {
				rounds = Rounds(cfg.Rounds, c, n)
			}
			var fr, dr LevelResult
			var peak int64
			var serr error
			for round := range rounds {
				share := n/rounds + btoi(round < n%rounds)
				if withFloor {
					fr.Merge(RunLevel(ctx, floor, c, share, fmt.Sprintf("f%d-%d", c, round), cfg.MaxErrors-len(fr.Errors)))
				}
				sampler := StartRSSSampler(drv.Info.PID, cfg.SampleEvery)
				dr.Merge(RunLevel(ctx, drv, c, share, fmt.Sprintf("v%d-%d", c, round), cfg.MaxErrors-len(dr.Errors)))
				p, ns, err := sampler.Stop()
				peak, samples = max(peak, p), samples+ns
				if err != nil && serr == nil {
					serr = err
				}
				if len(fr.Errors) > cfg.MaxErrors || len(dr.Errors) > cfg.MaxErrors || ctx.Err() != nil {
					break
				}
			}
			if withFloor {
				lvl.Floor = seriesOf(fr, floorSteps)
				progress("floor  c=%-3d %4d cycles in %5.1fs  p50 %s ms  %s vol/s",
					c, len(fr.Totals), fr.Wall.Seconds(), fmtMS(lvl.Floor.Cycle.P50MS, lvl.Floor.Cycle.N), fmtRate(lvl.Floor.Throughput))
				cycleErrors(rep, fail, "floor", c, fr.Errors, cfg.MaxErrors)
			}
			r := dr
			lvl.Driver = seriesOf(r, drv.Steps())
			lvl.Driver.PeakRSSMiB = KiBToMiB(peak)
			if lvl.Driver.PeakRSSMiB >= rep.Memory.PeakMiB {
				rep.Memory.PeakMiB, rep.Memory.PeakAt = lvl.Driver.PeakRSSMiB, c
			}
			progress("driver c=%-3d %4d cycles in %5.1fs  p50 %s ms  %s vol/s  peak RSS %.1f MiB  (%d rounds)",
				c, len(r.Totals), r.Wall.Seconds(), fmtMS(lvl.Driver.Cycle.P50MS, lvl.Driver.Cycle.N), fmtRate(lvl.Driver.Throughput), lvl.Driver.PeakRSSMiB, rounds)
			rep.Levels = append(rep.Levels, lvl)
			if serr != nil {
				fail(fmt.Errorf("sample driver RSS: %w", serr))
			}
			cycleErrors(rep, fail, "driver", c, r.Errors, cfg.MaxErrors)
			if len(errs) > 0 || ctx.Err() != nil {
				break
			}
		}
		rep.Memory.Samples = samples
		rep.compare()
	}
	if !cfg.SnapshotsOnly {
		load()
	}
	if (cfg.Snapshots || cfg.SnapshotsOnly) && len(errs) == 0 && ctx.Err() == nil {
		sec, notes, serrs := runSnapshots(ctx, cfg, root, logPath, progress)
		rep.Snapshots = sec
		rep.Notes = append(rep.Notes, notes...)
		for _, e := range serrs {
			fail(e)
		}
	}
	if ctx.Err() != nil {
		fail(fmt.Errorf("interrupted: %w", ctx.Err()))
	}
	return rep, nil
}

// finish stops the driver, proves nothing was left behind and removes the
// temp dir. It returns every problem found; leftovers are cleaned up by
// force but still reported, because a driver that leaks mounts or loop
// devices is broken even if the bench can tidy up after it.
func finish(rep *Report, drv *Driver, root, driverDir string, progress func(string, ...any)) []error {
	var errs []error
	if drv != nil {
		if hwm, err := drv.HWMKiB(); err == nil {
			rep.Memory.HWMMiB = KiBToMiB(hwm)
		} else {
			errs = append(errs, fmt.Errorf("read VmHWM: %w", err))
		}
		// Leaks while the driver still runs are the driver's: every
		// volume was deleted through it by now.
		if l, err := FindLeftovers(root); err != nil {
			errs = append(errs, err)
		} else if !l.Empty() {
			errs = append(errs, fmt.Errorf("left behind with the driver still running, after all volumes were deleted: %s", l))
		}
		rep.Notes = append(rep.Notes, drv.Warnings()...)
		if err := drv.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop driver: %w", err))
		}
		rep.DriverExit = drv.ExitStatus
		if rep.DriverExit != "" && rep.DriverExit != "exit status 0" {
			rep.Notes = append(rep.Notes, "driver did not exit cleanly on SIGTERM: "+rep.DriverExit)
		}
		// Directories are the pool's own layout; a file left after
		// every DeleteVolume succeeded is a leaked image or record.
		if files := filesUnder(filepath.Join(driverDir, "pool")); len(files) > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("driver pool still holds %d files after all volumes were deleted, e.g. %v",
				len(files), files[:min(3, len(files))]))
		}
	}
	l, err := FindLeftovers(root)
	if err != nil {
		return append(errs, fmt.Errorf("check for leftovers: %w; temp dir %s kept", err, root))
	}
	if !l.Empty() {
		rep.Leftovers = &l
		errs = append(errs, fmt.Errorf("LEFTOVERS after the run: %s", l))
		progress("cleaning up leftovers by force: %s", l)
		if err := ForceCleanup(l); err != nil {
			errs = append(errs, fmt.Errorf("force cleanup: %w", err))
		}
		if l2, err := FindLeftovers(root); err != nil || !l2.Empty() {
			// Never RemoveAll through a live mount.
			return append(errs, fmt.Errorf("still left behind: %s (%v); temp dir %s kept", l2, err, root))
		}
	}
	if err := os.RemoveAll(root); err != nil {
		errs = append(errs, fmt.Errorf("remove temp dir: %w", err))
	}
	return errs
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// filesUnder lists the non-directories below dir, relative to it.
func filesUnder(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// cycleErrors reports failed cycles: beyond maxErrors they fail the run,
// within it they are a note, since the user chose to tolerate them.
func cycleErrors(rep *Report, fail func(error), side string, c int, errs []error, maxErrors int) {
	if len(errs) == 0 {
		return
	}
	if len(errs) > maxErrors {
		fail(fmt.Errorf("%s c=%d: %d failed cycles, first: %w", side, c, len(errs), errs[0]))
		return
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("%s c=%d: %d failed cycles tolerated (--max-errors=%d), first: %v",
		side, c, len(errs), maxErrors, errs[0]))
}
