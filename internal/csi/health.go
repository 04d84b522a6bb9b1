package csi

import (
	"context"
	"errors"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/volplug/volplug/internal/backend"
)

func (s *controllerServer) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	h, err := s.d.backend.VolumeHealth(ctx, req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: csiHealth(req.GetVolumeId(), h)}, nil
}

func (s *controllerServer) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	page, next, err := s.volumePage(ctx, req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	resp := &csi.ControllerListVolumeHealthResponse{NextToken: next}
	for _, v := range page {
		h, err := s.d.backend.VolumeHealth(ctx, v.ID)
		if errors.Is(err, backend.ErrNotFound) {
			continue // deleted while we listed
		}
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Entries = append(resp.Entries, csiHealth(v.ID, h))
	}
	return resp, nil
}

// csiHealth maps a backend's problems to CSI's health entries.
func csiHealth(id string, h *backend.Health) *csi.VolumeHealth {
	kinds := map[backend.ProblemKind]csi.VolumeHealthErrorType{
		backend.Degraded:     csi.VolumeHealthErrorType_DEGRADED,
		backend.Inaccessible: csi.VolumeHealthErrorType_INACCESSIBLE,
		backend.DataLoss:     csi.VolumeHealthErrorType_DATA_LOSS,
	}
	out := &csi.VolumeHealth{VolumeId: id}
	for _, p := range h.Problems {
		out.HealthStatuses = append(out.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: kinds[p.Kind], Reason: string(p.Kind), Message: p.Message})
	}
	return out
}
