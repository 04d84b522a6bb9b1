package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/failpoint"
)

// btrfs, through its ioctls where a volume's life needs them, and through
// the btrfs tool (fixed argv, no shell) for what runs rarely: enabling
// quotas, reading a qgroup. Every path handed to the tool is the pool's own
// absolute path joined with validated IDs, so no argument can be read as
// an option.

// btrfsFirstObjectID is the inode number of every subvolume's root
// directory (BTRFS_FIRST_FREE_OBJECTID).
const btrfsFirstObjectID = 256

func runBtrfs(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "btrfs", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("btrfs %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// isBtrfs reports whether path is on a btrfs filesystem.
func isBtrfs(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == unix.BTRFS_SUPER_MAGIC, nil
}

// isSubvolume reports whether path is the root of a btrfs subvolume.
func isSubvolume(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Ino != btrfsFirstObjectID {
		return false, nil
	}
	return isBtrfs(path)
}

// The btrfs ioctls a volume's life takes: one system call each, where the
// btrfs tool costs a process (about 15 ms here, half a bare directory's
// whole life). From linux/btrfs.h.
const (
	iocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	iocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	iocSnapCreateV2 = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	iocQgroupLimit  = 0x8030942b // _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)

	subvolReadOnly = 1 << 1 // BTRFS_SUBVOL_RDONLY
	limitMaxRfer   = 1 << 0 // BTRFS_QGROUP_LIMIT_MAX_RFER
)

// volArgs is struct btrfs_ioctl_vol_args.
type volArgs struct {
	fd   int64
	name [4088]byte
}

// volArgsV2 is struct btrfs_ioctl_vol_args_v2.
type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [4040]byte
}

// qgroupLimitArgs is struct btrfs_ioctl_qgroup_limit_args; qgroupid 0 is
// the qgroup of the subvolume the ioctl is made on.
type qgroupLimitArgs struct {
	qgroupid                                  uint64
	flags, maxRfer, maxExcl, rsvRfer, rsvExcl uint64
}

// inParent opens path's directory and calls fn with it and path's name,
// as the subvolume ioctls want.
func inParent(path string, fn func(dir int, name string) error) error {
	name := filepath.Base(path)
	if len(name) >= 4040 {
		return fmt.Errorf("%s: name too long", path)
	}
	dir, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	defer unix.Close(dir)
	return fn(dir, name)
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

func createSubvolume(path string) error {
	return inParent(path, func(dir int, name string) error {
		var a volArgs
		copy(a.name[:], name)
		if err := ioctl(dir, iocSubvolCreate, unsafe.Pointer(&a)); err != nil {
			return fmt.Errorf("create subvolume %s: %w", path, err)
		}
		return nil
	})
}

// snapshotSubvolume makes dst a snapshot of src: atomic and instant (the
// blocks are shared until either side is overwritten). btrfs flushes the
// source's dirty data first, so the snapshot holds everything written
// before the call, without a freeze.
func snapshotSubvolume(src, dst string, readOnly bool) error {
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer unix.Close(fd)
	return inParent(dst, func(dir int, name string) error {
		a := volArgsV2{fd: int64(fd)}
		if readOnly {
			a.flags = subvolReadOnly
		}
		copy(a.name[:], name)
		if err := ioctl(dir, iocSnapCreateV2, unsafe.Pointer(&a)); err != nil {
			return fmt.Errorf("snapshot %s to %s: %w", src, dst, err)
		}
		return nil
	})
}

// deleteSubvolume removes a subvolume at once, read-only or not (the
// cleaner frees its blocks later; the kernel drops its qgroup when it is
// gone).
func deleteSubvolume(path string) error {
	return inParent(path, func(dir int, name string) error {
		var a volArgs
		copy(a.name[:], name)
		if err := ioctl(dir, iocSnapDestroy, unsafe.Pointer(&a)); err != nil {
			return fmt.Errorf("delete subvolume %s: %w", path, err)
		}
		return nil
	})
}

// limitSubvolume sets the subvolume's referenced-bytes limit: writing past
// it fails with EDQUOT inside the volume.
func limitSubvolume(path string, size int64) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	a := qgroupLimitArgs{flags: limitMaxRfer, maxRfer: uint64(size)}
	if err := ioctl(fd, iocQgroupLimit, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("limit subvolume %s to %d bytes: %w", path, size, err)
	}
	return nil
}

// qgroupUsage returns the bytes the subvolume references and its limit
// (0: none), from its own qgroup (0/<subvolume id>). The figures are the
// last committed transaction's, so they trail writes by up to the commit
// interval.
func qgroupUsage(ctx context.Context, path string) (used, limit int64, err error) {
	out, err := runBtrfs(ctx, "qgroup", "show", "--raw", "-r", "-f", path)
	if err != nil {
		return 0, 0, err
	}
	// Qgroupid  Referenced  Exclusive  Max referenced  Path
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "0/") {
			continue
		}
		used, err = strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("qgroup of %s: %q: %w", path, line, err)
		}
		if f[3] != "none" {
			if limit, err = strconv.ParseInt(f[3], 10, 64); err != nil {
				return 0, 0, fmt.Errorf("qgroup of %s: %q: %w", path, line, err)
			}
		}
		return used, limit, nil
	}
	return 0, 0, fmt.Errorf("qgroup of %s: none in %q", path, out)
}

// removeTree removes a volume's or snapshot's directory, deleting its
// subvolume through btrfs first: instant, where removing the files one by
// one would take as long as the volume is large.
func removeTree(dir string) error {
	sub := filepath.Join(dir, subvolName)
	if ok, err := isSubvolume(sub); err != nil {
		return err
	} else if ok {
		if err := deleteSubvolume(sub); err != nil {
			return err
		}
		failpoint.Hit("local.remove.subvol-deleted")
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
