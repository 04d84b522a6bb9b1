package csi

import (
	"context"
	"errors"
	"maps"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/csirpc"
)

type controllerServer struct {
	csi.UnimplementedControllerServer
	d *Driver
}

func (s *controllerServer) ControllerGetCapabilities(ctx context.Context, req *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	bc := s.d.backend.Capabilities()
	types := []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	if bc.Listing {
		types = append(types,
			csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
			csi.ControllerServiceCapability_RPC_GET_CAPACITY,
			csi.ControllerServiceCapability_RPC_GET_VOLUME)
	}
	if s.d.opts.EnableAttach {
		types = append(types,
			csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
			csi.ControllerServiceCapability_RPC_PUBLISH_READONLY,
			csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES)
	}
	if bc.Snapshots {
		types = append(types,
			csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
			csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
			csi.ControllerServiceCapability_RPC_GET_SNAPSHOT)
	}
	if bc.Clones {
		types = append(types, csi.ControllerServiceCapability_RPC_CLONE_VOLUME)
	}
	if bc.Expansion && !s.d.opts.ExpandOnNode {
		types = append(types, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME)
	}
	if bc.Modify {
		types = append(types, csi.ControllerServiceCapability_RPC_MODIFY_VOLUME)
	}
	if bc.Health && bc.Listing { // the controller sees volumes only where it can list them
		types = append(types,
			csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
			csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH)
	}
	caps := make([]*csi.ControllerServiceCapability, 0, len(types))
	for _, t := range types {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (s *controllerServer) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if err := csirpc.CheckName("volume", name); err != nil {
		return nil, err
	}
	if err := csirpc.CheckCapacity(req.GetCapacityRange()); err != nil {
		return nil, err
	}
	capa, err := s.d.checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return nil, err
	}
	srcSnap := req.GetVolumeContentSource().GetSnapshot().GetSnapshotId()
	srcVol := req.GetVolumeContentSource().GetVolume().GetVolumeId()
	if src := req.GetVolumeContentSource(); src != nil && srcSnap == "" && srcVol == "" {
		return nil, invalid("volume content source names neither a snapshot nor a volume")
	}
	if len(req.GetMutableParameters()) > 0 && !s.d.backend.Capabilities().Modify {
		return nil, invalid("this backend has no mutable parameters")
	}
	if bc := s.d.backend.Capabilities(); (srcSnap != "" && !bc.Snapshots) || (srcVol != "" && !bc.Clones) {
		return nil, status.Error(codes.InvalidArgument, "this backend cannot copy volumes or snapshots")
	}
	// Keys under csi.storage.k8s.io/ are the provisioner's own (PVC name,
	// secrets); the backend checks the rest.
	params := map[string]string{}
	for k, v := range req.GetParameters() {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			params[k] = v
		}
	}
	if s.d.backend.Capabilities().NodeLocal && !s.reachable(req.GetAccessibilityRequirements()) {
		return nil, status.Errorf(codes.ResourceExhausted, "volumes of this driver live on node %s, which the topology requirement excludes", s.d.opts.NodeID)
	}
	// The source is held too: it must not be staged, grown or deleted while
	// it is copied.
	keys := []string{"name/" + name}
	if src := srcVol + srcSnap; src != "" {
		keys = append(keys, src)
	}
	release, err := s.d.locks.acquire(keys...)
	if err != nil {
		return nil, err
	}
	defer release()

	v, err := s.d.backend.CreateVolume(ctx, &backend.CreateRequest{
		Name:           name,
		MinSize:        req.GetCapacityRange().GetRequiredBytes(),
		MaxSize:        req.GetCapacityRange().GetLimitBytes(),
		FsType:         capa.fsType,
		Block:          capa.block,
		Parameters:     params,
		Secrets:        req.GetSecrets(),
		SourceSnapshot: srcSnap,
		SourceVolume:   srcVol,
		Mutable:        req.GetMutableParameters(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	vol := s.csiVolume(v)
	if srcSnap != "" {
		vol.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: srcSnap}}}
	} else if srcVol != "" {
		vol.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: srcVol}}}
	}
	return &csi.CreateVolumeResponse{Volume: vol}, nil
}

// reachable reports whether a topology requirement allows this node.
func (s *controllerServer) reachable(req *csi.TopologyRequirement) bool {
	if len(req.GetRequisite()) == 0 && len(req.GetPreferred()) == 0 {
		return true
	}
	for _, t := range append(req.GetRequisite(), req.GetPreferred()...) {
		if s.onThisNode(t) {
			return true
		}
	}
	return len(req.GetRequisite()) == 0
}

func (s *controllerServer) onThisNode(t *csi.Topology) bool {
	node, ok := t.GetSegments()[TopologyKey]
	return ok && node == s.d.opts.NodeID
}

func (s *controllerServer) csiVolume(v *backend.Volume) *csi.Volume {
	// A backend's own context, else what a disk image's volume has.
	ctx := maps.Clone(v.Context)
	if ctx == nil {
		ctx = map[string]string{"name": v.Name}
		if v.FsType != "" {
			ctx["fsType"] = v.FsType
		}
	}
	vol := &csi.Volume{VolumeId: v.ID, CapacityBytes: v.Size, VolumeContext: ctx}
	if s.d.backend.Capabilities().NodeLocal {
		vol.AccessibleTopology = []*csi.Topology{{Segments: map[string]string{TopologyKey: v.Node}}}
	}
	return vol
}

func (s *controllerServer) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.d.backend.DeleteVolume(ctx, req.GetVolumeId(), req.GetSecrets()); err != nil {
		return nil, toStatus(err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (s *controllerServer) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	if !s.d.opts.EnableAttach {
		return nil, status.Error(codes.Unimplemented, "attach is off: start the driver with --enable-attach")
	}
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := csirpc.CheckName("node", req.GetNodeId()); err != nil {
		return nil, err
	}
	capa, err := s.d.checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := s.d.backend.GetVolume(ctx, req.GetVolumeId(), req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	if capa.block != v.Block {
		return nil, status.Errorf(codes.AlreadyExists, "volume %s was made for %s access", v.ID, accessName(v.Block))
	}
	readOnly := req.GetReadonly() || capa.readOnly
	if err := s.d.backend.Attach(ctx, v.ID, req.GetNodeId(), readOnly, int(s.d.opts.MaxVolumesPerNode)); err != nil {
		return nil, toStatus(err)
	}
	pc := map[string]string{publishNode: req.GetNodeId()}
	if readOnly {
		pc[publishReadOnly] = "true"
	}
	return &csi.ControllerPublishVolumeResponse{PublishContext: pc}, nil
}

// Publish context keys: what ControllerPublish tells the node.
const (
	publishNode     = "attachedTo"
	publishReadOnly = "readOnly" // the attachment allows reading only
)

func accessName(block bool) string {
	if block {
		return "block"
	}
	return "mount"
}

func (s *controllerServer) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	if !s.d.opts.EnableAttach {
		return nil, status.Error(codes.Unimplemented, "attach is off: start the driver with --enable-attach")
	}
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	err = s.d.backend.Detach(ctx, req.GetVolumeId(), req.GetNodeId())
	if err != nil && !errors.Is(err, backend.ErrNotFound) { // detaching what is gone succeeds
		return nil, toStatus(err)
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

func (s *controllerServer) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalid("volume capabilities are missing")
	}
	v, err := s.d.backend.GetVolume(ctx, req.GetVolumeId(), req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	capa, err := s.d.checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	if capa.block != v.Block || (capa.fsType != "" && capa.fsType != v.FsType) {
		return &csi.ValidateVolumeCapabilitiesResponse{
			Message: "volume " + v.ID + " is " + accessName(v.Block) + " " + v.FsType}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func (s *controllerServer) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if req.GetCapacityRange() == nil {
		return nil, invalid("capacity range is missing")
	}
	if err := csirpc.CheckCapacity(req.GetCapacityRange()); err != nil {
		return nil, err
	}
	size := req.GetCapacityRange().GetRequiredBytes()
	if limit := req.GetCapacityRange().GetLimitBytes(); limit > 0 && size > limit {
		return nil, status.Errorf(codes.OutOfRange, "required %d is above the limit %d", size, limit)
	}
	if !s.d.backend.Capabilities().Expansion {
		return nil, status.Error(codes.Unimplemented, "this backend cannot expand volumes")
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	got, nodeToo, err := s.d.backend.ExpandVolume(ctx, req.GetVolumeId(), size, req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: got, NodeExpansionRequired: nodeToo}, nil
}

func (s *controllerServer) ControllerModifyVolume(ctx context.Context, req *csi.ControllerModifyVolumeRequest) (*csi.ControllerModifyVolumeResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if !s.d.backend.Capabilities().Modify {
		return nil, status.Error(codes.Unimplemented, "this backend has no mutable parameters")
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.d.backend.ModifyVolume(ctx, req.GetVolumeId(), req.GetMutableParameters()); err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerModifyVolumeResponse{}, nil
}
