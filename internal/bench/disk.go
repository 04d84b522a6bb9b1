package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// DiskConfig is one `volplug bench disk` run: how fast a published volume
// is against the filesystem it lives on (fio), and how fast a volume's life
// is against a bare directory, per layout, all in one run so that every
// ratio compares figures taken minutes apart on the same machine.
type DiskConfig struct {
	Binary     string // volplug binary for the drivers
	TempParent string // where the private temp dir goes ("" = os.TempDir())
	Progress   io.Writer
	RPCTimeout time.Duration

	Fio          bool          // measure the fio table
	FioRuntime   time.Duration // per job (default 3 s)
	FioFileBytes int64         // the file each job works on (default 512 MiB)
	FioRounds    int           // the table's rows alternate this many times; medians (default 2)
	LoopVariants bool          // also loop devices set up other ways (buffered, 4 KiB blocks, fallocated)

	Lifecycle  bool          // measure the lifecycle table
	Levels     []int         // concurrency levels (default 1, 8)
	Cycles     int           // per level and layout (0: 40 at c=1, 10*c above)
	Rounds     int           // floor and layouts alternate in up to this many rounds per level
	StageDelay time.Duration // untimed gap between CreateVolume and NodeStage
	SizeBytes  int64         // lifecycle volume size (default 1 GiB)

	BtrfsPoolBytes int64 // the btrfs pool's image (default 20 GiB, written through: see writeImage)
}

func (c *DiskConfig) defaults() error {
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
		c.Binary = exe
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.RPCTimeout == 0 {
		c.RPCTimeout = 2 * time.Minute
	}
	if c.FioRuntime == 0 {
		c.FioRuntime = 3 * time.Second
	}
	if c.FioFileBytes == 0 {
		c.FioFileBytes = 512 << 20
	}
	if c.FioRounds < 1 {
		c.FioRounds = 2
	}
	if len(c.Levels) == 0 {
		c.Levels = []int{1, 8}
	}
	if c.Rounds < 1 {
		c.Rounds = 2
	}
	if c.SizeBytes == 0 {
		c.SizeBytes = 1 << 30
	}
	if c.BtrfsPoolBytes == 0 {
		c.BtrfsPoolBytes = 20 << 30
	}
	if c.FioFileBytes < 64<<20 || c.FioFileBytes%(1<<20) != 0 {
		return fmt.Errorf("fio file %d bytes: want a whole number of MiB, at least 64", c.FioFileBytes)
	}
	return nil
}

// diskPool is one pool the disk bench measures on and the driver serving it.
type diskPool struct {
	Name  string // "ext4" (the machine's filesystem) or "btrfs"
	Dir   string // a directory on the pool's filesystem for the bench's own files
	drv   *Driver
	mount *xfsPool // the loop-device filesystem, nil for the machine's own
}

// RunDisk measures the disk tables. As Run, it returns what it measured
// even with an error, and leaves nothing behind.
func RunDisk(ctx context.Context, cfg DiskConfig) (rep *DiskReport, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench disk needs root: it attaches loop devices and mounts filesystems")
	}
	started := time.Now()
	root, err := os.MkdirTemp(cfg.TempParent, "volplug-bench-disk-")
	if err != nil {
		return nil, fmt.Errorf("create temp dir: %w", err)
	}
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	rep = &DiskReport{Started: started, Dir: root, CPUs: runtime.NumCPU(), Kernel: kernelRelease(),
		FioRuntime: JSONSeconds(cfg.FioRuntime), FioFileBytes: cfg.FioFileBytes, StageDelay: JSONSeconds(cfg.StageDelay),
		SizeBytes: cfg.SizeBytes}
	var errs []error
	fail := func(e error) {
		errs = append(errs, e)
		rep.Errors = append(rep.Errors, e.Error())
	}
	progress := func(format string, a ...any) { fmt.Fprintf(cfg.Progress, format+"\n", a...) }

	var pools []*diskPool
	defer func() {
		for _, e := range finishDisk(pools, root, progress) {
			fail(e)
		}
		rep.Duration = JSONSeconds(time.Since(started))
		err = errors.Join(errs...)
	}()

	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		fail(fmt.Errorf("statfs %s: %w", root, err))
		return rep, nil
	}
	rep.MachineFS = fsName(int64(st.Type))
	start := func(name, poolDir, fsType string) *diskPool {
		dir := filepath.Join(root, "drv-"+name)
		drv, err := StartDriver(ctx, DriverOptions{
			Binary: cfg.Binary, Dir: dir, Pool: filepath.Join(poolDir, "pool"), NodeID: "bench-node",
			LogPath: filepath.Join(root, "driver-"+name+".log"), StartTimeout: 30 * time.Second,
			RPCTimeout: cfg.RPCTimeout, SizeBytes: cfg.SizeBytes, FsType: fsType, StageDelay: cfg.StageDelay,
		})
		if err != nil {
			fail(fmt.Errorf("start driver on the %s pool: %w", name, err))
			return nil
		}
		return &diskPool{Name: name, Dir: poolDir, drv: drv}
	}
	// The machine's own filesystem, as a pool of disk images.
	plainDir := filepath.Join(root, "plain")
	if err := os.Mkdir(plainDir, 0o700); err != nil {
		fail(err)
		return rep, nil
	}
	plain := start(rep.MachineFS, plainDir, "ext4")
	if plain == nil {
		return rep, nil
	}
	pools = append(pools, plain)
	// A btrfs pool on a loop device, for the native layout.
	var btrfs *diskPool
	progress("making a btrfs pool (%s, every block written) on a direct I/O loop device", sizeString(cfg.BtrfsPoolBytes))
	bp, err := setupLoopFS(ctx, "btrfs", []string{"-q", "-f"}, filepath.Join(root, "btrfs.img"), filepath.Join(root, "btrfs"), cfg.BtrfsPoolBytes, true, cfg.RPCTimeout)
	if err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("no btrfs pool, so no native layout: %v", err))
	} else if btrfs = start("btrfs", bp.Mount, "ext4"); btrfs != nil {
		btrfs.mount = bp
		pools = append(pools, btrfs)
	} else if terr := bp.teardown(); terr != nil {
		fail(terr)
	}

	if cfg.Fio {
		rows, err := runFioTable(ctx, cfg, plain, btrfs, progress)
		rep.Fio = rows
		if err != nil {
			fail(err)
		}
		rep.Notes = append(rep.Notes, fioNotes(rows)...)
	}
	if cfg.Lifecycle && ctx.Err() == nil {
		rows, err := runLifecycleTable(ctx, cfg, root, plain, btrfs, progress)
		rep.Lifecycle = rows
		if err != nil {
			fail(err)
		}
	}
	return rep, nil
}

// finishDisk stops the drivers (every volume was deleted through them by
// now), takes the btrfs pool down, and checks that nothing is left.
func finishDisk(pools []*diskPool, root string, progress func(string, ...any)) []error {
	var errs []error
	for _, p := range pools {
		if err := p.drv.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop the %s driver: %w", p.Name, err))
		}
		if files := filesUnder(filepath.Join(p.Dir, "pool", "volumes")); len(files) > 0 {
			errs = append(errs, fmt.Errorf("the %s pool still holds %v after every volume was deleted", p.Name, files[:min(3, len(files))]))
		}
		if p.mount != nil {
			if err := p.mount.teardown(); err != nil {
				errs = append(errs, fmt.Errorf("take down the %s pool: %w", p.Name, err))
			}
		}
	}
	l, err := FindLeftovers(root)
	if err != nil {
		return append(errs, fmt.Errorf("check for leftovers: %w; temp dir %s kept", err, root))
	}
	if !l.Empty() {
		errs = append(errs, fmt.Errorf("LEFTOVERS after the run: %s", l))
		progress("cleaning up leftovers by force: %s", l)
		if err := ForceCleanup(l); err != nil {
			errs = append(errs, fmt.Errorf("force cleanup: %w", err))
		}
		if l2, err := FindLeftovers(root); err != nil || !l2.Empty() {
			return append(errs, fmt.Errorf("still left behind: %s (%v); temp dir %s kept", l2, err, root))
		}
	}
	if err := os.RemoveAll(root); err != nil {
		errs = append(errs, fmt.Errorf("remove temp dir: %w", err))
	}
	return errs
}

// up makes a volume and publishes it, for fio to run in; down is its
// teardown (every undo step is idempotent).
func (d *Driver) up(ctx context.Context, name string, spec VolumeSpec) (*volume, error) {
	v := &volume{name: name, dir: filepath.Join(d.volDir, name), size: spec.SizeBytes, params: spec.Parameters, cap: spec.Capability}
	v.staging = filepath.Join(v.dir, "staging")
	v.target = filepath.Join(v.dir, "pod", "target")
	if err := os.MkdirAll(filepath.Dir(v.target), 0o750); err != nil {
		return nil, err
	}
	if err := os.Mkdir(v.staging, 0o750); err != nil {
		return nil, err
	}
	for _, step := range d.steps {
		if step == stepUnpublish {
			return v, nil
		}
		rctx, cancel := context.WithTimeout(ctx, d.opts.RPCTimeout)
		err := d.step(rctx, step, v)
		cancel()
		if err != nil {
			err = fmt.Errorf("volume %s: %s: %w", name, step, err)
			return nil, errors.Join(err, d.teardown(v))
		}
	}
	return v, nil
}

func (d *Driver) down(v *volume) error { return d.teardown(v) }

// mountCap is a filesystem volume capability; fsType "" lets the driver
// choose (the native layout's is the pool's own).
func mountCap(fsType string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return strings.TrimRight(string(u.Release[:]), "\x00")
}
