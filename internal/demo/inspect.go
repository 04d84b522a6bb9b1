package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/ctl"
)

func (d *demo) useVolume(ctx context.Context) error {
	return d.do(ctx, "Use the volume the way a pod would: write, read back, compare",
		"Everything the container writes under its volumeMount lands here, in the volume's own filesystem.",
		func(ctx context.Context) error {
			data := make([]byte, 4<<20)
			if _, err := rand.Read(data); err != nil {
				return fmt.Errorf("random data: %w", err)
			}
			name := filepath.Join(d.target, "hello.bin")
			t0 := time.Now()
			if err := writeSync(name, data); err != nil {
				return err
			}
			wrote := time.Since(t0)
			got, err := os.ReadFile(name)
			if err != nil {
				return fmt.Errorf("read back: %w", err)
			}
			if !bytes.Equal(got, data) {
				return fmt.Errorf("read back %d bytes from %s that differ from the %d written", len(got), name, len(data))
			}
			d.n.detail("wrote %s to %s (fsync'd in %s), read it back: identical", ctl.HumanBytes(int64(len(data))), name, roundDur(wrote))
			if d.staging != "" {
				// The pod's directory is a bind mount of the staged
				// filesystem, so the same file is visible there.
				again, err := os.ReadFile(filepath.Join(d.staging, "hello.bin"))
				if err == nil && bytes.Equal(again, data) {
					d.n.detail("the same file is in %s: the pod's directory is a bind mount of the staged filesystem", d.staging)
				}
			}
			return nil
		})
}

func writeSync(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write into the volume: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write into the volume: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// dfLine is one df-like line from statfs.
func dfLine(path string) (string, int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize)
	size, free, avail := blockBytes(st.Blocks, bs), blockBytes(st.Bfree, bs), blockBytes(st.Bavail, bs)
	return fmt.Sprintf("size %s, used %s, avail %s, inodes %d (%d free)",
		ctl.HumanBytes(size), ctl.HumanBytes(size-free), ctl.HumanBytes(avail), st.Files, st.Ffree), size, nil
}

// blockBytes is blocks*size, saturated: s3fs reports a near-infinite
// filesystem whose byte count does not fit in 64 bits.
func blockBytes(blocks uint64, size int64) int64 {
	if size <= 0 {
		return 0
	}
	if blocks > uint64(math.MaxInt64/size) {
		return math.MaxInt64
	}
	return int64(blocks) * size
}

func (d *demo) showSpace(ctx context.Context) error {
	return d.do(ctx, "The volume's own df",
		"The pod sees the size it asked for, not the host's disk. Kubelet reports these numbers as "+
			"the kubelet_volume_stats_* metrics, through NodeGetVolumeStats when the driver offers it.",
		func(ctx context.Context) error {
			line, size, err := dfLine(d.target)
			if err != nil {
				return err
			}
			d.n.detail("volume (statfs %s): %s", d.target, line)
			if size < d.opts.size {
				d.n.detail("the filesystem's own structures (journal, inode tables) take the rest of the %s asked for",
					ctl.HumanBytes(d.opts.size))
			}
			if host, _, err := dfLine(d.dir); err == nil {
				d.n.detail("host (statfs %s): %s", d.dir, host)
			}
			if !d.nodeCaps["GET_VOLUME_STATS"] {
				d.n.detail("the driver does not advertise GET_VOLUME_STATS; kubelet would fall back to statfs like this")
				return nil
			}
			r, err := d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{
				VolumeId: d.volID, VolumePath: d.target, StagingTargetPath: d.staging,
			})
			if err != nil {
				return fmt.Errorf("NodeGetVolumeStats: %w", err)
			}
			for _, u := range r.GetUsage() {
				if u.GetUnit() == csi.VolumeUsage_BYTES {
					d.n.detail("NodeGetVolumeStats: total %s, used %s, available %s",
						ctl.HumanBytes(u.GetTotal()), ctl.HumanBytes(u.GetUsed()), ctl.HumanBytes(u.GetAvailable()))
				} else {
					d.n.detail("NodeGetVolumeStats: %d %s total, %d used, %d available",
						u.GetTotal(), strings.ToLower(u.GetUnit().String()), u.GetUsed(), u.GetAvailable())
				}
			}
			return nil
		})
}

func (d *demo) showMounts(ctx context.Context) error {
	return d.do(ctx, "It is a real mount: /proc/self/mountinfo",
		"What the kernel says is mounted under the work dir: the staged filesystem and the pod's bind mount of it.",
		func(context.Context) error {
			mounts, err := mountsUnder(d.dir)
			if err != nil {
				return err
			}
			found := false
			for _, m := range mounts {
				d.n.detail("%s", m.Line)
				found = found || m.MountPoint == d.target
			}
			if !found {
				return fmt.Errorf("nothing is mounted at %s although NodePublishVolume succeeded", d.target)
			}
			return nil
		})
}

// cleanup checks that nothing is left mounted or attached under the work
// dir, then removes it. It never removes a dir that still has mounts in
// it: os.RemoveAll would delete the files inside the mounted volume. After
// a failure the dir stays, so the driver log can be read.
func (d *demo) cleanup(failed bool) error {
	d.n.begin("", "Check that nothing is left behind",
		"No mount under the work dir, no loop device backed by a file in it.")
	t0 := time.Now()
	left, err := leftovers(d.dir)
	if err != nil {
		d.n.end(time.Since(t0), err)
		return err
	}
	if len(left) > 0 {
		for _, l := range left {
			d.n.detail("left behind: %s", l)
		}
		err := fmt.Errorf("%d mount(s) or loop device(s) left behind under %s (kept for inspection)", len(left), d.dir)
		d.n.end(time.Since(t0), err)
		return err
	}
	switch {
	case failed:
		d.n.detail("no mounts or loop devices left; work dir kept for the log: %s", d.dir)
	case d.opts.keep:
		d.n.detail("no mounts or loop devices left; work dir kept (--keep): %s", d.dir)
	default:
		if err := os.RemoveAll(d.dir); err != nil {
			d.n.end(time.Since(t0), err)
			return fmt.Errorf("remove work dir: %w", err)
		}
		left, err := leftovers(d.dir)
		if err != nil || len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("left behind after removal: %s", strings.Join(left, "; ")))
			d.n.end(time.Since(t0), err)
			return err
		}
		if _, err := os.Lstat(d.dir); !errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("work dir %s still exists after removal", d.dir)
			d.n.end(time.Since(t0), err)
			return err
		}
		d.n.detail("nothing left behind: no mount, no loop device, and %s is gone", d.dir)
	}
	d.n.end(time.Since(t0), nil)
	return nil
}
