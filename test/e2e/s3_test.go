package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/testutil"
)

// s3Driver starts `volplug csi --backend=s3` with its mounter's socket,
// state and log in dir; the driver starts the mounter itself, detached.
func s3Driver(t *testing.T, dir string) *driver {
	t.Helper()
	d := &driver{t: t, bin: testutil.BuildVolplug(t, t.TempDir()), dir: dir, metrics: freeAddress(t), name: "s3driver",
		extra: []string{"--backend=s3", "--mounter-socket=" + filepath.Join(dir, "run", "mounter.sock"),
			"--mounter-state-dir=" + filepath.Join(dir, "mounter"), "--mounter-log=" + filepath.Join(dir, "mounter.log")}}
	d.start()
	t.Cleanup(func() {
		d.stop(syscall.SIGKILL)
		for _, pid := range processesNaming(t, "mounter\x00--socket\x00"+filepath.Join(dir, "run", "mounter.sock")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return d
}

// processesNaming lists the processes with s in their argv.
func processesNaming(t *testing.T, s string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

// Buckets outlive the driver: kill -9 of `volplug csi` leaves a published
// bucket working and the restarted driver takes it down; kill -9 of the
// mounter is seen by health, cleaned up by unpublish and unstage, and a new
// stage mounts the bucket again with its data.
func TestS3MountsOutliveTheDriver(t *testing.T) {
	testutil.RequireRoot(t)
	s3 := testutil.StartS3Server(t)
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	d := s3Driver(t, dir)
	ctx := context.Background()
	secrets := map[string]string{"accessKeyID": s3.AccessKey, "secretAccessKey": s3.SecretKey, "endpoint": s3.Endpoint}
	capa := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	}
	created, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-survivor", Secrets: secrets,
		VolumeCapabilities: []*csi.VolumeCapability{capa}, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
	noErr(t, err)
	vol := created.Volume
	staging, target := filepath.Join(dir, "kubelet", "staging"), filepath.Join(dir, "kubelet", "pod", "vol")
	stage := &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, VolumeCapability: capa,
		VolumeContext: vol.VolumeContext, Secrets: secrets}
	publish := &csi.NodePublishVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: capa, VolumeContext: vol.VolumeContext}
	_, err = d.node.NodeStageVolume(ctx, stage)
	noErr(t, err)
	_, err = d.node.NodePublishVolume(ctx, publish)
	noErr(t, err)
	noErr(t, os.WriteFile(filepath.Join(target, "before"), []byte("written before the crash"), 0o644))

	d.stop(syscall.SIGKILL)
	noErr(t, os.WriteFile(filepath.Join(target, "during"), []byte("written while no driver ran"), 0o644))
	if got, err := os.ReadFile(filepath.Join(target, "before")); err != nil || string(got) != "written before the crash" {
		t.Fatalf("the bucket after kill -9 of the driver: %q %v", got, err)
	}
	d.start()
	stats, err := d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: vol.VolumeId, VolumePath: target})
	noErr(t, err)
	if stats.Usage[0].Total != 64<<20 {
		t.Errorf("stats after the restart: %v, want the 64 MiB quota", stats.Usage)
	}
	_, err = d.node.NodeStageVolume(ctx, stage) // kubelet may repeat it
	noErr(t, err)

	// The mounter dies: every access fails, and health says so.
	mounters := processesNaming(t, "mounter\x00--socket\x00"+filepath.Join(dir, "run", "mounter.sock"))
	if len(mounters) != 1 {
		t.Fatalf("mounters running: %v, want one", mounters)
	}
	noErr(t, syscall.Kill(mounters[0], syscall.SIGKILL))
	deadline := time.Now().Add(5 * time.Second)
	for _, err := os.Stat(target); !errors.Is(err, syscall.ENOTCONN); _, err = os.Stat(target) {
		if time.Now().After(deadline) {
			t.Fatalf("after kill -9 of the mounter: %v, want ENOTCONN", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	health, err := d.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: vol.VolumeId,
		StagingTargetPath: staging, VolumePublishPath: target})
	noErr(t, err)
	if !hasStatus(health.VolumeHealth.HealthStatuses, csi.VolumeHealthErrorType_INACCESSIBLE) {
		t.Errorf("health of a mount without its server: %v", health.VolumeHealth.HealthStatuses)
	}
	_, err = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.VolumeId, TargetPath: target})
	noErr(t, err)
	_, err = d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging})
	noErr(t, err)

	// A new stage starts a new mounter; the data is in the bucket.
	_, err = d.node.NodeStageVolume(ctx, stage)
	noErr(t, err)
	_, err = d.node.NodePublishVolume(ctx, publish)
	noErr(t, err)
	for _, f := range []string{"before", "during"} {
		if _, err := os.Stat(filepath.Join(target, f)); err != nil {
			t.Errorf("%s after the mounter's restart: %v", f, err)
		}
	}
	_, err = d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.VolumeId, TargetPath: target})
	noErr(t, err)
	_, err = d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging})
	noErr(t, err)
	_, err = d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId, Secrets: secrets})
	noErr(t, err)
	_, err = d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("delete without secrets: %v, want InvalidArgument", err)
	}
	if _, err := os.Stat(filepath.Join(s3.Dir, vol.VolumeId)); !os.IsNotExist(err) {
		t.Errorf("the bucket outlived its volume: %v", err)
	}
	d.stop(syscall.SIGTERM)
	for _, pid := range processesNaming(t, "mounter\x00--socket\x00"+filepath.Join(dir, "run", "mounter.sock")) {
		noErr(t, syscall.Kill(pid, syscall.SIGTERM))
	}
	testutil.CheckClean(t, dir)
	log, _ := os.ReadFile(filepath.Join(dir, "s3driver.log"))
	mlog, _ := os.ReadFile(filepath.Join(dir, "mounter.log"))
	if bytes.Contains(append(log, mlog...), []byte(s3.SecretKey)) {
		t.Error("the secret key reached a log")
	}
}
