package loop_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// Many images attached and detached at once, while other goroutines open
// every bound device (as ListVolumes' scan, blkid or udev do): every Attach
// must hand back a device that holds its own image and keeps holding it,
// and every Detach must return once its own binding is gone, however soon
// the kernel gives the same device number to another image.
func TestConcurrentAttachDetach(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	const workers, cycles = 6, 8
	ctx, stop := context.WithCancel(context.Background())
	var scanners sync.WaitGroup
	for i := 0; i < 3; i++ {
		scanners.Add(1)
		go func() {
			defer scanners.Done()
			for ctx.Err() == nil {
				// Only ours: other people's devices are not ours to hold.
				devs, err := loop.Ending(".stress.img")
				if err != nil {
					continue
				}
				for _, d := range devs {
					// A prober: open, read a little, close a moment later.
					if f, err := os.Open(d.Path); err == nil {
						time.Sleep(time.Millisecond)
						f.Close()
					}
				}
			}
		}()
	}
	errs := make(chan error, workers*cycles)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		image := filepath.Join(dir, fmt.Sprintf("%d.stress.img", w))
		sig := bytes.Repeat([]byte(fmt.Sprintf("image-%03d|", w)), 4096/10+1)[:4096]
		data := make([]byte, 1<<20)
		copy(data, sig)
		if err := os.WriteFile(image, data, 0o600); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := 0; c < cycles; c++ {
				if err := cycle(image, sig); err != nil {
					errs <- fmt.Errorf("%s cycle %d: %w", filepath.Base(image), c, err)
					_ = loop.DetachImage(image)
					return
				}
			}
		}()
	}
	wg.Wait()
	stop()
	scanners.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	testutil.CheckClean(t, dir)
}

// cycle attaches image, reads its signature back through the device (as a
// mount reads a superblock), and detaches it.
func cycle(image string, sig []byte) error {
	dev, err := loop.Attach(image, loop.Options{DirectIO: true})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	buf := make([]byte, len(sig))
	_, err = f.ReadAt(buf, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", dev, err)
	}
	if !bytes.Equal(buf, sig) {
		return fmt.Errorf("%s does not hold its image: read %q", dev, buf[:16])
	}
	if ok, err := loop.Holds(dev, image); err != nil || !ok {
		return fmt.Errorf("%s no longer holds the image (%v)", dev, err)
	}
	return loop.Detach(dev, image)
}
