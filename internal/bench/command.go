// Package bench measures the CSI driver's local backend against "the
// floor": the same volume life done with plain system tools. Every figure
// is reported beside that floor, measured in the same run on the same
// machine, because absolute latencies of loop devices and mkfs say more
// about the machine than about the driver.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// NewCommand returns the `volplug bench` command.
func NewCommand() *cobra.Command {
	var (
		cfg     Config
		levels  string
		output  string
		quiet   bool
		sizeGiB int64
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the CSI driver (local backend) against plain system tools",
		Long: `bench starts "volplug csi --backend=local" as a child process and drives
full volume cycles through its CSI API (CreateVolume, [ControllerPublish],
NodeStage, NodePublish and back to DeleteVolume) at several concurrency
levels. Beside it, it runs the floor: truncate, losetup, mkfs, mount,
bind mount and back, with the system tools. It reports p50/p99 latencies,
volumes per second, the driver's resident memory, and every figure as a
ratio to the floor.

Then (--snapshots, on by default; --snapshots-only for just this) it
writes 512 MiB into a staged 1 GiB volume and times CreateSnapshot,
DeleteSnapshot, CreateVolume from the snapshot and from the volume, and
NodeStage of the restored volume, on two pools: a directory of the
machine's filesystem ("plain") and an xfs with reflink=1 that the bench
makes on a loop device ("reflink"; skipped without mkfs.xfs). The floor is
cp of the same image (--sparse=always on plain, --reflink=always on xfs).

Needs root. Everything happens in a private temp dir, which is verified to
hold no mount or loop device at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Levels, err = ParseLevels(levels); err != nil {
				return err
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: want text or json", output)
			}
			if cfg.SnapIterations < 1 {
				return fmt.Errorf("--snap-iterations %d: must be at least 1", cfg.SnapIterations)
			}
			if sizeGiB < 1 {
				return fmt.Errorf("--size-gib %d: must be at least 1", sizeGiB)
			}
			cfg.SizeBytes = sizeGiB << 30
			if !quiet {
				cfg.Progress = cmd.ErrOrStderr()
			}
			// ^C stops the load; Run then tears volumes down in order
			// before it returns.
			parent := cmd.Context()
			if parent == nil {
				parent = context.Background()
			}
			ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, runErr := Run(ctx, cfg)
			if rep != nil {
				var werr error
				if output == "json" {
					werr = rep.WriteJSON(cmd.OutOrStdout())
				} else {
					werr = rep.WriteText(cmd.OutOrStdout())
				}
				runErr = errors.Join(runErr, werr)
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&levels, "concurrency", "1,8,32", "comma-separated concurrency levels")
	f.IntVar(&cfg.Cycles, "cycles", 0, "full cycles per level (0: 100 at c=1, max(320, 10*c) above)")
	f.IntVar(&cfg.Warmup, "warmup", 2, "untimed cycles of driver and floor before measuring")
	f.BoolVar(&cfg.Attach, "attach", false, "start the driver with --enable-attach")
	f.BoolVar(&cfg.FloorAll, "floor-all", true, "measure the floor at every level (false: only at c=1)")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress lines on stderr")
	f.StringVar(&cfg.Binary, "driver-binary", "", "volplug binary to run as the driver (default: this binary)")
	f.StringVar(&cfg.TempParent, "dir", "", "parent of the private temp dir (default: $TMPDIR or /tmp)")
	f.StringVar(&cfg.DriverLog, "driver-log", "", "keep the driver's output in this file")
	f.Int64Var(&sizeGiB, "size-gib", 1, "volume size in GiB")
	f.StringVar(&cfg.FsType, "fs-type", "ext4", "filesystem of the volumes (the floor runs mkfs.<fs-type>)")
	f.IntVar(&cfg.Rounds, "rounds", 4, "alternate floor and driver in up to this many rounds per level")
	f.IntVar(&cfg.MaxErrors, "max-errors", 0, "failed cycles tolerated per level before stopping")
	f.DurationVar(&cfg.RPCTimeout, "rpc-timeout", 2*time.Minute, "timeout of each RPC and each floor command")
	f.DurationVar(&cfg.SampleEvery, "rss-interval", 20*time.Millisecond, "driver RSS sampling interval")
	f.BoolVar(&cfg.Snapshots, "snapshots", true, "after the load, measure snapshots, restores and clones on a plain and a reflink (xfs) pool")
	f.BoolVar(&cfg.SnapshotsOnly, "snapshots-only", false, "measure only snapshots, restores and clones")
	f.IntVar(&cfg.SnapIterations, "snap-iterations", 5, "snapshots, restores and clones per pool")
	cmd.AddCommand(newS3Command(), newDiskCommand(), newScaleCommand())
	return cmd
}

// ParseLevels parses "1,8,32".
func ParseLevels(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, fmt.Errorf("--concurrency %q: %w", s, err)
		}
		if n < 1 {
			return nil, fmt.Errorf("--concurrency %q: levels must be at least 1", s)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--concurrency %q: no levels", s)
	}
	return out, nil
}
