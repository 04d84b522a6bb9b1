package local

import (
	"fmt"
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
// Snapshots stay as consistent as without it. Images keep copy-on-write:
// their clones and restores are reflinks, and btrfs refuses a reflink
// between a nodatacow file and a copy-on-write one.
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
		return false, fmt.Errorf("parameter %s applies to layout %s only; an image keeps copy-on-write so that its clones and restores can share blocks: %w", paramNoDataCow, layoutNative, backend.ErrInvalid)
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
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("nodatacow %s: get flags: %w", dir, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags|fsNoCowFL); err != nil {
		return fmt.Errorf("nodatacow %s: set flags: %w", dir, err)
	}
	return nil
}

// hasNoCow reports whether dir carries FS_NOCOW_FL.
func hasNoCow(dir string) (bool, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return false, err
	}
	return flags&fsNoCowFL != 0, nil
}
