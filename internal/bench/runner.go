package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Driver step names, in cycle order. They are the CSI RPC names so that the
// report reads like the spec.
const (
	stepCreate        = "CreateVolume"
	stepCtrlPublish   = "ControllerPublish"
	stepStage         = "NodeStage"
	stepPublish       = "NodePublish"
	stepUnpublish     = "NodeUnpublish"
	stepUnstage       = "NodeUnstage"
	stepCtrlUnpublish = "ControllerUnpublish"
	stepDelete        = "DeleteVolume"
)

// Steps lists the timed steps of one Cycle, in order.
func (d *Driver) Steps() []string { return d.steps }

// volume tracks how far one cycle got, so that teardown undoes exactly
// what may have been done (every undo RPC is idempotent per the spec).
type volume struct {
	name, id       string
	dir            string
	staging        string
	target         string
	createTried    bool
	ctrlPublished  bool
	stageTried     bool
	publishTried   bool
	source         *csi.VolumeContentSource // restore or clone; nil = empty volume
	size           int64                    // 0: the driver's SizeBytes
	params         map[string]string        // StorageClass parameters; nil: the driver's
	cap            *csi.VolumeCapability    // nil: the driver's
	volumeContext  map[string]string
	publishContext map[string]string
}

// Cycle runs one full volume life through the CSI API and returns the
// duration of each step in Steps order. On error it tears down whatever
// the cycle had set up before returning.
func (d *Driver) Cycle(ctx context.Context, name string) (durs []time.Duration, err error) {
	return d.CycleWith(ctx, name, VolumeSpec{})
}

// VolumeSpec overrides the driver's defaults for the volumes of one kind
// of cycle, so that one driver serves several StorageClasses in a run.
type VolumeSpec struct {
	SizeBytes  int64                 // 0: the driver's
	Parameters map[string]string     // nil: the driver's
	Capability *csi.VolumeCapability // nil: the driver's
}

// CycleWith is Cycle for a volume of the given kind.
func (d *Driver) CycleWith(ctx context.Context, name string, spec VolumeSpec) (durs []time.Duration, err error) {
	v := &volume{name: name, dir: filepath.Join(d.volDir, name), size: spec.SizeBytes, params: spec.Parameters, cap: spec.Capability}
	v.staging = filepath.Join(v.dir, "staging")
	// The CO creates the parent of the target; the driver creates the
	// target itself (CSI spec), so it must not exist beforehand.
	v.target = filepath.Join(v.dir, "pod", "target")
	defer func() {
		if err != nil {
			if terr := d.teardown(v); terr != nil {
				err = fmt.Errorf("%w (teardown: %w)", err, terr)
			}
		}
	}()
	if err := os.MkdirAll(filepath.Dir(v.target), 0o750); err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	if d.Info.StageUnstage {
		if err := os.Mkdir(v.staging, 0o750); err != nil {
			return nil, fmt.Errorf("volume %s: %w", name, err)
		}
	}
	durs = make([]time.Duration, 0, len(d.steps))
	for _, step := range d.steps {
		rctx, cancel := context.WithTimeout(ctx, d.opts.RPCTimeout)
		t0 := time.Now()
		err := d.step(rctx, step, v)
		el := time.Since(t0)
		cancel()
		if err != nil {
			return durs, fmt.Errorf("volume %s: %s: %w", name, step, err)
		}
		durs = append(durs, el)
		if step == stepCreate && d.opts.StageDelay > 0 {
			// A cluster stages seconds after the create (scheduling,
			// attach); the gap is not the driver's time.
			time.Sleep(d.opts.StageDelay)
		}
	}
	// Checked outside the timed steps: the bench's own bookkeeping must
	// not count against the driver.
	if _, err := os.Lstat(v.target); err == nil {
		d.warn("NodeUnpublish left the target path behind (the driver must remove it)")
		_ = os.Remove(v.target)
	}
	if err := removeVolumeDirs(v); err != nil {
		return durs, fmt.Errorf("volume %s: %w", name, err)
	}
	return durs, nil
}

func (d *Driver) step(ctx context.Context, step string, v *volume) error {
	switch step {
	case stepCreate:
		v.createTried = true
		resp, err := d.ctrl.CreateVolume(ctx, d.createRequest(v))
		if err != nil {
			return err
		}
		v.id = resp.GetVolume().GetVolumeId()
		v.volumeContext = resp.GetVolume().GetVolumeContext()
		if v.id == "" {
			return errors.New("empty volume id")
		}
		want := d.createRequest(v).GetCapacityRange().GetRequiredBytes()
		if got := resp.GetVolume().GetCapacityBytes(); got != 0 && got < want {
			return fmt.Errorf("capacity %d bytes, asked for %d", got, want)
		}
	case stepCtrlPublish:
		// Marked first: a timed-out publish may still have happened.
		v.ctrlPublished = true
		resp, err := d.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
			VolumeId:         v.id,
			NodeId:           d.Info.NodeID,
			VolumeCapability: d.capOf(v),
			VolumeContext:    v.volumeContext,
		})
		if err != nil {
			return err
		}
		v.publishContext = resp.GetPublishContext()
	case stepStage:
		v.stageTried = true
		_, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
			VolumeId:          v.id,
			PublishContext:    v.publishContext,
			StagingTargetPath: v.staging,
			VolumeCapability:  d.capOf(v),
			VolumeContext:     v.volumeContext,
		})
		return err
	case stepPublish:
		v.publishTried = true
		req := &csi.NodePublishVolumeRequest{
			VolumeId:         v.id,
			PublishContext:   v.publishContext,
			TargetPath:       v.target,
			VolumeCapability: d.capOf(v),
			VolumeContext:    v.volumeContext,
		}
		if d.Info.StageUnstage {
			req.StagingTargetPath = v.staging
		}
		_, err := d.node.NodePublishVolume(ctx, req)
		return err
	case stepUnpublish:
		_, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
		if err == nil {
			v.publishTried = false
		}
		return err
	case stepUnstage:
		_, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
		if err == nil {
			v.stageTried = false
		}
		return err
	case stepCtrlUnpublish:
		_, err := d.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: v.id, NodeId: d.Info.NodeID})
		if err == nil {
			v.ctrlPublished = false
		}
		return err
	case stepDelete:
		_, err := d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id})
		if err == nil {
			v.createTried, v.id = false, ""
		}
		return err
	default:
		return fmt.Errorf("unknown step %q", step)
	}
	return nil
}

// createRequest is also what teardown re-sends to learn a lost volume id,
// so it carries the content source: CreateVolume is idempotent only for
// the same request.
func (d *Driver) createRequest(v *volume) *csi.CreateVolumeRequest {
	size, params := d.opts.SizeBytes, d.opts.Parameters
	if v.size > 0 {
		size = v.size
	}
	if v.params != nil {
		params = v.params
	}
	return &csi.CreateVolumeRequest{
		Name:                v.name,
		CapacityRange:       &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities:  []*csi.VolumeCapability{d.capOf(v)},
		VolumeContentSource: v.source,
		Parameters:          params,
	}
}

func (d *Driver) capOf(v *volume) *csi.VolumeCapability {
	if v.cap != nil {
		return v.cap
	}
	return d.cap
}

// teardown undoes a failed cycle in reverse order. It uses a fresh context
// because the cycle's may be the reason it failed.
func (d *Driver) teardown(v *volume) error {
	var errs []error
	call := func(what string, f func(context.Context) error) {
		// ABORTED means another operation on the volume is still
		// running in the driver (say, the step that timed out); the
		// spec's answer is to retry, as a CO would.
		deadline := time.Now().Add(d.opts.RPCTimeout)
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), d.opts.RPCTimeout)
			err := f(ctx)
			cancel()
			if err == nil {
				return
			}
			if status.Code(err) != codes.Aborted || time.Now().Add(wait).After(deadline) {
				errs = append(errs, fmt.Errorf("%s: %w", what, err))
				return
			}
			time.Sleep(wait)
		}
	}
	if v.createTried && v.id == "" {
		// The create may have happened even though we never saw the
		// id (timeout); CreateVolume is idempotent by name, so ask
		// again to learn what to delete.
		call(stepCreate+" (to find the id)", func(ctx context.Context) error {
			resp, err := d.ctrl.CreateVolume(ctx, d.createRequest(v))
			if err == nil {
				v.id = resp.GetVolume().GetVolumeId()
			}
			return err
		})
	}
	if v.id != "" {
		if v.publishTried {
			call(stepUnpublish, func(ctx context.Context) error { return d.step(ctx, stepUnpublish, v) })
		}
		if v.stageTried {
			call(stepUnstage, func(ctx context.Context) error { return d.step(ctx, stepUnstage, v) })
		}
		if v.ctrlPublished {
			call(stepCtrlUnpublish, func(ctx context.Context) error { return d.step(ctx, stepCtrlUnpublish, v) })
		}
		call(stepDelete, func(ctx context.Context) error { return d.step(ctx, stepDelete, v) })
	}
	if err := removeVolumeDirs(v); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeVolumeDirs removes the bench's own directories of one volume with
// os.Remove only: never RemoveAll, which would delete through a mount that
// a faulty unpublish left behind.
func removeVolumeDirs(v *volume) error {
	var errs []error
	for _, p := range []string{v.target, filepath.Dir(v.target), v.staging, v.dir} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
