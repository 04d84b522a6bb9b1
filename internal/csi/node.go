package csi

import (
	"context"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/backend"
)

type nodeServer struct {
	csi.UnimplementedNodeServer
	d *Driver
}

func (s *nodeServer) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             s.d.opts.NodeID,
		MaxVolumesPerNode:  s.d.opts.MaxVolumesPerNode,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{TopologyKey: s.d.opts.NodeID}},
	}, nil
}

func (s *nodeServer) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	types := []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	caps := make([]*csi.NodeServiceCapability, 0, len(types))
	for _, t := range types {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (s *nodeServer) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	staging, err := checkPath("staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	capa, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.attachedHere(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	err = s.d.backend.Stage(ctx, &backend.StageRequest{
		ID:          req.GetVolumeId(),
		StagingPath: staging,
		Block:       capa.block,
		FsType:      capa.fsType,
		MountFlags:  capa.mountFlags,
		ReadOnly:    capa.readOnly,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// attachedHere enforces the lifecycle when attach is on: a volume is staged
// only on a node it was attached to (CREATED -> NODE_READY -> VOL_READY).
func (s *nodeServer) attachedHere(ctx context.Context, id string) error {
	v, err := s.d.backend.GetVolume(ctx, id)
	if err != nil {
		return toStatus(err)
	}
	if s.d.opts.EnableAttach && !slices.Contains(v.AttachedTo, s.d.opts.NodeID) {
		return status.Errorf(codes.FailedPrecondition, "volume %s is not attached to node %s: ControllerPublishVolume first", id, s.d.opts.NodeID)
	}
	return nil
}

func (s *nodeServer) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	staging, err := checkPath("staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.d.backend.Unstage(ctx, req.GetVolumeId(), staging); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (s *nodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	target, err := checkPath("target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	capa, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.FailedPrecondition, "staging target path is missing: this driver stages volumes (NodeStageVolume) before publishing them")
	}
	staging, err := checkPath("staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	err = s.d.backend.Publish(ctx, &backend.PublishRequest{
		ID:           req.GetVolumeId(),
		StagingPath:  staging,
		TargetPath:   target,
		Block:        capa.block,
		ReadOnly:     req.GetReadonly() || capa.readOnly,
		SingleWriter: req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	target, err := checkPath("target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.d.backend.Unpublish(ctx, req.GetVolumeId(), target); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
