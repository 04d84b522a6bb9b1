package csi

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/backend"
)

// fakeBackend returns canned errors so the error paths of the CSI layer can
// be checked without a kernel. The real path is tested by test/sanity.
type fakeBackend struct {
	err    error
	vol    *backend.Volume
	vols   []*backend.Volume
	last   *backend.CreateRequest
	caps   backend.Capabilities
	staged *backend.StageRequest
}

func (f *fakeBackend) CreateVolume(ctx context.Context, r *backend.CreateRequest) (*backend.Volume, error) {
	f.last = r
	return f.vol, f.err
}
func (f *fakeBackend) DeleteVolume(ctx context.Context, id string, _ backend.Secrets) error {
	return f.err
}
func (f *fakeBackend) GetVolume(ctx context.Context, id string) (*backend.Volume, error) {
	return f.vol, f.err
}
func (f *fakeBackend) ListVolumes(ctx context.Context) ([]*backend.Volume, error) {
	return f.vols, f.err
}
func (f *fakeBackend) Capacity(ctx context.Context) (int64, error) { return 1 << 30, f.err }
func (f *fakeBackend) Attach(ctx context.Context, id, node string, ro bool, max int) error {
	return f.err
}
func (f *fakeBackend) ModifyVolume(ctx context.Context, id string, p map[string]string) error {
	return f.err
}
func (f *fakeBackend) Detach(ctx context.Context, id, node string) error { return f.err }
func (f *fakeBackend) Stage(ctx context.Context, r *backend.StageRequest) error {
	f.staged = r
	return f.err
}
func (f *fakeBackend) Unstage(ctx context.Context, id, path string) error           { return f.err }
func (f *fakeBackend) Publish(ctx context.Context, r *backend.PublishRequest) error { return f.err }
func (f *fakeBackend) Unpublish(ctx context.Context, id, path string) error         { return f.err }
func (f *fakeBackend) ExpandVolume(ctx context.Context, id string, size int64, _ backend.Secrets) (int64, bool, error) {
	return size, true, f.err
}
func (f *fakeBackend) VolumeHealth(ctx context.Context, id string) (*backend.Health, error) {
	return &backend.Health{}, f.err
}
func (f *fakeBackend) CreateSnapshot(ctx context.Context, name, src string) (*backend.Snapshot, error) {
	return &backend.Snapshot{ID: "snap-1", SourceVolumeID: src}, f.err
}
func (f *fakeBackend) DeleteSnapshot(ctx context.Context, id string) error { return f.err }
func (f *fakeBackend) GetSnapshot(ctx context.Context, id string) (*backend.Snapshot, error) {
	return &backend.Snapshot{ID: id}, f.err
}
func (f *fakeBackend) ListSnapshots(ctx context.Context) ([]*backend.Snapshot, error) {
	return nil, f.err
}
func (f *fakeBackend) CreateGroupSnapshot(ctx context.Context, name string, ids []string) (*backend.GroupSnapshot, error) {
	return &backend.GroupSnapshot{ID: "group-1"}, f.err
}
func (f *fakeBackend) DeleteGroupSnapshot(ctx context.Context, id string) error { return f.err }
func (f *fakeBackend) GetGroupSnapshot(ctx context.Context, id string) (*backend.GroupSnapshot, error) {
	return &backend.GroupSnapshot{ID: id}, f.err
}
func (f *fakeBackend) ExpandFilesystem(ctx context.Context, id, path string, _ int64) (int64, error) {
	return 0, f.err
}
func (f *fakeBackend) Stats(ctx context.Context, id, path string) (*backend.Stats, error) {
	return &backend.Stats{}, f.err
}
func (f *fakeBackend) NodeHealth(ctx context.Context, id string, paths ...string) (*backend.Health, error) {
	return &backend.Health{}, f.err
}
func (f *fakeBackend) VolumeAt(ctx context.Context, path string) (string, error) { return "", f.err }
func (f *fakeBackend) StorageHealth(ctx context.Context) (*backend.Health, error) {
	return &backend.Health{}, f.err
}

// Capabilities are a node-local backend's (as local's) unless a test set
// others.
func (f *fakeBackend) Capabilities() backend.Capabilities {
	if f.caps == (backend.Capabilities{}) {
		return backend.Capabilities{NodeLocal: true, Listing: true, Attach: true}
	}
	return f.caps
}
func (f *fakeBackend) ValidateID(id string) error { return nil }

func newTestDriver(t *testing.T, b backend.Backend, attach bool) *Driver {
	t.Helper()
	d, err := New(Options{Name: "local.csi.volplug.io", NodeID: "n1", EnableAttach: attach}, b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "xfs"}},
	}
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v (%v), want %v", status.Code(err), err, code)
	}
}

func TestBackendErrorsMapToCodes(t *testing.T) {
	for kind, code := range map[error]codes.Code{
		backend.ErrNotFound:        codes.NotFound,
		backend.ErrAlreadyExists:   codes.AlreadyExists,
		backend.ErrInvalid:         codes.InvalidArgument,
		backend.ErrOutOfRange:      codes.OutOfRange,
		backend.ErrNoSpace:         codes.ResourceExhausted,
		backend.ErrLimit:           codes.ResourceExhausted,
		backend.ErrInUse:           codes.FailedPrecondition,
		backend.ErrPrecondition:    codes.FailedPrecondition,
		backend.ErrUnsupported:     codes.Unimplemented,
		context.Canceled:           codes.Canceled,
		errors.New("disk on fire"): codes.Internal,
	} {
		err := toStatus(fmt.Errorf("volume x: %w", kind))
		if status.Code(err) != code {
			t.Errorf("%v -> %v, want %v", kind, status.Code(err), code)
		}
		if len(status.Convert(err).Details()) != 0 {
			t.Errorf("status details must stay empty")
		}
	}
	if toStatus(nil) != nil {
		t.Error("nil must stay nil")
	}
}

func TestCreateVolumeValidation(t *testing.T) {
	fb := &fakeBackend{vol: &backend.Volume{ID: "vol-1", Size: 1 << 30, Node: "n1"}}
	c := &controllerServer{d: newTestDriver(t, fb, false)}
	ctx := context.Background()
	good := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	long := string(make([]byte, 129))
	for name, req := range map[string]*csi.CreateVolumeRequest{
		"no name":         {VolumeCapabilities: []*csi.VolumeCapability{good}},
		"long name":       {Name: long, VolumeCapabilities: []*csi.VolumeCapability{good}},
		"no caps":         {Name: "a"},
		"multi node":      {Name: "a", VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}},
		"no access type":  {Name: "a", VolumeCapabilities: []*csi.VolumeCapability{{AccessMode: good.AccessMode}}},
		"block and mount": {Name: "a", VolumeCapabilities: []*csi.VolumeCapability{good, {AccessMode: good.AccessMode, AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.CreateVolume(ctx, req)
			wantCode(t, err, codes.InvalidArgument)
		})
	}

	resp, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{good},
		Parameters: map[string]string{"csi.storage.k8s.io/pvc/name": "claim"}})
	if err != nil {
		t.Fatal(err)
	}
	if fb.last.FsType != "xfs" || resp.Volume.AccessibleTopology[0].Segments[TopologyKey] != "n1" {
		t.Errorf("fs %q, topology %v", fb.last.FsType, resp.Volume.AccessibleTopology)
	}

	_, err = c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "a", VolumeCapabilities: []*csi.VolumeCapability{good},
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{{Segments: map[string]string{TopologyKey: "other"}}}}})
	wantCode(t, err, codes.ResourceExhausted)

	fb.err = fmt.Errorf("pool: %w", backend.ErrNoSpace)
	_, err = c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "b", VolumeCapabilities: []*csi.VolumeCapability{good}})
	wantCode(t, err, codes.ResourceExhausted)
}

func TestStageRequiresAttachWhenAttachIsOn(t *testing.T) {
	fb := &fakeBackend{vol: &backend.Volume{ID: "vol-1"}}
	n := &nodeServer{d: newTestDriver(t, fb, true)}
	req := &csi.NodeStageVolumeRequest{VolumeId: "vol-1", StagingTargetPath: "/var/lib/kubelet/plugins/x/globalmount",
		VolumeCapability: mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}
	_, err := n.NodeStageVolume(context.Background(), req)
	wantCode(t, err, codes.FailedPrecondition)
	fb.vol.AttachedTo = []string{"n1"}
	if _, err := n.NodeStageVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if fb.staged.ReadOnly {
		t.Error("staged read-only without being asked")
	}
	// A read-only attachment (ControllerPublish readonly) reaches the node.
	req.PublishContext = map[string]string{publishReadOnly: "true"}
	if _, err := n.NodeStageVolume(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if !fb.staged.ReadOnly {
		t.Error("a read-only attachment was staged read-write")
	}
}

func TestNodePathValidation(t *testing.T) {
	n := &nodeServer{d: newTestDriver(t, &fakeBackend{vol: &backend.Volume{ID: "v"}}, false)}
	ctx := context.Background()
	capa := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	for _, p := range []string{"relative/path", "/var/lib/kubelet/../../etc", "/a\x00b"} {
		_, err := n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: p, VolumeCapability: capa})
		wantCode(t, err, codes.InvalidArgument)
	}
	_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v", TargetPath: "/t", VolumeCapability: capa})
	wantCode(t, err, codes.FailedPrecondition) // staging path missing while STAGE_UNSTAGE is advertised
	// Any kubelet root directory works.
	_, err = n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v", TargetPath: "/data/kubelet/pods/uid/volumes/kubernetes.io~csi/pv/mount",
		StagingTargetPath: "/data/kubelet/plugins/kubernetes.io/csi/local.csi.volplug.io/hash/globalmount", VolumeCapability: capa})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBusyVolumeIsAborted(t *testing.T) {
	l := newKeyLocks()
	release, err := l.acquire("vol-1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.acquire("vol-1")
	wantCode(t, err, codes.Aborted)
	if _, err := l.acquire("vol-3", "vol-1"); status.Code(err) != codes.Aborted {
		t.Fatalf("a set with a busy key: %v", err)
	}
	if r3, err := l.acquire("vol-3"); err != nil {
		t.Fatalf("a failed set must take nothing: %v", err)
	} else {
		r3()
	}
	if r2, err := l.acquire("vol-2"); err != nil {
		t.Fatalf("another volume must not wait: %v", err)
	} else {
		r2()
	}
	release()
	if _, err := l.acquire("vol-1"); err != nil {
		t.Fatalf("released lock still held: %v", err)
	}
}

func TestPaginate(t *testing.T) {
	all := []string{"a", "b", "c", "d", "e"}
	id := func(s string) string { return s }
	page, next, err := paginate(all, id, "", 2)
	if err != nil || len(page) != 2 || next != tokenPrefix+"c" {
		t.Fatalf("first page %v %q %v", page, next, err)
	}
	// "c" is deleted between calls: the next page starts at "d", nothing repeats.
	page, next, err = paginate([]string{"a", "b", "d", "e"}, id, next, 2)
	if err != nil || len(page) != 2 || page[0] != "d" || next != "" {
		t.Fatalf("second page %v %q %v", page, next, err)
	}
	_, _, err = paginate(all, id, "garbage", 2)
	wantCode(t, err, codes.Aborted)
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Name: "-bad", NodeID: "n"},
		{Name: "ok.driver", NodeID: ""},
		{Name: "ok.driver", NodeID: "n", Mode: "sideways"},
		{Name: "ok.driver", NodeID: "n", MaxVolumesPerNode: -1},
	} {
		if _, err := New(o, &fakeBackend{}); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///csi/csi.sock": "unix /csi/csi.sock",
		"/csi/csi.sock":        "unix /csi/csi.sock",
		"unix://rel/csi.sock":  "unix rel/csi.sock",
		"tcp://127.0.0.1:9000": "tcp 127.0.0.1:9000",
	} {
		n, a, err := ParseEndpoint(in)
		if err != nil || n+" "+a != want {
			t.Errorf("%s -> %s %s %v", in, n, a, err)
		}
	}
	for _, bad := range []string{"http://x", "unix://", "tcp://", "csi.sock"} {
		if _, _, err := ParseEndpoint(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestCallsAreMeasured(t *testing.T) {
	d := newTestDriver(t, &fakeBackend{}, false)
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodeStageVolume"}
	fail := func(ctx context.Context, req any) (any, error) { return nil, status.Error(codes.NotFound, "gone") }
	_, _ = d.interceptor(context.Background(), &csi.NodeStageVolumeRequest{Secrets: map[string]string{"k": "secret"}}, info, fail)
	families, err := d.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "volplug_csi_call_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] == info.FullMethod && labels["code"] == "NotFound" && m.GetHistogram().GetSampleCount() == 1 {
				return
			}
		}
	}
	t.Fatal("the failed call was not counted by method and code")
}
