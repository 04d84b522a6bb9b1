package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/loop"
)

// fioJob is one of the four jobs of the table (issue 10): libaio, direct.
type fioJob struct {
	Name  string
	rw    string
	bs    string
	depth int
	Unit  string // MiB/s for the sequential jobs, IOPS for the random ones
}

// The table's columns, in the order they are shown. They run in another
// order (see fioRunOrder): random writes fragment a copy-on-write file,
// and reads of a fragmented file say little about the volume.
var fioJobs = []fioJob{
	{"seq write 1 MiB QD8", "write", "1M", 8, "MiB/s"},
	{"seq read 1 MiB QD8", "read", "1M", 8, "MiB/s"},
	{"rand write 4 KiB QD32", "randwrite", "4k", 32, "IOPS"},
	{"rand read 4 KiB QD32", "randread", "4k", 32, "IOPS"},
}

var fioRunOrder = []int{0, 1, 3, 2}

// FioRow is one place fio ran: a pool's own filesystem (the baseline), a
// loop device, or a published volume of some layout.
type FioRow struct {
	Pool     string      `json:"pool"`
	Target   string      `json:"target"`
	Baseline bool        `json:"baseline,omitempty"` // the pool's filesystem: the other rows' 1.00x
	Values   []float64   `json:"values"`             // per fioJobs, medians over rounds
	Ratios   []float64   `json:"ratios"`             // against the baseline of the same pool
	Samples  [][]float64 `json:"samples"`            // per job, every round
	// The spread: per job, the lowest and highest ratio of one round
	// against the baseline's same round (rows alternate, so each round's
	// pair ran side by side).
	RatioMin []float64 `json:"ratio_min,omitempty"`
	RatioMax []float64 `json:"ratio_max,omitempty"`
	Skipped  string    `json:"skipped,omitempty"`
}

// fioTarget is where a row's jobs run, and how it is taken down.
type fioTarget struct {
	row  *FioRow
	file string // a file on a filesystem, or a block device
	down func() error
	// beforeRandWrite, when set, runs right before the random writes
	// (the snapshot row: the first overwrite of each shared block is
	// what a snapshot costs); its undo runs after the row.
	beforeRandWrite func() (undo func() error, err error)
}

// runFioTable sets up every target, runs the four jobs on each in turn,
// FioRounds times (rows alternate, so the machine's other work weighs on
// every row alike), then takes them down.
func runFioTable(ctx context.Context, cfg DiskConfig, plain, btrfs *diskPool, progress func(string, ...any)) (rows []*FioRow, err error) {
	if _, err := exec.LookPath("fio"); err != nil {
		return nil, fmt.Errorf("fio table: %w (scripts/install-deps.sh installs it)", err)
	}
	var targets []*fioTarget
	defer func() {
		for i := len(targets) - 1; i >= 0; i-- {
			if targets[i].down != nil {
				err = errors.Join(err, targets[i].down())
			}
		}
	}()
	// Volumes are 8 times the file, as the 4 GiB volume of issue 10's own
	// measurement was: a copy-on-write rewrite holds old and new blocks
	// until the next commit, and a volume whose file fills half its
	// limit makes btrfs commit early (the "limit 2x the file" row shows
	// what that costs).
	volSize := 8 * cfg.FioFileBytes
	add := func(pool, name string, baseline bool, file string, down func() error) {
		r := &FioRow{Pool: pool, Target: name, Baseline: baseline}
		rows = append(rows, r)
		targets = append(targets, &fioTarget{row: r, file: file, down: down})
	}
	skip := func(pool, name string, why error) {
		first, _, _ := strings.Cut(why.Error(), "\n")
		rows = append(rows, &FioRow{Pool: pool, Target: name, Skipped: first})
	}
	volumeSized := func(p *diskPool, name, label string, params map[string]string, fsType string, size int64) *volume {
		spec := VolumeSpec{SizeBytes: size, Parameters: params, Capability: mountCap(fsType)}
		v, err := p.drv.up(ctx, "fio-"+name, spec)
		if err != nil {
			skip(p.Name, label, err)
			return nil
		}
		add(p.Name, label, false, filepath.Join(v.target, "fio.dat"), func() error { return p.drv.down(v) })
		return v
	}
	volume := func(p *diskPool, name, label string, params map[string]string, fsType string) *volume {
		return volumeSized(p, name, label, params, fsType, volSize)
	}

	// The machine's filesystem: itself, a loop device on an image in it
	// (what every image-layout volume sits on), and an image volume.
	add(plain.Name, "pool filesystem", true, filepath.Join(plain.Dir, "fio.dat"), nil)
	loops := []loopVariant{{"loop device (volplug's settings)", "loop.img", false, loop.Options{DirectIO: true}}}
	if cfg.LoopVariants {
		loops = append(loops,
			loopVariant{"loop device, buffered", "loop-buffered.img", false, loop.Options{}},
			loopVariant{"loop device, 4 KiB blocks", "loop-4k.img", false, loop.Options{DirectIO: true, BlockSize: 4096}},
			loopVariant{"loop device, fallocated image", "loop-falloc.img", true, loop.Options{DirectIO: true}},
			loopVariant{"loop device, fallocated, 4 KiB blocks", "loop-falloc-4k.img", true, loop.Options{DirectIO: true, BlockSize: 4096}},
		)
	}
	for _, l := range loops {
		img := filepath.Join(plain.Dir, l.image)
		dev, err := l.attach(img, volSize)
		if err != nil {
			return rows, err
		}
		add(plain.Name, l.name, false, dev, func() error {
			return errors.Join(loop.DetachImage(img), os.Remove(img))
		})
	}
	volume(plain, "image-ext4", "image volume (ext4)", nil, "ext4")
	if btrfs != nil {
		// The native volume first: it turns the pool's quotas on, and
		// the pool is measured as native volumes find it.
		native := map[string]string{"layout": "native"} // nodatacow, the default
		if v := volume(btrfs, "native", "native volume", native, ""); v != nil {
			// The same volume again, with a snapshot of the laid-out file
			// taken right before the random writes: the first write to
			// each shared block is copied once.
			r := &FioRow{Pool: btrfs.Name, Target: "native volume, snapshot before rand write"}
			rows = append(rows, r)
			targets = append(targets, &fioTarget{row: r, file: filepath.Join(v.target, "fio-snap.dat"),
				beforeRandWrite: func() (func() error, error) { return btrfs.drv.snapshot(ctx, v) }})
		}
		add(btrfs.Name, "pool filesystem (quotas on)", true, filepath.Join(btrfs.Dir, "fio.dat"), nil)
		// Copy-on-write, as the pool's own directory is; and the same near
		// its limit: a rewrite is counted twice until whole extents are
		// replaced, so a volume whose limit is twice its file reaches the
		// limit while rewriting it, and btrfs commits to make room (see
		// the README).
		cow := map[string]string{"layout": "native", "nodatacow": "false"}
		volume(btrfs, "native-cow", "native volume, copy-on-write", cow, "")
		volumeSized(btrfs, "native-cow-tight", "native, copy-on-write, limit 2x the file", cow, "", 2*cfg.FioFileBytes)
		volume(btrfs, "image-btrfs", "image volume (ext4)", nil, "ext4")
	}
	for i := range rows {
		rows[i].Samples = make([][]float64, len(fioJobs))
	}
	for round := range cfg.FioRounds {
		// Each round starts one row later, so that no row always runs
		// right after the same other one: a row that follows the btrfs
		// pool's own inherits the freeing of its file at the next commit.
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			settle()
			if ctx.Err() != nil {
				return rows, ctx.Err()
			}
			if t.row.Skipped != "" {
				continue
			}
			t0 := time.Now()
			vals, err := fioRow(ctx, cfg, t.file, t.beforeRandWrite)
			if err != nil && strings.Contains(err.Error(), "Disk quota exceeded") {
				// A finding, not a failure of the bench: a native volume
				// whose file is a large part of its limit can get EDQUOT
				// rewriting it (see the README). The other rows go on.
				job, _, _ := strings.Cut(err.Error(), ": fio ")
				t.row.Skipped = "EDQUOT (disk quota exceeded) in " + job
				progress("fio round %d/%d  %-6s %-34s %s", round+1, cfg.FioRounds, t.row.Pool, t.row.Target, t.row.Skipped)
				continue
			}
			if err != nil {
				return rows, fmt.Errorf("fio on %s %s: %w", t.row.Pool, t.row.Target, err)
			}
			for j, v := range vals {
				t.row.Samples[j] = append(t.row.Samples[j], v)
			}
			progress("fio round %d/%d  %-6s %-34s %s  (%s)", round+1, cfg.FioRounds, t.row.Pool, t.row.Target, fmtFioValues(vals), time.Since(t0).Round(time.Second))
		}
	}
	finishFioRows(rows)
	return rows, nil
}

// settle writes out what the rows before left dirty (and, on btrfs,
// commits their deletes) so that the row about to run does not pay for
// them. sync(2) waits for every filesystem's writeback on Linux.
func settle() { unix.Sync() }

// finishFioRows takes medians and the ratios against each pool's baseline.
func finishFioRows(rows []*FioRow) {
	base := map[string]*FioRow{}
	for _, r := range rows {
		if r.Skipped != "" {
			continue
		}
		r.Values = make([]float64, len(fioJobs))
		for j, s := range r.Samples {
			r.Values[j] = medianOf(s)
		}
		if r.Baseline {
			base[r.Pool] = r
		}
	}
	for _, r := range rows {
		if b := base[r.Pool]; b != nil && r.Skipped == "" {
			r.Ratios = make([]float64, len(fioJobs))
			for j := range fioJobs {
				r.Ratios[j] = Ratio(r.Values[j], b.Values[j])
			}
			if r.Baseline {
				continue
			}
			r.RatioMin, r.RatioMax = make([]float64, len(fioJobs)), make([]float64, len(fioJobs))
			for j := range fioJobs {
				for k := range min(len(r.Samples[j]), len(b.Samples[j])) {
					q := Ratio(r.Samples[j][k], b.Samples[j][k])
					if k == 0 || q < r.RatioMin[j] {
						r.RatioMin[j] = q
					}
					if k == 0 || q > r.RatioMax[j] {
						r.RatioMax[j] = q
					}
				}
			}
		}
	}
}

// medianOf is the middle sample, or the mean of the middle two (two rounds
// are common here, and the larger of two is no median).
func medianOf(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	s = slices.Clone(s)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fioRow lays the file out (untimed: reads of a file that was never
// written read holes), runs the four jobs, and removes the file, so every
// round starts from a fresh, unfragmented one.
func fioRow(ctx context.Context, cfg DiskConfig, file string, beforeRandWrite func() (func() error, error)) (vals []float64, err error) {
	isDev := filepath.Dir(file) == "/dev"
	size := strconv.FormatInt(cfg.FioFileBytes, 10)
	if !isDev {
		defer os.Remove(file)
	}
	if _, err := runFio(ctx, cfg, file, "--rw=write", "--bs=1M", "--iodepth=8", "--size="+size); err != nil {
		return nil, fmt.Errorf("lay out: %w", err)
	}
	vals = make([]float64, len(fioJobs))
	for _, j := range fioRunOrder {
		job := fioJobs[j]
		if job.rw == "randwrite" && beforeRandWrite != nil {
			undo, err := beforeRandWrite()
			if err != nil {
				return nil, err
			}
			defer func() { err = errors.Join(err, undo()) }()
		}
		res, err := runFio(ctx, cfg, file, "--rw="+job.rw, "--bs="+job.bs, "--iodepth="+strconv.Itoa(job.depth),
			"--size="+size, "--time_based", "--runtime="+strconv.Itoa(int(cfg.FioRuntime.Seconds())))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", job.Name, err)
		}
		if job.Unit == "IOPS" {
			vals[j] = res.Read.IOPS + res.Write.IOPS
		} else {
			vals[j] = (res.Read.BW + res.Write.BW) / (1 << 20)
		}
	}
	return vals, nil
}

type fioSide struct {
	IOPS float64 `json:"iops"`
	BW   float64 `json:"bw_bytes"`
}

type fioResult struct {
	Read  fioSide `json:"read"`
	Write fioSide `json:"write"`
}

// runFio runs one fio job (no shell; every argument is the bench's own).
func runFio(ctx context.Context, cfg DiskConfig, file string, args ...string) (*fioResult, error) {
	args = append([]string{"--name=volplug", "--filename=" + file, "--ioengine=libaio", "--direct=1",
		"--output-format=json", "--unlink=0"}, args...)
	out, err := runTool(ctx, cfg.FioRuntime+cfg.RPCTimeout, "fio", args...)
	if err != nil {
		return nil, err
	}
	var res struct {
		Jobs []fioResult `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Jobs) == 0 {
		return nil, fmt.Errorf("fio output: %v: %.200q", err, out)
	}
	return &res.Jobs[0], nil
}

// loopVariant is a loop device set up some way, for choosing the
// settings with the table.
type loopVariant struct {
	name, image string
	fallocate   bool
	opts        loop.Options
}

func (l loopVariant) attach(img string, size int64) (string, error) {
	if err := makeSparse(img, size); err != nil {
		return "", err
	}
	if l.fallocate {
		if err := fallocateFile(img, size); err != nil {
			return "", errors.Join(err, os.Remove(img))
		}
	}
	dev, err := loop.Attach(img, l.opts)
	if err != nil {
		return "", errors.Join(fmt.Errorf("loop device for fio: %w", err), os.Remove(img))
	}
	return dev, nil
}

func fallocateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	return errors.Join(err, f.Close())
}

// snapshot takes a snapshot of the volume through the CSI API; undo
// deletes it.
func (d *Driver) snapshot(ctx context.Context, v *volume) (func() error, error) {
	rctx, cancel := context.WithTimeout(ctx, d.opts.RPCTimeout)
	defer cancel()
	resp, err := d.ctrl.CreateSnapshot(rctx, &csi.CreateSnapshotRequest{SourceVolumeId: v.id, Name: v.name + "-snap-" + strconv.FormatInt(time.Now().UnixNano(), 36)})
	if err != nil {
		return nil, fmt.Errorf("CreateSnapshot: %w", err)
	}
	id := resp.GetSnapshot().GetSnapshotId()
	return func() error {
		rctx, cancel := context.WithTimeout(context.Background(), d.opts.RPCTimeout)
		defer cancel()
		_, err := d.ctrl.DeleteSnapshot(rctx, &csi.DeleteSnapshotRequest{SnapshotId: id})
		return err
	}, nil
}

func makeSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	return errors.Join(err, f.Close())
}

func fmtFioValues(v []float64) string {
	s := ""
	for j, x := range v {
		s += fmt.Sprintf(" %8.0f %-5s", x, fioJobs[j].Unit)
	}
	return s
}

// fioNotes says what the table's pools are, since the ratios mean little
// without it.
func fioNotes(rows []*FioRow) []string {
	var notes []string
	for _, r := range rows {
		if r.Skipped != "" {
			notes = append(notes, fmt.Sprintf("fio %s %s skipped: %s", r.Pool, r.Target, r.Skipped))
		}
	}
	return notes
}
