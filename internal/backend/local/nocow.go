package local

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
)

// paramNoDataCow is the StorageClass parameter ("true", the default for
// the native layout, or "false") that turns copy-on-write off for a native
// volume's data (chattr +C on the empty subvolume, so every file made in
// it inherits it). Overwrites then go in place, as on a plain filesystem.
//
// It is the default because of how a qgroup counts a copy-on-write
// volume: btrfs keeps a whole extent while any part of it is still in a
// file, and the qgroup counts it whole. An overwrite adds new blocks and
// frees no old ones until every block of their extent has been replaced,
// so random overwrites count the data up to twice, and a preallocated file
// (extents of hundreds of MiB) cannot be rewritten past the volume's free
// space at all: EDQUOT below the size the volume promises
// (TestNativeOverwritesFitTheLimit). In place, a volume counts its data
// once.
//
// The costs: no data checksums or compression; and a snapshot shares the
// blocks, so the first write to each shared block after a snapshot is
// copied once (btrfs's COW-once rule) and counted as above until it is.
// Snapshots stay as consistent as without it. Images take no parameter:
// on a btrfs pool they are always nodatacow (imageNoCow).
const paramNoDataCow = "nodatacow"

// fsNoCowFL is FS_NOCOW_FL (linux/fs.h): only honoured on an empty file or
// a directory, whose new files inherit it.
const fsNoCowFL = 0x00800000

// checkNoDataCow validates the parameter for the layout chosen.
func checkNoDataCow(params map[string]string, layout string) (bool, error) {
	s, ok := params[paramNoDataCow]
	if !ok {
		return layout == layoutNative, nil
	}
	on, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("parameter %s=%q: want true or false: %w", paramNoDataCow, s, backend.ErrInvalid)
	}
	if on && layout != layoutNative {
		return false, fmt.Errorf("parameter %s applies to layout %s only; an image is nodatacow on a btrfs pool already, and on other pools has no such setting: %w", paramNoDataCow, layoutNative, backend.ErrInvalid)
	}
	return on, nil
}

// noDataCow reads the volume's setting from the parameters stored with it
// (validated by checkNoDataCow when it was made).
func noDataCow(v *backend.Volume) bool {
	on, _ := checkNoDataCow(v.Parameters, v.Layout)
	return on
}

// setNoCow sets FS_NOCOW_FL on dir (the root of a new, empty subvolume),
// whose files inherit it.
func setNoCow(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("nodatacow %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return setNoCowFd(fd, dir)
}

func setNoCowFd(fd int, name string) error {
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("nodatacow %s: get flags: %w", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags|fsNoCowFL); err != nil {
		return fmt.Errorf("nodatacow %s: set flags: %w", name, err)
	}
	return nil
}

// imageNoCow makes a new, empty image nodatacow when it is on btrfs, or
// when like (the image it is a copy of, if any) is. A copy-on-write image
// on btrfs would hold more of the pool than its size: btrfs keeps a whole
// extent while any block of it is still in the file, so overwrites through
// the loop device (random ones above all) leave the old extents allocated
// beside the new blocks, up to about twice the image
// (TestImageHoldsItsSizeOnBtrfs). Capacity promises each image only its
// size, so the pool could run out under volumes that are not full: an I/O
// error in a volume, which promised exists to prevent. In place, an image
// holds at most its size. Reflinks still work between two nodatacow files
// (snapshots and clones), which is why a copy takes its source's flag:
// btrfs refuses a reflink between files that differ in it. On other
// filesystems like is the only reason (xfs frees each overwritten block of
// a shared extent, so its images need nothing).
func imageNoCow(f, like *os.File) error {
	want := false
	if like != nil {
		on, err := fdNoCow(int(like.Fd()))
		if err != nil && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("nodatacow %s: %w", like.Name(), err)
		}
		want = on
	} else {
		var st unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
			return fmt.Errorf("statfs %s: %w", f.Name(), err)
		}
		want = st.Type == unix.BTRFS_SUPER_MAGIC
	}
	if !want {
		return nil
	}
	return setNoCowFd(int(f.Fd()), f.Name())
}

// copiesOnWrite reports whether the image at path lacks FS_NOCOW_FL, or
// cannot be asked (then it is counted as if it did). One open and one
// ioctl per image and capacity check (about 6 µs), on btrfs pools only.
func copiesOnWrite(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	on, err := fdNoCow(fd)
	return err != nil || !on
}

func fdNoCow(fd int) (bool, error) {
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return false, err
	}
	return flags&fsNoCowFL != 0, nil
}

// hasNoCow reports whether dir carries FS_NOCOW_FL.
func hasNoCow(dir string) (bool, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	return fdNoCow(fd)
}
