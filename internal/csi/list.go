package csi

import (
	"context"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/backend"
)

func (s *controllerServer) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	page, next, err := s.volumePage(ctx, req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range page {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: s.csiVolume(v),
			Status: &csi.ListVolumesResponse_VolumeStatus{PublishedNodeIds: v.AttachedTo},
		})
	}
	return resp, nil
}

// volumePage is one page of the backend's volumes, for ListVolumes and
// ControllerListVolumeHealth.
func (s *controllerServer) volumePage(ctx context.Context, token string, max int32) ([]*backend.Volume, string, error) {
	if max < 0 {
		return nil, "", invalid("max_entries must not be negative")
	}
	all, err := s.d.backend.ListVolumes(ctx)
	if err != nil {
		return nil, "", toStatus(err)
	}
	return paginate(all, func(v *backend.Volume) string { return v.ID }, token, int(max))
}

// paginate cuts a list sorted by key into a page. A token names the key of
// the first entry of the next page, so deleting listed entries between
// calls never makes the next page skip or repeat one.
func paginate[T any](all []T, key func(T) string, token string, max int) ([]T, string, error) {
	start := 0
	if token != "" {
		after, ok := strings.CutPrefix(token, tokenPrefix)
		if !ok {
			return nil, "", status.Errorf(codes.Aborted, "starting token %q did not come from this driver", token)
		}
		start = sort.Search(len(all), func(i int) bool { return key(all[i]) >= after })
	}
	end := len(all)
	if max > 0 && start+max < end {
		end = start + max
	}
	next := ""
	if end < len(all) {
		next = tokenPrefix + key(all[end])
	}
	return all[start:end], next, nil
}

const tokenPrefix = "next:"

func (s *controllerServer) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if t := req.GetAccessibleTopology(); t != nil && !s.onThisNode(t) {
		return &csi.GetCapacityResponse{}, nil
	}
	for _, c := range req.GetVolumeCapabilities() {
		if _, err := s.d.checkCapability(c); err != nil {
			return &csi.GetCapacityResponse{}, nil // no room for what cannot be made
		}
	}
	free, err := s.d.backend.Capacity(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: free}, nil
}

func (s *controllerServer) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	if err := s.d.checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := s.d.backend.GetVolume(ctx, req.GetVolumeId(), nil)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerGetVolumeResponse{
		Volume: s.csiVolume(v),
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{PublishedNodeIds: v.AttachedTo},
	}, nil
}
