package loop_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// A device number names whatever the kernel bound to it last. Once an
// image's device is released, another image may get the same number at
// once: a detach still waiting for its release returns (it does not wait
// 5 s for the other image to go, then fail), and a late detach of the old
// image leaves the new binding alone.
func TestDetachLeavesANewBinding(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	a, b := makeImage(t, dir, "a.img"), makeImage(t, dir, "b.img")
	for attempt := 0; ; attempt++ {
		dev, err := loop.Attach(a, loop.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// A prober has the device open, so the detach only marks it.
		prober, err := os.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		detached := make(chan error, 1)
		start := time.Now()
		go func() { detached <- loop.Detach(dev, a) }()
		waitReleasing(t, dev)
		prober.Close() // the last close: the kernel unbinds a
		err = bindAt(dev, b)
		if errors.Is(err, unix.EBUSY) && attempt < 5 {
			<-detached // another process took the number; try again
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := <-detached; err != nil {
			t.Errorf("detach of a, with b bound to %s since: %v", dev, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("detach of a took %v", d)
		}
		// A stale retry of the old detach.
		if err := loop.Detach(dev, a); err != nil {
			t.Error(err)
		}
		if ok, err := loop.Holds(dev, b); err != nil || !ok {
			t.Errorf("a late detach of a took b's device %s (holds b: %v %v)", dev, ok, err)
		}
		if err := loop.DetachImage(b); err != nil {
			t.Fatal(err)
		}
		break
	}
	testutil.CheckClean(t, dir)
}

// A device that holds the image but is marked for release (a detach came
// while something had it open) is not handed out by Attach: the kernel
// unbinds it at that something's close, under whoever was about to mount
// it. Attach waits for the release and binds the image again.
func TestAttachWaitsOutARelease(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	image := makeImage(t, dir, "disk.img")
	dev, err := loop.Attach(image, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prober := markReleasing(t, dev)
	closed := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		prober.Close()
		close(closed)
	}()
	got, err := loop.Attach(image, loop.Options{})
	<-closed
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := loop.Holds(got, image); err != nil || !ok {
		t.Errorf("Attach gave %s, which no longer holds the image once the prober closed it (%v)", got, err)
	}
	if err := loop.DetachImage(image); err != nil {
		t.Fatal(err)
	}
	testutil.CheckClean(t, dir)
}

// markReleasing opens dev, as a prober would, and detaches it from another
// open (losetup -d, say): the kernel only marks it for release, at the
// prober's close, which the caller does. (Were the detacher the only
// opener, the device would refuse new opens at once, and Find would not
// see it.)
func markReleasing(t *testing.T, dev string) *os.File {
	t.Helper()
	prober, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prober.Close() })
	detacher, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.IoctlSetInt(int(detacher.Fd()), unix.LOOP_CLR_FD, 0)
	detacher.Close()
	if err != nil {
		t.Fatal(err)
	}
	return prober
}

func makeImage(t *testing.T, dir, name string) string {
	t.Helper()
	image := filepath.Join(dir, name)
	if err := os.WriteFile(image, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return image
}

// waitReleasing waits until sysfs shows dev marked for release.
func waitReleasing(t *testing.T, dev string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "autoclear"))
		if err == nil && string(b) == "1\n" {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s never marked for release", dev)
}

// bindAt binds image to the free device dev, as another process's attach
// that got the same number from LOOP_CTL_GET_FREE would.
func bindAt(dev, image string) error {
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	ld, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer ld.Close()
	return unix.IoctlLoopConfigure(int(ld.Fd()), &unix.LoopConfig{Fd: uint32(f.Fd())})
}

// Waiting out one image's release holds up no other image's attach: the
// wait is outside the lock that serialises claiming a free device.
func TestAttachWaitsAlone(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	a, b := makeImage(t, dir, "a.img"), makeImage(t, dir, "b.img")
	dev, err := loop.Attach(a, loop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prober := markReleasing(t, dev)
	attachedA := make(chan error, 1)
	go func() {
		_, err := loop.Attach(a, loop.Options{})
		attachedA <- err
	}()
	waitReleasing(t, dev)
	time.Sleep(50 * time.Millisecond) // let the attach of a start waiting
	if _, err := loop.Attach(b, loop.Options{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-attachedA:
		prober.Close()
		_ = loop.DetachImage(a)
		_ = loop.DetachImage(b)
		t.Fatalf("the attach of a returned (%v) while its old device was still held: b's attach waited for it", err)
	default:
	}
	prober.Close()
	if err := <-attachedA; err != nil {
		t.Fatal(err)
	}
	for _, image := range []string{a, b} {
		if err := loop.DetachImage(image); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckClean(t, dir)
}
