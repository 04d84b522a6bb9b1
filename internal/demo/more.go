package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/volplug/volplug/internal/ctl"
)

// The second half of the seed's GCE-PD walkthrough: snapshot, restore, and
// expansion, each done only when the driver advertises it.

func (d *demo) snapshotAndRestore(ctx context.Context) error {
	if !d.opts.more || !d.ctrlCaps["CREATE_DELETE_SNAPSHOT"] {
		return nil
	}
	var snapID string
	err := d.do(ctx, "CreateSnapshot of the published volume",
		"A VolumeSnapshot: the external-snapshotter calls CreateSnapshot. The driver freezes the mounted "+
			"filesystem for the instant of the copy (a reflink on an xfs or btrfs pool), so the snapshot "+
			"is consistent even while the pod writes.",
		func(ctx context.Context) error {
			r, err := d.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "demo-snap", SourceVolumeId: d.volID})
			if err != nil {
				return fmt.Errorf("CreateSnapshot: %w", err)
			}
			snapID = r.GetSnapshot().GetSnapshotId()
			d.push("DeleteSnapshot", "The VolumeSnapshot is deleted: the external-snapshotter calls DeleteSnapshot.",
				func(ctx context.Context) error {
					_, err := d.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snapID})
					return err
				})
			d.n.detail("snapshot %s of %s, ready: %v", snapID, ctl.HumanBytes(r.GetSnapshot().GetSizeBytes()), r.GetSnapshot().GetReadyToUse())
			// Written after the snapshot: the restore must not have it.
			return os.WriteFile(filepath.Join(d.target, "after-snapshot.txt"), []byte("later"), 0o644)
		})
	if err != nil {
		return err
	}
	restoredTarget := filepath.Join(d.dir, "pods", "restored", "volume")
	restoredStaging := filepath.Join(d.dir, "staging-restored")
	return d.do(ctx, "CreateVolume from the snapshot, stage and publish it",
		"A PVC with the snapshot as dataSource: a new volume holding the data of the snapshot's instant.",
		func(ctx context.Context) error {
			r, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
				Name: "demo-restored", VolumeCapabilities: []*csi.VolumeCapability{d.capability},
				CapacityRange: &csi.CapacityRange{RequiredBytes: d.opts.size},
				VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
					Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapID}}},
			})
			if err != nil {
				return fmt.Errorf("CreateVolume from snapshot: %w", err)
			}
			id := r.GetVolume().GetVolumeId()
			d.push("DeleteVolume of the restored volume", "", func(ctx context.Context) error {
				_, err := d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
				return err
			})
			pubCtx := map[string]string{}
			if d.ctrlCaps["PUBLISH_UNPUBLISH_VOLUME"] {
				d.push("ControllerUnpublishVolume of the restored volume", "", func(ctx context.Context) error {
					_, err := d.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: d.nodeID})
					return err
				})
				p, err := d.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: d.nodeID, VolumeCapability: d.capability})
				if err != nil {
					return fmt.Errorf("ControllerPublishVolume: %w", err)
				}
				pubCtx = p.GetPublishContext()
			}
			if err := os.MkdirAll(restoredStaging, 0o750); err != nil {
				return err
			}
			d.push("NodeUnstageVolume of the restored volume", "", func(ctx context.Context) error {
				_, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: restoredStaging})
				return err
			})
			if _, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: restoredStaging,
				VolumeCapability: d.capability, PublishContext: pubCtx}); err != nil {
				return fmt.Errorf("NodeStageVolume: %w", err)
			}
			d.push("NodeUnpublishVolume of the restored volume", "", func(ctx context.Context) error {
				_, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: restoredTarget})
				return err
			})
			if _, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: restoredStaging,
				TargetPath: restoredTarget, VolumeCapability: d.capability, PublishContext: pubCtx}); err != nil {
				return fmt.Errorf("NodePublishVolume: %w", err)
			}
			_, errBefore := os.Stat(filepath.Join(restoredTarget, "hello.bin"))
			_, errAfter := os.Stat(filepath.Join(restoredTarget, "after-snapshot.txt"))
			if errBefore != nil || errAfter == nil {
				return fmt.Errorf("the restored volume does not hold the snapshot's data (hello.bin: %v, after-snapshot.txt present: %v)",
					errBefore, errAfter == nil)
			}
			d.n.detail("restored volume %s at %s: hello.bin is there, after-snapshot.txt (written later) is not", id, restoredTarget)
			return nil
		})
}

func (d *demo) expand(ctx context.Context) error {
	if !d.opts.more || !d.ctrlCaps["EXPAND_VOLUME"] {
		return nil
	}
	return d.do(ctx, "Expand the volume to twice its size, while the pod uses it",
		"The PVC's request is raised: the external-resizer calls ControllerExpandVolume (the disk grows), "+
			"then kubelet calls NodeExpandVolume (the mounted filesystem grows, online).",
		func(ctx context.Context) error {
			want := 2 * d.opts.size
			if _, err := d.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
				VolumeId: d.volID, CapacityRange: &csi.CapacityRange{RequiredBytes: want}, VolumeCapability: d.capability,
			}); err != nil {
				return fmt.Errorf("ControllerExpandVolume: %w", err)
			}
			_, err := d.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
				VolumeId: d.volID, VolumePath: d.target, StagingTargetPath: d.staging,
				CapacityRange: &csi.CapacityRange{RequiredBytes: want}, VolumeCapability: d.capability,
			})
			if status.Code(err) == codes.FailedPrecondition {
				// Growing a mounted ext4 needs CAP_SYS_RESOURCE, which some
				// sandboxes drop: the driver grows it at the next stage, as
				// kubelet would get it to when the pod restarts.
				d.n.detail("online growth refused here: %s", status.Convert(err).Message())
				d.n.detail("so, as when the pod restarts: unpublish, unstage, stage, publish")
				err = d.restage(ctx)
			}
			if err != nil {
				return fmt.Errorf("NodeExpandVolume: %w", err)
			}
			line, _, err := dfLine(d.target)
			if err != nil {
				return err
			}
			d.n.detail("volume (statfs %s): %s", d.target, line)
			return nil
		})
}

// restage takes the volume off the node and back, which grows a filesystem
// whose disk grew while it was mounted.
func (d *demo) restage(ctx context.Context) error {
	if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: d.volID, TargetPath: d.target}); err != nil {
		return err
	}
	if _, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: d.volID, StagingTargetPath: d.staging}); err != nil {
		return err
	}
	if _, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: d.volID, StagingTargetPath: d.staging,
		VolumeCapability: d.capability, PublishContext: d.pubCtx, VolumeContext: d.volCtx}); err != nil {
		return err
	}
	_, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: d.volID, StagingTargetPath: d.staging,
		TargetPath: d.target, VolumeCapability: d.capability, PublishContext: d.pubCtx, VolumeContext: d.volCtx})
	return err
}
