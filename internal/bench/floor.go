package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Floor does the same volume life as the driver with the plain system
// tools, each run directly (never through a shell). It is the baseline the
// driver is judged against: a driver cannot do less work than this, so its
// overhead is whatever it adds on top.
type Floor struct {
	Dir       string // private dir for images and mount points
	SizeBytes int64
	FsType    string
	Timeout   time.Duration // per command
}

// Floor step names: the commands, so the report says what was run.
var floorSteps = []string{
	"truncate", "losetup", "mkfs", "mount", "mount --bind",
	"umount target", "umount staging", "losetup -d", "rm",
}

// Steps lists the timed steps of one Cycle, in order.
func (f *Floor) Steps() []string { return floorSteps }

type floorVol struct {
	dir, img, staging, target string
	imgTried                  bool
	loopTried                 bool
	dev                       string
	stageTried                bool
	targetTried               bool
}

// Cycle runs one full life of a volume with system tools and returns the
// duration of each step. On error it undoes what it had done.
func (f *Floor) Cycle(ctx context.Context, name string) (durs []time.Duration, err error) {
	v := &floorVol{dir: filepath.Join(f.Dir, name)}
	v.img = filepath.Join(v.dir, "img")
	v.staging = filepath.Join(v.dir, "staging")
	v.target = filepath.Join(v.dir, "target")
	defer func() {
		if err != nil {
			if terr := f.teardown(v); terr != nil {
				err = fmt.Errorf("%w (teardown: %w)", err, terr)
			}
		}
	}()
	// Directories are made outside the timed steps, as the CO makes
	// the staging path for the driver too.
	if err := os.MkdirAll(v.staging, 0o750); err != nil {
		return nil, fmt.Errorf("floor %s: %w", name, err)
	}
	if err := os.Mkdir(v.target, 0o750); err != nil {
		return nil, fmt.Errorf("floor %s: %w", name, err)
	}
	durs = make([]time.Duration, 0, len(floorSteps))
	timed := func(step string, f func() error) error {
		t0 := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("floor %s: %s: %w", name, step, err)
		}
		durs = append(durs, time.Since(t0))
		return nil
	}
	size := strconv.FormatInt(f.SizeBytes, 10)
	steps := []struct {
		name string
		run  func() error
	}{
		{"truncate", func() error {
			v.imgTried = true
			_, err := f.run(ctx, "truncate", "-s", size, v.img)
			return err
		}},
		{"losetup", func() error {
			v.loopTried = true
			out, err := f.run(ctx, "losetup", "--find", "--show", v.img)
			v.dev = strings.TrimSpace(out)
			if err == nil && !strings.HasPrefix(v.dev, "/dev/loop") {
				err = fmt.Errorf("unexpected output %q", out)
			}
			return err
		}},
		{"mkfs", func() error {
			_, err := f.run(ctx, "mkfs."+f.FsType, "-q", v.dev)
			return err
		}},
		{"mount", func() error {
			v.stageTried = true
			_, err := f.run(ctx, "mount", v.dev, v.staging)
			return err
		}},
		{"mount --bind", func() error {
			v.targetTried = true
			_, err := f.run(ctx, "mount", "--bind", v.staging, v.target)
			return err
		}},
		{"umount target", func() error {
			_, err := f.run(ctx, "umount", v.target)
			if err == nil {
				v.targetTried = false
			}
			return err
		}},
		{"umount staging", func() error {
			_, err := f.run(ctx, "umount", v.staging)
			if err == nil {
				v.stageTried = false
			}
			return err
		}},
		{"losetup -d", func() error {
			_, err := f.run(ctx, "losetup", "-d", v.dev)
			if err == nil {
				v.loopTried, v.dev = false, ""
			}
			return err
		}},
		{"rm", func() error {
			_, err := f.run(ctx, "rm", v.img)
			if err == nil {
				v.imgTried = false
			}
			return err
		}},
	}
	for _, s := range steps {
		if err := timed(s.name, s.run); err != nil {
			return durs, err
		}
	}
	if err := removeFloorDirs(v); err != nil {
		return durs, fmt.Errorf("floor %s: %w", name, err)
	}
	return durs, nil
}

// run executes one tool and returns its stdout; stderr goes into the error
// because that is where the tools say what went wrong.
func (f *Floor) run(ctx context.Context, name string, args ...string) (string, error) {
	return runTool(ctx, f.Timeout, name, args...)
}

// runTool runs one system tool directly (no shell) with a timeout and
// returns its stdout; stderr goes into the error.
func runTool(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// teardown undoes a failed floor cycle with a fresh context: the cycle's
// own may already be cancelled.
func (f *Floor) teardown(v *floorVol) error {
	ctx := context.Background()
	var errs []error
	undo := func(name string, args ...string) {
		if _, err := f.run(ctx, name, args...); err != nil {
			errs = append(errs, err)
		}
	}
	if v.targetTried && isMountPoint(v.target) {
		undo("umount", v.target)
	}
	if v.stageTried && isMountPoint(v.staging) {
		undo("umount", v.staging)
	}
	if v.loopTried && v.dev == "" {
		// losetup may have attached a device and failed (or timed out)
		// before printing it; ask the kernel by backing file.
		if out, err := f.run(ctx, "losetup", "--associated", v.img); err == nil {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if dev, _, ok := strings.Cut(line, ":"); ok {
					undo("losetup", "-d", dev)
				}
			}
		}
	} else if v.dev != "" {
		undo("losetup", "-d", v.dev)
	}
	if v.imgTried {
		if err := os.Remove(v.img); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := removeFloorDirs(v); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeFloorDirs uses os.Remove, never RemoveAll, so a mount left behind
// makes it fail instead of deleting through it.
func removeFloorDirs(v *floorVol) error {
	var errs []error
	for _, p := range []string{v.target, v.staging, v.dir} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
