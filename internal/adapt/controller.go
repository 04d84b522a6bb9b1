package adapt

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/csirpc"
	"github.com/volplug/volplug/pkg/flex"
)

// accessModes: a FlexVolume driver is never told the access mode (a PV's
// accessModes are the admin's word), so the adapter refuses none.
var accessModes = []csi.VolumeCapability_AccessMode_Mode{
	csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
	csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
	csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
	csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
}

// publishDevice carries attach's device from ControllerPublish to
// NodeStage, as the node's status carries it for kubelet.
const publishDevice = "device"

type controllerServer struct {
	csi.UnimplementedControllerServer
	a *Adapter
}

func (s *controllerServer) ControllerGetCapabilities(ctx context.Context, req *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var types []csi.ControllerServiceCapability_RPC_Type
	f := s.a.feat
	if f.provision {
		types = append(types, csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME)
	}
	if f.attach {
		types = append(types, csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
			csi.ControllerServiceCapability_RPC_GET_VOLUME)
	}
	if f.expandCtrl {
		types = append(types, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME)
	}
	caps := make([]*csi.ControllerServiceCapability, 0, len(types))
	for _, t := range types {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

var errNoBlock = csirpc.Invalid("raw block volumes: a FlexVolume driver has no raw block mode (kubelet never hands a flex device to a pod raw); use a filesystem volume")

// checkCapability validates a capability, and refuses raw block: kubelet
// never hands a FlexVolume's device to a pod raw, so no flex driver can
// be expected to serve one.
func checkCapability(c *csi.VolumeCapability) (csirpc.Capability, error) {
	capa, err := csirpc.CheckCapability(c, accessModes)
	if err != nil {
		return capa, err
	}
	if capa.Block {
		return capa, errNoBlock
	}
	if !validGroup(capa.MountGroup) {
		return capa, csirpc.Invalid("volume mount group %q is not a group ID", capa.MountGroup)
	}
	return capa, nil
}

func (s *controllerServer) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if err := csirpc.CheckName("volume", name); err != nil {
		return nil, err
	}
	capa, err := csirpc.CheckCapabilities(req.GetVolumeCapabilities(), accessModes)
	if err != nil {
		return nil, err
	}
	if capa.Block {
		return nil, errNoBlock
	}
	if !s.a.feat.provision {
		return nil, status.Errorf(codes.Unimplemented, "the FlexVolume driver %s does not provision volumes (its init does not report provision:true): use statically provisioned PVs (volumeHandle and volumeAttributes)", s.a.opts.DriverPath)
	}
	if req.GetVolumeContentSource() != nil {
		return nil, csirpc.Invalid("a FlexVolume driver cannot copy volumes or snapshots")
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, csirpc.Invalid("a FlexVolume driver has no mutable parameters")
	}
	rng := req.GetCapacityRange()
	if rng.GetRequiredBytes() < 0 || rng.GetLimitBytes() < 0 {
		return nil, csirpc.CheckCapacity(rng)
	}
	if lim := rng.GetLimitBytes(); lim > 0 && rng.GetRequiredBytes() > lim {
		return nil, status.Errorf(codes.OutOfRange, "required %d bytes is more than the limit %d", rng.GetRequiredBytes(), lim)
	}
	params := map[string]string{}
	for k, v := range req.GetParameters() {
		if !strings.HasPrefix(k, csiPrefix) {
			params[k] = v
		}
	}
	extra := map[string]string{}
	if n := rng.GetRequiredBytes(); n > 0 {
		extra[flex.KeyRequiredBytes] = strconv.FormatInt(n, 10)
	}
	if n := rng.GetLimitBytes(); n > 0 {
		extra[flex.KeyLimitBytes] = strconv.FormatInt(n, 10)
	}
	release, err := s.a.locks.Acquire("name/" + name)
	if err != nil {
		return nil, err
	}
	defer release()
	opts := driverOptions{volumeID: name, attrs: params, capa: capa, secrets: req.GetSecrets(), extra: extra}
	res, err := s.a.call(ctx, flex.CallProvision, opts.json())
	if errors.Is(err, flex.ErrNotSupported) {
		return nil, status.Errorf(codes.Unimplemented, "the driver does not provision volumes: %v", err)
	}
	if err != nil {
		return nil, toStatus(res, err)
	}
	if err := checkID(res.VolumeID); err != nil {
		return nil, status.Errorf(codes.Internal, "provision answered a bad volumeID %q: %v", res.VolumeID, status.Convert(err).Message())
	}
	size := res.Capacity
	if size == 0 {
		size = rng.GetRequiredBytes()
	}
	// The storage class parameters become the volume's options, as a
	// flex PV's options would be; what the driver answered overrides them.
	volCtx := params
	for k, v := range res.VolumeContext {
		volCtx[k] = v
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: res.VolumeID, CapacityBytes: size, VolumeContext: volCtx}}, nil
}

func (s *controllerServer) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if !s.a.feat.provision {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not provision volumes: delete statically provisioned volumes by hand")
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	opts := driverOptions{volumeID: req.GetVolumeId(), secrets: req.GetSecrets()}
	if res, err := s.a.call(ctx, flex.CallDelete, req.GetVolumeId(), opts.json()); err != nil {
		if errors.Is(err, flex.ErrNotSupported) {
			return nil, status.Errorf(codes.Unimplemented, "the driver does not delete volumes: %v", err)
		}
		return nil, toStatus(res, err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (s *controllerServer) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	if !s.a.feat.attach {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not attach volumes")
	}
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := csirpc.CheckName("node", req.GetNodeId()); err != nil {
		return nil, err
	}
	capa, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	opts := driverOptions{volumeID: req.GetVolumeId(), attrs: req.GetVolumeContext(), capa: capa,
		readOnly: req.GetReadonly(), secrets: req.GetSecrets()}
	res, err := s.a.call(ctx, flex.CallAttach, opts.json(), req.GetNodeId())
	if errors.Is(err, flex.ErrNotSupported) {
		return &csi.ControllerPublishVolumeResponse{}, nil // kubelet's default: device ""
	}
	if err != nil {
		return nil, toStatus(res, err)
	}
	resp := &csi.ControllerPublishVolumeResponse{}
	if res.Device != "" {
		resp.PublishContext = map[string]string{publishDevice: res.Device}
	}
	return resp, nil
}

func (s *controllerServer) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	if !s.a.feat.attach {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not attach volumes")
	}
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	node := req.GetNodeId()
	if node != "" {
		if err := csirpc.CheckName("node", node); err != nil {
			return nil, err
		}
	}
	if node == "" {
		// "From every node": detach names one, and this adapter's node
		// is the only one it knows.
		node = s.a.opts.NodeID
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	res, err := s.a.call(ctx, flex.CallDetach, req.GetVolumeId(), node)
	if err != nil && !errors.Is(err, flex.ErrNotSupported) {
		return nil, toStatus(res, err)
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

func (s *controllerServer) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, csirpc.Invalid("volume capabilities are missing")
	}
	for _, c := range req.GetVolumeCapabilities() {
		if _, err := checkCapability(c); err != nil {
			// Well-formed but not servable (raw block): not confirmed.
			if _, bad := csirpc.CheckCapability(c, accessModes); bad != nil {
				return nil, bad
			}
			return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func (s *controllerServer) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if !s.a.feat.expandCtrl {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not answer expandvolume")
	}
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := csirpc.CheckCapacity(req.GetCapacityRange()); err != nil {
		return nil, err
	}
	want := req.GetCapacityRange().GetRequiredBytes()
	if want <= 0 {
		return nil, csirpc.Invalid("capacity range: a required size is needed")
	}
	var capa csirpc.Capability
	if req.GetVolumeCapability() != nil {
		var err error
		if capa, err = checkCapability(req.GetVolumeCapability()); err != nil {
			return nil, err
		}
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	opts := driverOptions{volumeID: req.GetVolumeId(), capa: capa, secrets: req.GetSecrets()}
	// The controller knows no device mount path, nor the old size.
	res, err := s.a.call(ctx, flex.CallExpandVolume, opts.json(), "", strconv.FormatInt(want, 10), "0")
	size := want
	switch {
	case errors.Is(err, flex.ErrNotSupported):
		// kubelet's default: success, the node grows what it can.
	case err != nil:
		return nil, toStatus(res, err)
	case res.VolumeNewSize > 0:
		size = res.VolumeNewSize
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: s.a.feat.expandNode}, nil
}

// ControllerGetVolume reports where the volume is published, from the
// driver's isattached, as controller-manager's reconciler asks it. The
// adapter's own node is the one it asks about: isattached names one node,
// and the adapter knows no list of nodes.
func (s *controllerServer) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	if !s.a.feat.attach {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not attach volumes")
	}
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	opts := driverOptions{volumeID: req.GetVolumeId()}
	res, err := s.a.call(ctx, flex.CallIsAttached, opts.json(), s.a.opts.NodeID)
	attached := true // kubelet's default when isattached is not supported
	switch {
	case errors.Is(err, flex.ErrNotSupported):
	case err != nil:
		return nil, toStatus(res, err)
	case res.Attached != nil:
		attached = *res.Attached
	}
	st := &csi.ControllerGetVolumeResponse_VolumeStatus{}
	if attached {
		st.PublishedNodeIds = []string{s.a.opts.NodeID}
	}
	return &csi.ControllerGetVolumeResponse{Volume: &csi.Volume{VolumeId: req.GetVolumeId()}, Status: st}, nil
}
