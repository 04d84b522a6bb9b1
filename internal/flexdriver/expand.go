package flexdriver

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/grpc/codes"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/csirpc"
	"github.com/volplug/volplug/pkg/flex"
)

// expandVolume grows the volume when the backend can. When it cannot, the
// answer is a Failure, not "Not supported": for expandvolume kubelet's
// default is to report success, and the PVC would claim a size the disk
// does not have.
func (d *driver) expandVolume(ctx context.Context, o *flex.Options, newBytes string) (*flex.Result, error) {
	x, ok := d.store.(volumeExpander)
	if !ok {
		return nil, fmt.Errorf("the local backend cannot grow volumes yet: %w", backend.ErrPrecondition)
	}
	size, err := strconv.ParseInt(newBytes, 10, 64)
	if err != nil || size <= 0 {
		return nil, fmt.Errorf("new size %q is not a number of bytes: %w", newBytes, backend.ErrInvalid)
	}
	v, err := d.volumeFor(ctx, o, false)
	if err != nil {
		return nil, err
	}
	unlock, err := d.state.lock(v.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	got, _, err := x.ExpandVolume(ctx, v.ID, size, nil)
	if err != nil {
		return nil, err
	}
	return &flex.Result{Status: flex.StatusSuccess, VolumeNewSize: got}, nil
}

// expandFS grows the filesystem at deviceMountPath (or the driver's own
// staging path). kubelet only calls it
// when init reported requiresFSResize, which follows the backend.
func (d *driver) expandFS(ctx context.Context, o *flex.Options, deviceMountPath string) (*flex.Result, error) {
	x, ok := d.store.(filesystemExpander)
	if !ok {
		return flex.NotSupported("the local backend cannot grow filesystems yet"), nil
	}
	path := deviceMountPath
	id, err := d.mountedVolume(path)
	if err != nil {
		return nil, err
	}
	if id == "" {
		// Without attach there is no device mount path: the filesystem
		// is at the driver's own staging path.
		v, err := d.volumeFor(ctx, o, false)
		if err != nil {
			return nil, err
		}
		id, path = v.ID, d.state.staging(v.ID)
	}
	unlock, err := d.state.lock(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	got, err := x.ExpandFilesystem(ctx, id, path, 0)
	if err != nil {
		return nil, err
	}
	return &flex.Result{Status: flex.StatusSuccess, VolumeNewSize: got}, nil
}

// failure turns an error into the answer: a backend's ErrUnsupported is
// "Not supported", so Kubernetes falls back to its default.
func failure(err error) *flex.Result {
	if errors.Is(err, backend.ErrUnsupported) {
		return flex.NotSupported(err.Error())
	}
	res := flex.Failure(err.Error())
	// The code says what kind of failure it is to a caller that maps
	// failures onto gRPC (volplug adapt); kubelet ignores it.
	if c := csirpc.Code(err); c != codes.Internal {
		res.Code = csirpc.CodeName(c)
	}
	return res
}
