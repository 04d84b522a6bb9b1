package bench

import (
	"github.com/volplug/volplug/internal/testutil"

	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The test binary doubles as a minimal CSI driver, so the runner (process
// start, socket wait, cycle, teardown, leftover check) can be tested
// end-to-end without depending on the real driver, which lives elsewhere
// and may be broken. It does the floor's commands inside the RPCs.
const fakeDriverEnv = "VOLPLUG_BENCH_FAKE_CSI"

func TestMain(m *testing.M) {
	if os.Getenv(fakeDriverEnv) != "" {
		if err := runFakeDriver(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "fake driver:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type fakeDriver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	nodeID, pool string
	leakMount    bool // "leak": skip the target unmount, to test detection
	floor        *Floor
	mu           sync.Mutex
	devs         map[string]string // volume id -> loop device
}

func runFakeDriver(args []string) error {
	d := &fakeDriver{devs: map[string]string{}, leakMount: os.Getenv(fakeDriverEnv) == "leak"}
	var sock string
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--endpoint":
			sock = strings.TrimPrefix(v, "unix://")
		case "--node-id":
			d.nodeID = v
		case "--pool":
			d.pool = v
		}
	}
	d.floor = &Floor{Dir: d.pool, FsType: "ext4", Timeout: time.Minute}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		<-ch
		srv.GracefulStop()
	}()
	return srv.Serve(l)
}

func (d *fakeDriver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "fake.bench.volplug", VendorVersion: "test"}, nil
}

func (d *fakeDriver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func rpcCap(t csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
	return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
}

func (d *fakeDriver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		rpcCap(csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME),
	}}, nil
}

func (d *fakeDriver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}},
	}}}, nil
}

func (d *fakeDriver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID}, nil
}

func (d *fakeDriver) img(id string) string { return filepath.Join(d.pool, id+".img") }

func internal(err error) error { return status.Error(codes.Internal, err.Error()) }

func (d *fakeDriver) CreateVolume(ctx context.Context, r *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	size := fmt.Sprint(r.GetCapacityRange().GetRequiredBytes())
	if _, err := d.floor.run(ctx, "truncate", "-s", size, d.img(r.GetName())); err != nil {
		return nil, internal(err)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: r.GetName(), CapacityBytes: r.GetCapacityRange().GetRequiredBytes()}}, nil
}

func (d *fakeDriver) DeleteVolume(ctx context.Context, r *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := os.Remove(d.img(r.GetVolumeId())); err != nil && !os.IsNotExist(err) {
		return nil, internal(err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *fakeDriver) NodeStageVolume(ctx context.Context, r *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	out, err := d.floor.run(ctx, "losetup", "--find", "--show", d.img(r.GetVolumeId()))
	if err != nil {
		return nil, internal(err)
	}
	dev := strings.TrimSpace(out)
	d.mu.Lock()
	d.devs[r.GetVolumeId()] = dev
	d.mu.Unlock()
	if _, err := d.floor.run(ctx, "mkfs.ext4", "-q", dev); err != nil {
		return nil, internal(err)
	}
	if _, err := d.floor.run(ctx, "mount", dev, r.GetStagingTargetPath()); err != nil {
		return nil, internal(err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

func (d *fakeDriver) NodeUnstageVolume(ctx context.Context, r *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if isMountPoint(r.GetStagingTargetPath()) && !d.leakMount {
		if _, err := d.floor.run(ctx, "umount", r.GetStagingTargetPath()); err != nil {
			return nil, internal(err)
		}
	}
	d.mu.Lock()
	dev := d.devs[r.GetVolumeId()]
	delete(d.devs, r.GetVolumeId())
	d.mu.Unlock()
	if dev != "" && !d.leakMount {
		if _, err := d.floor.run(ctx, "losetup", "-d", dev); err != nil {
			return nil, internal(err)
		}
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *fakeDriver) NodePublishVolume(ctx context.Context, r *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if err := os.Mkdir(r.GetTargetPath(), 0o750); err != nil {
		return nil, internal(err)
	}
	if _, err := d.floor.run(ctx, "mount", "--bind", r.GetStagingTargetPath(), r.GetTargetPath()); err != nil {
		return nil, internal(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *fakeDriver) NodeUnpublishVolume(ctx context.Context, r *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if isMountPoint(r.GetTargetPath()) {
		if _, err := d.floor.run(ctx, "umount", r.GetTargetPath()); err != nil {
			return nil, internal(err)
		}
	}
	if err := os.Remove(r.GetTargetPath()); err != nil && !os.IsNotExist(err) {
		return nil, internal(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func fakeConfig(t *testing.T) Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Binary: exe, TempParent: t.TempDir(), Levels: []int{1, 4}, Cycles: 6,
		Warmup: 1, FloorAll: true, RPCTimeout: time.Minute,
	}
}

// TestRunAgainstFakeDriver runs the whole bench, small, against the fake
// driver: figures come out and nothing is left behind.
func TestRunAgainstFakeDriver(t *testing.T) {
	testutil.RequireRoot(t)
	t.Setenv(fakeDriverEnv, "1")
	rep, err := Run(t.Context(), fakeConfig(t))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(rep.Levels) != 2 || rep.Levels[1].Driver.Cycles != 6 || rep.Levels[1].Floor.Cycles != 6 {
		t.Fatalf("levels: %+v", rep.Levels)
	}
	if rep.Headline.Ratio == 0 || rep.Memory.IdleMiB == 0 || rep.Memory.PeakMiB == 0 || rep.Memory.HWMMiB == 0 {
		t.Errorf("missing figures: headline %+v memory %+v", rep.Headline, rep.Memory)
	}
	if _, err := os.Stat(rep.Setup.Dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s not removed: %v", rep.Setup.Dir, err)
	}
	if err := rep.WriteText(os.Stderr); err != nil {
		t.Error(err)
	}
}

// TestRunDetectsLeaks: a driver that never unmounts the staging path nor
// detaches its loop device must fail the run loudly, and the bench must
// still leave the machine clean.
func TestRunDetectsLeaks(t *testing.T) {
	testutil.RequireRoot(t)
	t.Setenv(fakeDriverEnv, "leak")
	cfg := fakeConfig(t)
	cfg.Levels, cfg.Cycles, cfg.Warmup = []int{1}, 2, 0
	rep, err := Run(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), "LEFTOVERS") {
		t.Fatalf("leak not reported: %v", err)
	}
	if rep.Leftovers == nil || len(rep.Leftovers.Mounts) == 0 || len(rep.Leftovers.Loops) == 0 {
		t.Errorf("leftovers: %+v", rep.Leftovers)
	}
	if l, ferr := FindLeftovers(cfg.TempParent); ferr != nil || !l.Empty() {
		t.Errorf("still left behind after forced cleanup: %v %v", l, ferr)
	}
}
