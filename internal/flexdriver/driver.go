package flexdriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/backend/local"
	"github.com/volplug/volplug/pkg/flex"
)

// Driver options of the local backend, beside kubelet's kubernetes.io/ keys.
const (
	optVolumeID = "volumeID" // an existing volume, used as it is
	optImage    = "image"    // a volume name; made when missing
	optSize     = "size"     // "1Gi", "500M", "1073741824"
	optFsType   = "fsType"   // overrides kubernetes.io/fsType
)

// poolLock serialises creating volumes across driver processes: the
// backend's check for free space and its reservation are atomic only
// within one process.
const poolLock = "pool"

// driver answers flex calls from a backend. One process serves one call.
type driver struct {
	name  string // local or s3: the backend, from the name kubelet runs it under
	cfg   Config
	log   *slog.Logger
	store store
	state *state
}

// open opens the backend and the driver's own state. It is not done for
// init, which must answer on any machine, pool or not (controller-manager
// probes the driver too).
func (d *driver) open() error {
	st, err := newState(d.cfg.Pool)
	if err != nil {
		return err
	}
	// Open, not New: every call is a short-lived process, and recovery
	// would remove what a concurrent call is still building.
	b, err := local.Open(d.cfg.Pool, d.cfg.Node)
	if err != nil {
		return err
	}
	d.store, d.state = localStore{b}, st
	return nil
}

func (d *driver) capabilities() flex.Capabilities {
	// Asked of the type: init runs before (and without) opening the pool.
	_, fsResize := any(localStore{}).(filesystemExpander)
	return flex.Capabilities{
		Attach: d.cfg.Attach,
		// A real filesystem with xattrs: kubelet's relabel and fsGroup
		// chown work on it as on any disk, so kubelet applies them and the
		// driver does not do it twice.
		SELinuxRelabel: true,
		FSGroup:        true,
		// kubelet statfs()es the pod directory, which shows the volume's
		// own filesystem.
		SupportsMetrics:  true,
		RequiresFSResize: fsResize,
		// volplug's extension: provision and delete, for `volplug adapt`.
		Provision: true,
	}
}

// volumeFor finds the volume the options name: `volumeID`, else the volume
// named by `image`, else by kubernetes.io/pvOrVolumeName. With create, a
// named volume is made when missing, with `size` and `fsType`.
//
// A name kubelet gives is qualified by the pod's namespace when the call
// carries one (mount does): for an inline volume it is the pod's own
// volume name, such as "data", which unrelated pods in other namespaces
// use too, and they must never share a disk. Only `image` names a disk
// across namespaces, on purpose.
func (d *driver) volumeFor(ctx context.Context, o *flex.Options, create bool) (*backend.Volume, error) {
	if id := o.Driver[optVolumeID]; id != "" {
		return d.store.GetVolume(ctx, id, nil)
	}
	if o.VolumeName != "" && o.Driver[optImage] == "" {
		// `volplug adapt` names a volume by its CSI volume ID, which for
		// a volume it provisioned is ours: an exact ID is that volume.
		if v, err := d.store.GetVolume(ctx, o.VolumeName, nil); err == nil {
			return v, nil
		}
	}
	name := o.Driver[optImage]
	if name == "" && o.VolumeName != "" {
		name = o.VolumeName
		if o.PodNamespace != "" {
			name = o.PodNamespace + "/" + o.VolumeName
		}
	}
	if name == "" {
		return nil, fmt.Errorf("no volume named: set option %q or %q: %w", optVolumeID, optImage, backend.ErrInvalid)
	}
	if !create {
		return d.volumeNamed(ctx, name)
	}
	size, err := parseSize(o.Driver[optSize])
	if err != nil {
		return nil, fmt.Errorf("option %q: %w", optSize, err)
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
	return d.store.CreateVolume(ctx, &backend.CreateRequest{Name: name, MinSize: size, FsType: fsType})
}

// volumeNamed finds a volume by name, or by ID (detach may be given either).
func (d *driver) volumeNamed(ctx context.Context, name string) (*backend.Volume, error) {
	all, err := d.store.ListVolumes(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range all {
		if v.Name == name || v.ID == name {
			return v, nil
		}
	}
	return nil, fmt.Errorf("volume %q: %w", name, backend.ErrNotFound)
}

// attach records the attachment and answers the volume ID as the device.
// A loop device only exists once the volume is staged, and its number
// changes with every attach and reboot; the volume ID names the disk for
// as long as it exists, which is what node status should carry.
func (d *driver) attach(ctx context.Context, o *flex.Options, node string) (*flex.Result, error) {
	v, err := d.volumeFor(ctx, o, true)
	if err != nil {
		return nil, err
	}
	unlock, err := d.state.lock(v.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if o.VolumeName != "" {
		// detach gets only this name; remember which volume it means.
		if err := d.state.put(recName, o.VolumeName, v.ID); err != nil {
			return nil, err
		}
	}
	if err := d.store.Attach(ctx, v.ID, node, false, 0); err != nil {
		return nil, err
	}
	return &flex.Result{Status: flex.StatusSuccess, Device: v.ID}, nil
}

func (d *driver) detach(ctx context.Context, volumeName, node string) error {
	id, err := d.state.get(recName, volumeName)
	if err != nil {
		return err
	}
	if id == "" {
		v, err := d.volumeNamed(ctx, volumeName)
		if errors.Is(err, backend.ErrNotFound) {
			return nil // nothing to detach: a repeat, or never attached
		}
		if err != nil {
			return err
		}
		id = v.ID
	}
	unlock, err := d.state.lock(id)
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.store.Detach(ctx, id, node); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return err
	}
	return d.state.del(recName, volumeName)
}

func (d *driver) isAttached(ctx context.Context, o *flex.Options, node string) (bool, error) {
	v, err := d.volumeFor(ctx, o, false)
	if errors.Is(err, backend.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return slices.Contains(v.AttachedTo, node), nil
}

// waitForAttach checks the volume is attached here. Attaching is only a
// record, so there is nothing to wait for.
func (d *driver) waitForAttach(ctx context.Context, device string, o *flex.Options) (string, error) {
	v, err := d.deviceVolume(ctx, device, o)
	if err != nil {
		return "", err
	}
	if !slices.Contains(v.AttachedTo, d.cfg.Node) {
		return "", fmt.Errorf("volume %s is not attached to node %s: %w", v.ID, d.cfg.Node, backend.ErrPrecondition)
	}
	return v.ID, nil
}

// deviceVolume is the volume a device argument names, or the options name
// when the device is empty (attached by something other than our attach).
func (d *driver) deviceVolume(ctx context.Context, device string, o *flex.Options) (*backend.Volume, error) {
	if device != "" {
		return d.store.GetVolume(ctx, device, nil)
	}
	return d.volumeFor(ctx, o, false)
}

// mountDevice stages the volume at kubelet's global mount path.
func (d *driver) mountDevice(ctx context.Context, path, device string, o *flex.Options) error {
	v, err := d.deviceVolume(ctx, device, o)
	if err != nil {
		return err
	}
	unlock, err := d.state.lock(v.ID)
	if err != nil {
		return err
	}
	defer unlock()
	// Recorded first, so a crash half-way still lets unmountdevice find it.
	if err := d.state.put(recStage, path, v.ID); err != nil {
		return err
	}
	return d.store.Stage(ctx, &backend.StageRequest{ID: v.ID, StagingPath: path, FsType: v.FsType, ReadOnly: o.ReadOnly})
}

func (d *driver) unmountDevice(ctx context.Context, path string) error {
	id, err := d.volumeAt(path, recStage)
	if err != nil || id == "" {
		return err
	}
	unlock, err := d.state.lock(id)
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.store.Unstage(ctx, id, path); err != nil {
		return err
	}
	return d.state.del(recStage, path)
}
