package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/mount"
)

// Stage attaches the image to a loop device and, for a filesystem volume,
// formats it if (and only if) it is blank and mounts it at the staging path.
// Everything Stage checks it reads from the kernel, so a repeat after a
// crash or restart finds the work already done.
func (b *Backend) Stage(ctx context.Context, req *backend.StageRequest) (err error) {
	// Before reading the metadata: the format rewrites it.
	handed, err := b.waitFormatStage(ctx, req.ID)
	if err != nil {
		return err
	}
	if handed != "" {
		// Until it is used, the device handed over is this stage's to
		// detach on every way out.
		defer func() {
			if handed != "" {
				_ = loop.Detach(handed, b.pool.image(req.ID))
			}
		}()
	}
	v, err := b.pool.readVolume(req.ID)
	if err != nil {
		return err
	}
	if !req.Block && req.FsType != "" && v.FsType != "" && req.FsType != v.FsType {
		// The metadata's filesystem drives growth and validation later;
		// a volume is one filesystem for its whole life.
		return fmt.Errorf("volume %s is %s, not %s: %w", req.ID, v.FsType, req.FsType, backend.ErrPrecondition)
	}
	if isNative(v) {
		return b.stageNative(req)
	}
	image := b.pool.image(req.ID)
	staging := b.stagingPath(req.ID, req.StagingPath)
	if !req.Block {
		if done, err := b.stagedAt(staging, image); err != nil {
			return err
		} else if done {
			return b.resizeIfPending(v, staging)
		}
	}
	var dev string
	if handed != "" {
		// By identity, as always: the image is the one the format had.
		// If that cannot be told, the device is left alone (it is not
		// detached, it may not be ours), and the attach below finds it by
		// the image if it is.
		if ok, herr := loop.Holds(handed, image); herr == nil && ok {
			dev = handed
		}
		handed = ""
	}
	if dev == "" {
		if dev, err = loop.Attach(image, loop.Options{DirectIO: directIO(v)}); err != nil {
			return fmt.Errorf("stage %s: %w", req.ID, err)
		}
	}
	if req.Block {
		return nil
	}
	defer func() {
		// Leave no loop device behind a failed stage, unless something
		// uses it (a raw-block publish of the same volume).
		if err != nil {
			if users, uerr := mount.UsersOf(dev); uerr == nil && len(users) == 0 {
				_ = loop.Detach(dev, image)
			}
		}
	}()
	failpoint.Hit("local.stage.attached")
	fsType := req.FsType
	if fsType == "" {
		fsType = v.FsType
	}
	if fsType == "" {
		fsType = "ext4"
	}
	if v.Fresh {
		// Formatted in the background and not mounted since: blkid and
		// fsck (some 40 ms) would only find what mkfs left. Cleared first,
		// so a later stage checks as usual whatever happens next.
		v.Fresh = false
		if err := writeVolume(b.pool.volumeDir(v.ID), v); err != nil {
			return fmt.Errorf("stage %s: %w", req.ID, err)
		}
	} else if err := b.formatIfBlank(ctx, v, dev, fsType, req.ReadOnly, false); err != nil {
		return fmt.Errorf("stage %s: %w", req.ID, err)
	}
	if v.ResizePending && strings.HasPrefix(fsType, "ext") && !req.ReadOnly {
		// Grow while unmounted: it needs no privilege beyond the device.
		if err := b.growOffline(ctx, v, dev, fsType); err != nil {
			return fmt.Errorf("stage %s: %w", req.ID, err)
		}
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return fmt.Errorf("stage %s: %w", req.ID, err)
	}
	failpoint.Hit("local.stage.dir-made")
	options := slices.Clone(req.MountFlags)
	if req.ReadOnly {
		options = append(options, "ro")
	}
	if fsType == "xfs" {
		// Clones and restored snapshots carry their source's UUID, and the
		// kernel refuses a second xfs with a UUID it has mounted already.
		options = append(options, "nouuid")
	}
	if err := b.mount.Mount(dev, staging, fsType, options); err != nil {
		return fmt.Errorf("stage %s: %w", req.ID, err)
	}
	failpoint.Hit("local.stage.mounted")
	if req.ReadOnly {
		return nil
	}
	if err := b.resizeIfPending(v, staging); err != nil {
		_ = b.mount.Unmount(staging)
		return err
	}
	return nil
}

// stagingPath is where a volume is staged: the CO's path, or, for volumes
// the CO does not stage (ephemeral ones), a directory in the pool.
func (b *Backend) stagingPath(id, asked string) string {
	if asked != "" {
		return asked
	}
	return filepath.Join(b.pool.dir, "staging", id)
}

func (b *Backend) growOffline(ctx context.Context, v *backend.Volume, dev, fsType string) error {
	if err := loop.Refresh(dev); err != nil {
		return err
	}
	if err := b.mount.GrowOffline(ctx, dev, fsType); err != nil {
		return err
	}
	failpoint.Hit("local.stage.grown-offline")
	v.ResizePending = false
	return writeVolume(b.pool.volumeDir(v.ID), v)
}

// resizeIfPending grows the filesystem when the disk grew while the volume
// was not staged, or when it was restored or cloned into a larger volume.
func (b *Backend) resizeIfPending(v *backend.Volume, staging string) error {
	if !v.ResizePending {
		return nil
	}
	dev, err := loop.Find(b.pool.image(v.ID))
	if err != nil {
		return err
	}
	if err := loop.Refresh(dev); err != nil {
		return err
	}
	return b.resize(v, dev, staging)
}

// stagedAt reports whether path already has image's loop device mounted, and
// fails when something else is mounted there.
func (b *Backend) stagedAt(path, image string) (bool, error) {
	info, err := b.mount.Mounted(path)
	if err != nil || info == nil {
		return false, err
	}
	if ours, err := loop.Holds(mount.SourceDevice(info), image); err != nil || ours {
		return ours, err
	}
	return false, fmt.Errorf("%s has %s mounted: %w", path, info.Source, backend.ErrAlreadyExists)
}

// formatIfBlank formats dev unless it holds a filesystem. It refuses when
// the filesystem is not the one asked for, and when blkid sees nothing but
// the image has been written to: blkid failing to recognise data is not
// proof that there is none.
//
// The first format is bracketed by a mark in the metadata, so a format cut
// short by a crash (which leaves written blocks and maybe no signature) is
// recognised as ours: nothing but mkfs ever wrote there, since a volume is
// mounted only after the mark is cleared, and it is wiped and done again.
//
// background is the format after CreateVolume: it holds formatSem already,
// and leaves a filesystem it finds to the stage's check.
func (b *Backend) formatIfBlank(ctx context.Context, v *backend.Volume, dev, fsType string, readOnly, background bool) error {
	if !v.Formatting {
		existing, err := b.mount.DiskFormat(dev)
		if err != nil {
			return err
		}
		switch {
		case existing == fsType:
			if readOnly || background {
				return nil
			}
			return b.mount.Check(ctx, dev, fsType)
		case existing != "":
			return fmt.Errorf("the volume holds %s, not %s: %w", existing, fsType, backend.ErrPrecondition)
		case readOnly:
			return fmt.Errorf("a blank volume cannot be staged read-only: there is no filesystem to mount: %w", backend.ErrInvalid)
		}
		var st unix.Stat_t
		if err := unix.Stat(b.pool.image(v.ID), &st); err != nil {
			return fmt.Errorf("stat image: %w", err)
		}
		if st.Blocks != 0 {
			return fmt.Errorf("the volume holds data but no filesystem blkid knows; refusing to format it: %w", backend.ErrPrecondition)
		}
	}
	if !background {
		select {
		case b.formatSem <- struct{}{}:
			defer func() { <-b.formatSem }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if v.Formatting {
		if err := b.mount.Wipe(ctx, dev); err != nil {
			return err
		}
	} else {
		v.Formatting = true
		if err := writeVolume(b.pool.volumeDir(v.ID), v); err != nil {
			return err
		}
	}
	failpoint.Hit("local.format.marked")
	if err := b.mount.Format(ctx, dev, fsType); err != nil {
		return err
	}
	failpoint.Hit("local.format.formatted")
	v.Formatting = false
	v.Fresh = background
	return writeVolume(b.pool.volumeDir(v.ID), v)
}

// Unstage unmounts the staging path and detaches the loop device. It only
// touches a mount whose device is backed by this volume's image.
func (b *Backend) Unstage(ctx context.Context, id, stagingPath string) error {
	if err := checkID(id); err != nil {
		return err
	}
	image := b.pool.image(id)
	stagingPath = b.stagingPath(id, stagingPath)
	// A volume deleted meanwhile has no metadata; it was an image or its
	// subvolume is gone, and the image path below handles both.
	if v, err := b.pool.readVolume(id); err == nil && isNative(v) {
		return b.unstageNative(id, stagingPath)
	}
	// Still published somewhere: unstaging now would pull the disk from
	// under a pod. The CO unpublishes first; say so if it did not.
	var stages []string
	if dev, err := loop.Find(image); err != nil {
		return err
	} else if dev != "" {
		users, err := mount.UsersOf(dev)
		if err != nil {
			return err
		}
		for path := range users {
			if !sameDir(path, stagingPath) {
				return fmt.Errorf("volume %s is still published at %s: %w", id, path, backend.ErrPrecondition)
			}
			stages = append(stages, path)
		}
	}
	info, err := b.mount.Mounted(stagingPath)
	if err != nil {
		return err
	}
	if info != nil {
		if ours, err := loop.Holds(mount.SourceDevice(info), image); err != nil {
			return err
		} else if !ours {
			return fmt.Errorf("%s has %s mounted, not volume %s: %w", stagingPath, info.Source, id, backend.ErrInvalid)
		}
	}
	for _, path := range stages {
		if err := b.mount.Unmount(path); err != nil {
			return fmt.Errorf("unstage %s: %w", id, err)
		}
	}
	failpoint.Hit("local.unstage.unmounted")
	if stagingPath == b.stagingPath(id, "") {
		_ = os.Remove(stagingPath) // our own directory
	}
	if err := loop.DetachImage(image); err != nil {
		return fmt.Errorf("unstage %s: %w", id, err)
	}
	return nil
}

// Publish bind-mounts the staged filesystem, or the loop device itself for a
// block volume, at the target path, which it creates.
func (b *Backend) Publish(ctx context.Context, req *backend.PublishRequest) error {
	v, err := b.pool.readVolume(req.ID)
	if err != nil {
		return err
	}
	if isNative(v) {
		return b.publishNative(req)
	}
	image := b.pool.image(req.ID)
	dev, err := loop.Find(image)
	if err != nil {
		return err
	}
	if dev == "" {
		return fmt.Errorf("volume %s is not staged: %w", req.ID, errNotStaged)
	}
	source := dev
	staging := b.stagingPath(req.ID, req.StagingPath)
	if !req.Block {
		staged, err := b.stagedAt(staging, image)
		if errors.Is(err, backend.ErrAlreadyExists) {
			// Something else is mounted there: the CO named a staging
			// path this volume is not staged at (it must never become
			// the bind's source).
			return fmt.Errorf("volume %s is not staged at %s: %v: %w", req.ID, staging, err, errNotStaged)
		}
		if err != nil {
			return err
		}
		if !staged {
			return fmt.Errorf("volume %s is not staged at %s: %w", req.ID, staging, errNotStaged)
		}
		source = staging
	}

	users, err := mount.UsersOf(dev)
	if err != nil {
		return err
	}
	return b.bindTarget(req, source, staging, users)
}

// publishNative binds the staged subvolume at the target path.
func (b *Backend) publishNative(req *backend.PublishRequest) error {
	if req.Block {
		return fmt.Errorf("volume %s is a btrfs subvolume (layout %s), not a block device: %w", req.ID, layoutNative, backend.ErrInvalid)
	}
	staging := b.stagingPath(req.ID, req.StagingPath)
	if staged, err := b.nativeAt(staging, req.ID); err != nil {
		return err
	} else if !staged {
		return fmt.Errorf("volume %s is not staged at %s: %w", req.ID, staging, errNotStaged)
	}
	users, err := b.nativeUsers(req.ID)
	if err != nil {
		return err
	}
	return b.bindTarget(req, staging, staging, users)
}

// bindTarget binds source at the target path unless the volume is there
// already; users are the volume's mounts, by mount point.
func (b *Backend) bindTarget(req *backend.PublishRequest, source, staging string, users map[string]*mount.Info) (err error) {
	if info, ok := users[req.TargetPath]; ok {
		if slices.Contains(strings.Split(info.Options, ","), "ro") != req.ReadOnly {
			return fmt.Errorf("%s is already published with other options: %w", req.TargetPath, backend.ErrAlreadyExists)
		}
		return nil
	}
	if info, err := b.mount.Mounted(req.TargetPath); err != nil {
		return err
	} else if info != nil {
		return fmt.Errorf("%s has %s mounted: %w", req.TargetPath, info.Source, backend.ErrAlreadyExists)
	}
	if req.SingleWriter {
		for path := range users {
			if sameDir(path, staging) {
				continue
			}
			return fmt.Errorf("volume %s allows a single writer and is published at %s: %w", req.ID, path, backend.ErrPrecondition)
		}
	}

	if err := os.MkdirAll(filepath.Dir(req.TargetPath), 0o700); err != nil {
		return fmt.Errorf("publish %s: %w", req.ID, err)
	}
	if req.Block {
		err = mount.MakeFile(req.TargetPath)
	} else if err = os.Mkdir(req.TargetPath, 0o700); errors.Is(err, os.ErrExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("publish %s: %w", req.ID, err)
	}
	failpoint.Hit("local.publish.target-made")
	if err := b.mount.Bind(source, req.TargetPath, req.ReadOnly); err != nil {
		_ = os.Remove(req.TargetPath) // only removes what is empty: ours
		return fmt.Errorf("publish %s: %w", req.ID, err)
	}
	return nil
}

// errNotStaged is a precondition failure: stage first.
var errNotStaged = fmt.Errorf("not staged: %w", backend.ErrPrecondition)

// Unpublish unmounts the target path and removes it. Removal uses
// os.Remove, which refuses a directory that still has files: whatever is
// there was not made by us and is left alone.
func (b *Backend) Unpublish(ctx context.Context, id, targetPath string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := b.mount.Unmount(targetPath); err != nil {
		return fmt.Errorf("unpublish %s: %w", id, err)
	}
	failpoint.Hit("local.unpublish.unmounted")
	if err := os.Remove(targetPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpublish %s: %w", id, err)
	}
	return nil
}

// sameDir reports whether mount point a is the directory b, perhaps spelled
// through another mount of the same filesystem (the pool bound at a path of
// its own in a container sees its predecessor's staging mounts under the
// host's path): the same last name in the same directory, by identity.
func sameDir(a, b string) bool {
	if a == b {
		return true
	}
	if filepath.Base(a) != filepath.Base(b) {
		return false
	}
	da, errA := loop.IdentityOf(filepath.Dir(a))
	db, errB := loop.IdentityOf(filepath.Dir(b))
	return errA == nil && errB == nil && da == db
}
