package flexdriver

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/pkg/flex"
)

// mount makes the volume appear at kubelet's pod volume directory.
//
// Without attach, kubelet calls nothing else first: the volume is made if
// missing, staged at the driver's own <pool>/flex/staging/<id> (shared by
// every pod on the node that uses it), and bind-mounted into the pod.
// With attach, mountdevice has staged it at kubelet's global path already
// and mount only binds from there. Doing that bind here rather than
// answering "Not supported" honours kubernetes.io/readwrite=ro, which
// kubelet's default bind ignores.
func (d *driver) mount(ctx context.Context, podDir string, o *flex.Options) error {
	v, err := d.volumeFor(ctx, o, !d.cfg.Attach)
	if err != nil {
		return err
	}
	unlock, err := d.state.lock(v.ID)
	if err != nil {
		return err
	}
	defer unlock()

	var staging string
	if d.cfg.Attach {
		if staging, err = d.stagedAt(v.ID); err != nil {
			return err
		}
	} else {
		staging = d.state.staging(v.ID)
		// The shared stage is read-write: a read-only pod gets a read-only
		// bind, and a later read-write pod can still share the stage.
		if err := d.store.Stage(ctx, &backend.StageRequest{ID: v.ID, StagingPath: staging, FsType: v.FsType}); err != nil {
			d.releaseStaging(ctx, v.ID)
			return err
		}
	}
	if err := d.state.put(recPublish, podDir, v.ID); err != nil {
		return err
	}
	err = d.store.Publish(ctx, &backend.PublishRequest{ID: v.ID, StagingPath: staging, TargetPath: podDir, ReadOnly: o.ReadOnly})
	if err != nil {
		_ = d.state.del(recPublish, podDir)
		if !d.cfg.Attach {
			d.releaseStaging(ctx, v.ID)
		}
		return err
	}
	return nil
}

// stagedAt returns where mountdevice staged the volume, checked against
// the kernel's mount table.
func (d *driver) stagedAt(id string) (string, error) {
	paths, err := d.state.keys(recStage, id)
	if err != nil {
		return "", err
	}
	for _, p := range paths {
		if got, err := d.mountedVolume(p); err == nil && got == id {
			return p, nil
		}
	}
	return "", fmt.Errorf("volume %s is not mounted at a device mount path (mountdevice first): %w", id, backend.ErrPrecondition)
}

// unmount undoes mount, knowing only the path: the kernel says which
// volume is mounted there, and the driver's record says it when a failed
// earlier unmount already took the mount away. The volume's shared stage
// goes when its last pod does.
func (d *driver) unmount(ctx context.Context, podDir string) error {
	id, err := d.volumeAt(podDir, recPublish)
	if err != nil {
		return err
	}
	if id != "" {
		if err := d.unpublish(ctx, id, podDir); err != nil {
			return err
		}
	}
	d.sweep(ctx)
	return nil
}

func (d *driver) unpublish(ctx context.Context, id, podDir string) error {
	unlock, err := d.state.lock(id)
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.store.Unpublish(ctx, id, podDir); err != nil {
		return err
	}
	if err := d.state.del(recPublish, podDir); err != nil {
		return err
	}
	return d.releaseStaging(ctx, id)
}

// volumeAt names the volume mounted at path, from the kernel, else from a
// record of kind. It refuses a path that holds something else, so an
// unmount never takes away a mount the driver did not make.
func (d *driver) volumeAt(path, kind string) (string, error) {
	id, err := d.mountedVolume(path)
	if err != nil || id != "" {
		return id, err
	}
	return d.state.get(kind, path)
}

// mountedVolume returns the volume mounted at path, "" when nothing is, and
// an error when something that is not a volume of ours is.
func (d *driver) mountedVolume(path string) (string, error) {
	info, err := mount.New().Mounted(path)
	if err != nil || info == nil {
		return "", err
	}
	id, err := d.store.VolumeOf(mount.SourceDevice(info))
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", fmt.Errorf("%s has %s mounted, which is not a volplug volume: %w", path, info.Source, backend.ErrInvalid)
	}
	return id, nil
}

// releaseStaging unstages the volume from the driver's own staging path
// once nothing else uses its device. The caller holds the volume's lock.
func (d *driver) releaseStaging(ctx context.Context, id string) error {
	staging := d.state.staging(id)
	if got, err := d.mountedVolume(staging); err != nil || got != id {
		// Not staged (by us) here. A dir left by a crash is removed; a
		// dir that holds anything stays, since os.Remove refuses it.
		if rmErr := os.Remove(staging); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) && err == nil {
			d.log.Warn("leftover staging directory", "path", staging, "err", rmErr)
		}
		return err
	}
	dev, err := d.store.Device(id)
	if err != nil || dev == "" {
		return err
	}
	users, err := mount.UsersOf(dev)
	if err != nil {
		return err
	}
	delete(users, staging)
	if len(users) > 0 {
		return nil // another pod still uses it
	}
	if err := d.store.Unstage(ctx, id, staging); err != nil {
		return err
	}
	if err := os.Remove(staging); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unstage %s: %w", id, err)
	}
	return nil
}

// sweep releases shared stages no pod uses any more, such as one whose
// unstage failed after its pod directory was already gone (kubelet does not
// call unmount again for a directory that no longer exists). Volumes
// another call is working on are skipped.
func (d *driver) sweep(ctx context.Context) {
	entries, err := os.ReadDir(d.state.staging(""))
	if err != nil {
		d.log.Warn("sweep", "err", err)
		return
	}
	for _, e := range entries {
		unlock, ok := d.state.tryLock(e.Name())
		if !ok {
			continue
		}
		if err := d.releaseStaging(ctx, e.Name()); err != nil {
			d.log.Warn("sweep", "volume", e.Name(), "err", err)
		}
		unlock()
	}
}
