package ctl

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeDriver is a tiny in-process CSI server for testing the client only:
// it records every request and answers from fixed data.
type fakeDriver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	mu   sync.Mutex
	reqs []proto.Message
}

func (f *fakeDriver) record(m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, proto.Clone(m))
}

// last returns the last recorded request.
func (f *fakeDriver) last(t *testing.T) proto.Message {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("driver got no request")
	}
	return f.reqs[len(f.reqs)-1]
}

func (f *fakeDriver) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

func (f *fakeDriver) GetPluginInfo(_ context.Context, r *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	f.record(r)
	return &csi.GetPluginInfoResponse{Name: "fake.volplug.io", VendorVersion: "0.0.1", Manifest: map[string]string{"b": "2", "a": "1"}}, nil
}

func (f *fakeDriver) GetPluginCapabilities(_ context.Context, r *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	f.record(r)
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}}, nil
}

func (f *fakeDriver) Probe(_ context.Context, r *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	f.record(r)
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

func (f *fakeDriver) CreateVolume(_ context.Context, r *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	f.record(r)
	if r.GetName() == "exists" {
		return nil, status.Error(codes.AlreadyExists, "volume exists with other size")
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      "id-" + r.GetName(),
		CapacityBytes: r.GetCapacityRange().GetRequiredBytes(),
		VolumeContext: map[string]string{"fsType": "ext4"},
	}}, nil
}

func (f *fakeDriver) DeleteVolume(_ context.Context, r *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	f.record(r)
	return &csi.DeleteVolumeResponse{}, nil
}

func (f *fakeDriver) ControllerPublishVolume(_ context.Context, r *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	f.record(r)
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{"devicePath": "/dev/loop7"}}, nil
}

// ListVolumes serves three volumes, pages of MaxEntries, the token being
// the index of the next entry.
func (f *fakeDriver) ListVolumes(_ context.Context, r *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	f.record(r)
	const total = 3
	start := 0
	if r.GetStartingToken() != "" {
		n, err := strconv.Atoi(r.GetStartingToken())
		if err != nil || n > total {
			return nil, status.Error(codes.Aborted, "bad token")
		}
		start = n
	}
	end := total
	if m := int(r.GetMaxEntries()); m > 0 && start+m < total {
		end = start + m
	}
	resp := &csi.ListVolumesResponse{}
	for i := start; i < end; i++ {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: &csi.Volume{VolumeId: "vol-" + strconv.Itoa(i), CapacityBytes: 1 << 30},
			Status: &csi.ListVolumesResponse_VolumeStatus{PublishedNodeIds: []string{"node-a"}},
		})
	}
	if end < total {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (f *fakeDriver) GetCapacity(_ context.Context, r *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	f.record(r)
	return &csi.GetCapacityResponse{AvailableCapacity: 5 << 30, MaximumVolumeSize: wrapperspb.Int64(4 << 30)}, nil
}

func (f *fakeDriver) ControllerGetCapabilities(_ context.Context, r *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	f.record(r)
	rpc := func(t csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
		return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		rpc(csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME),
		rpc(csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME),
	}}, nil
}

func (f *fakeDriver) CreateSnapshot(_ context.Context, r *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	f.record(r)
	return &csi.CreateSnapshotResponse{Snapshot: &csi.Snapshot{
		SnapshotId: "snap-" + r.GetName(), SourceVolumeId: r.GetSourceVolumeId(), SizeBytes: 42, ReadyToUse: true,
	}}, nil
}

func (f *fakeDriver) ControllerExpandVolume(_ context.Context, r *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	f.record(r)
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: r.GetCapacityRange().GetRequiredBytes(), NodeExpansionRequired: true}, nil
}

func (f *fakeDriver) NodeStageVolume(_ context.Context, r *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	f.record(r)
	return &csi.NodeStageVolumeResponse{}, nil
}

func (f *fakeDriver) NodePublishVolume(_ context.Context, r *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	f.record(r)
	return &csi.NodePublishVolumeResponse{}, nil
}

func (f *fakeDriver) NodeUnpublishVolume(_ context.Context, r *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	f.record(r)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (f *fakeDriver) NodeGetInfo(_ context.Context, r *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	f.record(r)
	return &csi.NodeGetInfoResponse{NodeId: "node-a", MaxVolumesPerNode: 16}, nil
}

func (f *fakeDriver) NodeGetVolumeStats(_ context.Context, r *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	f.record(r)
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: 1000, Used: 100, Available: 900},
		{Unit: csi.VolumeUsage_INODES, Total: 64, Used: 11, Available: 53},
	}}, nil
}

// startFake serves a fakeDriver on a unix socket in a temp dir (or on
// loopback TCP when network is "tcp") and returns it with its endpoint.
func startFake(t *testing.T, network string) (*fakeDriver, string) {
	t.Helper()
	var (
		lis      net.Listener
		err      error
		endpoint string
	)
	if network == "tcp" {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		endpoint = "tcp://" + lis.Addr().String()
	} else {
		sock := filepath.Join(t.TempDir(), "csi.sock")
		lis, err = net.Listen("unix", sock)
		endpoint = "unix://" + sock
	}
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeDriver{}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, f)
	csi.RegisterControllerServer(srv, f)
	csi.RegisterNodeServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f, endpoint
}
