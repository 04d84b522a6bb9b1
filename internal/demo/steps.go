package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/volplug/volplug/internal/ctl"
)

func (d *demo) startDriver(ctx context.Context) error {
	return d.do(ctx, "Start the driver: volplug csi",
		"In a cluster the driver runs in a pod on every node, and kubelet finds it through the "+
			"unix socket it registers. Here it is a child process serving a socket in the work dir.",
		func(ctx context.Context) error {
			args := d.driverArgs()
			d.n.detail("volplug csi %s", strings.Join(args, " "))
			drv, err := startDriver(args, d.logPath)
			if err != nil {
				return err
			}
			d.drv = drv
			d.push("Stop the driver (SIGTERM)",
				"Like a driver pod being deleted: it finishes the calls in flight and exits.",
				func(context.Context) error {
					if d.conn != nil {
						_ = d.conn.Close()
					}
					return drv.stop(stopGrace)
				})
			conn, err := drv.waitReady(ctx, d.sock)
			if err != nil {
				return err
			}
			d.conn = conn
			d.ctrl, d.node = csi.NewControllerClient(conn), csi.NewNodeClient(conn)
			d.n.detail("pid %d, Probe says ready", drv.cmd.Process.Pid)
			return nil
		})
}

func (d *demo) identity(ctx context.Context) error {
	return d.do(ctx, "Identity: GetPluginInfo, GetPluginCapabilities",
		"The node-driver-registrar and the sidecars ask who the driver is. Its name is what a "+
			"StorageClass names as provisioner and what the CSIDriver object is called.",
		func(ctx context.Context) error {
			id := csi.NewIdentityClient(d.conn)
			info, err := id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
			if err != nil {
				return fmt.Errorf("GetPluginInfo: %w", err)
			}
			d.n.detail("driver %s, version %s", info.GetName(), info.GetVendorVersion())
			caps, err := id.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
			if err != nil {
				return fmt.Errorf("GetPluginCapabilities: %w", err)
			}
			var names []string
			for _, c := range caps.GetCapabilities() {
				kind, name := ctl.PluginCapabilityString(c)
				names = append(names, kind+" "+name)
			}
			d.n.detail("plugin capabilities: %s", strings.Join(names, ", "))
			return nil
		})
}

func (d *demo) capabilities(ctx context.Context) error {
	return d.do(ctx, "What it can do: ControllerGetCapabilities, NodeGetCapabilities, NodeGetInfo",
		"The external-provisioner and external-attacher read the controller's capabilities; kubelet "+
			"reads the node's, and records NodeGetInfo's node ID in the node's CSINode object.",
		func(ctx context.Context) error {
			cc, err := d.ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
			if err != nil {
				return fmt.Errorf("ControllerGetCapabilities: %w", err)
			}
			d.ctrlCaps = map[string]bool{}
			var cn []string
			for _, c := range cc.GetCapabilities() {
				name := c.GetRpc().GetType().String()
				d.ctrlCaps[name] = true
				cn = append(cn, name)
			}
			nc, err := d.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
			if err != nil {
				return fmt.Errorf("NodeGetCapabilities: %w", err)
			}
			d.nodeCaps = map[string]bool{}
			var nn []string
			for _, c := range nc.GetCapabilities() {
				name := c.GetRpc().GetType().String()
				d.nodeCaps[name] = true
				nn = append(nn, name)
			}
			info, err := d.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
			if err != nil {
				return fmt.Errorf("NodeGetInfo: %w", err)
			}
			d.nodeID = info.GetNodeId()
			d.n.detail("controller: %s", strings.Join(cn, ", "))
			d.n.detail("node: %s", strings.Join(nn, ", "))
			d.n.detail("node ID %q, topology %s", d.nodeID, ctl.FormatKV(info.GetAccessibleTopology().GetSegments()))
			if !d.ctrlCaps["CREATE_DELETE_VOLUME"] {
				return errors.New("the driver does not advertise CREATE_DELETE_VOLUME, so it cannot provision the demo volume")
			}
			return nil
		})
}

func (d *demo) createVolume(ctx context.Context) error {
	title := fmt.Sprintf("CreateVolume %q: %s, %s, %s", volumeName, ctl.HumanBytes(d.opts.size), d.opts.fsType,
		d.capability.GetAccessMode().GetMode())
	return d.do(ctx, title,
		"A PVC asks for storage (ReadWriteOnce is SINGLE_NODE_WRITER). The external-provisioner "+
			"calls CreateVolume with the PVC's size and the StorageClass's parameters, and records "+
			"the answer as a PV bound to the claim.",
		func(ctx context.Context) error {
			r, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
				Name:               volumeName,
				CapacityRange:      &csi.CapacityRange{RequiredBytes: d.opts.size},
				VolumeCapabilities: []*csi.VolumeCapability{d.capability},
			})
			if err != nil {
				return fmt.Errorf("CreateVolume: %w", err)
			}
			v := r.GetVolume()
			d.volID, d.volCtx = v.GetVolumeId(), v.GetVolumeContext()
			d.n.detail("volume ID %s, %d bytes (%s)", d.volID, v.GetCapacityBytes(), ctl.HumanBytes(v.GetCapacityBytes()))
			if len(d.volCtx) > 0 {
				d.n.detail("volume context %s", ctl.FormatKV(d.volCtx))
			}
			d.push("DeleteVolume",
				"The PVC is deleted and its PV's reclaim policy is Delete: the external-provisioner "+
					"calls DeleteVolume and the storage is freed.",
				func(ctx context.Context) error {
					if _, err := d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: d.volID}); err != nil {
						return fmt.Errorf("DeleteVolume: %w", err)
					}
					d.transition(stateNone)
					return nil
				})
			d.transition(stateCreated)
			return nil
		})
}

func (d *demo) controllerPublish(ctx context.Context) error {
	if !d.ctrlCaps["PUBLISH_UNPUBLISH_VOLUME"] {
		d.n.begin("", "ControllerPublishVolume: skipped",
			"The driver does not advertise PUBLISH_UNPUBLISH_VOLUME (its CSIDriver would say "+
				"attachRequired: false), so Kubernetes makes no VolumeAttachment and goes straight to the node.")
		d.transition(stateNodeReady)
		return nil
	}
	return d.do(ctx, "ControllerPublishVolume to node "+d.nodeID,
		"The pod using the claim was scheduled to this node. The attach/detach controller creates a "+
			"VolumeAttachment, and the external-attacher calls ControllerPublishVolume to make the "+
			"volume reachable from the node.",
		func(ctx context.Context) error {
			// Pushed before the call: the undo calls are idempotent, and a call
			// that failed midway (timeout, Ctrl-C) may still have done its work.
			d.push("ControllerUnpublishVolume from node "+d.nodeID,
				"The volume is unmounted from the node: the external-attacher calls "+
					"ControllerUnpublishVolume and the VolumeAttachment is deleted.",
				func(ctx context.Context) error {
					if _, err := d.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{
						VolumeId: d.volID, NodeId: d.nodeID,
					}); err != nil {
						return fmt.Errorf("ControllerUnpublishVolume: %w", err)
					}
					d.transition(stateCreated)
					return nil
				})
			r, err := d.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
				VolumeId: d.volID, NodeId: d.nodeID, VolumeCapability: d.capability, VolumeContext: d.volCtx,
			})
			if err != nil {
				return fmt.Errorf("ControllerPublishVolume: %w", err)
			}
			d.pubCtx = r.GetPublishContext()
			if len(d.pubCtx) > 0 {
				d.n.detail("publish context %s (kubelet passes it to the node calls)", ctl.FormatKV(d.pubCtx))
			}
			d.transition(stateNodeReady)
			return nil
		})
}

func (d *demo) nodeStage(ctx context.Context) error {
	if !d.nodeCaps["STAGE_UNSTAGE_VOLUME"] {
		d.n.begin("", "NodeStageVolume: skipped",
			"The driver does not advertise STAGE_UNSTAGE_VOLUME, so kubelet mounts straight into the pod's directory.")
		d.staging = ""
		d.transition(stateVolReady)
		return nil
	}
	return d.do(ctx, "NodeStageVolume at "+d.staging,
		"Kubelet on the node makes the volume ready once, at a node-wide staging path that every pod "+
			"on the node shares (MountDevice). This driver attaches the volume's disk image to a loop "+
			"device, formats it if it is blank, and mounts it there.",
		func(ctx context.Context) error {
			// Like kubelet, the CO makes the staging directory; the spec
			// leaves only the target of NodePublish to the driver.
			if err := os.MkdirAll(d.staging, 0o750); err != nil {
				return fmt.Errorf("make staging dir: %w", err)
			}
			// Pushed before the call: the undo calls are idempotent, and a call
			// that failed midway (timeout, Ctrl-C) may still have done its work.
			d.push("NodeUnstageVolume at "+d.staging,
				"No pod on the node uses the volume any more: kubelet calls NodeUnstageVolume "+
					"(UnmountDevice); the driver unmounts the staging path and detaches the loop device.",
				func(ctx context.Context) error {
					if _, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{
						VolumeId: d.volID, StagingTargetPath: d.staging,
					}); err != nil {
						return fmt.Errorf("NodeUnstageVolume: %w", err)
					}
					d.transition(stateNodeReady)
					return nil
				})
			if _, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
				VolumeId: d.volID, StagingTargetPath: d.staging, VolumeCapability: d.capability,
				PublishContext: d.pubCtx, VolumeContext: d.volCtx,
			}); err != nil {
				return fmt.Errorf("NodeStageVolume: %w", err)
			}
			d.showMount(d.staging)
			d.transition(stateVolReady)
			return nil
		})
}

func (d *demo) nodePublish(ctx context.Context) error {
	return d.do(ctx, "NodePublishVolume at "+d.target,
		"Kubelet mounts the volume into the pod's own directory (SetUp); the container runtime then "+
			"bind-mounts that directory into the container at the volumeMount's path.",
		func(ctx context.Context) error {
			// The CO makes the parent; the driver makes the target itself.
			if err := os.MkdirAll(filepath.Dir(d.target), 0o750); err != nil {
				return fmt.Errorf("make pod dir: %w", err)
			}
			// Pushed before the call: the undo calls are idempotent, and a call
			// that failed midway (timeout, Ctrl-C) may still have done its work.
			d.push("NodeUnpublishVolume at "+d.target,
				"The pod is deleted: kubelet calls NodeUnpublishVolume (TearDown); the driver "+
					"unmounts the pod's directory and removes it.",
				func(ctx context.Context) error {
					if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{
						VolumeId: d.volID, TargetPath: d.target,
					}); err != nil {
						return fmt.Errorf("NodeUnpublishVolume: %w", err)
					}
					if _, err := os.Lstat(d.target); err == nil {
						d.n.detail("note: %s is still there; the spec says the driver removes the target it made", d.target)
					} else {
						d.n.detail("the driver removed %s, as the spec asks", d.target)
					}
					d.transition(stateVolReady)
					return nil
				})
			if _, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
				VolumeId: d.volID, StagingTargetPath: d.staging, TargetPath: d.target,
				VolumeCapability: d.capability, PublishContext: d.pubCtx, VolumeContext: d.volCtx,
			}); err != nil {
				return fmt.Errorf("NodePublishVolume: %w", err)
			}
			d.showMount(d.target)
			d.transition(statePublished)
			return nil
		})
}

// showMount prints the mount at path as mountinfo has it.
func (d *demo) showMount(path string) {
	mounts, err := readMounts()
	if err != nil {
		d.n.detail("cannot read mounts: %v", err)
		return
	}
	for _, m := range mounts {
		if m.MountPoint == path {
			d.n.detail("mounted: %s on %s, type %s (%s)", m.Source, m.MountPoint, m.FsType, m.Options)
		}
	}
}
