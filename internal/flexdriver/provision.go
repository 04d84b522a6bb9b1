package flexdriver

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/pkg/flex"
)

// provision answers volplug's provision extension (what `volplug adapt`
// calls for CreateVolume): the volume named by kubernetes.io/pvOrVolumeName,
// made when missing, at least requiredBytes (else the `size` option) and
// at most limitBytes. Its volume context names it by ID, so every later
// call finds it whatever pod or namespace it comes from.
func (d *driver) provision(ctx context.Context, o *flex.Options) (*flex.Result, error) {
	if o.VolumeName == "" {
		return nil, fmt.Errorf("provision: %s is missing: %w", flex.KeyPVOrVolumeName, backend.ErrInvalid)
	}
	minSize, err := parseSize(o.Driver[optSize])
	if err != nil {
		return nil, fmt.Errorf("option %q: %w", optSize, err)
	}
	if s, ok := o.Kubernetes[flex.KeyRequiredBytes]; ok {
		if minSize, err = strconv.ParseInt(s, 10, 64); err != nil || minSize < 0 {
			return nil, fmt.Errorf("option %q: %q is not a number of bytes: %w", flex.KeyRequiredBytes, s, backend.ErrInvalid)
		}
	}
	var maxSize int64
	if s, ok := o.Kubernetes[flex.KeyLimitBytes]; ok {
		if maxSize, err = strconv.ParseInt(s, 10, 64); err != nil || maxSize < 0 {
			return nil, fmt.Errorf("option %q: %q is not a number of bytes: %w", flex.KeyLimitBytes, s, backend.ErrInvalid)
		}
	}
	fsType := o.Driver[optFsType]
	if fsType == "" {
		fsType = o.FsType
	}
	unlock, err := d.state.lock(poolLock)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := d.store.CreateVolume(ctx, &backend.CreateRequest{Name: o.VolumeName, MinSize: minSize, MaxSize: maxSize, FsType: fsType,
		Secrets: backend.Secrets(o.Secrets)})
	if err != nil {
		return nil, err
	}
	return &flex.Result{Status: flex.StatusSuccess, VolumeID: v.ID, Capacity: v.Size,
		VolumeContext: map[string]string{optVolumeID: v.ID}}, nil
}

// delete removes a volume by ID; one that is gone already is a success.
// The delete secrets (the provisioner's, through the adapter) go to the
// backend, which may need them to reach its storage.
func (d *driver) delete(ctx context.Context, id string, o *flex.Options) error {
	unlock, err := d.state.lock(id)
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.store.DeleteVolume(ctx, id, backend.Secrets(o.Secrets)); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return err
	}
	return d.state.removeLock(id)
}
