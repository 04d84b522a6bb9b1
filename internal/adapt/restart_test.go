package adapt

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/volplug/volplug/internal/testutil"
)

// The real `volplug adapt` process, killed with SIGKILL while a volume is
// published, and started again: unmount needs nothing but the path, so
// the new process takes the volume down without any state.
func TestRestartWhilePublished(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	t.Cleanup(func() { testutil.Cleanup(dir) })
	bin := testutil.BuildVolplug(t, dir)
	driver, err := filepath.Abs("testdata/bind.sh")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "adapt", "--driver-path", driver, "--driver-name", "bind.test.io",
			"--endpoint", "unix://"+sock, "--node-id", "n1", "--call-timeout", "30s")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	node := csi.NewNodeClient(conn)
	ready := func() {
		// A call already sent on the killed process's connection fails
		// with UNAVAILABLE; the next one reconnects.
		deadline := time.Now().Add(20 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{}, grpc.WaitForReady(true))
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("adapter not ready: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	cmd := start()
	ready()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "pod", "vol")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v1", TargetPath: target,
		VolumeCapability: rwo, VolumeContext: map[string]string{"source": src}}); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()

	cmd = start()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	ready()
	if !isMounted(t, target) {
		t.Fatal("the mount did not outlive the adapter")
	}
	if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v1", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target left behind: %v", err)
	}
	testutil.CheckClean(t, dir)
}
