package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// xfsPool is a reflink-capable filesystem the bench makes for itself: a
// sparse image in its temp dir, formatted xfs with reflink=1, on a loop
// device, mounted. The machine's own filesystems cannot be assumed to
// share blocks (the root here is ext4), and the point of the comparison is
// the same driver on a pool that can and on one that cannot.
type xfsPool struct {
	Image   string // backing file
	Mount   string // mount point
	Dev     string // loop device, once known
	timeout time.Duration

	imgMade   bool
	loopTried bool
	mounted   bool
}

// setupXFSPool makes the pool. On error it undoes whatever it had done, so
// the caller only tears down a pool it got back.
func setupXFSPool(ctx context.Context, image, mnt string, size int64, timeout time.Duration) (p *xfsPool, err error) {
	return setupLoopFS(ctx, "xfs", []string{"-q", "-m", "reflink=1"}, image, mnt, size, false, timeout)
}

// setupLoopFS makes a pool of any filesystem the same way: mkfs.<fsType>
// with mkfsArgs on a sparse image, a loop device, a mount. The disk bench
// makes its btrfs pool with it, written: see writeImage.
func setupLoopFS(ctx context.Context, fsType string, mkfsArgs []string, image, mnt string, size int64, written bool, timeout time.Duration) (p *xfsPool, err error) {
	p = &xfsPool{Image: image, Mount: mnt, timeout: timeout}
	defer func() {
		if err != nil {
			if terr := p.teardown(); terr != nil {
				err = fmt.Errorf("%w (teardown: %w)", err, terr)
			}
			p = nil
		}
	}()
	f, err := os.OpenFile(image, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return p, fmt.Errorf("%s pool image: %w", fsType, err)
	}
	p.imgMade = true
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && written {
		err = writeImage(image, size)
	}
	if err != nil {
		return p, fmt.Errorf("%s pool image %s: %w", fsType, image, err)
	}
	// mkfs on the file, before it is attached: one loop device fewer to
	// think about if mkfs fails.
	if _, err := runTool(ctx, timeout, "mkfs."+fsType, append(mkfsArgs, image)...); err != nil {
		return p, fmt.Errorf("%s pool: %w", fsType, err)
	}
	p.loopTried = true
	args := []string{"--find", "--show", image}
	if written {
		args = append(args, "--direct-io=on")
	}
	out, err := runTool(ctx, timeout, "losetup", args...)
	if err != nil {
		return p, fmt.Errorf("%s pool: %w", fsType, err)
	}
	p.Dev = strings.TrimSpace(out)
	if !strings.HasPrefix(p.Dev, "/dev/loop") {
		return p, fmt.Errorf("%s pool: losetup printed %q, not a loop device", fsType, out)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return p, fmt.Errorf("%s pool mount point: %w", fsType, err)
	}
	p.mounted = true
	if _, err := runTool(ctx, timeout, "mount", "-t", fsType, p.Dev, mnt); err != nil {
		return p, fmt.Errorf("%s pool: %w", fsType, err)
	}
	return p, nil
}

// writeImage writes every block of the image once, with direct I/O, so
// that a filesystem on it measures like one on a disk. A sparse image makes
// the machine's filesystem allocate each block the first time it is
// written, and a copy-on-write pool writes new places for many rounds: the
// row that happened to reach fresh space first ran at half speed. Its loop
// device then uses direct I/O too, so that reads and writes reach the disk
// rather than the machine's page cache.
func writeImage(image string, size int64) error {
	f, err := os.OpenFile(image, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const chunk = 8 << 20
	// An anonymous mapping is page aligned, as O_DIRECT wants.
	buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("write %s: %w", image, err)
		}
	}
	return f.Sync()
}

// teardown unmounts, detaches and removes, as far as the pool got. It uses
// its own context: it also runs after ^C. It can be called again after a
// partial failure and only retries what is still there.
func (p *xfsPool) teardown() error {
	ctx := context.Background()
	var errs []error
	if p.mounted {
		if isMountPoint(p.Mount) {
			if _, err := runTool(ctx, p.timeout, "umount", p.Mount); err != nil {
				// Never detach or remove below a live mount.
				return err
			}
		}
		p.mounted = false
		if err := os.Remove(p.Mount); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p.Mount, err))
		}
	}
	if p.loopTried {
		devs, err := loopsBackedBy(p.Image)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, dev := range devs {
			if _, err := runTool(ctx, p.timeout, "losetup", "-d", dev); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		p.loopTried, p.Dev = false, ""
	}
	if p.imgMade {
		if err := os.Remove(p.Image); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p.Image, err))
		} else {
			p.imgMade = false
		}
	}
	return errors.Join(errs...)
}

// loopsBackedBy lists the loop devices whose backing file is image. The
// kernel is asked rather than trusting the name losetup printed: it may
// have attached a device and then failed (or timed out) before printing.
func loopsBackedBy(image string) ([]string, error) {
	all, err := loopDevices()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range all {
		if d.Backing == image {
			out = append(out, d.Dev)
		}
	}
	return out, nil
}

// fsMagicNames names the statfs f_type of the filesystems a pool may sit
// on (see statfs(2)); the report shows it because it decides whether
// copies can be reflinks.
var fsMagicNames = map[int64]string{
	0xEF53:     "ext4",
	0x58465342: "xfs",
	0x9123683E: "btrfs",
	0x01021994: "tmpfs",
	0x794C7630: "overlay",
	0x65735546: "fuse",
}

// fsName returns the filesystem name of a statfs magic number.
func fsName(magic int64) string {
	if n, ok := fsMagicNames[magic]; ok {
		return n
	}
	return "0x" + strconv.FormatInt(magic, 16)
}

// mayReflink reports whether copies on a filesystem of this name could
// share blocks, which would make a "plain" pool on it no plain baseline.
func mayReflink(fsname string) bool { return fsname == "xfs" || fsname == "btrfs" }
