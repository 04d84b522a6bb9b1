package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

// Background format: a new blank filesystem volume is formatted right after
// CreateVolume, off the critical path, since a real cluster calls NodeStage
// seconds later. The format holds an exclusive flock on the volume's
// directory from before the volume appears (it is taken on the directory
// while it is still in .tmp) until the loop device is detached again.
// Everything that touches the image or rewrites the metadata waits for a
// shared lock on it first (waitFormat), in this process or another sharing
// the pool (a node-mode driver, a FlexVolume call): a stage that arrives
// first waits, then finds a filesystem and mounts it at once.
//
// Crash safety is today's: the format is bracketed by the formatting mark
// in volume.json, so a format cut short (by a kill, or a cancel) is wiped
// and redone by the next stage; the kernel drops the flock with the dead
// process, and the next start detaches the orphaned loop device.

// Option configures New.
type Option func(*Backend)

// FormatOnCreate turns the background format after CreateVolume on or off.
func FormatOnCreate(on bool) Option { return func(b *Backend) { b.formatOnCreate = on } }

// formatJob is a background format in flight in this process.
type formatJob struct {
	done   chan struct{} // closed once the lock is released
	cancel context.CancelFunc
	// fresh: the image was made by this CreateVolume, so no loop device
	// can hold it and the attach need not look for one.
	fresh bool
	// stages counts the stages of this process waiting for the job; when
	// one is waiting at the end, the job leaves its device attached and
	// hands it over in dev rather than detaching what the stage would
	// attach again at once. Both under bgMu; whoever takes dev from the
	// job owns the device.
	stages int
	dev    string
}

// lockDir opens dir and takes an exclusive flock on it, at once or not at
// all: a new volume's directory has no other user yet.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return f, nil
}

// startFormat formats v in the background; lock is the exclusive flock on
// its directory, which the job releases (by closing it) when done.
func (b *Backend) startFormat(created *backend.Volume, lock *os.File, fresh bool) {
	v := *created // the caller returns created; the format marks its own copy
	b.bgMu.Lock()
	defer b.bgMu.Unlock()
	if b.bgCtx.Err() != nil {
		lock.Close() // closed backend: the stage formats, as without the option
		return
	}
	ctx, cancel := context.WithCancel(b.bgCtx)
	j := &formatJob{done: make(chan struct{}), cancel: cancel, fresh: fresh}
	b.bgJobs[v.ID] = j
	b.bgWG.Add(1)
	go func() {
		defer b.bgWG.Done()
		err := b.formatInBackground(ctx, j, &v)
		if err != nil && ctx.Err() == nil {
			// Not fatal: the stage formats (or wipes and redoes) as it
			// always has.
			klog.Warningf("background format of volume %s: %v", v.ID, err)
		}
		lock.Close()
		b.bgMu.Lock()
		delete(b.bgJobs, v.ID)
		b.bgMu.Unlock()
		cancel()
		close(j.done)
	}()
}

// formatInBackground attaches the image, formats it if blank (with the
// same rules and the same semaphore as a stage), and detaches it, or hands
// the device to a stage waiting for it.
func (b *Backend) formatInBackground(ctx context.Context, j *formatJob, v *backend.Volume) (err error) {
	select {
	case b.formatSem <- struct{}{}:
		defer func() { <-b.formatSem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	image := b.pool.image(v.ID)
	attach := loop.Attach
	if j.fresh {
		attach = loop.AttachNew
	}
	dev, err := attach(image, loop.Options{DirectIO: directIO(v)})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	failpoint.Hit("local.bgformat.attached")
	defer func() {
		if err == nil {
			b.bgMu.Lock()
			if j.stages > 0 {
				// A crash from here on leaves what a stage cut short
				// after its attach leaves: a formatted image on an
				// unmounted device, which the next start detaches.
				j.dev, dev = dev, ""
			}
			b.bgMu.Unlock()
			if dev == "" {
				return
			}
		}
		// A detach that fails leaves an orphan the next start releases;
		// nothing here mounts the device, so nothing should hold it.
		if derr := loop.Detach(dev, image); derr != nil && err == nil {
			err = fmt.Errorf("detach %s: %w", dev, derr)
		}
	}()
	return b.formatIfBlank(ctx, v, dev, v.FsType, false, true)
}

// waitFormatStage is waitFormat for a stage: it returns the device a
// background format of this process handed over when it ended while the
// stage waited (attached, formatted, mounted nowhere), or "".
func (b *Backend) waitFormatStage(ctx context.Context, id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	b.bgMu.Lock()
	j := b.bgJobs[id]
	if j != nil {
		j.stages++
	}
	b.bgMu.Unlock()
	if j == nil {
		return "", b.waitFormat(ctx, id)
	}
	var err error
	select {
	case <-j.done:
	case <-ctx.Done():
		err = fmt.Errorf("volume %s: waiting for its background format: %w", id, ctx.Err())
	}
	b.bgMu.Lock()
	j.stages--
	dev := j.dev
	j.dev = ""
	b.bgMu.Unlock()
	if err != nil && dev != "" {
		// Handed over as this stage gave up: the device is ours to
		// detach, and nothing has mounted it.
		_ = loop.Detach(dev, b.pool.image(id))
		dev = ""
	}
	return dev, err
}

// waitFormat waits until no background format holds the volume, in this
// process or another. It returns at once when there is none.
func (b *Backend) waitFormat(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	b.bgMu.Lock()
	j := b.bgJobs[id]
	b.bgMu.Unlock()
	if j != nil {
		select {
		case <-j.done:
		case <-ctx.Done():
			return fmt.Errorf("volume %s: waiting for its background format: %w", id, ctx.Err())
		}
		return nil
	}
	f, err := os.Open(b.pool.volumeDir(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil // no volume: the caller says so
	}
	if err != nil {
		return fmt.Errorf("volume %s: %w", id, err)
	}
	defer f.Close()
	// Polled, so that the wait ends with ctx; a format takes a second or
	// more, so a few milliseconds late is nothing.
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if err == nil {
			return nil // closing f releases it
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("volume %s: lock: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("volume %s: waiting for its background format: %w", id, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// cancelFormat stops this process's background format of the volume, if
// any, and waits until its loop device is detached.
func (b *Backend) cancelFormat(ctx context.Context, id string) error {
	b.bgMu.Lock()
	j := b.bgJobs[id]
	b.bgMu.Unlock()
	if j != nil {
		j.cancel()
	}
	return b.waitFormat(ctx, id)
}

// Close stops the background work and waits for it: a format in flight is
// cancelled (its mark makes the next stage redo it) and its loop device
// detached; removals of deleted volumes finish.
func (b *Backend) Close() error {
	// Under bgMu: work is added under it only while bgCtx is live, so
	// none is added once Wait may have begun.
	b.bgMu.Lock()
	b.bgStop()
	b.bgMu.Unlock()
	b.bgWG.Wait()
	return nil
}

// wantsBackgroundFormat: only a new blank filesystem image is formatted
// ahead. A copy already holds a filesystem, a raw block volume holds none
// of ours, and a native volume is a subvolume.
func wantsBackgroundFormat(v *backend.Volume, src *contentSource) bool {
	return src == nil && !v.Block && !isNative(v) && !v.Fresh && mount.Supported(v.FsType)
}
