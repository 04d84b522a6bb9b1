// Package mount formats, mounts and unmounts. It is the one place in volplug
// that changes the mount table. It leans on k8s.io/mount-utils for what that
// library does well (mount-point checks that survive corrupted mounts, disk
// format detection, mount(8) option handling) and adds the rules volplug
// needs on top: never format a device that holds anything, format without
// discards, and read the kernel's mount table rather than trust memory.
package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	mountutils "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"
)

// Mounter does every mount-table operation of volplug.
type Mounter struct {
	safe *mountutils.SafeFormatAndMount
}

// New returns a Mounter that runs the system's mount tools.
func New() *Mounter {
	return &Mounter{safe: &mountutils.SafeFormatAndMount{
		Interface: mountutils.NewWithoutSystemd(""),
		Exec:      utilexec.New(),
	}}
}

// ErrNotBlank is returned by Format when the device already holds data.
var ErrNotBlank = errors.New("device is not blank")

// DiskFormat returns the filesystem on dev, "" when blkid finds nothing, and
// a non-empty description for anything else it recognises (a partition
// table, for instance).
func (m *Mounter) DiskFormat(dev string) (string, error) {
	format, err := m.safe.GetDiskFormat(dev)
	if err != nil {
		return "", fmt.Errorf("detect filesystem on %s: %w", dev, err)
	}
	return format, nil
}

// mkfsArgs are the options per filesystem. None of them forces: mkfs.xfs and
// mkfs.btrfs refuse a device with a signature on it, which is one more guard
// against formatting over data. Discards are skipped because the image
// behind a fresh loop device is already sparse.
var mkfsArgs = map[string][]string{
	// 4 KiB blocks always: mke2fs picks 1 KiB for small volumes, which a
	// loop device doing direct I/O on a 4 KiB-sector pool cannot mount.
	"ext4":  {"-q", "-m0", "-b", "4096", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"},
	"ext3":  {"-q", "-m0", "-b", "4096", "-E", "nodiscard"},
	"xfs":   {"-q", "-K"},
	"btrfs": {"-q", "-K"},
}

// Supported reports whether volplug can format fstype.
func Supported(fstype string) bool {
	_, ok := mkfsArgs[fstype]
	return ok
}

// Format puts a new fstype filesystem on dev, but only when blkid finds the
// device blank; otherwise it returns ErrNotBlank and touches nothing.
func (m *Mounter) Format(ctx context.Context, dev, fstype string) error {
	args, ok := mkfsArgs[fstype]
	if !ok {
		return fmt.Errorf("unsupported filesystem %q", fstype)
	}
	existing, err := m.DiskFormat(dev)
	if err != nil {
		return err
	}
	if existing != "" {
		return fmt.Errorf("format %s as %s: it holds %s: %w", dev, fstype, existing, ErrNotBlank)
	}
	cmd := exec.CommandContext(ctx, "mkfs."+fstype, append(append([]string{}, args...), dev)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.%s %s: %w: %s", fstype, dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Wipe erases every filesystem and partition-table signature on dev. Only
// for a device that holds nothing but an interrupted mkfs of our own.
func (m *Mounter) Wipe(ctx context.Context, dev string) error {
	if out, err := exec.CommandContext(ctx, "wipefs", "-a", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("wipefs %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Check repairs what fsck can repair without asking, for ext filesystems;
// other filesystems check themselves when mounted. It fails only when fsck
// reports errors it could not correct.
func (m *Mounter) Check(ctx context.Context, dev, fstype string) error {
	if !strings.HasPrefix(fstype, "ext") {
		return nil
	}
	out, err := exec.CommandContext(ctx, "fsck."+fstype, "-p", dev).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() < 4 {
		return nil // 1: errors corrected, 2: corrected, reboot advised
	}
	if err != nil {
		return fmt.Errorf("fsck.%s %s: %w: %s", fstype, dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Mount mounts a filesystem through mount(8), which understands every
// option a user can put in mountOptions.
func (m *Mounter) Mount(source, target, fstype string, options []string) error {
	if err := m.safe.Mount(source, target, fstype, options); err != nil {
		return fmt.Errorf("mount %s at %s: %w", source, target, err)
	}
	return nil
}

// Bind bind-mounts source (a directory or a device node) at target, read-only
// when asked. A read-only bind takes a second, remounting call: the kernel
// ignores MS_RDONLY on the first.
func (m *Mounter) Bind(source, target string, readOnly bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", source, target, err)
	}
	if readOnly {
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
		if err := unix.Mount("", target, "", flags, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return fmt.Errorf("make %s read-only: %w", target, err)
		}
	}
	return nil
}

// Unmount unmounts whatever is mounted at target, including a mount whose
// backing device or FUSE daemon is gone (ENOTCONN, ENODEV, EIO: the kernel
// still lets us unmount it). Unmounting a path that is not mounted, or does
// not exist, succeeds.
func (m *Mounter) Unmount(target string) error {
	for i := 0; i < 8; i++ { // stacked mounts come off one at a time
		mounted, err := m.safe.IsMountPoint(target)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil && !mountutils.IsCorruptedMnt(err) {
			return fmt.Errorf("check mount at %s: %w", target, err)
		}
		if err == nil && !mounted {
			return nil
		}
		if err := unmountRetry(target); err != nil {
			return err
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 8 unmounts", target)
}

// unmountRetry unmounts target, retrying a while on EBUSY: a process forked
// elsewhere in the driver (mkfs, fsck for another volume) briefly holds a
// copy of every open file descriptor until it execs, which can make a
// mount busy for a moment. A mount that stays busy is an error: volplug
// never unmounts lazily behind a user's back.
func unmountRetry(target string) error {
	var err error
	for delay := time.Millisecond; delay < 512*time.Millisecond; delay *= 2 {
		err = unix.Unmount(target, 0)
		if err == nil || errors.Is(err, unix.EINVAL) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(delay)
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}

// Info describes one entry of the kernel's mount table.
type Info = mountinfo.Info

// Mounted returns the top mount at path, or nil when path is not a mount
// point. It reads /proc/self/mountinfo, the kernel's own account.
func (m *Mounter) Mounted(path string) (*Info, error) {
	clean := filepath.Clean(path)
	if real, err := filepath.EvalSymlinks(clean); err == nil {
		clean = real
	}
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(clean))
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	if len(infos) == 0 {
		return nil, nil
	}
	return infos[len(infos)-1], nil
}

// MountsUnder lists every mount point below dir; tests and teardown use it to
// prove nothing was left behind.
func MountsUnder(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	var out []string
	for _, i := range infos {
		out = append(out, i.Mountpoint)
	}
	return out, nil
}

// BySource lists the mounts whose source is source (a FUSE filesystem's
// name, say): the mount and its binds.
func BySource(source string) ([]*Info, error) {
	infos, err := mountinfo.GetMounts(func(i *Info) (skip, stop bool) { return i.Source != source, false })
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return infos, nil
}

// SameDevice lists the mounts of i's device: i, its binds, and other
// mounts of the same filesystem. (Each FUSE mount has a device number of
// its own.)
func SameDevice(i *Info) ([]*Info, error) {
	infos, err := mountinfo.GetMounts(func(o *Info) (skip, stop bool) { return o.Major != i.Major || o.Minor != i.Minor, false })
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return infos, nil
}

// IsFUSE reports a FUSE mount: "fuse.NAME", or plain "fuse" from libfuse 2
// programs (s3fs) that set no subtype.
func IsFUSE(i *Info) bool { return i.FSType == "fuse" || strings.HasPrefix(i.FSType, "fuse.") }

// MakeFile creates an empty file at path (the target of a block volume's
// bind mount) unless something is there already.
func MakeFile(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return f.Close()
}

// UsersOf returns the mounts that expose device dev, keyed by mount point:
// filesystems mounted from it, bind mounts of those, and bind mounts of the
// device node itself (a raw block volume's publish). The kernel's mount
// table is the only record of where a volume is published. Mounts are
// matched by device number; the source string, which is whatever the
// mounter passed and may be a path of another mount namespace, is used
// only for btrfs, whose mounts carry an anonymous device number.
func UsersOf(dev string) (map[string]*Info, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dev, err)
	}
	major, minor := int(unix.Major(st.Rdev)), int(unix.Minor(st.Rdev))
	node := filepath.Base(dev)
	infos, err := mountinfo.GetMounts(func(i *Info) (skip, stop bool) {
		fromDev := (i.Major == major && i.Minor == minor) || (i.Major == 0 && i.Source == dev)
		return !fromDev && !(filepath.Base(i.Root) == node && boundNode(i) == st.Rdev), false
	})
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	out := make(map[string]*Info, len(infos))
	for _, i := range infos {
		out[i.Mountpoint] = i
	}
	return out, nil
}

// boundNode returns the device number of the block device node bound at
// i's mount point (a raw block volume's publish), or 0 when it is no such
// bind. A bound node shows the filesystem it lives in (devtmpfs, or a
// container's tmpfs /dev) in mountinfo, so only a stat of the mount point
// tells which device it is.
func boundNode(i *Info) uint64 {
	if i.Root == "/" {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Stat(i.Mountpoint, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0
	}
	return st.Rdev
}

// SourceDevice returns the block device behind a mount: the device its
// filesystem was mounted from, or the node a raw block bind exposes, by the
// kernel's device numbers (a source string may be a path in another mount
// namespace). It falls back to the source string for anonymous device
// numbers (btrfs), and returns "" for a mount of no block device.
func SourceDevice(i *Info) string {
	if i.FSType == "devtmpfs" || i.FSType == "tmpfs" {
		if rdev := boundNode(i); rdev != 0 {
			return deviceName(int(unix.Major(rdev)), int(unix.Minor(rdev)))
		}
	}
	if i.Major != 0 {
		if name := deviceName(i.Major, i.Minor); name != "" {
			return name
		}
	}
	if strings.HasPrefix(i.Source, "/dev/") {
		return i.Source
	}
	return ""
}

// deviceName names a block device by its numbers, through sysfs.
func deviceName(major, minor int) string {
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", major, minor))
	if err != nil {
		return ""
	}
	return "/dev/" + filepath.Base(link)
}

// GrowOffline grows an unmounted ext filesystem to fill dev. Offline growth
// writes the device directly, so unlike online growth it needs no
// CAP_SYS_RESOURCE; e2fsck -f first, as resize2fs demands.
func (m *Mounter) GrowOffline(ctx context.Context, dev, fstype string) error {
	if !strings.HasPrefix(fstype, "ext") {
		return fmt.Errorf("offline growth of %s: only ext filesystems grow unmounted", fstype)
	}
	out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-p", dev).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() < 4) {
		return fmt.Errorf("e2fsck %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("resize2fs %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CanGrowExtOnline reports whether this process may grow a mounted ext
// filesystem: the kernel's EXT4_IOC_RESIZE_FS wants CAP_SYS_RESOURCE,
// which some sandboxes and unprivileged containers drop.
func CanGrowExtOnline() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0
}

// ExtNeedsGrowth reports whether the ext filesystem on dev is smaller than
// dev, from its superblock (dumpe2fs -h): mount-utils leaves that check to
// resize2fs, which a process without CAP_SYS_RESOURCE cannot run online.
func ExtNeedsGrowth(ctx context.Context, dev string) (bool, error) {
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", dev).Output()
	if err != nil {
		return false, fmt.Errorf("dumpe2fs %s: %w", dev, err)
	}
	var blocks, blockSize int64
	for _, line := range strings.Split(string(out), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		switch {
		case err != nil:
		case key == "Block count":
			blocks = n
		case key == "Block size":
			blockSize = n
		}
	}
	if blocks == 0 || blockSize == 0 {
		return false, fmt.Errorf("dumpe2fs %s: no block count or size in its output", dev)
	}
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return false, fmt.Errorf("size of %s: %w", dev, err)
	}
	return size/blockSize > blocks, nil
}

// FormatAndMount formats dev with fstype only when it holds nothing (as
// kubelet's default mountdevice does, through mount-utils'
// SafeFormatAndMount), then mounts it at target.
func (m *Mounter) FormatAndMount(dev, target, fstype string, options []string) error {
	if err := m.safe.FormatAndMount(dev, target, fstype, options); err != nil {
		return fmt.Errorf("format and mount %s at %s: %w", dev, target, err)
	}
	return nil
}

// Resize grows the filesystem on dev, mounted at path, to fill dev: the
// generic resize kubelet does when a driver cannot.
func (m *Mounter) Resize(dev, path string) error {
	if _, err := mountutils.NewResizeFs(m.safe.Exec).Resize(dev, path); err != nil {
		return fmt.Errorf("grow the filesystem on %s at %s: %w", dev, path, err)
	}
	return nil
}

// MountsOfDir returns the mounts whose root is the directory dir (a bind of
// it, or of a btrfs subvolume, which is a directory with an identity of
// its own), keyed by mount point. Candidates are those whose root ends in
// dir's own name (mountinfo shows roots relative to their filesystem, the
// same in every mount namespace); a stat of each decides by identity
// (device and inode), never by the path string.
func MountsOfDir(dir string) (map[string]*Info, error) {
	var want unix.Stat_t
	if err := unix.Stat(dir, &want); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dir, err)
	}
	name := filepath.Base(dir)
	infos, err := mountinfo.GetMounts(func(i *Info) (skip, stop bool) {
		return IsFUSE(i) || filepath.Base(i.Root) != name, false
	})
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	out := map[string]*Info{}
	for _, i := range infos {
		var st unix.Stat_t
		if unix.Stat(i.Mountpoint, &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			out[i.Mountpoint] = i
		}
	}
	return out, nil
}
