package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// The snapshot section's operations, in the order of the report. The
// driver's are RPC names with what they copy, so the table reads like the
// spec; the floor is the command that does the same copy.
const (
	opSnapCreate    = "CreateSnapshot"
	opSnapDelete    = "DeleteSnapshot"
	opRestore       = "CreateVolume from snapshot"
	opClone         = "CreateVolume from volume"
	opStageRestored = "NodeStage of restored volume"
)

var snapOps = []string{opSnapCreate, opSnapDelete, opRestore, opClone, opStageRestored}

// Pool names: the same driver on a filesystem that cannot share blocks and
// on one that can.
const (
	poolPlain   = "plain"
	poolReflink = "reflink"
)

// floorCopyArgs is the cp that does, with the system tools, the copy a
// snapshot does on each pool. On the plain pool --reflink=never is
// explicit because coreutils 9 cp reflinks by default where it can.
func floorCopyArgs(pool, src, dst string) []string {
	if pool == poolReflink {
		return []string{"--reflink=always", src, dst}
	}
	return []string{"--sparse=always", "--reflink=never", src, dst}
}

// floorCopyName is how the report names the floor's copy on a pool.
func floorCopyName(pool string) string {
	args := floorCopyArgs(pool, "", "")
	return "cp " + strings.Join(args[:len(args)-2], " ") + " + fsync"
}

// snapPoolSpec says where one pool of the section lives.
type snapPoolSpec struct {
	name      string
	driverDir string // socket, staging and target paths
	poolDir   string // --pool
	floorDir  string // the floor's copies: same filesystem as the pool, not inside it
}

// runSnapshots runs the snapshot and clone section: the plain pool in the
// temp dir (the machine's filesystem), then the reflink pool on an xfs the
// section makes and removes itself. Problems that end a pool's measurement
// are returned; what was measured is in the section either way.
func runSnapshots(ctx context.Context, cfg Config, root, logPath string, progress func(string, ...any)) (sec *SnapshotSection, notes []string, errs []error) {
	sec = &SnapshotSection{VolumeBytes: cfg.SnapVolumeBytes, WrittenBytes: cfg.SnapWriteBytes, Iterations: cfg.SnapIterations}
	defer sec.compare()

	plainDir := filepath.Join(root, "snap-plain")
	p, n, err := runSnapPool(ctx, cfg, snapPoolSpec{
		name: poolPlain, driverDir: plainDir, poolDir: filepath.Join(plainDir, "pool"), floorDir: plainDir,
	}, logPath, progress)
	sec.Pools, notes = append(sec.Pools, p), append(notes, n...)
	if err != nil {
		errs = append(errs, fmt.Errorf("snapshots, %s pool: %w", poolPlain, err))
	}
	if mayReflink(p.FsType) {
		notes = append(notes, fmt.Sprintf("snapshots: the plain pool is on %s, which can share blocks: it is no plain baseline (use --dir on ext4)", p.FsType))
	}
	if ctx.Err() != nil {
		return sec, notes, errs
	}

	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		why := "mkfs.xfs not found (install xfsprogs; `make bench` does)"
		sec.Pools = append(sec.Pools, SnapPool{Name: poolReflink, Skipped: why})
		return sec, append(notes, "snapshots: reflink pool skipped: "+why), errs
	}
	progress("snapshots: making the reflink pool (%s xfs, reflink=1, on a loop device)", sizeString(cfg.SnapPoolBytes))
	xp, err := setupXFSPool(ctx, filepath.Join(root, "xfs.img"), filepath.Join(root, "xfs-pool"), cfg.SnapPoolBytes, cfg.RPCTimeout)
	if err != nil {
		sec.Pools = append(sec.Pools, SnapPool{Name: poolReflink, Error: err.Error()})
		return sec, notes, append(errs, fmt.Errorf("snapshots, %s pool: %w", poolReflink, err))
	}
	p, n, err = runSnapPool(ctx, cfg, snapPoolSpec{
		name: poolReflink, driverDir: filepath.Join(root, "snap-reflink"),
		poolDir: filepath.Join(xp.Mount, "pool"), floorDir: xp.Mount,
	}, logPath, progress)
	sec.Pools, notes = append(sec.Pools, p), append(notes, n...)
	if err != nil {
		errs = append(errs, fmt.Errorf("snapshots, %s pool: %w", poolReflink, err))
	}
	if p.FsType != "" && p.FsType != "xfs" {
		errs = append(errs, fmt.Errorf("snapshots: the reflink pool is on %s, not xfs", p.FsType))
	}
	// Whatever the driver left on the pool goes with it; the leftover
	// checks above have already said so.
	if err := xp.teardown(); err != nil {
		errs = append(errs, fmt.Errorf("snapshots: tear down the xfs pool: %w", err))
	}
	return sec, notes, errs
}

// runSnapPool starts a driver on one pool and measures it there. It always
// stops the driver and checks, with the driver still running, that every
// volume and snapshot it deleted took its mounts and loop devices along.
func runSnapPool(ctx context.Context, cfg Config, spec snapPoolSpec, logPath string, progress func(string, ...any)) (p SnapPool, notes []string, err error) {
	p = SnapPool{Name: spec.name, Dir: spec.poolDir}
	defer func() {
		if err != nil {
			p.Error = err.Error()
		}
	}()
	if err := os.MkdirAll(spec.driverDir, 0o700); err != nil {
		return p, nil, fmt.Errorf("create %s: %w", spec.driverDir, err)
	}
	progress("snapshots: starting a driver on the %s pool (%s)", spec.name, spec.poolDir)
	drv, err := StartDriver(ctx, DriverOptions{
		Binary: cfg.Binary, Dir: spec.driverDir, Pool: spec.poolDir, NodeID: "bench-node",
		LogPath: logPath, StartTimeout: 30 * time.Second, RPCTimeout: cfg.RPCTimeout,
		SizeBytes: cfg.SnapVolumeBytes, FsType: "ext4",
	})
	if err != nil {
		return p, nil, fmt.Errorf("start driver: %w", err)
	}
	var errs []error
	defer func() {
		if len(errs) > 0 && cfg.DriverLog == "" {
			progress("%s", drv.logTail())
		}
		for _, dir := range []string{spec.driverDir, spec.poolDir} {
			if l, lerr := FindLeftovers(dir); lerr != nil {
				errs = append(errs, lerr)
			} else if !l.Empty() {
				errs = append(errs, fmt.Errorf("left behind with the driver still running, after all volumes and snapshots were deleted: %s", l))
			}
		}
		notes = append(notes, drv.Warnings()...)
		if serr := drv.Stop(); serr != nil {
			errs = append(errs, fmt.Errorf("stop driver: %w", serr))
		}
		if files := filesUnder(spec.poolDir); len(files) > 0 {
			notes = append(notes, fmt.Sprintf("snapshots: the %s pool still holds %d files after everything was deleted, e.g. %v",
				spec.name, len(files), files[:min(3, len(files))]))
		}
		err = errors.Join(errs...)
	}()
	var st unix.Statfs_t
	if serr := unix.Statfs(spec.poolDir, &st); serr != nil {
		errs = append(errs, fmt.Errorf("statfs %s: %w", spec.poolDir, serr))
		return p, notes, nil
	}
	p.FsType = fsName(int64(st.Type))
	p.Driver = strings.TrimSpace(drv.Info.Name + " " + drv.Info.Version)
	if missing := snapCapsMissing(drv.Info); missing != "" {
		p.Skipped = "the driver does not advertise " + missing
		notes = append(notes, fmt.Sprintf("snapshots: %s pool skipped: %s", spec.name, p.Skipped))
		return p, notes, nil
	}
	if !drv.Info.StageUnstage {
		notes = append(notes, "snapshots: the driver has no NodeStage, so the restored volume's is not measured")
	}

	progress("snapshots: %s pool (%s): writing %s to a %s volume", spec.name, p.FsType, sizeString(cfg.SnapWriteBytes), sizeString(cfg.SnapVolumeBytes))
	src, err := prepareSnapSource(ctx, drv, "snap-src-"+spec.name, cfg.SnapWriteBytes)
	if err != nil {
		errs = append(errs, err)
		return p, notes, nil
	}
	p.WriteMS = ms(src.writeDur)
	defer func() {
		if cerr := src.close(); cerr != nil {
			errs = append(errs, cerr)
		}
	}()

	samples := make(map[string][]time.Duration, len(snapOps)+1)
	for i := range cfg.SnapIterations {
		if ctx.Err() != nil {
			break
		}
		durs, ierr := snapIteration(ctx, drv, src, spec, i)
		for op, d := range durs {
			samples[op] = append(samples[op], d)
		}
		if ierr != nil {
			errs = append(errs, fmt.Errorf("iteration %d: %w", i, ierr))
			break
		}
	}
	for _, op := range snapOps {
		if op == opStageRestored && !drv.Info.StageUnstage {
			continue
		}
		p.Ops = append(p.Ops, StepStat{Name: op, Stat: statOf(samples[op])})
	}
	if len(samples[opFloorCopy]) > 0 {
		p.Floor = &StepStat{Name: floorCopyName(spec.name), Stat: statOf(samples[opFloorCopy])}
	}
	progress("snapshots: %s pool: CreateSnapshot p50 %s ms, restore %s ms, clone %s ms, floor copy %s ms",
		spec.name, fmtMS(p.op(opSnapCreate).P50MS, p.op(opSnapCreate).N),
		fmtMS(p.op(opRestore).P50MS, p.op(opRestore).N), fmtMS(p.op(opClone).P50MS, p.op(opClone).N),
		fmtMS(samplesP50(samples[opFloorCopy]), len(samples[opFloorCopy])))
	return p, notes, nil
}

// opFloorCopy keys the floor's samples beside the driver's.
const opFloorCopy = "floor copy"

func samplesP50(s []time.Duration) float64 { return ms(Summarize(s).P50) }

// snapCapsMissing names the controller capabilities the section needs and
// the driver does not advertise, or returns "".
func snapCapsMissing(info DriverInfo) string {
	var missing []string
	if !info.Snapshots {
		missing = append(missing, "CREATE_DELETE_SNAPSHOT")
	}
	if !info.Clones {
		missing = append(missing, "CLONE_VOLUME")
	}
	return strings.Join(missing, " and ")
}

// snapSource is the volume every snapshot and clone is taken of: created,
// staged and published as a pod would have it, with data written.
type snapSource struct {
	d        *Driver
	v        *volume
	image    string // its disk image, for the floor's cp
	writeDur time.Duration
}

// prepareSnapSource creates the source volume and writes n bytes into it.
// On error nothing of it is left.
func prepareSnapSource(ctx context.Context, d *Driver, name string, n int64) (s *snapSource, err error) {
	s = &snapSource{d: d, v: newBenchVolume(d, name)}
	defer func() {
		if err != nil {
			if cerr := s.close(); cerr != nil {
				err = fmt.Errorf("%w (teardown: %w)", err, cerr)
			}
			s = nil
		}
	}()
	if err := makeVolumeDirs(s.v, d.Info.StageUnstage); err != nil {
		return s, err
	}
	steps := []string{stepCreate}
	if d.Info.StageUnstage {
		steps = append(steps, stepStage)
	}
	steps = append(steps, stepPublish)
	for _, step := range steps {
		if _, err := d.timedStep(ctx, step, s.v); err != nil {
			return s, fmt.Errorf("source volume: %s: %w", step, err)
		}
	}
	t0 := time.Now()
	if err := writeRandomFile(ctx, filepath.Join(s.v.target, "data"), n); err != nil {
		return s, fmt.Errorf("source volume: %w", err)
	}
	s.writeDur = time.Since(t0)
	at := s.v.target
	if d.Info.StageUnstage {
		at = s.v.staging
	}
	if s.image, err = imageOfMount(at); err != nil {
		return s, fmt.Errorf("source volume: %w", err)
	}
	// The driver attaches images with direct I/O, so none of the image is
	// in the page cache yet; the first copy, driver's or floor's, would
	// pay for reading it from disk and the later ones not. Reading it once
	// here puts every measured copy on the same footing.
	if err := readAll(s.image); err != nil {
		return s, fmt.Errorf("source volume: %w", err)
	}
	return s, nil
}

func (s *snapSource) close() error {
	if s == nil {
		return nil
	}
	return s.d.teardown(s.v)
}

// snapIteration takes one snapshot, restores it, stages the restored
// volume, deletes the snapshot, clones the source, and does the floor's
// copy; it deletes everything it made, also on error. It returns each
// measured duration by operation.
func snapIteration(ctx context.Context, d *Driver, src *snapSource, spec snapPoolSpec, i int) (durs map[string]time.Duration, err error) {
	durs = map[string]time.Duration{}
	snap := &snapRef{name: fmt.Sprintf("bench-snap-%s-%d", spec.name, i), source: src.v.id}
	restored := newBenchVolume(d, fmt.Sprintf("bench-restore-%s-%d", spec.name, i))
	clone := newBenchVolume(d, fmt.Sprintf("bench-clone-%s-%d", spec.name, i))
	floorCopy := filepath.Join(spec.floorDir, fmt.Sprintf("floor-copy-%d", i))
	defer func() {
		// Undo in reverse: volumes first, as a restored volume may still
		// be staged, then the snapshot, then the floor's file.
		var cerrs []error
		for _, v := range []*volume{clone, restored} {
			if terr := d.teardown(v); terr != nil {
				cerrs = append(cerrs, terr)
			}
		}
		if serr := d.dropSnapshot(snap); serr != nil {
			cerrs = append(cerrs, serr)
		}
		if rerr := os.Remove(floorCopy); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			cerrs = append(cerrs, rerr)
		}
		if len(cerrs) > 0 {
			err = errors.Join(append([]error{err}, cerrs...)...)
		}
	}()
	timed := func(op string, f func() error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		t0 := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		durs[op] = time.Since(t0)
		return nil
	}
	phases := map[string]func() error{
		// Of the staged, published source: includes the freeze.
		opSnapCreate: func() error {
			return timed(opSnapCreate, func() error { return d.createSnapshot(ctx, snap) })
		},
		opRestore: func() error {
			restored.source = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
				Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap.id}}}
			if err := makeVolumeDirs(restored, d.Info.StageUnstage); err != nil {
				return err
			}
			if err := timed(opRestore, func() error { return d.stepOnce(ctx, stepCreate, restored) }); err != nil {
				return err
			}
			if d.Info.StageUnstage {
				if err := timed(opStageRestored, func() error { return d.stepOnce(ctx, stepStage, restored) }); err != nil {
					return err
				}
			}
			if err := d.teardown(restored); err != nil {
				return fmt.Errorf("delete restored volume: %w", err)
			}
			return nil
		},
		opSnapDelete: func() error {
			return timed(opSnapDelete, func() error { return d.deleteSnapshot(ctx, snap) })
		},
		opClone: func() error {
			clone.source = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: src.v.id}}}
			if err := makeVolumeDirs(clone, false); err != nil {
				return err
			}
			if err := timed(opClone, func() error { return d.stepOnce(ctx, stepCreate, clone) }); err != nil {
				return err
			}
			if err := d.teardown(clone); err != nil {
				return fmt.Errorf("delete clone: %w", err)
			}
			return nil
		},
		// Synced like the driver's copy (cloneImage fsyncs the new
		// image), so both pay for getting the data to disk.
		opFloorCopy: func() error {
			err := timed(opFloorCopy, func() error {
				if _, err := runTool(ctx, d.opts.RPCTimeout, "cp", floorCopyArgs(spec.name, src.image, floorCopy)...); err != nil {
					return err
				}
				_, err := runTool(ctx, d.opts.RPCTimeout, "sync", floorCopy)
				return err
			})
			if err != nil {
				return err
			}
			return os.Remove(floorCopy)
		},
	}
	for _, op := range snapOrder(i) {
		if err := phases[op](); err != nil {
			return durs, err
		}
	}
	return durs, nil
}

// snapOrders are the orders of an iteration's phases, used in turn. A
// copy's latency on this kind of machine depends on what was written just
// before it (writeback, the virtual disk's caching), so no operation may
// always come right after another's 512 MiB: each takes each place about
// as often. A snapshot is made before it is restored from and deleted
// after.
var snapOrders = [][]string{
	{opSnapCreate, opRestore, opSnapDelete, opClone, opFloorCopy},
	{opClone, opSnapCreate, opFloorCopy, opRestore, opSnapDelete},
	{opFloorCopy, opSnapCreate, opClone, opRestore, opSnapDelete},
	{opSnapCreate, opFloorCopy, opRestore, opClone, opSnapDelete},
}

// snapOrder is iteration i's order.
func snapOrder(i int) []string { return snapOrders[i%len(snapOrders)] }

// stepOnce runs one step with the RPC timeout. A cancelled bench does not
// cancel an RPC already sent: the driver would go on with it and answer
// ABORTED to the teardown that follows.
func (d *Driver) stepOnce(ctx context.Context, step string, v *volume) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.RPCTimeout)
	defer cancel()
	return d.step(rctx, step, v)
}

func (d *Driver) timedStep(ctx context.Context, step string, v *volume) (time.Duration, error) {
	t0 := time.Now()
	err := d.stepOnce(ctx, step, v)
	return time.Since(t0), err
}

// snapRef tracks one snapshot like volume tracks a volume: enough to
// delete it whatever happened.
type snapRef struct {
	name, source, id string
	tried            bool
}

func (d *Driver) createSnapshot(ctx context.Context, s *snapRef) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.RPCTimeout)
	defer cancel()
	s.tried = true
	resp, err := d.ctrl.CreateSnapshot(rctx, &csi.CreateSnapshotRequest{Name: s.name, SourceVolumeId: s.source})
	if err != nil {
		return err
	}
	s.id = resp.GetSnapshot().GetSnapshotId()
	if s.id == "" {
		return errors.New("empty snapshot id")
	}
	if !resp.GetSnapshot().GetReadyToUse() {
		// A restore from it could fail or wait; the figure would not
		// be a snapshot's latency.
		return fmt.Errorf("snapshot %s is not ready to use on return", s.id)
	}
	return nil
}

func (d *Driver) deleteSnapshot(ctx context.Context, s *snapRef) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.RPCTimeout)
	defer cancel()
	if _, err := d.ctrl.DeleteSnapshot(rctx, &csi.DeleteSnapshotRequest{SnapshotId: s.id}); err != nil {
		return err
	}
	s.tried, s.id = false, ""
	return nil
}

// dropSnapshot deletes a snapshot that may exist, learning its id by
// asking again (CreateSnapshot is idempotent by name) when the create's
// answer was lost.
func (d *Driver) dropSnapshot(s *snapRef) error {
	if !s.tried {
		return nil
	}
	ctx := context.Background()
	if s.id == "" {
		if err := d.createSnapshot(ctx, s); err != nil && s.id == "" {
			return fmt.Errorf("find snapshot %s to delete it: %w", s.name, err)
		}
	}
	if err := d.deleteSnapshot(ctx, s); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", s.id, err)
	}
	return nil
}
