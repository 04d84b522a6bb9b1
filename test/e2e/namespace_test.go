package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/loop"
	"github.com/volplug/volplug/internal/testutil"
)

// The environment that tells this test binary, re-run by inNamespace, to
// bind the pool and become the driver.
const (
	nsBindFrom = "VOLPLUG_E2E_BIND_FROM"
	nsBindTo   = "VOLPLUG_E2E_BIND_TO"
)

func TestMain(m *testing.M) {
	if from := os.Getenv(nsBindFrom); from != "" {
		becomeDriver(from, os.Getenv(nsBindTo), os.Args[1:])
	}
	os.Exit(m.Run())
}

// becomeDriver runs in a fresh mount namespace: it bind-mounts the host's
// pool where the driver will look for it, as a DaemonSet's hostPath volume
// does, and execs the driver, so the namespace lives exactly as long as the
// driver does.
func becomeDriver(from, to string, argv []string) {
	if err := unix.Mount(from, to, "", unix.MS_BIND, ""); err != nil {
		os.Stderr.WriteString("bind the pool: " + err.Error() + "\n")
		os.Exit(2)
	}
	os.Unsetenv(nsBindFrom)
	err := syscall.Exec(argv[0], argv, os.Environ())
	os.Stderr.WriteString("exec the driver: " + err.Error() + "\n")
	os.Exit(2)
}

// inNamespace returns a command that runs bin with args in a new mount
// namespace in which the pool at from is bound at to. The namespace is a
// copy of this one with propagation unchanged: mounts under a shared
// directory (the test's kubelet directory, as kubelet's with Bidirectional
// propagation) reach this namespace, the pool's bind does not.
func inNamespace(from, to, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{bin}, args...)...)
	cmd.Env = append(os.Environ(), nsBindFrom+"="+from, nsBindTo+"="+to)
	// Cloneflags, not Unshareflags: Go makes every mount private after an
	// unshare, which would cut the kubelet directory's propagation.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	return cmd
}

// mountShared makes dir a mount point of its own with the given
// propagation (unix.MS_SHARED or unix.MS_PRIVATE).
func mountShared(t *testing.T, dir string, propagation uintptr) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", dir, "", propagation, ""); err != nil {
		t.Fatal(err)
	}
}

// A driver restarted in another mount namespace (the DaemonSet's container
// after a restart, an upgrade or a crash) takes over the volumes its
// predecessor staged. The kernel then shows each loop device's image by a
// path inside a bind mount that no longer exists, so the volume is found by
// the image's identity: stats, expansion, unpublish, unstage and delete all
// work, delete refuses while the image is held, and nothing is left.
func TestDriverRestartedInAnotherMountNamespace(t *testing.T) {
	for _, tc := range []struct {
		name         string
		firstInNS    bool // the first driver runs in its own namespace
		secondInNS   bool
		wantHintGone bool // the device's sysfs path no longer names the image here
	}{
		{name: "container to host", firstInNS: true, wantHintGone: true},
		{name: "host to container", secondInNS: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.RequireRoot(t)
			dir := t.TempDir()
			t.Cleanup(func() { testutil.Cleanup(dir) })
			bin := testutil.BuildVolplug(t, t.TempDir())
			hostPool := filepath.Join(dir, "pool")
			if err := os.MkdirAll(hostPool, 0o700); err != nil {
				t.Fatal(err)
			}
			mountShared(t, filepath.Join(dir, "kubelet"), unix.MS_SHARED)
			mountShared(t, filepath.Join(dir, "ns"), unix.MS_PRIVATE)
			nsPool := filepath.Join(dir, "ns", "pool")
			if err := os.Mkdir(nsPool, 0o700); err != nil {
				t.Fatal(err)
			}
			newDriverAs := func(name string, inNS bool) *driver {
				d := &driver{t: t, bin: bin, dir: dir, metrics: freeAddress(t), pool: hostPool, name: name}
				if inNS {
					d.pool, d.nsBind = nsPool, hostPool
				}
				d.start()
				t.Cleanup(func() { d.stop(syscall.SIGKILL) })
				return d
			}
			ctx := context.Background()
			capa := mountCap("xfs")
			staging := filepath.Join(dir, "kubelet", "plugins", "globalmount")
			target := filepath.Join(dir, "kubelet", "pods", "uid", "volumes", "mount")

			first := newDriverAs("first", tc.firstInNS)
			created, err := first.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "survivor",
				VolumeCapabilities: []*csi.VolumeCapability{capa}, CapacityRange: &csi.CapacityRange{RequiredBytes: 300 << 20}})
			noErr(t, err)
			id := created.Volume.VolumeId
			_, err = first.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: capa})
			noErr(t, err)
			_, err = first.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id,
				StagingTargetPath: staging, TargetPath: target, VolumeCapability: capa})
			noErr(t, err)
			if err := os.WriteFile(filepath.Join(target, "data"), []byte("kept"), 0o600); err != nil {
				t.Fatal(err)
			}
			// An inline volume, staged in the pool's own staging directory,
			// which (unlike kubelet's) is not shared with the host.
			inline := &csi.NodePublishVolumeRequest{VolumeId: "csi-inline-" + strings.ReplaceAll(tc.name, " ", "-"),
				TargetPath: filepath.Join(dir, "kubelet", "pods", "uid", "volumes", "inline"), VolumeCapability: mountCap(""),
				VolumeContext: map[string]string{"csi.storage.k8s.io/ephemeral": "true", "size": "32Mi"}}
			_, err = first.node.NodePublishVolume(ctx, inline)
			noErr(t, err)
			if err := os.WriteFile(filepath.Join(inline.TargetPath, "scratch"), []byte("in use"), 0o600); err != nil {
				t.Fatal(err)
			}
			first.stop(syscall.SIGKILL) // its mount namespace, if it had one, dies with it

			image := filepath.Join(hostPool, "volumes", id, "disk.img")
			dev, err := loop.Find(image)
			if err != nil || dev == "" {
				t.Fatalf("the image's loop device is gone with the first driver: %q %v", dev, err)
			}
			hint, err := loop.BackingFile(dev)
			noErr(t, err)
			if gone := !strings.HasPrefix(hint, hostPool+"/"); gone != tc.wantHintGone {
				t.Fatalf("sysfs shows %s for the image; this case expects the path to name it here: %v", hint, !tc.wantHintGone)
			}

			second := newDriverAs("second", tc.secondInNS)
			before, err := second.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			noErr(t, err)
			_, err = second.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("delete of a staged volume: %v, want FailedPrecondition", err)
			}
			if _, err := os.Stat(image); err != nil {
				t.Fatalf("a refused delete took the image: %v", err)
			}
			_, err = second.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 400 << 20}, VolumeCapability: capa})
			noErr(t, err)
			_, err = second.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target,
				StagingTargetPath: staging, VolumeCapability: capa, CapacityRange: &csi.CapacityRange{RequiredBytes: 400 << 20}})
			noErr(t, err)
			stats, err := second.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			noErr(t, err)
			if grown := stats.Usage[0].Total - before.Usage[0].Total; grown < 90<<20 {
				t.Errorf("growing by 100 MiB grew the filesystem by %d bytes", grown)
			}
			health, err := second.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id,
				StagingTargetPath: staging, VolumePublishPath: target})
			noErr(t, err)
			if len(health.VolumeHealth.HealthStatuses) != 0 {
				t.Errorf("a healthy volume taken over: %v", health.VolumeHealth.HealthStatuses)
			}
			if got, err := os.ReadFile(filepath.Join(target, "data")); err != nil || string(got) != "kept" {
				t.Fatalf("data: %q %v", got, err)
			}
			// kubelet may publish an inline volume again (after its own
			// restart): the pod keeps its volume and its data.
			_, err = second.node.NodePublishVolume(ctx, inline)
			noErr(t, err)
			if got, err := os.ReadFile(filepath.Join(inline.TargetPath, "scratch")); err != nil || string(got) != "in use" {
				t.Fatalf("inline volume after a repeated publish: %q %v", got, err)
			}
			_, err = second.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: inline.VolumeId, TargetPath: inline.TargetPath})
			noErr(t, err)
			_, err = second.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
			noErr(t, err)
			_, err = second.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
			noErr(t, err)
			_, err = second.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
			noErr(t, err)
			second.stop(syscall.SIGTERM)
			for _, p := range []string{filepath.Join(dir, "ns"), filepath.Join(dir, "kubelet")} {
				noErr(t, unix.Unmount(p, 0))
			}
			testutil.CheckClean(t, dir)
			if left, err := os.ReadDir(filepath.Join(hostPool, "volumes")); err != nil || len(left) != 0 {
				t.Errorf("volumes outlived their delete: %v %v", left, err)
			}
		})
	}
}
