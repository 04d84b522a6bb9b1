package adapt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/internal/testutil"
	"github.com/volplug/volplug/pkg/flex"
)

// env is one adapter over one test driver, with its servers called
// directly (the gRPC layer is csi-sanity's to test).
type env struct {
	t    *testing.T
	dir  string
	a    *Adapter
	node *nodeServer
	ctrl *controllerServer
}

func newEnv(t *testing.T, script string, timeout time.Duration) *env {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	exe, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(context.Background(), Options{DriverPath: exe, Name: "flex.test.io", NodeID: "n1", CallTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, a: a, node: &nodeServer{a: a}, ctrl: &controllerServer{a: a}}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}
}

var rwo = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)

func wantCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), contains) {
		t.Fatalf("err = %v, want %s containing %q", err, code, contains)
	}
}

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	on, err := mount.New().Mounted(path)
	if err != nil {
		t.Fatal(err)
	}
	return on != nil
}

func (e *env) publish(ctx context.Context, id, target string, volCtx map[string]string) error {
	_, err := e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: id, TargetPath: target, VolumeCapability: rwo, VolumeContext: volCtx})
	return err
}

// The seed's kind of script, served as CSI: mount and unmount only, what
// kubelet would have put in the JSON, nothing left behind.
func TestBindDriver(t *testing.T) {
	e := newEnv(t, "bind.sh", time.Minute)
	ctx := context.Background()
	src := filepath.Join(e.dir, "src")
	target := filepath.Join(e.dir, "pods", "p1", "vol")
	echo := filepath.Join(e.dir, "echo.json")
	t.Setenv("FLEX_TEST_ECHO", echo)
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}

	caps, _ := e.node.NodeGetCapabilities(ctx, nil)
	if len(caps.GetCapabilities()) != 0 {
		t.Errorf("node capabilities %v: a mount-only driver stages nothing", caps)
	}
	if _, err := e.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{rwo}}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CreateVolume: %v, want UNIMPLEMENTED", err)
	}
	block := &csi.VolumeCapability{AccessMode: rwo.AccessMode, AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}
	_, err := e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v1", TargetPath: target, VolumeCapability: block})
	wantCode(t, err, codes.InvalidArgument, "raw block")

	req := &csi.NodePublishVolumeRequest{
		VolumeId: "v1", TargetPath: target, VolumeCapability: rwo,
		VolumeContext: map[string]string{"source": src, "csi.storage.k8s.io/pod.name": "p1",
			"csi.storage.k8s.io/pod.namespace": "ns", "csi.storage.k8s.io/ephemeral": "false"},
		Secrets: map[string]string{"password": "hunter2"},
	}
	for range 2 { // a repeat is a success
		if _, err := e.node.NodePublishVolume(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "f")); err != nil {
		t.Fatalf("not bind-mounted: %v", err)
	}
	var got map[string]string
	data, _ := os.ReadFile(echo)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("driver JSON %q: %v", data, err)
	}
	want := map[string]string{
		flex.KeyPVOrVolumeName: "v1", flex.KeyReadWrite: "rw", flex.KeyFsType: "", "source": src,
		flex.KeyPodName: "p1", flex.KeyPodNamespace: "ns",
		flex.SecretPrefix + "password": base64.StdEncoding.EncodeToString([]byte("hunter2")),
	}
	if len(got) != len(want) {
		t.Errorf("driver JSON %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("driver JSON %s = %q, want %q", k, got[k], v)
		}
	}
	for range 2 {
		if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v1", TargetPath: target}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target left behind: %v", err)
	}
	testutil.CheckClean(t, e.dir)
}

// An attachable driver with no mount call: attach, waitforattach and
// mountdevice stage a real loop device; publish is kubelet's bind mount.
func TestAttachDriver(t *testing.T) {
	e := newEnv(t, "attach.sh", time.Minute)
	ctx := context.Background()
	img := filepath.Join(e.dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	volCtx := map[string]string{"image": img}
	staging, target := filepath.Join(e.dir, "staging"), filepath.Join(e.dir, "target")

	pub, err := e.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: "v1", NodeId: "n1", VolumeCapability: rwo, VolumeContext: volCtx})
	if err != nil {
		t.Fatal(err)
	}
	if pub.PublishContext[publishDevice] != img {
		t.Fatalf("publish context %v", pub.PublishContext)
	}
	stage := &csi.NodeStageVolumeRequest{VolumeId: "v1", StagingTargetPath: staging, VolumeCapability: rwo,
		PublishContext: pub.PublishContext, VolumeContext: volCtx}
	for range 2 {
		if _, err := e.node.NodeStageVolume(ctx, stage); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v1", TargetPath: target, VolumeCapability: rwo})
	wantCode(t, err, codes.FailedPrecondition, "staging")
	if _, err := e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v1", TargetPath: target,
		StagingTargetPath: staging, VolumeCapability: rwo, VolumeContext: volCtx}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(staging, "f")); err != nil {
		t.Fatalf("publish is not a bind of the staged filesystem: %v", err)
	}
	got, err := e.ctrl.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: "v1"})
	if err != nil || len(got.GetStatus().GetPublishedNodeIds()) != 1 || got.GetStatus().GetPublishedNodeIds()[0] != "n1" {
		t.Errorf("ControllerGetVolume = %v, %v: want published on n1 (isattached)", got, err)
	}
	if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v1", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := e.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "v1", StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
	}
	if isMounted(t, staging) || isMounted(t, target) {
		t.Error("still mounted")
	}
	if _, err := e.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: "v1", NodeId: "n1"}); err != nil {
		t.Fatal(err)
	}
	testutil.CheckClean(t, e.dir)
}

// processGone reports whether pid has exited (a zombie no one reaped yet
// counts: it runs nothing and holds no pipe).
func processGone(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

func readPid(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// A driver that hangs is killed, with what it forked, at --call-timeout
// or at the RPC's deadline; calls on one volume are serialized, different
// volumes run at once.
func TestHangingDriver(t *testing.T) {
	e := newEnv(t, "hang.sh", 2*time.Second)
	pidFile := filepath.Join(e.dir, "child.pid")
	t.Setenv("FLEX_TEST_PIDFILE", pidFile)
	ctx := context.Background()

	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, id := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.publish(ctx, id, filepath.Join(e.dir, id), nil)
		}()
	}
	time.Sleep(500 * time.Millisecond)
	wantCode(t, e.publish(ctx, "a", filepath.Join(e.dir, "a2"), nil), codes.Aborted, "in progress")
	wg.Wait()
	for _, err := range errs {
		wantCode(t, err, codes.DeadlineExceeded, "killed")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("two hanging calls on two volumes took %v: they should run at once", d)
	}
	if pid := readPid(t, pidFile); !processGone(pid) {
		t.Errorf("the driver's child %d outlived the timeout", pid)
	}
	for _, id := range []string{"a", "b", "a2"} {
		if _, err := os.Stat(filepath.Join(e.dir, id)); !os.IsNotExist(err) {
			t.Errorf("target %s left behind: %v", id, err)
		}
	}

	// The RPC's own deadline counts too.
	os.Remove(pidFile)
	long := newEnv(t, "hang.sh", time.Hour)
	rpcCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	wantCode(t, long.publish(rpcCtx, "c", filepath.Join(e.dir, "c"), nil), codes.DeadlineExceeded, "killed")
	if pid := readPid(t, pidFile); !processGone(pid) {
		t.Errorf("the driver's child %d outlived the RPC deadline", pid)
	}
	testutil.CheckClean(t, e.dir)
}

func TestGarbageOutput(t *testing.T) {
	e := newEnv(t, "garbage.sh", time.Minute)
	wantCode(t, e.publish(context.Background(), "v", filepath.Join(e.dir, "t"), nil), codes.Internal, `"mounting `)
}

func TestSuccessWithFailingExit(t *testing.T) {
	e := newEnv(t, "exit1.sh", time.Minute)
	wantCode(t, e.publish(context.Background(), "v", filepath.Join(e.dir, "t"), nil), codes.Internal, "answered Success but exit status 1")
}

// A daemon the driver leaves holding the output pipe (a FUSE server) does
// not hang the call: the answer is read once the driver itself exits.
func TestDaemonHoldingOutput(t *testing.T) {
	e := newEnv(t, "daemon.sh", time.Minute)
	pidFile := filepath.Join(e.dir, "daemon.pid")
	t.Setenv("FLEX_TEST_PIDFILE", pidFile)
	ctx := context.Background()
	target := filepath.Join(e.dir, "t")
	start := time.Now()
	if err := e.publish(ctx, "v", target, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("publish took %v", d)
	}
	pid := readPid(t, pidFile)
	if processGone(pid) {
		t.Error("the daemon of a successful call was killed")
	}
	_ = killPid(pid)
	if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	testutil.CheckClean(t, e.dir)
}

// kubelet's defaults for an attachable driver without mountdevice or
// expandfs: the adapter formats (only a blank device) and mounts it, and
// grows the mounted filesystem itself (xfs: it grows online without
// CAP_SYS_RESOURCE, which some sandboxes lack).
func TestAttachDriverDefaults(t *testing.T) {
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("needs xfsprogs (make deps)")
	}
	t.Setenv("FLEX_TEST_DEFAULTS", "1")
	e := newEnv(t, "attach.sh", time.Minute)
	if !e.a.feat.expandNode || e.a.feat.expandCtrl {
		t.Fatalf("features %+v: want node expansion (generic resize) only", e.a.feat)
	}
	ctx := context.Background()
	img := filepath.Join(e.dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 320<<20); err != nil {
		t.Fatal(err)
	}
	xfs := &csi.VolumeCapability{AccessMode: rwo.AccessMode,
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "xfs"}}}
	volCtx := map[string]string{"image": img}
	staging, target := filepath.Join(e.dir, "staging"), filepath.Join(e.dir, "target")
	pub, err := e.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: "v1", NodeId: "n1", VolumeCapability: xfs, VolumeContext: volCtx})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "v1", StagingTargetPath: staging,
		VolumeCapability: xfs, PublishContext: pub.PublishContext, VolumeContext: volCtx}); err != nil {
		t.Fatal(err)
	}
	on, err := mount.New().Mounted(staging)
	if err != nil || on == nil || on.FSType != "xfs" || !strings.HasPrefix(on.Source, "/dev/loop") {
		t.Fatalf("staging mount %+v, %v: want xfs on a loop device", on, err)
	}
	if _, err := e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v1", TargetPath: target,
		StagingTargetPath: staging, VolumeCapability: xfs, VolumeContext: volCtx}); err != nil {
		t.Fatal(err)
	}
	before := fsSize(t, target)
	if err := os.Truncate(img, 480<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("losetup", "-c", on.Source).CombinedOutput(); err != nil {
		t.Fatalf("losetup -c: %v %s", err, out)
	}
	if _, err := e.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "v1", VolumePath: target,
		StagingTargetPath: staging, CapacityRange: &csi.CapacityRange{RequiredBytes: 480 << 20}}); err != nil {
		t.Fatal(err)
	}
	if after := fsSize(t, target); after <= before {
		t.Errorf("filesystem %d bytes before, %d after: not grown", before, after)
	}
	if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v1", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "v1", StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	testutil.CheckClean(t, e.dir)
}

func fsSize(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}
