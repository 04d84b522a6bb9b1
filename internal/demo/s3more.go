package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/volplug/volplug/internal/ctl"
	"github.com/volplug/volplug/internal/mounter"
)

func (s *s3Demo) expandQuota(ctx context.Context) error {
	return s.do(ctx, "Expand the volume to twice its size, while the pods use it",
		"The PVC's request is raised: the external-resizer calls ControllerExpandVolume (the driver records "+
			"the new size in the bucket's mark), then kubelet calls NodeExpandVolume (the mounter raises the live "+
			"mount's quota). Nothing is copied or remounted.",
		func(ctx context.Context) error {
			before, _, err := dfLine(s.target)
			if err != nil {
				return err
			}
			s.n.detail("df before: %s", before)
			want := 2 * s.opts.size
			cr, err := s.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
				VolumeId: s.volID, CapacityRange: &csi.CapacityRange{RequiredBytes: want},
				VolumeCapability: s.capability, Secrets: s.secrets,
			})
			if err != nil {
				return fmt.Errorf("ControllerExpandVolume: %w", err)
			}
			s.n.detail("ControllerExpandVolume: %s, node expansion required: %v", ctl.HumanBytes(cr.GetCapacityBytes()), cr.GetNodeExpansionRequired())
			if cr.GetNodeExpansionRequired() {
				nr, err := s.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
					VolumeId: s.volID, VolumePath: s.target, StagingTargetPath: s.staging,
					CapacityRange: &csi.CapacityRange{RequiredBytes: want}, VolumeCapability: s.capability,
				})
				if err != nil {
					return fmt.Errorf("NodeExpandVolume: %w", err)
				}
				s.n.detail("NodeExpandVolume: %s", ctl.HumanBytes(nr.GetCapacityBytes()))
			}
			after, size, err := dfLine(s.target)
			if err != nil {
				return err
			}
			s.n.detail("df after: %s", after)
			if s.o.mounterKind != mounter.Builtin {
				s.n.detail("%s reports its own figures; only the built-in mounter enforces the size as a quota", s.o.mounterKind)
				return nil
			}
			if size < want {
				return fmt.Errorf("the mount's size is %s after expansion, want %s", ctl.HumanBytes(size), ctl.HumanBytes(want))
			}
			return nil
		})
}

// crashDriver kills the driver with SIGKILL while the bucket is published,
// shows the pods' mounts carry on, and starts a new driver that finds them.
func (s *s3Demo) crashDriver(ctx context.Context) error {
	return s.do(ctx, "kill -9 the driver while the pods use the bucket, then restart it",
		"A node plugin is restarted on every upgrade and may crash. The mounts belong to the mounter, so the "+
			"pods never notice; the new driver keeps no state and finds the mounts in the kernel's mount table.",
		func(ctx context.Context) error {
			old := s.drv
			pid := old.cmd.Process.Pid
			mountersBefore := s.mounterPids()
			if err := old.cmd.Process.Kill(); err != nil {
				return fmt.Errorf("kill -9 driver %d: %w", pid, err)
			}
			<-old.exited
			old.log.Close()
			if s.conn != nil {
				_ = s.conn.Close()
				s.conn = nil
			}
			s.n.detail("volplug csi (pid %d) killed with SIGKILL: %v", pid, old.waitErr)

			got, err := os.ReadFile(filepath.Join(s.target, "hello.txt"))
			if err != nil || string(got) != helloText {
				return fmt.Errorf("pod-a reads hello.txt with no driver: %q, %v", got, err)
			}
			during := filepath.Join(s.target, "during-the-crash.txt")
			if err := writeSync(during, []byte("written while no driver ran\n")); err != nil {
				return fmt.Errorf("pod-a writes with no driver: %w", err)
			}
			if _, err := os.Stat(filepath.Join(s.podB, "during-the-crash.txt")); err != nil {
				return fmt.Errorf("pod-b does not see pod-a's new file: %w", err)
			}
			s.n.detail("with no driver running, pod-a reads hello.txt and writes %s; pod-b sees it", filepath.Base(during))
			if after := s.mounterPids(); !slices.Equal(after, mountersBefore) {
				return fmt.Errorf("the mounter changed with the driver's death: %v, then %v", mountersBefore, after)
			}
			s.n.detail("the mounter %v is untouched", mountersBefore)

			// A killed driver leaves its socket file; the new one replaces it.
			if err := os.Remove(s.sock); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove the dead driver's socket: %w", err)
			}
			if err := s.launchDriver(ctx, "driver-restarted.log"); err != nil {
				return fmt.Errorf("restart the driver: %w", err)
			}
			st, err := s.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{
				VolumeId: s.volID, VolumePath: s.target, StagingTargetPath: s.staging,
			})
			if err != nil {
				return fmt.Errorf("NodeGetVolumeStats after the restart: %w", err)
			}
			var usage []string
			for _, u := range st.GetUsage() {
				if u.GetUnit() == csi.VolumeUsage_BYTES {
					usage = append(usage, fmt.Sprintf("total %s, used %s", ctl.HumanBytes(u.GetTotal()), ctl.HumanBytes(u.GetUsed())))
				}
			}
			s.n.detail("the new driver finds the volume at pod-a's path: NodeGetVolumeStats says %s", strings.Join(usage, "; "))
			if err := s.showMounter(); err != nil {
				return err
			}
			return nil
		})
}
