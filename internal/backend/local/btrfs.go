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

	"golang.org/x/sys/unix"
)

// The btrfs tool, run with a fixed argv and no shell. Every path handed to
// it is the pool's own absolute path joined with validated IDs, so no
// argument can be read as an option.

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

func createSubvolume(ctx context.Context, path string) error {
	_, err := runBtrfs(ctx, "subvolume", "create", path)
	return err
}

// snapshotSubvolume makes dst a snapshot of src: atomic and instant (the
// blocks are shared until either side is overwritten). btrfs flushes the
// source's dirty data first, so the snapshot holds everything written
// before the call, without a freeze.
func snapshotSubvolume(ctx context.Context, src, dst string, readOnly bool) error {
	args := []string{"subvolume", "snapshot"}
	if readOnly {
		args = append(args, "-r")
	}
	_, err := runBtrfs(ctx, append(args, src, dst)...)
	return err
}

// deleteSubvolume removes a subvolume at once (the cleaner frees its blocks
// later; the kernel drops its qgroup when it is gone). A read-only snapshot
// can be deleted like any other.
func deleteSubvolume(ctx context.Context, path string) error {
	_, err := runBtrfs(ctx, "subvolume", "delete", path)
	return err
}

// limitSubvolume sets the subvolume's referenced-bytes limit: writing past
// it fails with EDQUOT inside the volume.
func limitSubvolume(ctx context.Context, path string, size int64) error {
	_, err := runBtrfs(ctx, "qgroup", "limit", strconv.FormatInt(size, 10), path)
	return err
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
		if err := deleteSubvolume(context.Background(), sub); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
