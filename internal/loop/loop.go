// Package loop attaches disk-image files to loop devices through the kernel's
// ioctls. It is the one place in volplug that knows about loop devices.
//
// Nothing here remembers which device holds which image: the kernel does, and
// Find asks it (through sysfs) every time. A driver restarted after a crash
// therefore finds the devices it attached before, and a path cached from an
// earlier life is never trusted.
package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
}

// attachMu serialises "find a free device, claim it" within this process.
// The kernel answers EBUSY when another process wins the race; holding a
// mutex over two fast ioctls keeps our own goroutines from racing each other.
var attachMu sync.Mutex

// Attach binds image to a free loop device and returns the device path. When
// the image is already attached, it returns that device instead, so Attach is
// idempotent.
func Attach(image string, opts Options) (string, error) {
	attachMu.Lock()
	defer attachMu.Unlock()

	if dev, err := Find(image); err != nil || dev != "" {
		return dev, err
	}
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

// Detach releases the loop device. A device that is still in use (mounted,
// or open elsewhere) is released by the kernel when its last user goes away.
// Detaching a device that is not bound is not an error.
func Detach(dev string) error {
	ld, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	err = unix.IoctlSetInt(int(ld.Fd()), unix.LOOP_CLR_FD, 0)
	ld.Close() // our own open would hold the device, too
	if err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	// The kernel releases a device that is still open (by udev, blkid, or a
	// lazily unmounted filesystem) only at its last close. Wait for that,
	// so a caller told "detached" can delete the image at once.
	for i := 0; i < 200; i++ {
		if backing, err := BackingFile(dev); err != nil || backing == "" {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("detach %s: still in use after 1s; the kernel frees it at its last close", dev)
}

// DetachImage detaches every loop device backed by image.
func DetachImage(image string) error {
	devs, err := findAll(image)
	if err != nil {
		return err
	}
	for _, dev := range devs {
		if err := Detach(dev); err != nil {
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
func Find(image string) (string, error) {
	devs, err := findAll(image)
	if err != nil || len(devs) == 0 {
		return "", err
	}
	return devs[0], nil
}

func findAll(image string) ([]string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	var devs []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		backing, err := BackingFile(e.Name())
		if err != nil {
			return nil, err
		}
		if backing == image {
			devs = append(devs, "/dev/"+e.Name())
		}
	}
	return devs, nil
}

// BackingFile returns the file behind a loop device ("loop3" or
// "/dev/loop3"), or "" when the device is free. A backing file deleted while
// attached is reported with the kernel's " (deleted)" suffix, so it never
// matches a live path.
func BackingFile(dev string) (string, error) {
	name := filepath.Base(dev)
	data, err := os.ReadFile(filepath.Join(sysBlock, name, "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		return "", nil // free, or being freed right now: the kernel removes the attribute
	}
	if err != nil {
		return "", fmt.Errorf("read backing file of %s: %w", name, err)
	}
	return strings.TrimSuffix(string(data), "\n"), nil
}

// Devices lists every bound loop device with its backing file. Tests and the
// demo use it to prove nothing was left behind.
func Devices() (map[string]string, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		backing, err := BackingFile(e.Name())
		if err != nil {
			return nil, err
		}
		if backing != "" {
			out["/dev/"+e.Name()] = backing
		}
	}
	return out, nil
}
