package flexdriver

import (
	"context"
	"fmt"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/backend/local"
)

// store is what the flex driver needs from a backend: a few calls of the
// CSI-neutral interface, plus a way back from a mounted device to its
// volume, because unmount and unmountdevice are given nothing but a path.
type store interface {
	CreateVolume(ctx context.Context, req *backend.CreateRequest) (*backend.Volume, error)
	DeleteVolume(ctx context.Context, id string, secrets backend.Secrets) error
	GetVolume(ctx context.Context, id string, secrets backend.Secrets) (*backend.Volume, error)
	ListVolumes(ctx context.Context) ([]*backend.Volume, error)
	Attach(ctx context.Context, id, node string, readOnly bool, maxPerNode int) error
	Detach(ctx context.Context, id, node string) error
	Stage(ctx context.Context, req *backend.StageRequest) error
	Unstage(ctx context.Context, id, stagingPath string) error
	Publish(ctx context.Context, req *backend.PublishRequest) error
	Unpublish(ctx context.Context, id, targetPath string) error
	// VolumeOf returns the ID of the volume behind block device dev, or ""
	// when dev is not one of this backend's volumes.
	VolumeOf(dev string) (string, error)
	// Device returns the node's block device for a staged volume, "" when
	// it is not staged.
	Device(id string) (string, error)
}

// Optional backend abilities; the driver lights them up when a backend has
// them (checked with a type assertion), and reports the capability to
// Kubernetes accordingly.
type (
	volumeExpander interface {
		// ExpandVolume grows the volume to at least size; it returns the
		// new size and whether the filesystem must still be grown on the node.
		ExpandVolume(ctx context.Context, id string, size int64, secrets backend.Secrets) (int64, bool, error)
	}
	filesystemExpander interface {
		// ExpandFilesystem grows the filesystem at path to the volume's size.
		ExpandFilesystem(ctx context.Context, id, path string, size int64) (int64, error)
	}
)

// localStore adapts the local backend, which already answers both
// questions from the kernel (the loop device's backing file).
type localStore struct {
	*local.Backend
}

func (s localStore) VolumeOf(dev string) (string, error) { return s.VolumeOfDevice(dev) }

// Stage refuses a native-layout volume (a btrfs subvolume, made through
// CSI on the same pool): the flex driver finds its stages by their loop
// device, and a subvolume's bind has none, so unmount could never release
// it.
func (s localStore) Stage(ctx context.Context, req *backend.StageRequest) error {
	v, err := s.GetVolume(ctx, req.ID, nil)
	if err != nil {
		return err
	}
	if v.Layout != "" {
		return fmt.Errorf("volume %s has layout %s, served through CSI only: %w", req.ID, v.Layout, backend.ErrUnsupported)
	}
	return s.Backend.Stage(ctx, req)
}
