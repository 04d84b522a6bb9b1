package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// DiskReport is the result of `volplug bench disk`.
type DiskReport struct {
	Started      time.Time   `json:"started"`
	Duration     JSONSeconds `json:"duration_s"`
	Dir          string      `json:"dir"`
	CPUs         int         `json:"cpus"`
	Kernel       string      `json:"kernel"`
	MachineFS    string      `json:"machine_fs"`
	FioRuntime   JSONSeconds `json:"fio_runtime_s"`
	FioFileBytes int64       `json:"fio_file_bytes"`
	SizeBytes    int64       `json:"lifecycle_size_bytes"`
	StageDelay   JSONSeconds `json:"stage_delay_s"`
	Fio          []*FioRow   `json:"fio,omitempty"`
	Lifecycle    []*LifeRow  `json:"lifecycle,omitempty"`
	Notes        []string    `json:"notes,omitempty"`
	Errors       []string    `json:"errors,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func (r *DiskReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the two tables, as markdown (they go into notes).
func (r *DiskReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	p := func(format string, a ...any) { fmt.Fprintf(ew, format, a...) }
	p("volplug bench disk: %d CPUs, kernel %s, machine filesystem %s, %s\n\n", r.CPUs, r.Kernel, r.MachineFS, time.Duration(r.Duration).Round(time.Second))
	if len(r.Fio) > 0 {
		p("fio (libaio, direct, %s per job, a %s file; medians; ratio against the same pool's filesystem, same run, and its spread over rounds)\n\n",
			time.Duration(r.FioRuntime), sizeString(r.FioFileBytes))
		p("| pool | target |")
		for _, j := range fioJobs {
			p(" %s |", j.Name)
		}
		p("\n|---|---|%s\n", strings.Repeat("---|", len(fioJobs)))
		for _, row := range r.Fio {
			p("| %s | %s |", row.Pool, row.Target)
			if row.Skipped != "" {
				p(" skipped: %s |\n", row.Skipped)
				continue
			}
			if len(row.Values) != len(fioJobs) { // the run stopped first (its error follows)
				p(" not measured |\n")
				continue
			}
			for j, job := range fioJobs {
				v := fmt.Sprintf("%.0f %s", row.Values[j], job.Unit)
				if row.Ratios != nil && !row.Baseline {
					v += " (" + fmtRatio(row.Ratios[j])
					if len(row.Samples[j]) > 1 && row.RatioMin != nil {
						v += ", " + fmtRatio(row.RatioMin[j]) + "-" + fmtRatio(row.RatioMax[j])
					}
					v += ")"
				}
				p(" %s |", v)
			}
			p("\n")
		}
		p("\n")
	}
	if len(r.Lifecycle) > 0 {
		p("lifecycle (create, stage, publish, unpublish, unstage, delete; %s", sizeString(r.SizeBytes))
		if r.StageDelay > 0 {
			p("; stage %s after create, not counted; speed is 1/p50", time.Duration(r.StageDelay))
		}
		p("; the floor is mkdir, mount --bind, umount, rmdir)\n\n")
		p("| c | pool | layout | cycles | p50 ms | p99 ms | cycles/s | vs floor | vs image on %s |\n|---|---|---|---|---|---|---|---|---|\n", r.MachineFS)
		for _, row := range r.Lifecycle {
			p("| %d | %s | %s | %d | %s | %s | %s | %s | %s |\n", row.Concurrency, row.Pool, row.Layout, row.Cycles,
				fmtMS(row.P50MS, row.Cycles), fmtMS(row.P99MS, row.Cycles), fmtRate(row.PerSec), fmtRatio(row.VsFloor), fmtRatio(row.VsImage))
		}
		p("\nstep p50 ms:\n")
		for _, row := range r.Lifecycle {
			var parts []string
			for i, s := range row.Steps {
				if i < len(row.StepP50MS) {
					parts = append(parts, fmt.Sprintf("%s %.1f", s, row.StepP50MS[i]))
				}
			}
			p("  c=%d %s %s: %s\n", row.Concurrency, row.Pool, row.Layout, strings.Join(parts, ", "))
		}
		p("\n")
	}
	for _, n := range r.Notes {
		p("note: %s\n", n)
	}
	for _, e := range r.Errors {
		p("ERROR: %s\n", e)
	}
	return ew.err
}

func newDiskCommand() *cobra.Command {
	var (
		cfg     DiskConfig
		levels  string
		output  string
		quiet   bool
		fileMiB int64
		sizeGiB int64
	)
	cmd := &cobra.Command{
		Use:   "disk",
		Short: "fio and volume lifecycles per layout, against the pool's own filesystem and a bare directory",
		Long: `disk starts "volplug csi --backend=local" twice: on a pool in the machine's
filesystem and on a btrfs pool it makes on a loop device. Then:

fio table: four jobs (sequential write and read, 1 MiB, queue depth 8;
random write and read, 4 KiB, queue depth 32; libaio, direct I/O) on each
pool's own filesystem, on a loop device as volplug attaches one, and in
published volumes of each layout (image; native, which is nodatacow by default;
native with copy-on-write).
Rows alternate in rounds; each figure is the median, and its ratio is
against the same pool's filesystem in the same run.

Lifecycle table: create, stage, publish, unpublish, unstage, delete per
layout, one at a time and in parallel, alternating with the floor: a bare
directory (mkdir, mount --bind, umount, rmdir). --stage-delay waits between
create and stage, as a cluster does, so background work has happened.

Needs root and fio. Everything happens in a private temp dir, verified to
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
			if cfg.FioRuntime < time.Second {
				return fmt.Errorf("--fio-runtime %s: must be at least 1s", cfg.FioRuntime)
			}
			if sizeGiB < 1 {
				return fmt.Errorf("--size-gib %d: must be at least 1", sizeGiB)
			}
			if cfg.StageDelay < 0 {
				return fmt.Errorf("--stage-delay %s: must not be negative", cfg.StageDelay)
			}
			cfg.FioFileBytes, cfg.SizeBytes = fileMiB<<20, sizeGiB<<30
			if !quiet {
				cfg.Progress = cmd.ErrOrStderr()
			}
			parent := cmd.Context()
			if parent == nil {
				parent = context.Background()
			}
			ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, runErr := RunDisk(ctx, cfg)
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
	f.BoolVar(&cfg.Fio, "fio", true, "measure the fio table")
	f.DurationVar(&cfg.FioRuntime, "fio-runtime", 3*time.Second, "each fio job's run time")
	f.Int64Var(&fileMiB, "fio-file-mib", 512, "the file each fio job works on, MiB")
	f.IntVar(&cfg.FioRounds, "fio-rounds", 2, "the fio rows alternate this many times (medians)")
	f.BoolVar(&cfg.LoopVariants, "loop-variants", false, "fio also on loop devices set up other ways: buffered, 4 KiB blocks, fallocated images")
	f.BoolVar(&cfg.Lifecycle, "lifecycle", true, "measure the lifecycle table")
	f.StringVar(&levels, "concurrency", "1,8", "lifecycle concurrency levels")
	f.IntVar(&cfg.Cycles, "cycles", 0, "lifecycle cycles per level and layout (0: 40 at c=1, 10*c above)")
	f.IntVar(&cfg.Rounds, "rounds", 2, "the floor and the layouts alternate in up to this many rounds per level")
	f.DurationVar(&cfg.StageDelay, "stage-delay", 0, "wait this long between CreateVolume and NodeStage (not counted), as a cluster does")
	f.Int64Var(&sizeGiB, "size-gib", 1, "lifecycle volume size in GiB")
	f.Int64Var(&cfg.BtrfsPoolBytes, "btrfs-pool-bytes", 20<<30, "the btrfs pool's image (written through once)")
	f.StringVar(&cfg.Binary, "driver-binary", "", "volplug binary to run as the driver (default: this binary)")
	f.StringVar(&cfg.TempParent, "dir", "", "parent of the private temp dir (default: $TMPDIR or /tmp)")
	f.DurationVar(&cfg.RPCTimeout, "rpc-timeout", 2*time.Minute, "timeout of each RPC and each tool")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress lines on stderr")
	return cmd
}
