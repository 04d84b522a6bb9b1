package bucketfs

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountFUSE opens /dev/fuse and mounts it at mountpoint with mount(2)
// (root only), as cfg asks (read-only, allow_other), without serving it.
// Whoever holds the returned file holds the mount: Mount(ctx,
// fmt.Sprintf("/dev/fd/%d", f.Fd()), cfg) serves it, in this process or
// in another one the file was passed to (SCM_RIGHTS, or ExtraFiles of a
// child). Until a server answers, accesses to the mount wait. A second
// server takes over from a first that served already only through
// Server.Handover and Resume, which carry the node IDs and handles the
// kernel keeps. Unmount the mountpoint with
// umount(2) (Server.Unmount cannot: it does not know the path), then
// close the file.
func MountFUSE(mountpoint string, cfg Config) (*os.File, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return nil, fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	opts := []string{
		fmt.Sprintf("fd=%d", f.Fd()),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", maxWrite), // as Mount's MaxWrite
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if cfg.AllowOther {
		opts = append(opts, "allow_other", "default_permissions")
	}
	if cfg.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(cfg.FsName, mountpoint, "fuse."+fsType, flags, strings.Join(opts, ",")); err != nil {
		f.Close()
		return nil, fmt.Errorf("mount fuse at %s: %w", mountpoint, err)
	}
	return f, nil
}
