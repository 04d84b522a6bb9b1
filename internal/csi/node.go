package csi

import (
	"context"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/csirpc"
)

type nodeServer struct {
	csi.UnimplementedNodeServer
	d *Driver
}

func (s *nodeServer) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	resp := &csi.NodeGetInfoResponse{NodeId: s.d.opts.NodeID, MaxVolumesPerNode: s.d.opts.MaxVolumesPerNode}
	if s.d.backend.Capabilities().NodeLocal {
		resp.AccessibleTopology = &csi.Topology{Segments: map[string]string{TopologyKey: s.d.opts.NodeID}}
	}
	return resp, nil
}

func (s *nodeServer) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	types := []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
	bc := s.d.backend.Capabilities()
	if bc.Stats {
		types = append(types, csi.NodeServiceCapability_RPC_GET_VOLUME_STATS)
	}
	if bc.Expansion {
		types = append(types, csi.NodeServiceCapability_RPC_EXPAND_VOLUME)
	}
	if bc.MountGroup {
		types = append(types, csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP)
	}
	if bc.Health {
		types = append(types,
			csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
			csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH)
	}
	caps := make([]*csi.NodeServiceCapability, 0, len(types))
	for _, t := range types {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (s *nodeServer) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	staging, err := s.d.checkIDAndPath(req.GetVolumeId(), "staging target path", req.GetStagingTargetPath())
	if err != nil {
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
	if err := s.attachedHere(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	err = s.d.backend.Stage(ctx, &backend.StageRequest{
		ID:          req.GetVolumeId(),
		StagingPath: staging,
		Block:       capa.block,
		FsType:      capa.fsType,
		MountFlags:  capa.mountFlags,
		ReadOnly:    capa.readOnly || req.GetPublishContext()[publishReadOnly] == "true",
		Context:     req.GetVolumeContext(),
		MountGroup:  req.GetVolumeCapability().GetMount().GetVolumeMountGroup(),
		Secrets:     req.GetSecrets(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// attachedHere enforces the lifecycle when attach is on: a volume is staged
// only on a node it was attached to (CREATED -> NODE_READY -> VOL_READY).
func (s *nodeServer) attachedHere(ctx context.Context, id string) error {
	if !s.d.opts.EnableAttach {
		return nil // the backend's Stage finds out whether the volume exists
	}
	v, err := s.d.backend.GetVolume(ctx, id, nil)
	if err != nil {
		return toStatus(err)
	}
	if !slices.Contains(v.AttachedTo, s.d.opts.NodeID) {
		return status.Errorf(codes.FailedPrecondition, "volume %s is not attached to node %s: ControllerPublishVolume first", id, s.d.opts.NodeID)
	}
	return nil
}

func (s *nodeServer) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	staging, err := s.d.checkIDAndPath(req.GetVolumeId(), "staging target path", req.GetStagingTargetPath())
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
	target, err := s.d.checkIDAndPath(req.GetVolumeId(), "target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	capa, err := s.d.checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	ephemeral := req.GetVolumeContext()[ephemeralKey] == "true"
	if req.GetStagingTargetPath() == "" && !ephemeral {
		return nil, status.Error(codes.FailedPrecondition, "staging target path is missing: this driver stages volumes (NodeStageVolume) before publishing them")
	}
	var staging string
	if !ephemeral {
		if staging, err = csirpc.CheckNodePath("staging target path", req.GetStagingTargetPath()); err != nil {
			return nil, err
		}
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if req.GetVolumeContext()[ephemeralKey] == "true" {
		return s.publishEphemeral(ctx, req, target, capa)
	}
	err = s.d.backend.Publish(ctx, &backend.PublishRequest{
		ID:           req.GetVolumeId(),
		StagingPath:  staging,
		TargetPath:   target,
		Block:        capa.block,
		ReadOnly:     req.GetReadonly() || capa.readOnly || req.GetPublishContext()[publishReadOnly] == "true",
		SingleWriter: req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target, err := s.d.checkIDAndPath(req.GetVolumeId(), "target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	// The kernel says which volume is at the target. An ephemeral volume
	// is known to the CO by its own handle, not ours: find it this way and
	// remove it with its pod.
	at, err := s.d.backend.VolumeAt(ctx, target)
	if err != nil {
		return nil, toStatus(err)
	}
	if at != "" && at != req.GetVolumeId() {
		v, err := s.d.backend.GetVolume(ctx, at, nil)
		if err != nil || !v.Ephemeral || v.Name != req.GetVolumeId() {
			return nil, invalid("%s holds volume %s, not %s", target, at, req.GetVolumeId())
		}
		return &csi.NodeUnpublishVolumeResponse{}, toStatus(s.removeEphemeral(ctx, at, target))
	}
	if err := s.d.backend.Unpublish(ctx, req.GetVolumeId(), target); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (s *nodeServer) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	path, err := checkVolumePath(req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	st, err := s.d.backend.Stats(ctx, req.GetVolumeId(), path)
	if err != nil {
		return nil, toStatus(err)
	}
	usage := []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: st.TotalBytes, Used: st.UsedBytes, Available: st.AvailBytes}}
	if !st.Block {
		usage = append(usage, &csi.VolumeUsage{Unit: csi.VolumeUsage_INODES, Total: st.TotalInodes, Used: st.UsedInodes, Available: st.FreeInodes})
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: usage}, nil
}

func (s *nodeServer) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	path, err := checkVolumePath(req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	if err := csirpc.CheckCapacity(req.GetCapacityRange()); err != nil {
		return nil, err
	}
	release, err := s.d.locks.acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if want := req.GetCapacityRange().GetRequiredBytes(); s.d.opts.ExpandOnNode && want > 0 {
		if _, _, err := s.d.backend.ExpandVolume(ctx, req.GetVolumeId(), want, req.GetSecrets()); err != nil {
			return nil, toStatus(err)
		}
	}
	size, err := s.d.backend.ExpandFilesystem(ctx, req.GetVolumeId(), path, req.GetCapacityRange().GetRequiredBytes())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}

func (s *nodeServer) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	var paths []string
	for _, p := range []string{req.GetStagingTargetPath(), req.GetVolumePublishPath()} {
		if p != "" {
			clean, err := checkPath("path", p)
			if err != nil {
				return nil, err
			}
			paths = append(paths, clean)
		}
	}
	h, err := s.d.backend.NodeHealth(ctx, req.GetVolumeId(), paths...)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: csiHealth(req.GetVolumeId(), h)}, nil
}

func (s *nodeServer) NodeGetStorageHealth(ctx context.Context, req *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	h, err := s.d.backend.StorageHealth(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &csi.NodeGetStorageHealthResponse{}
	for _, p := range h.Problems {
		kind := csi.StorageHealthErrorType_STORAGE_DEGRADED
		if p.Kind != backend.Degraded {
			kind = csi.StorageHealthErrorType_STORAGE_UNREACHABLE
		}
		resp.BackendHealth = append(resp.BackendHealth, &csi.NodeGetStorageHealthResponse_StorageBackendHealth{
			Status: kind, Reason: string(p.Kind), Message: p.Message})
	}
	return resp, nil
}
