package demo

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/cobra"
)

//go:embed adapt_driver.sh
var adaptDriver []byte

// newAdaptCommand is `volplug demo adapt`: a seed-style bash FlexVolume
// driver, served as CSI by `volplug adapt`, through one pod's mount.
func newAdaptCommand() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "adapt",
		Short: "Serve a seed-style bash FlexVolume driver as CSI with volplug adapt, narrated",
		Long: `demo adapt writes a FlexVolume driver in the seed's style (a bash script
with init, mount and unmount, which bind-mounts a directory), starts
volplug adapt on it, and publishes and unpublishes a volume through CSI as
kubelet would, showing what the script was asked. It needs root (mounts)
and jq.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdapt(cmd.Context(), cmd.OutOrStdout(), keep)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary directory (driver, its log, the adapter's log)")
	return cmd
}

func runAdapt(ctx context.Context, w io.Writer, keep bool) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("demo adapt needs root: it mounts")
	}
	n := &narrator{w: w}
	dir, err := os.MkdirTemp("", "volplug-demo-adapt-")
	if err != nil {
		return err
	}
	defer func() {
		if left, lerr := leftovers(dir); lerr == nil && len(left) > 0 {
			err = fmt.Errorf("left behind: %v", left)
		}
		if keep || err != nil {
			n.printf("\nwork directory kept: %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	drvDir := filepath.Join(dir, "acme~bind")
	exe := filepath.Join(drvDir, "bind")
	src := filepath.Join(dir, "export")
	target := filepath.Join(dir, "pods", "pod-1", "volumes", "kubernetes.io~csi", "data", "mount")
	sock := filepath.Join(dir, "csi.sock")
	step := func(title, meaning string, fn func() error) error {
		n.begin("", title, meaning)
		start := time.Now()
		err := fn()
		n.end(time.Since(start), err)
		return err
	}

	if err := step("Install a FlexVolume driver: a bash script in the seed's style",
		"init says attach:false; mount bind-mounts the directory its options name as \"source\"; "+
			"everything else is \"Not supported\". It knows nothing of CSI.",
		func() error {
			for _, d := range []string{drvDir, src} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			if err := os.WriteFile(exe, adaptDriver, 0o755); err != nil {
				return err
			}
			n.detail("%s (%d lines of bash)", exe, strings.Count(string(adaptDriver), "\n"))
			return os.WriteFile(filepath.Join(src, "hello.txt"), []byte("served by a FlexVolume script\n"), 0o644)
		}); err != nil {
		return err
	}

	var drv *driverProc
	args := []string{"--driver-path", exe, "--driver-name", "bind.acme.com", "--endpoint", "unix://" + sock,
		"--node-id", "demo-node", "--call-timeout", "30s"}
	if err := step("Start volplug adapt on it",
		"It runs the script's init and advertises what the answers allow: no attach, so no "+
			"ControllerPublish and no NodeStage; no provision, so volumes are static PVs.",
		func() error {
			n.detail("volplug adapt %s", strings.Join(args, " "))
			var err error
			if drv, err = startVolplug("adapt", args, filepath.Join(dir, "adapt.log")); err != nil {
				return err
			}
			return nil
		}); err != nil {
		return err
	}
	defer func() {
		if serr := drv.stop(stopGrace); serr != nil && err == nil {
			err = serr
		}
	}()
	conn, err := drv.waitReady(ctx, sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	node := csi.NewNodeClient(conn)
	caps, err := node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return err
	}
	n.detail("node capabilities: %d (publish and unpublish only)", len(caps.GetCapabilities()))

	defer func() {
		// A walk cut short still takes the pod's mount down.
		if err != nil {
			_, _ = node.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "static-pv-1", TargetPath: target})
		}
	}()
	rwo := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}
	if err := step("NodePublishVolume: a pod starts",
		"kubelet calls the CSI driver with the PV's volumeHandle and volumeAttributes; the adapter "+
			"turns them into the JSON kubelet would have given the flex driver and runs `bind mount`.",
		func() error {
			_, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
				VolumeId: "static-pv-1", TargetPath: target, VolumeCapability: rwo,
				VolumeContext: map[string]string{"source": src, "csi.storage.k8s.io/pod.name": "pod-1",
					"csi.storage.k8s.io/pod.namespace": "default"},
				Secrets: map[string]string{"token": "not-in-any-log"},
			})
			if err != nil {
				return err
			}
			data, err := os.ReadFile(filepath.Join(target, "hello.txt"))
			if err != nil {
				return err
			}
			n.detail("the pod reads %s: %q", filepath.Join(target, "hello.txt"), strings.TrimSpace(string(data)))
			for _, l := range tailFile(filepath.Join(drvDir, "driver.log"), 1) {
				n.detail("the script logged: %s", l)
			}
			return nil
		}); err != nil {
		return err
	}
	return step("NodeUnpublishVolume: the pod goes",
		"`bind unmount <path>`: the script gets only the path, so the adapter needs no state and "+
			"survives restarts; then it removes the target, as CSI asks.",
		func() error {
			if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "static-pv-1", TargetPath: target}); err != nil {
				return err
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				return fmt.Errorf("target still there: %v", err)
			}
			n.detail("target removed; nothing mounted under %s", dir)
			return nil
		})
}

// tailFile returns the last n lines of a file (none if unreadable).
func tailFile(path string, n int) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}
