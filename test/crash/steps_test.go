package crash

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// The CO's calls, as steps. Each records in the harness what the CO would
// know once the call succeeded.

func (h *harness) create(name string, size int64, capa *csi.VolumeCapability, params map[string]string, src *csi.VolumeContentSource) step {
	return step{name: "CreateVolume " + name, rpc: true, do: func(ctx context.Context) error {
		resp, err := h.d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, Parameters: params,
			VolumeCapabilities: []*csi.VolumeCapability{capa}, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
			VolumeContentSource: src, Secrets: h.secrets})
		if err != nil {
			return err
		}
		h.vols[name] = &vol{name: name, id: resp.Volume.VolumeId, context: resp.Volume.VolumeContext, capa: capa}
		return nil
	}}
}

func fromSnapshot(h *harness, snap string) func() *csi.VolumeContentSource {
	return func() *csi.VolumeContentSource {
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: h.snaps[snap]}}}
	}
}

func fromVolume(h *harness, name string) func() *csi.VolumeContentSource {
	return func() *csi.VolumeContentSource {
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: h.vols[name].id}}}
	}
}

// createFrom is create with a source known only once earlier steps ran.
func (h *harness) createFrom(name string, size int64, capa *csi.VolumeCapability, params map[string]string, src func() *csi.VolumeContentSource) step {
	s := step{name: "CreateVolume " + name, rpc: true}
	s.do = func(ctx context.Context) error {
		return h.create(name, size, capa, params, src()).do(ctx)
	}
	return s
}

func (h *harness) stage(name string) step {
	return step{name: "NodeStageVolume " + name, rpc: true, do: func(ctx context.Context) error {
		v := h.vols[name]
		staging := filepath.Join(h.dir, "kubelet", "staging", name)
		_, err := h.d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: staging,
			VolumeCapability: v.capa, VolumeContext: v.context, Secrets: h.secrets})
		if err == nil {
			v.staging = staging
		}
		return err
	}}
}

func (h *harness) publish(name string) step {
	return step{name: "NodePublishVolume " + name, rpc: true, do: func(ctx context.Context) error {
		v := h.vols[name]
		target := filepath.Join(h.dir, "kubelet", "pods", name, "mount")
		_, err := h.d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging,
			TargetPath: target, VolumeCapability: v.capa, VolumeContext: v.context})
		if err == nil {
			v.target = target
		}
		return err
	}}
}

func (h *harness) unpublish(name string) step {
	return step{name: "NodeUnpublishVolume " + name, rpc: true, vol: name, do: func(ctx context.Context) error {
		v := h.vols[name]
		_, err := h.d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
		if err == nil {
			if _, serr := os.Stat(v.target); !os.IsNotExist(serr) {
				return fmt.Errorf("unpublished, but the target %s is still there: %v", v.target, serr)
			}
			v.target = ""
		}
		return err
	}}
}

func (h *harness) unstage(name string) step {
	return step{name: "NodeUnstageVolume " + name, rpc: true, vol: name, do: func(ctx context.Context) error {
		v := h.vols[name]
		_, err := h.d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
		if err == nil {
			v.staging = ""
		}
		return err
	}}
}

func (h *harness) deleteVolume(name string) step {
	return step{name: "DeleteVolume " + name, rpc: true, do: func(ctx context.Context) error {
		_, err := h.d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: h.vols[name].id, Secrets: h.secrets})
		if err == nil {
			delete(h.vols, name)
		}
		return err
	}}
}

// write is the pod's action: data written and fsync'd.
func (h *harness) write(name string) step {
	return step{name: "write and fsync " + name, do: func(context.Context) error {
		v := h.vols[name]
		content := "fsync'd into " + name
		if err := writeData(v.target, content); err != nil {
			return err
		}
		v.data = content
		return nil
	}}
}

// holds checks that a published volume shows the data of another volume
// (its snapshot's source or clone's source) and takes it as its own.
func (h *harness) holds(name, from string) step {
	return step{name: name + " holds " + from + "'s data", do: func(context.Context) error {
		v, want := h.vols[name], "fsync'd into "+from
		got, err := os.ReadFile(filepath.Join(v.target, "data"))
		if err != nil || string(got) != want {
			return fmt.Errorf("%s reads %q, %v; want %q", name, got, err, want)
		}
		v.data = want
		return nil
	}}
}

func (h *harness) snapshot(snap, name string) step {
	return step{name: "CreateSnapshot " + snap, rpc: true, do: func(ctx context.Context) error {
		resp, err := h.d.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: snap, SourceVolumeId: h.vols[name].id, Secrets: h.secrets})
		if err == nil {
			h.snaps[snap] = resp.Snapshot.SnapshotId
		}
		return err
	}}
}

func (h *harness) deleteSnapshot(snap string) step {
	return step{name: "DeleteSnapshot " + snap, rpc: true, do: func(ctx context.Context) error {
		_, err := h.d.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: h.snaps[snap]})
		if err == nil {
			delete(h.snaps, snap)
		}
		return err
	}}
}

func (h *harness) groupSnapshot(group string, names ...string) step {
	return step{name: "CreateVolumeGroupSnapshot " + group, rpc: true, do: func(ctx context.Context) error {
		var ids []string
		for _, n := range names {
			ids = append(ids, h.vols[n].id)
		}
		resp, err := h.d.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: group, SourceVolumeIds: ids})
		if err != nil {
			return err
		}
		g := []string{resp.GroupSnapshot.GroupSnapshotId}
		for _, s := range resp.GroupSnapshot.Snapshots {
			g = append(g, s.SnapshotId)
		}
		h.groups[group] = g
		return nil
	}}
}

func (h *harness) deleteGroup(group string) step {
	return step{name: "DeleteVolumeGroupSnapshot " + group, rpc: true, do: func(ctx context.Context) error {
		g := h.groups[group]
		_, err := h.d.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: g[0], SnapshotIds: g[1:]})
		if err == nil {
			delete(h.groups, group)
		}
		return err
	}}
}

// expand grows the volume as external-resizer then kubelet do.
func (h *harness) expand(name string, size int64) []step {
	return []step{
		{name: "ControllerExpandVolume " + name, rpc: true, do: func(ctx context.Context) error {
			_, err := h.d.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: h.vols[name].id,
				CapacityRange: &csi.CapacityRange{RequiredBytes: size}, Secrets: h.secrets, VolumeCapability: h.vols[name].capa})
			return err
		}},
		{name: "NodeExpandVolume " + name, rpc: true, do: func(ctx context.Context) error {
			v := h.vols[name]
			_, err := h.d.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: v.id, VolumePath: v.target,
				StagingTargetPath: v.staging, CapacityRange: &csi.CapacityRange{RequiredBytes: size}, VolumeCapability: v.capa})
			return err
		}},
		{name: "size of " + name, rpc: true, do: func(ctx context.Context) error {
			v := h.vols[name]
			resp, err := h.d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: v.id, VolumePath: v.target})
			if err != nil {
				return err
			}
			for _, u := range resp.Usage {
				if u.Unit == csi.VolumeUsage_BYTES && u.Total < size*8/10 {
					return fmt.Errorf("%s reports %d bytes after growing to %d", name, u.Total, size)
				}
			}
			return nil
		}},
	}
}

func (h *harness) modify(name string, params map[string]string) step {
	return step{name: "ControllerModifyVolume " + name, rpc: true, do: func(ctx context.Context) error {
		_, err := h.d.ctrl.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: h.vols[name].id, MutableParameters: params})
		return err
	}}
}
