package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

// The warm pool: images of common sizes formatted ahead of any request, so
// that a CreateVolume of that size and filesystem takes one by a rename
// and its first stage only mounts (no mkfs anywhere on the volume's path,
// even when the stage comes at once).
//
//	<pool>/.warm/<fsType>-<size>-<random>.img   ready images
//
// A warm image is made in .tmp (a directory of its own, cleared at start
// like every half-made volume), formatted, and renamed into .warm: only
// complete images are ever there. A create renames one into its volume's
// directory while that is still in .tmp, so a crash either leaves the
// image in .warm or discards it with the half-made volume. Warm images are
// no one's volumes (ListVolumes never sees them); the space they may still
// grow into counts as promised, like a volume's, so the pool never offers
// room they would need. A background worker keeps the count, refilling
// after every take.
const warmDir = ".warm"

// WarmSpec is one kind of warm image and how many to keep ready.
type WarmSpec struct {
	Size   int64
	FsType string
	Count  int
}

func (s WarmSpec) prefix() string { return fmt.Sprintf("%s-%d-", s.FsType, s.Size) }

// WarmPool keeps images of these kinds formatted ahead (see warm.go).
func WarmPool(specs []WarmSpec) Option { return func(b *Backend) { b.warmSpecs = specs } }

// ParseWarmPool parses "1Gi:ext4:2,10Gi:xfs:1" (size, filesystem, count).
func ParseWarmPool(s string) ([]WarmSpec, error) {
	var out []WarmSpec
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("warm pool %q: want size:fsType:count, e.g. 1Gi:ext4:2", part)
		}
		q, err := resource.ParseQuantity(f[0])
		if err != nil {
			return nil, fmt.Errorf("warm pool %q: size: %w", part, err)
		}
		size, ok := q.AsInt64()
		if !ok || size <= 0 {
			return nil, fmt.Errorf("warm pool %q: size must be positive", part)
		}
		if !mount.Supported(f[1]) {
			return nil, fmt.Errorf("warm pool %q: filesystem %q: use ext4, xfs or btrfs", part, f[1])
		}
		// The size a CreateVolume of that size gets, so the two match.
		if size, err = chooseSize(size, 0, minSize[f[1]]); err != nil {
			return nil, fmt.Errorf("warm pool %q: %w", part, err)
		}
		n, err := strconv.Atoi(f[2])
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("warm pool %q: count must be 1 to 64", part)
		}
		out = append(out, WarmSpec{Size: size, FsType: f[1], Count: n})
	}
	return out, nil
}

func (p *pool) warmPath(name string) string { return filepath.Join(p.dir, warmDir, name) }

// listWarm returns the ready images' names.
func (p *pool) listWarm() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(p.dir, warmDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".img") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// warmPromised is what the warm images may still grow by.
func (p *pool) warmPromised() (int64, error) {
	names, err := p.listWarm()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(p.warmPath(n), &st); err != nil {
			continue // taken meanwhile
		}
		total += max(st.Size-st.Blocks*512, 0)
	}
	return total, nil
}

// takeWarm moves a ready image of v's size and filesystem to image (in the
// new volume's directory, still in .tmp) and reports whether it did.
func (b *Backend) takeWarm(v *backend.Volume, image string) bool {
	if len(b.warmSpecs) == 0 || v.Block || isNative(v) {
		return false
	}
	names, err := b.pool.listWarm()
	if err != nil {
		return false
	}
	prefix := WarmSpec{Size: v.Size, FsType: v.FsType}.prefix()
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		// Another create may take the same one first: then the rename
		// finds nothing, and the next one is tried.
		if err := os.Rename(b.pool.warmPath(n), image); err == nil {
			b.refillWarm()
			return true
		}
	}
	b.refillWarm()
	return false
}

// startWarm starts the worker that keeps the warm pool full, after
// discarding warm images of kinds no longer asked for.
func (b *Backend) startWarm() error {
	if err := os.MkdirAll(filepath.Join(b.pool.dir, warmDir), 0o700); err != nil {
		return err
	}
	names, err := b.pool.listWarm()
	if err != nil {
		return err
	}
	for _, n := range names {
		if b.warmSpecOf(n) == nil {
			if err := os.Remove(b.pool.warmPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	if len(b.warmSpecs) == 0 {
		return nil
	}
	b.warmKick = make(chan struct{}, 1)
	b.bgMu.Lock()
	defer b.bgMu.Unlock()
	b.bgWG.Add(1)
	go func() {
		defer b.bgWG.Done()
		for {
			b.fillWarm(b.bgCtx)
			select {
			case <-b.warmKick:
			case <-b.bgCtx.Done():
				return
			}
		}
	}()
	b.refillWarm()
	return nil
}

func (b *Backend) warmSpecOf(name string) *WarmSpec {
	for i, s := range b.warmSpecs {
		if strings.HasPrefix(name, s.prefix()) {
			return &b.warmSpecs[i]
		}
	}
	return nil
}

// refillWarm wakes the worker.
func (b *Backend) refillWarm() {
	if b.warmKick == nil {
		return
	}
	select {
	case b.warmKick <- struct{}{}:
	default:
	}
}

// fillWarm makes warm images until every kind has its count, or the pool
// has no room, or the backend closes.
func (b *Backend) fillWarm(ctx context.Context) {
	for _, s := range b.warmSpecs {
		for ctx.Err() == nil {
			names, err := b.pool.listWarm()
			if err != nil {
				klog.Warningf("warm pool: %v", err)
				return
			}
			have := 0
			for _, n := range names {
				if strings.HasPrefix(n, s.prefix()) {
					have++
				}
			}
			if have >= s.Count {
				break
			}
			if err := b.makeWarm(ctx, s); err != nil {
				if ctx.Err() == nil {
					klog.Warningf("warm pool: make a %s %d-byte image: %v", s.FsType, s.Size, err)
				}
				return // tried again at the next take
			}
		}
	}
}

// makeWarm makes one warm image: a sparse image in a directory of its own
// in .tmp, formatted on a loop device, renamed into .warm.
func (b *Backend) makeWarm(ctx context.Context, s WarmSpec) error {
	release, err := b.reserveSpace(s.Size)
	if err != nil {
		return err
	}
	defer release()
	select {
	case b.formatSem <- struct{}{}:
		defer func() { <-b.formatSem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	tmp := filepath.Join(b.pool.dir, tmpDir, "warm."+randomSuffix())
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	defer removeTree(tmp)
	image := filepath.Join(tmp, imageFile)
	if err := makeImage(image, s.Size); err != nil {
		return err
	}
	dev, err := loop.AttachNew(image, loop.Options{DirectIO: true}) // made just now, in .tmp
	if err != nil {
		return err
	}
	ferr := b.mount.Format(ctx, dev, s.FsType)
	if err := errors.Join(ferr, loop.Detach(dev, image)); err != nil {
		return err
	}
	// mkfs's writes are on the image once the device is gone (direct
	// I/O, and detach flushes); make them durable before the image
	// counts as ready.
	if f, err := os.Open(image); err == nil {
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	if err := os.Rename(image, b.pool.warmPath(s.prefix()+randomSuffix()+".img")); err != nil {
		return err
	}
	return syncDir(filepath.Join(b.pool.dir, warmDir))
}

// waitWarm waits until the warm pool is full (for tests and start-up
// checks), or ctx ends.
func (b *Backend) waitWarm(ctx context.Context) error {
	for {
		names, err := b.pool.listWarm()
		if err != nil {
			return err
		}
		full := true
		for _, s := range b.warmSpecs {
			have := 0
			for _, n := range names {
				if strings.HasPrefix(n, s.prefix()) {
					have++
				}
			}
			full = full && have >= s.Count
		}
		if full {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
