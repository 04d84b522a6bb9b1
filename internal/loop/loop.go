// Package loop attaches disk-image files to loop devices through the kernel's
// ioctls. It is the one place in volplug that knows about loop devices.
//
// Nothing here remembers which device holds which image: the kernel does, and
// Find asks it every time. A driver restarted after a crash therefore finds
// the devices it attached before, and a path cached from an earlier life is
// never trusted.
//
// Nor is a path the kernel renders: a device's backing file is known by its
// identity (device and inode, from LOOP_GET_STATUS64), as losetup -j does.
// The path in sysfs is relative to the mount the attacher opened the image
// through, so a driver in a container that has since restarted sees the
// image of its predecessor as "/volumes/<id>/disk.img", a path inside a bind
// mount that no longer exists anywhere.
package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	controlPath = "/dev/loop-control"
	sysBlock    = "/sys/block"
)

// Options tune a new attachment.
type Options struct {
	ReadOnly bool
	// DirectIO lets the loop device bypass the page cache of the backing
	// file, so data is not cached twice (once for the image, once for the
	// filesystem on top). Attach falls back to buffered I/O when the backing
	// filesystem refuses it.
	DirectIO bool
	// BlockSize is the device's logical block size (512, the kernel's
	// default, when 0). A filesystem made on a device with 4096-byte
	// blocks cannot be mounted from one with 512-byte blocks and the
	// other way round for xfs, so an image keeps the size it was made
	// with.
	BlockSize uint32
}

// attachMu serialises "find a free device, claim it" within this process.
// The kernel answers EBUSY when another process wins the race; holding a
// mutex over two fast ioctls keeps our own goroutines from racing each other.
var attachMu sync.Mutex

// Attach binds image to a free loop device and returns the device path. When
// the image is already attached, it returns that device instead, so Attach is
// idempotent.
func Attach(image string, opts Options) (string, error) {
	deadline := time.Now().Add(releaseWait)
	for {
		// Outside the lock: waiting out one image's release holds up no
		// other image's attach.
		if dev, err := awaitBinding(image, deadline); err != nil || dev != "" {
			return dev, err
		}
		attachMu.Lock()
		dev, err := attachLocked(image, opts)
		attachMu.Unlock()
		if !errors.Is(err, errReleasing) {
			return dev, err
		}
	}
}

// errReleasing: a device holding the image was marked for release after
// awaitBinding looked.
var errReleasing = errors.New("a device holding the image is being released")

func attachLocked(image string, opts Options) (string, error) {
	devs, err := findAll(image)
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		if !d.Backing.Releasing {
			return d.Path, nil
		}
	}
	if len(devs) > 0 {
		return "", errReleasing
	}
	return attach(image, opts)
}

// AttachNew binds image, which the caller made moments ago where no one
// else could reach it (so no device can hold it), to a free loop device
// without searching for one that does: the search reads every loop
// device's backing file in sysfs, some 20 ms on a node with a thousand
// devices, while the attach itself is two ioctls.
func AttachNew(image string, opts Options) (string, error) {
	attachMu.Lock()
	defer attachMu.Unlock()
	return attach(image, opts)
}

func attach(image string, opts Options) (string, error) {
	flags := os.O_RDWR
	if opts.ReadOnly {
		flags = os.O_RDONLY
	}
	file, err := os.OpenFile(image, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open image: %w", err)
	}
	defer file.Close()

	ctl, err := os.OpenFile(controlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", controlPath, err)
	}
	defer ctl.Close()

	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("find a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		err = configure(dev, file, image, opts)
		if errors.Is(err, unix.EBUSY) {
			// Another process claimed the same free device first.
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return "", err
		}
		return dev, nil
	}
	return "", fmt.Errorf("attach %s: every free loop device was taken by others", image)
}

// releaseWait bounds how long Attach waits for a binding of its image that
// is being released to go.
const releaseWait = 10 * time.Second

// awaitBinding returns the device that holds image for good, or "" once no
// device holds it. A device marked for release (by a LOOP_CLR_FD while
// something else had it open: volplug never sets autoclear itself) still
// holds the image, but the kernel unbinds it at its last close, which may
// come between this attach and the mount that would have kept it open: a
// mount of an empty device ("can't read superblock"). So such a device is
// never handed out; Attach waits until it is gone and binds a new one.
func awaitBinding(image string, deadline time.Time) (string, error) {
	for {
		devs, err := findAll(image)
		if err != nil {
			return "", err
		}
		releasing := ""
		for _, d := range devs {
			if !d.Backing.Releasing {
				return d.Path, nil
			}
			releasing = d.Path
		}
		if releasing == "" {
			return "", nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("attach %s: %s still holds it, being released, after %v: %w", image, releasing, releaseWait, unix.EBUSY)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func configure(dev string, file *os.File, image string, opts Options) error {
	// devtmpfs creates the node when LOOP_CTL_GET_FREE adds a device, but
	// udev-less containers may show it a moment later.
	var ld *os.File
	var err error
	for i := 0; i < 50; i++ {
		ld, err = os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer ld.Close()

	cfg := unix.LoopConfig{Fd: uint32(file.Fd())}
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], image)
	if opts.ReadOnly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	if opts.DirectIO {
		cfg.Info.Flags |= unix.LO_FLAGS_DIRECT_IO
	}
	cfg.Size = opts.BlockSize
	err = unix.IoctlLoopConfigure(int(ld.Fd()), &cfg)
	if errors.Is(err, unix.EINVAL) && opts.DirectIO {
		cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
		err = unix.IoctlLoopConfigure(int(ld.Fd()), &cfg)
	}
	if err != nil {
		return fmt.Errorf("configure %s for %s: %w", dev, image, err)
	}
	return nil
}

// Detach releases dev if it still holds image (known by its identity, as
// Find knows it). A device number is only a name for whatever the kernel
// bound to it last: once the image's binding is gone, another volume's
// attach may get the same number at once, and clearing it by number alone
// would pull that volume's disk from under its mount. A device that holds
// something else, or nothing, is left alone. A device still in use
// (mounted, or open elsewhere) is released by the kernel at its last close;
// Detach waits for that.
func Detach(dev, image string) error {
	id, err := IdentityOf(image)
	if errors.Is(err, os.ErrNotExist) {
		// Gone: a device can no longer be told to hold it. Those that do
		// are found by "(deleted)" and released with Release.
		return nil
	}
	if err != nil {
		return err
	}
	return release(dev, id)
}

// Release detaches a device from a listing (Devices, Ending) if it still
// holds the file it held when listed; see Detach.
func Release(d Device) error { return release(d.Path, d.Backing.FileID) }

// release clears dev's binding if it is still the binding of file id.
func release(dev string, id FileID) error {
	ld, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if isFree(err) {
		return nil // no such device, or being released already
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	// While ld is open the kernel cannot finish any release of the device
	// (it clears a binding only at the last close), so the binding this
	// status describes is the one LOOP_CLR_FD below marks for release,
	// and diskseq, which the kernel bumps on every bind and unbind, names
	// it.
	info, err := unix.IoctlLoopGetStatus64(int(ld.Fd()))
	if err != nil || (FileID{Dev: info.Device, Ino: info.Inode}) != id {
		ld.Close()
		if err == nil || isFree(err) {
			return nil // holds another file now, or nothing
		}
		return fmt.Errorf("status of %s: %w", dev, err)
	}
	seq, err := diskSeq(dev)
	if err != nil {
		ld.Close()
		return err
	}
	err = unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_CLR_FD, 0)
	ld.Close() // our own open would hold the device, too
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	// The kernel releases a device that is still open (by udev, blkid, a
	// scan of the devices, or a lazily unmounted filesystem) only at its
	// last close. Wait for that, so a caller told "detached" can delete
	// the image at once: until the device is free or bound again (to
	// anything: a new binding has a new diskseq).
	for i := 0; i < 1000; i++ {
		if gone, err := unbound(dev, seq); err != nil || gone {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("detach %s: still in use after 5s; the kernel frees it at its last close", dev)
}

// diskSeq reads the sequence number the kernel gives each binding of dev.
func diskSeq(dev string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(sysBlock, filepath.Base(dev), "diskseq"))
	if err != nil {
		return 0, fmt.Errorf("read diskseq of %s: %w", dev, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("diskseq of %s: %w", dev, err)
	}
	return n, nil
}

// unbound reports whether the binding of dev that had diskseq seq is gone.
func unbound(dev string, seq uint64) (bool, error) {
	if backing, err := BackingFile(dev); err != nil || backing == "" {
		return err == nil, err
	}
	now, err := diskSeq(dev)
	if isFree(err) {
		return true, nil
	}
	return now != seq, err
}

// DetachImage detaches every loop device backed by image.
func DetachImage(image string) error {
	devs, err := findAll(image)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := Release(d); err != nil {
			return err
		}
	}
	return nil
}

// Refresh makes the device see the current size of its backing file, after
// the image grew.
func Refresh(dev string) error {
	ld, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer ld.Close()
	if err := unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("refresh capacity of %s: %w", dev, err)
	}
	return nil
}

// SetDirectIO switches a bound device between direct and buffered I/O on
// its backing file, online.
func SetDirectIO(dev string, on bool) error {
	ld, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer ld.Close()
	arg := 0
	if on {
		arg = 1
	}
	if err := unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_SET_DIRECT_IO, arg); err != nil {
		return fmt.Errorf("set direct I/O %v on %s: %w", on, dev, err)
	}
	return nil
}

// DirectIO reports whether a bound device does direct I/O.
func DirectIO(dev string) (bool, error) {
	data, err := os.ReadFile(filepath.Join(sysBlock, filepath.Base(dev), "loop", "dio"))
	if err != nil {
		return false, fmt.Errorf("read direct I/O state of %s: %w", dev, err)
	}
	return strings.TrimSpace(string(data)) == "1", nil
}

// Find returns the loop device backed by image, or "" when there is none.
// A device being released is returned only when no other holds the image:
// until its last close it is still in use.
func Find(image string) (string, error) {
	devs, err := findAll(image)
	if err != nil || len(devs) == 0 {
		return "", err
	}
	for _, d := range devs {
		if !d.Backing.Releasing {
			return d.Path, nil
		}
	}
	return devs[0].Path, nil
}

// findAll lists the devices backed by image, by the image's identity (the
// device and inode its stat gives), as losetup -j does. A missing image has
// no devices: a device that still holds a deleted image holds another inode.
func findAll(image string) ([]Device, error) {
	id, err := IdentityOf(image)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Only a device whose path ends in the image's own last two names can
	// hold it (the kernel renders the file's current names; only the mount
	// part before them may differ), so only those are opened and asked.
	all, err := Ending("/" + filepath.Base(filepath.Dir(image)) + "/" + filepath.Base(image))
	if err != nil {
		return nil, err
	}
	var devs []Device
	for _, d := range all {
		if d.Backing.FileID == id {
			devs = append(devs, d)
		}
	}
	return devs, nil
}

// Holds reports whether the loop device dev is backed by image.
func Holds(dev, image string) (bool, error) {
	if !strings.HasPrefix(filepath.Base(dev), "loop") {
		return false, nil
	}
	id, err := IdentityOf(image)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	b, err := BackingOf(dev)
	if err != nil || b == nil {
		return false, err
	}
	return b.FileID == id, nil
}

// FileID identifies a file by the device of its filesystem and its inode:
// the only names of a backing file that mean the same in every mount
// namespace.
type FileID struct {
	Dev, Ino uint64
}

// IdentityOf stats path and returns its identity.
func IdentityOf(path string) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileID{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return FileID{Dev: st.Dev, Ino: st.Ino}, nil
}

// Backing is the file behind a bound loop device.
type Backing struct {
	// FileID is the file's identity, from LOOP_GET_STATUS64, which the
	// kernel took from the open file at attach time.
	FileID
	// Path is the file's path as sysfs renders it: relative to the mount
	// through which the attacher opened it. Once that mount is gone (the
	// attacher ran in a container that has since exited), it is a path
	// inside that mount, which may name nothing here or something else.
	// A hint for people and for nominating a candidate, never proof.
	// A deleted file ends in " (deleted)".
	Path string
	// Releasing is set when the device is marked to be unbound at its last
	// close (LO_FLAGS_AUTOCLEAR: a detach came while it was open).
	Releasing bool
}

// Deleted reports whether the backing file was unlinked while attached.
func (b *Backing) Deleted() bool { return strings.HasSuffix(b.Path, " (deleted)") }

// BackingOf returns the file behind a loop device ("loop3" or
// "/dev/loop3"), or nil when the device is free.
func BackingOf(dev string) (*Backing, error) {
	path, err := BackingFile(dev)
	if err != nil || path == "" {
		return nil, err
	}
	name := filepath.Base(dev)
	ld, err := os.OpenFile("/dev/"+name, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if isFree(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open /dev/%s: %w", name, err)
	}
	info, err := unix.IoctlLoopGetStatus64(int(ld.Fd()))
	ld.Close()
	if isFree(err) {
		return nil, nil // detached since sysfs was read
	}
	if err != nil {
		return nil, fmt.Errorf("status of /dev/%s: %w", name, err)
	}
	return &Backing{
		FileID:    FileID{Dev: info.Device, Ino: info.Inode},
		Path:      path,
		Releasing: info.Flags&unix.LO_FLAGS_AUTOCLEAR != 0,
	}, nil
}

// isFree reports an error that means the device is unbound, or being
// unbound right now (the kernel removes its attributes as it goes).
func isFree(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

// BackingFile returns the path sysfs shows for the file behind a loop
// device, or "" when the device is free. See Backing.Path for why it only
// hints at which file that is.
func BackingFile(dev string) (string, error) {
	name := filepath.Base(dev)
	data, err := os.ReadFile(filepath.Join(sysBlock, name, "loop", "backing_file"))
	if isFree(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read backing file of %s: %w", name, err)
	}
	return strings.TrimSuffix(string(data), "\n"), nil
}

// Device is one bound loop device.
type Device struct {
	Path    string // /dev/loopN
	Backing Backing
}

// Devices lists every bound loop device with its backing file, in one pass
// over the kernel's devices (callers with many images to look up index it
// rather than calling Find for each).
func Devices() ([]Device, error) { return Ending("") }

// Ending lists the bound loop devices whose backing file's path, as sysfs
// shows it, ends in suffix, with their identities. Only those are opened:
// every open of a device delays its release by a detach elsewhere.
func Ending(suffix string) ([]Device, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var out []Device
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		if path, err := BackingFile(e.Name()); err != nil {
			return nil, err
		} else if path == "" || !strings.HasSuffix(path, suffix) {
			continue
		}
		b, err := BackingOf(e.Name())
		if err != nil {
			return nil, err
		}
		if b != nil {
			out = append(out, Device{Path: "/dev/" + e.Name(), Backing: *b})
		}
	}
	return out, nil
}
