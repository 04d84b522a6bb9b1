package local

import (
	"context"
	"fmt"
	"maps"
	"strconv"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/failpoint"
	"github.com/volplug/volplug/internal/loop"
)

// The mutable parameters of a disk image (a VolumeAttributesClass's
// parameters in Kubernetes).
const (
	// paramDirectIO ("true", the default, or "false") says whether the loop
	// device bypasses the host's page cache for the image. Direct I/O keeps
	// data from being cached twice (by the volume's filesystem and again
	// for the image); buffered I/O can help workloads that re-read more
	// than the volume's own cache holds. It changes online.
	paramDirectIO = "directIO"
)

// checkMutable validates mutable parameters and returns a copy.
func checkMutable(params map[string]string) (map[string]string, error) {
	for k, v := range params {
		switch k {
		case paramDirectIO:
			if _, err := strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("mutable parameter %s=%q: want true or false: %w", k, v, backend.ErrInvalid)
			}
		default:
			return nil, fmt.Errorf("unknown mutable parameter %q (known: %s): %w", k, paramDirectIO, backend.ErrInvalid)
		}
	}
	return maps.Clone(params), nil
}

// directIO reads the volume's direct I/O setting.
func directIO(v *backend.Volume) bool {
	on, err := strconv.ParseBool(v.Mutable[paramDirectIO])
	return err != nil || on // unset or unreadable: the default, on
}

// ModifyVolume changes the volume's mutable parameters, applying them at
// once to a staged volume.
func (b *Backend) ModifyVolume(ctx context.Context, id string, params map[string]string) error {
	if err := b.waitFormat(ctx, id); err != nil { // the format rewrites the metadata
		return err
	}
	v, err := b.pool.readVolume(id)
	if err != nil {
		return err
	}
	changes, err := checkMutable(params)
	if err != nil {
		return err
	}
	if v.Mutable == nil {
		v.Mutable = map[string]string{}
	}
	maps.Copy(v.Mutable, changes)
	if err := writeVolume(b.pool.volumeDir(id), v); err != nil {
		return fmt.Errorf("modify %s: %w", id, err)
	}
	failpoint.Hit("local.modify.meta-written")
	dev, err := loop.Find(b.pool.image(id))
	if err != nil || dev == "" {
		return err
	}
	if err := loop.SetDirectIO(dev, directIO(v)); err != nil {
		return fmt.Errorf("modify %s: %w", id, err)
	}
	return nil
}
