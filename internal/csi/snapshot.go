package csi

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/csirpc"
)

func csiSnapshot(s *backend.Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId: s.ID, SourceVolumeId: s.SourceVolumeID, SizeBytes: s.Size,
		CreationTime: timestamppb.New(s.Created), ReadyToUse: true, GroupSnapshotId: s.GroupID,
	}
}

func (s *controllerServer) snapshotsOn() error {
	if !s.d.backend.Capabilities().Snapshots {
		return status.Error(codes.Unimplemented, "this backend cannot take snapshots")
	}
	return nil
}

func (s *controllerServer) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if err := s.snapshotsOn(); err != nil {
		return nil, err
	}
	if err := csirpc.CheckName("snapshot", req.GetName()); err != nil {
		return nil, err
	}
	if err := s.d.checkID(req.GetSourceVolumeId()); err != nil {
		return nil, err
	}
	// No backend takes snapshot parameters; the snapshotter's own keys
	// (--extra-create-metadata) are what a VolumeSnapshotClass may carry.
	for k := range req.GetParameters() {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			return nil, invalid("unknown snapshot parameter %q: this driver takes none", k)
		}
	}
	if !s.reachable(req.GetAccessibilityRequirements()) {
		return nil, status.Errorf(codes.ResourceExhausted, "snapshots of this driver live on node %s, which the topology requirement excludes", s.d.opts.NodeID)
	}
	// The volume is held while it is copied, so it is not staged, expanded
	// or deleted halfway through.
	release, err := s.d.locks.acquire("snapshot-name/"+req.GetName(), req.GetSourceVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	snap, err := s.d.backend.CreateSnapshot(ctx, req.GetName(), req.GetSourceVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	// The response leaves accessible_topology out (it is optional): the
	// snapshot is where its volume is, which the CO knows already, and
	// csi-sanity v5.6 compares returned topologies with reflect.DeepEqual,
	// which fails on any proto that went through gRPC.
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(snap)}, nil
}

func (s *controllerServer) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if err := s.snapshotsOn(); err != nil {
		return nil, err
	}
	if req.GetSnapshotId() == "" {
		return nil, invalid("snapshot ID is missing")
	}
	release, err := s.d.locks.acquire(req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	defer release()
	err = s.d.backend.DeleteSnapshot(ctx, req.GetSnapshotId())
	if err != nil && !errors.Is(err, backend.ErrInvalid) { // a malformed ID names nothing to delete
		return nil, toStatus(err)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

func (s *controllerServer) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if err := s.snapshotsOn(); err != nil {
		return nil, err
	}
	if req.GetSnapshotId() == "" {
		return nil, invalid("snapshot ID is missing")
	}
	snap, err := s.d.backend.GetSnapshot(ctx, req.GetSnapshotId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.GetSnapshotResponse{Snapshot: csiSnapshot(snap)}, nil
}

func (s *controllerServer) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if err := s.snapshotsOn(); err != nil {
		return nil, err
	}
	if req.GetMaxEntries() < 0 {
		return nil, invalid("max_entries must not be negative")
	}
	all, err := s.d.backend.ListSnapshots(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	all = slices.DeleteFunc(all, func(snap *backend.Snapshot) bool {
		return (req.GetSnapshotId() != "" && snap.ID != req.GetSnapshotId()) ||
			(req.GetSourceVolumeId() != "" && snap.SourceVolumeID != req.GetSourceVolumeId())
	})
	page, next, err := paginate(all, func(snap *backend.Snapshot) string { return snap.ID }, req.GetStartingToken(), int(req.GetMaxEntries()))
	if err != nil {
		return nil, err
	}
	resp := &csi.ListSnapshotsResponse{NextToken: next}
	for _, snap := range page {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(snap)})
	}
	return resp, nil
}

// groupControllerServer takes snapshots of several volumes at one instant.
type groupControllerServer struct {
	csi.UnimplementedGroupControllerServer
	d *Driver
}

func (s *groupControllerServer) GroupControllerGetCapabilities(ctx context.Context, req *csi.GroupControllerGetCapabilitiesRequest) (*csi.GroupControllerGetCapabilitiesResponse, error) {
	return &csi.GroupControllerGetCapabilitiesResponse{Capabilities: []*csi.GroupControllerServiceCapability{{
		Type: &csi.GroupControllerServiceCapability_Rpc{Rpc: &csi.GroupControllerServiceCapability_RPC{
			Type: csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT}}}}}, nil
}

func csiGroup(g *backend.GroupSnapshot) *csi.VolumeGroupSnapshot {
	out := &csi.VolumeGroupSnapshot{GroupSnapshotId: g.ID, CreationTime: timestamppb.New(g.Created), ReadyToUse: true}
	for _, snap := range g.Snapshots {
		out.Snapshots = append(out.Snapshots, csiSnapshot(snap))
	}
	return out
}

func (s *groupControllerServer) CreateVolumeGroupSnapshot(ctx context.Context, req *csi.CreateVolumeGroupSnapshotRequest) (*csi.CreateVolumeGroupSnapshotResponse, error) {
	if err := csirpc.CheckName("group snapshot", req.GetName()); err != nil {
		return nil, err
	}
	if len(req.GetSourceVolumeIds()) == 0 {
		return nil, invalid("source volume IDs are missing")
	}
	for k := range req.GetParameters() {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			return nil, invalid("unknown group snapshot parameter %q: this driver takes none", k)
		}
	}
	ids := slices.Clone(req.GetSourceVolumeIds())
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		return nil, invalid("a volume is named twice")
	}
	for _, id := range ids {
		if err := s.d.checkID(id); err != nil {
			return nil, err
		}
	}
	release, err := s.d.locks.acquire(append([]string{"group-name/" + req.GetName()}, ids...)...)
	if err != nil {
		return nil, err
	}
	defer release()
	g, err := s.d.backend.CreateGroupSnapshot(ctx, req.GetName(), req.GetSourceVolumeIds())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: csiGroup(g)}, nil
}

func (s *groupControllerServer) DeleteVolumeGroupSnapshot(ctx context.Context, req *csi.DeleteVolumeGroupSnapshotRequest) (*csi.DeleteVolumeGroupSnapshotResponse, error) {
	if req.GetGroupSnapshotId() == "" {
		return nil, invalid("group snapshot ID is missing")
	}
	release, err := s.d.locks.acquire(req.GetGroupSnapshotId())
	if err != nil {
		return nil, err
	}
	defer release()
	if len(req.GetSnapshotIds()) > 0 {
		g, err := s.d.backend.GetGroupSnapshot(ctx, req.GetGroupSnapshotId())
		if err == nil && !sameIDs(g.SnapshotIDs, req.GetSnapshotIds()) {
			return nil, invalid("snapshot IDs do not match the members of group %s", g.ID)
		}
	}
	err = s.d.backend.DeleteGroupSnapshot(ctx, req.GetGroupSnapshotId())
	if err != nil && !errors.Is(err, backend.ErrInvalid) {
		return nil, toStatus(err)
	}
	return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
}

func sameIDs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func (s *groupControllerServer) GetVolumeGroupSnapshot(ctx context.Context, req *csi.GetVolumeGroupSnapshotRequest) (*csi.GetVolumeGroupSnapshotResponse, error) {
	if req.GetGroupSnapshotId() == "" {
		return nil, invalid("group snapshot ID is missing")
	}
	g, err := s.d.backend.GetGroupSnapshot(ctx, req.GetGroupSnapshotId())
	if err != nil {
		return nil, toStatus(err)
	}
	if len(req.GetSnapshotIds()) > 0 && !sameIDs(g.SnapshotIDs, req.GetSnapshotIds()) {
		return nil, invalid("snapshot IDs do not match the members of group %s", g.ID)
	}
	return &csi.GetVolumeGroupSnapshotResponse{GroupSnapshot: csiGroup(g)}, nil
}
