package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/cobra"
)

// Scale: many volumes on one node. The population grows in steps (10, 100,
// 1,000 volumes, each created, staged and published), and at each step the
// bench measures what a node pays per call while that many volumes live:
// ListVolumes and GetCapacity (the provisioner's and the scheduler's
// calls), NodeGetVolumeStats (kubelet's, per volume, every minute), the
// driver's resident memory, and full lifecycles run 64 at a time beside
// the population. Growth is shown as the ratio to the first step: flat
// (1x) or linear (10x per step) is fine, quadratic (100x) is not.

// ScaleConfig says what the scale bench does.
type ScaleConfig struct {
	Binary      string
	Dir         string
	Counts      []int // population steps, ascending
	Concurrency int   // calls in flight while building, and lifecycles at once
	Samples     int   // of each measured call per step
	SizeBytes   int64
	FsType      string
	Progress    io.Writer
}

// ScaleStep is what was measured with Volumes volumes live.
type ScaleStep struct {
	Volumes      int           `json:"volumes"`
	BuildPerVol  time.Duration `json:"build_per_volume"` // wall time / volumes added, Concurrency at once
	ListVolumes  Summary       `json:"list_volumes"`
	GetCapacity  Summary       `json:"get_capacity"`
	VolumeStats  Summary       `json:"node_get_volume_stats"`
	Lifecycle    Summary       `json:"lifecycle"` // create..delete, Concurrency at once
	LifecyclesPS float64       `json:"lifecycles_per_second"`
	RSSMiB       float64       `json:"rss_mib"`
}

// ScaleReport is the whole run.
type ScaleReport struct {
	Steps        []ScaleStep   `json:"steps"`
	TeardownPerV time.Duration `json:"teardown_per_volume"`
	Leftovers    Leftovers     `json:"leftovers"`
}

type scaleVol struct {
	name, id, staging, target string
}

// RunScale runs the scale bench; everything it makes is under cfg.Dir and
// torn down before it returns.
func RunScale(ctx context.Context, cfg ScaleConfig) (rep *ScaleReport, err error) {
	d, err := StartDriver(ctx, DriverOptions{Binary: cfg.Binary, Dir: cfg.Dir, NodeID: "scale-node",
		LogPath: filepath.Join(cfg.Dir, "driver.log"), StartTimeout: 20 * time.Second, RPCTimeout: 5 * time.Minute,
		SizeBytes: cfg.SizeBytes, FsType: cfg.FsType})
	if err != nil {
		return nil, err
	}
	rep = &ScaleReport{}
	var live []*scaleVol
	defer func() {
		start := time.Now()
		terr := scaleEach(ctx, live, cfg.Concurrency, d.teardownScaled)
		if len(live) > 0 {
			rep.TeardownPerV = time.Since(start) / time.Duration(len(live))
		}
		err = errors.Join(err, terr, d.Stop())
		left, lerr := FindLeftovers(cfg.Dir)
		rep.Leftovers = left
		err = errors.Join(err, lerr)
		if !left.Empty() {
			err = errors.Join(err, fmt.Errorf("left behind: %s", left), ForceCleanup(left))
		}
	}()
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, format+"\n", args...)
		}
	}
	for _, n := range cfg.Counts {
		add := make([]*scaleVol, 0, n-len(live))
		for i := len(live); i < n; i++ {
			add = append(add, d.scaleVolume(fmt.Sprintf("scale-%05d", i)))
		}
		progress("scale: %d -> %d volumes", len(live), n)
		start := time.Now()
		err := scaleEach(ctx, add, cfg.Concurrency, d.bringUp)
		live = append(live, add...) // what came up is torn down, whatever failed
		if err != nil {
			return rep, err
		}
		step := ScaleStep{Volumes: n}
		if len(add) > 0 {
			step.BuildPerVol = time.Since(start) / time.Duration(len(add))
		}
		if step.ListVolumes, err = sample(ctx, cfg.Samples, func(ctx context.Context, _ int) error {
			resp, err := d.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{})
			if err == nil && len(resp.Entries) != n {
				err = fmt.Errorf("ListVolumes listed %d volumes, want %d", len(resp.Entries), n)
			}
			return err
		}); err != nil {
			return rep, err
		}
		if step.GetCapacity, err = sample(ctx, cfg.Samples, func(ctx context.Context, _ int) error {
			_, err := d.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
			return err
		}); err != nil {
			return rep, err
		}
		if step.VolumeStats, err = sample(ctx, cfg.Samples*4, func(ctx context.Context, _ int) error {
			v := live[rand.IntN(len(live))]
			_, err := d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: v.id, VolumePath: v.target})
			return err
		}); err != nil {
			return rep, err
		}
		cycles := make([]*scaleVol, cfg.Concurrency)
		for i := range cycles {
			cycles[i] = d.scaleVolume(fmt.Sprintf("cycle-%d-%03d", n, i))
		}
		var mu sync.Mutex
		var durs []time.Duration
		start = time.Now()
		err = scaleEach(ctx, cycles, cfg.Concurrency, func(ctx context.Context, v *scaleVol) error {
			t0 := time.Now()
			err := d.bringUp(ctx, v)
			if terr := d.teardownScaled(ctx, v); err == nil {
				err = terr
			}
			mu.Lock()
			durs = append(durs, time.Since(t0))
			mu.Unlock()
			return err
		})
		if err != nil {
			return rep, err
		}
		step.LifecyclesPS = Throughput(len(cycles), time.Since(start))
		step.Lifecycle = Summarize(durs)
		if kb, err := d.RSSKiB(); err == nil {
			step.RSSMiB = KiBToMiB(kb)
		}
		rep.Steps = append(rep.Steps, step)
		progress("scale: %d volumes: ListVolumes p99 %v, GetCapacity p99 %v, stats p99 %v, RSS %.1f MiB",
			n, step.ListVolumes.P99, step.GetCapacity.P99, step.VolumeStats.P99, step.RSSMiB)
	}
	return rep, nil
}

func (d *Driver) scaleVolume(name string) *scaleVol {
	return &scaleVol{name: name, staging: filepath.Join(d.volDir, name, "staging"), target: filepath.Join(d.volDir, name, "target")}
}

// bringUp creates, stages and publishes v, as the provisioner and kubelet do.
func (d *Driver) bringUp(ctx context.Context, v *scaleVol) error {
	resp, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: v.name, VolumeCapabilities: []*csi.VolumeCapability{d.cap},
		CapacityRange: &csi.CapacityRange{RequiredBytes: d.opts.SizeBytes}})
	if err != nil {
		return fmt.Errorf("create %s: %w", v.name, err)
	}
	v.id = resp.Volume.VolumeId
	if _, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: d.cap}); err != nil {
		return fmt.Errorf("stage %s: %w", v.name, err)
	}
	if _, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging,
		TargetPath: v.target, VolumeCapability: d.cap}); err != nil {
		return fmt.Errorf("publish %s: %w", v.name, err)
	}
	return nil
}

// teardownScaled undoes bringUp; every call is idempotent, so it also
// cleans up after a bringUp that stopped halfway.
func (d *Driver) teardownScaled(ctx context.Context, v *scaleVol) error {
	if v.id == "" {
		return nil
	}
	ctx = context.WithoutCancel(ctx) // a ^C still tears down
	if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target}); err != nil {
		return fmt.Errorf("unpublish %s: %w", v.name, err)
	}
	if _, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
		return fmt.Errorf("unstage %s: %w", v.name, err)
	}
	if _, err := d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id}); err != nil {
		return fmt.Errorf("delete %s: %w", v.name, err)
	}
	_ = os.RemoveAll(filepath.Join(d.volDir, v.name))
	return nil
}

// scaleEach runs f on every volume, n at once, and returns the first error.
func scaleEach(ctx context.Context, vols []*scaleVol, n int, f func(context.Context, *scaleVol) error) error {
	sem := make(chan struct{}, max(n, 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, v := range vols {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(ctx, v); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// sample times n calls of f, one at a time.
func sample(ctx context.Context, n int, f func(context.Context, int) error) (Summary, error) {
	durs := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := f(ctx, i); err != nil {
			return Summary{}, err
		}
		durs = append(durs, time.Since(t0))
	}
	return Summarize(durs), nil
}

// WriteScale prints the table, each cost beside its ratio to the first
// step's (the growth).
func WriteScale(w io.Writer, rep *ScaleReport) {
	if len(rep.Steps) == 0 {
		return
	}
	first := rep.Steps[0]
	ratio := func(a, b time.Duration) string { return fmt.Sprintf("%.1fx", Ratio(float64(a), float64(b))) }
	fmt.Fprintf(w, "%-8s %-18s %-18s %-18s %-18s %-18s %-10s %-14s\n", "volumes", "build/volume", "ListVolumes p99",
		"GetCapacity p99", "VolumeStats p99", "lifecycle p99", "cycles/s", "RSS MiB")
	for _, s := range rep.Steps {
		fmt.Fprintf(w, "%-8d %-18s %-18s %-18s %-18s %-18s %-10.1f %-14s\n", s.Volumes,
			fmt.Sprintf("%v (%s)", s.BuildPerVol.Round(100*time.Microsecond), ratio(s.BuildPerVol, first.BuildPerVol)),
			fmt.Sprintf("%v (%s)", s.ListVolumes.P99.Round(10*time.Microsecond), ratio(s.ListVolumes.P99, first.ListVolumes.P99)),
			fmt.Sprintf("%v (%s)", s.GetCapacity.P99.Round(10*time.Microsecond), ratio(s.GetCapacity.P99, first.GetCapacity.P99)),
			fmt.Sprintf("%v (%s)", s.VolumeStats.P99.Round(10*time.Microsecond), ratio(s.VolumeStats.P99, first.VolumeStats.P99)),
			fmt.Sprintf("%v (%s)", s.Lifecycle.P99.Round(time.Millisecond), ratio(s.Lifecycle.P99, first.Lifecycle.P99)),
			s.LifecyclesPS, fmt.Sprintf("%.1f (%.1fx)", s.RSSMiB, Ratio(s.RSSMiB, first.RSSMiB)))
	}
	fmt.Fprintf(w, "teardown: %v per volume, %d at once\n", rep.TeardownPerV.Round(100*time.Microsecond), 64)
}

func newScaleCommand() *cobra.Command {
	cfg := ScaleConfig{Concurrency: 64, Samples: 50, SizeBytes: 16 << 20, FsType: "ext4"}
	var counts string
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Many volumes on one node: per-call cost and memory at 10, 100 and 1,000 live volumes",
		Long: `scale starts "volplug csi --backend=local" and grows a population of
volumes, each created, staged and published (64 calls in flight), to each
count in --counts. At each count it times ListVolumes, GetCapacity and
NodeGetVolumeStats (p50, p99), runs 64 full lifecycles at once beside the
population, and reads the driver's resident memory. Every figure is shown
with its ratio to the first count's, so its growth is visible: flat, or
linear in the volumes (10x per step), never quadratic. Then it tears
everything down (64 at once) and checks nothing is left.

Needs root; the pool is a temp dir on the machine's disk (sparse images of
--size-mib each).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Counts, err = ParseLevels(counts); err != nil {
				return err
			}
			if cfg.Binary, err = os.Executable(); err != nil {
				return err
			}
			if cfg.Dir, err = os.MkdirTemp("", "volplug-scale-"); err != nil {
				return err
			}
			defer os.RemoveAll(cfg.Dir)
			cfg.SizeBytes <<= 20 // --size-mib
			cfg.Progress = cmd.ErrOrStderr()
			rep, err := RunScale(cmd.Context(), cfg)
			if rep != nil {
				WriteScale(cmd.OutOrStdout(), rep)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&counts, "counts", "10,100,1000", "population steps")
	f.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "calls in flight while building, and lifecycles at once")
	f.IntVar(&cfg.Samples, "samples", cfg.Samples, "timed ListVolumes and GetCapacity calls per step (4x as many NodeGetVolumeStats)")
	f.Int64Var(&cfg.SizeBytes, "size-mib", 16, "size of each volume, MiB")
	f.StringVar(&cfg.FsType, "fs", cfg.FsType, "filesystem of each volume")
	return cmd
}
