package s3

import (
	"context"
	"fmt"

	"github.com/volplug/volplug/internal/backend"
)

// What object storage has no use for, or cannot do without credentials.
func unsupported(what string) error {
	return fmt.Errorf("%s: object storage volumes have none: %w", what, backend.ErrUnsupported)
}

func (b *Backend) ListVolumes(ctx context.Context) ([]*backend.Volume, error) {
	return nil, unsupported("ListVolumes without credentials")
}
func (b *Backend) Capacity(ctx context.Context) (int64, error) {
	return 0, unsupported("a capacity of the storage")
}
func (b *Backend) Attach(ctx context.Context, id, node string, readOnly bool, maxPerNode int) error {
	return unsupported("attachment")
}
func (b *Backend) Detach(ctx context.Context, id, node string) error {
	return unsupported("attachment")
}
func (b *Backend) ModifyVolume(ctx context.Context, id string, params map[string]string) error {
	return unsupported("mutable parameters")
}
func (b *Backend) VolumeHealth(ctx context.Context, id string) (*backend.Health, error) {
	return nil, unsupported("controller health without credentials")
}
func (b *Backend) CreateSnapshot(ctx context.Context, name, sourceID string) (*backend.Snapshot, error) {
	return nil, unsupported("snapshots")
}
func (b *Backend) DeleteSnapshot(ctx context.Context, id string) error {
	return unsupported("snapshots")
}
func (b *Backend) GetSnapshot(ctx context.Context, id string) (*backend.Snapshot, error) {
	return nil, unsupported("snapshots")
}
func (b *Backend) ListSnapshots(ctx context.Context) ([]*backend.Snapshot, error) {
	return nil, unsupported("snapshots")
}
func (b *Backend) CreateGroupSnapshot(ctx context.Context, name string, sourceIDs []string) (*backend.GroupSnapshot, error) {
	return nil, unsupported("snapshots")
}
func (b *Backend) DeleteGroupSnapshot(ctx context.Context, id string) error {
	return unsupported("snapshots")
}
func (b *Backend) GetGroupSnapshot(ctx context.Context, id string) (*backend.GroupSnapshot, error) {
	return nil, unsupported("snapshots")
}
