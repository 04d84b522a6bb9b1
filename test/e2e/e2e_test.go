// Package e2e drives the real `volplug csi` process over its unix socket:
// what happens across a crash, and the volume kinds csi-sanity does not
// cover (ephemeral inline volumes, health). It needs root.
package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/ctl"
	"github.com/volplug/volplug/internal/testutil"
)

// driver is one `volplug csi` process on a pool in dir.
type driver struct {
	t    *testing.T
	bin  string
	dir  string
	cmd  *exec.Cmd
	ctrl csi.ControllerClient
	node csi.NodeClient
	// metrics is the driver's Prometheus address on loopback.
	metrics string
	// pool is the pool's path as the driver sees it; nsBind, when set, runs
	// the driver in a mount namespace of its own where the pool is bound
	// there from nsBind (as a container sees the host's pool).
	pool, nsBind string
	name         string   // of its socket and log, so two can share dir
	extra        []string // more flags
}

// freeAddress finds a free loopback port for the metrics server.
func freeAddress(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newDriver(t *testing.T) *driver {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	d := &driver{t: t, bin: testutil.BuildVolplug(t, t.TempDir()), dir: dir, metrics: freeAddress(t),
		pool: filepath.Join(dir, "pool"), name: "driver"}
	d.start()
	t.Cleanup(func() { d.stop(syscall.SIGTERM) })
	return d
}

func (d *driver) sock() string { return "unix://" + filepath.Join(d.dir, d.name+".sock") }

func (d *driver) start() {
	d.t.Helper()
	log, err := os.OpenFile(filepath.Join(d.dir, d.name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	defer log.Close()
	args := []string{"csi", "--endpoint", d.sock(), "--node-id", "e2e-node", "--v", "4", "--metrics-address", d.metrics}
	if d.pool != "" {
		args = append(args, "--pool", d.pool)
	}
	args = append(args, d.extra...)
	d.cmd = exec.Command(d.bin, args...)
	if d.nsBind != "" {
		d.cmd = inNamespace(d.nsBind, d.pool, d.bin, args...)
	}
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		conn, err := ctl.Dial(ctx, d.sock())
		if err == nil {
			id := csi.NewIdentityClient(conn)
			if _, err = id.Probe(ctx, &csi.ProbeRequest{}); err == nil {
				d.ctrl, d.node = csi.NewControllerClient(conn), csi.NewNodeClient(conn)
				return
			}
			conn.Close()
		}
		if ctx.Err() != nil {
			d.t.Fatalf("driver did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *driver) stop(sig syscall.Signal) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	_ = d.cmd.Wait()
	d.cmd = nil
}

func mountCap(fs string, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs, MountFlags: flags}},
	}
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A driver killed with SIGKILL while a volume is published comes back,
// finds the volume staged and published in the kernel's tables, and takes
// it down cleanly.
func TestKilledDriverCarriesOn(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	capa := mountCap("ext4")
	created, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "crash", VolumeCapabilities: []*csi.VolumeCapability{capa},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
	noErr(t, err)
	vol := created.Volume
	staging, target := filepath.Join(d.dir, "staging"), filepath.Join(d.dir, "pod", "vol")
	stage := &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: capa}
	publish := &csi.NodePublishVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, TargetPath: target, VolumeCapability: capa}
	_, err = d.node.NodeStageVolume(ctx, stage)
	noErr(t, err)
	_, err = d.node.NodePublishVolume(ctx, publish)
	noErr(t, err)
	if err := os.WriteFile(filepath.Join(target, "kept"), []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}

	snap, err := d.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "before-crash", SourceVolumeId: vol.VolumeId})
	noErr(t, err)

	d.stop(syscall.SIGKILL)
	d.start()

	// The snapshot outlived the driver, and still holds the data.
	listed, err := d.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: snap.Snapshot.SnapshotId})
	noErr(t, err)
	if len(listed.Entries) != 1 || listed.Entries[0].Snapshot.SourceVolumeId != vol.VolumeId {
		t.Fatalf("snapshot after restart: %v", listed.Entries)
	}

	_, err = d.node.NodeStageVolume(ctx, stage)
	noErr(t, err)
	_, err = d.node.NodePublishVolume(ctx, publish)
	noErr(t, err)
	statsResp, err := d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: vol.VolumeId, VolumePath: target})
	noErr(t, err)
	stats := statsResp
	if total := stats.Usage[0].Total; total > 64<<20 || total < 32<<20 {
		t.Errorf("stats after restart report %d bytes for a 64 MiB volume", total)
	}
	if got, err := os.ReadFile(filepath.Join(target, "kept")); err != nil || string(got) != "still here" {
		t.Fatalf("data after restart: %q %v", got, err)
	}
	_, err = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.VolumeId, TargetPath: target})
	noErr(t, err)
	_, err = d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging})
	noErr(t, err)
	_, err = d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
	noErr(t, err)
	_, err = d.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.Snapshot.SnapshotId})
	noErr(t, err)
	d.stop(syscall.SIGTERM)
	testutil.CheckClean(t, d.dir)
}

// An inline ephemeral volume is made at NodePublish with the size from the
// pod spec, and removed, image and all, at NodeUnpublish.
func TestEphemeralVolume(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	target := filepath.Join(d.dir, "pods", "uid", "volumes", "kubernetes.io~csi", "scratch", "mount")
	req := &csi.NodePublishVolumeRequest{
		VolumeId: "csi-0123456789abcdef", TargetPath: target, VolumeCapability: mountCap(""),
		VolumeContext: map[string]string{"csi.storage.k8s.io/ephemeral": "true", "size": "48Mi", "fsType": "xfs",
			"csi.storage.k8s.io/pod.name": "p"},
	}
	req.VolumeContext["size"] = "lots"
	if _, err := d.node.NodePublishVolume(ctx, req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a size that is not a quantity: %v", err)
	}
	req.VolumeContext["size"] = "48Mi" // below xfs's minimum: raised to 300 MiB
	_, err := d.node.NodePublishVolume(ctx, req)
	noErr(t, err)
	_, err = d.node.NodePublishVolume(ctx, req) // kubelet retries
	noErr(t, err)
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Bsize; size < 200<<20 || size > 300<<20 {
		t.Errorf("ephemeral volume is %d bytes, want about 300 MiB, xfs's minimum", size)
	}
	if st.Type != unix.XFS_SUPER_MAGIC {
		t.Errorf("ephemeral volume is not xfs (magic %x)", st.Type)
	}
	_, err = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: target})
	noErr(t, err)
	_, err = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: target})
	noErr(t, err)
	listResp, err := d.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{})
	noErr(t, err)
	list := listResp
	if len(list.Entries) != 0 {
		t.Errorf("ephemeral volume outlived its pod: %v", list.Entries)
	}
	testutil.CheckClean(t, d.dir)
}

// Health reports what is wrong: a filesystem the kernel made read-only
// after an error, and a disk image deleted from under its loop device.
func TestVolumeHealth(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	capa := mountCap("ext4", "errors=remount-ro")
	created, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "sick", VolumeCapabilities: []*csi.VolumeCapability{capa},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
	noErr(t, err)
	vol := created.Volume
	staging, target := filepath.Join(d.dir, "staging"), filepath.Join(d.dir, "pod", "vol")
	_, err = d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: capa})
	noErr(t, err)
	_, err = d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, TargetPath: target, VolumeCapability: capa})
	noErr(t, err)
	health := func() (ctrl, node []*csi.VolumeHealth_VolumeHealthEntry) {
		cResp, err := d.ctrl.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: vol.VolumeId})
		noErr(t, err)
		c := cResp
		nResp, err := d.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: vol.VolumeId})
		noErr(t, err)
		n := nResp
		return c.VolumeHealth.HealthStatuses, n.VolumeHealth.HealthStatuses
	}
	if c, n := health(); len(c)+len(n) != 0 {
		t.Fatalf("a healthy volume reports %v %v", c, n)
	}

	// ext4 has a switch to report an error as if it had found one.
	dev := loopOf(t, staging)
	if err := os.WriteFile("/sys/fs/ext4/"+filepath.Base(dev)+"/trigger_fs_error", []byte("e2e test"), 0o200); err != nil {
		t.Fatalf("trigger an ext4 error: %v", err)
	}
	if _, n := health(); len(n) == 0 || n[0].Status != csi.VolumeHealthErrorType_DEGRADED {
		t.Errorf("after a filesystem error: node health %v, want DEGRADED", n)
	}

	image := filepath.Join(d.dir, "pool", "volumes", vol.VolumeId, "disk.img")
	if err := os.Rename(image, image+".away"); err != nil {
		t.Fatal(err)
	}
	c, _ := health()
	if len(c) == 0 || c[0].Status != csi.VolumeHealthErrorType_DATA_LOSS {
		t.Errorf("with the image gone: controller health %v, want DATA_LOSS", c)
	}
	if err := os.Rename(image+".away", image); err != nil {
		t.Fatal(err)
	}

	// The CO believes the volume is published at a path where it is not.
	n, err := d.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: vol.VolumeId,
		StagingTargetPath: staging, VolumePublishPath: filepath.Join(d.dir, "pod", "elsewhere")})
	noErr(t, err)
	if !hasStatus(n.VolumeHealth.HealthStatuses, csi.VolumeHealthErrorType_INACCESSIBLE) {
		t.Errorf("volume missing from its publish path: node health %v, want INACCESSIBLE", n.VolumeHealth.HealthStatuses)
	}
	_, err = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.VolumeId, TargetPath: target})
	noErr(t, err)
	_, err = d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging})
	noErr(t, err)
	_, err = d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
	noErr(t, err)
	testutil.CheckClean(t, d.dir)
}

// loopOf returns the loop device mounted at path.
func loopOf(t *testing.T, path string) string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[4] == path {
			for i, x := range f {
				if x == "-" && i+2 < len(f) {
					return f[i+2]
				}
			}
		}
	}
	t.Fatalf("nothing mounted at %s", path)
	return ""
}

// The metrics endpoint counts calls by method and code.
func TestMetrics(t *testing.T) {
	d := newDriver(t)
	_, err := d.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("delete without an ID: %v", err)
	}
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	noErr(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	noErr(t, err)
	want := `volplug_csi_call_duration_seconds_count{code="InvalidArgument",method="/csi.v1.Controller/DeleteVolume"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("metrics lack %s", want)
	}
}

func hasStatus(entries []*csi.VolumeHealth_VolumeHealthEntry, want csi.VolumeHealthErrorType) bool {
	for _, e := range entries {
		if e.Status == want {
			return true
		}
	}
	return false
}

// Secrets in requests never reach the driver's log, even at the verbosity
// that logs every request (--v=4, as this driver runs).
func TestSecretsStayOutOfLogs(t *testing.T) {
	d := newDriver(t)
	const secret = "hunter2-do-not-log-me"
	_, err := d.ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{
		Name: "with-secrets", VolumeCapabilities: []*csi.VolumeCapability{mountCap("ext4")},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20},
		Secrets:       map[string]string{"password": secret},
	})
	noErr(t, err)
	_, err = d.ctrl.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: "bad/id", Secrets: map[string]string{"password": secret}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an ID with a slash: %v", err)
	}
	d.stop(syscall.SIGTERM)
	log, err := os.ReadFile(filepath.Join(d.dir, d.name+".log"))
	noErr(t, err)
	if !strings.Contains(string(log), "CreateVolume") {
		t.Fatal("the driver log does not show the calls; the check below would prove nothing")
	}
	if strings.Contains(string(log), secret) {
		t.Error("a secret reached the driver's log")
	}
}

// A driver killed (SIGKILL) during the background format that follows
// CreateVolume leaves the formatting mark and perhaps a loop device; the
// restarted driver releases the device and the first stage wipes and
// formats again.
func TestKilledDuringBackgroundFormat(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	capa := mountCap("xfs")
	created, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "bg-crash", VolumeCapabilities: []*csi.VolumeCapability{capa},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 512 << 20}})
	noErr(t, err)
	id := created.Volume.VolumeId
	meta := filepath.Join(d.pool, "volumes", id, "volume.json")
	marked := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if data, err := os.ReadFile(meta); err == nil && strings.Contains(string(data), `"formatting": true`) {
			marked = true
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	d.stop(syscall.SIGKILL)
	if !marked {
		t.Log("the format ended before the kill could catch it; testing a restart after a finished one")
	}
	d.start()

	staging, target := filepath.Join(d.dir, "staging"), filepath.Join(d.dir, "pod", "vol")
	_, err = d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: capa})
	noErr(t, err)
	_, err = d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: capa})
	noErr(t, err)
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(meta); err != nil || strings.Contains(string(data), `"formatting": true`) {
		t.Fatalf("mark after the stage: %s %v", data, err)
	}
	_, err = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
	noErr(t, err)
	_, err = d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	noErr(t, err)
	_, err = d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	noErr(t, err)
	d.stop(syscall.SIGTERM)
	testutil.CheckClean(t, d.dir)
}
