package hostile

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// door is one CSI front door under test, with a volume it has staged and
// published, so hostile paths and flags reach past the ID checks.
type door struct {
	name    string // local, s3, adapt
	p       *proc
	dir     string // the door's own directory (paths built from it)
	outside string // a directory nothing may touch
	vol     string // a good volume ID
	staging string // where vol is staged
	target  string // where vol is published
	secrets map[string]string
	params  map[string]string // good StorageClass parameters
	// what the door serves, so the table does not ask for what it lacks
	snapshots, groups, attach, ephemeral bool
	// other mounts on the host a symlink may point at
	otherMount string
}

// csiCase is one row of the table.
type csiCase struct {
	door, rpc, input string
	want             []codes.Code
	rule             string
	call             func(ctx context.Context) error
}

func cap1(mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
	}
}

var (
	rw = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	ro = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
)

func codesOf(cs ...codes.Code) []codes.Code { return cs }

var invalidOnly = codesOf(codes.InvalidArgument)

// idCases sends every hostile ID to every RPC that takes one.
func (d *door) idCases() []csiCase {
	c, n, g := d.p.ctrl(), d.p.nodeC(), d.p.group()
	capa := cap1(rw)
	var out []csiCase
	add := func(rpc string, v value, want []codes.Code, rule string, call func(ctx context.Context, id string) error) {
		out = append(out, csiCase{door: d.name, rpc: rpc, input: "ID: " + v.label, want: want, rule: rule,
			call: func(ctx context.Context) error { return call(ctx, v.v) }})
	}
	for _, v := range hostileIDs(d.outside) {
		rule := ruleInvalid
		if len(v.v) > 128 {
			rule = ruleSize
		}
		add("CreateVolume (name)", v, createNameWant(d, v), rule+"; a name is hashed or checked, never a path", func(ctx context.Context, id string) error {
			resp, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: id, VolumeCapabilities: []*csi.VolumeCapability{capa},
				CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20}, Parameters: d.params, Secrets: d.secrets})
			return cleanupCreated(ctx, c, d, resp, err)
		})
		if d.snapshots {
			add("CreateVolume (source snapshot)", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "from-snap", VolumeCapabilities: []*csi.VolumeCapability{capa},
					VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}})
				return err
			})
			add("CreateVolume (source volume)", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "from-vol", VolumeCapabilities: []*csi.VolumeCapability{capa},
					VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}})
				return err
			})
		}
		add("DeleteVolume", v, invalidOnly, rule, func(ctx context.Context, id string) error {
			_, err := c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: d.secrets})
			return err
		})
		if d.attach {
			add("ControllerPublishVolume", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: node, VolumeCapability: capa, Secrets: d.secrets})
				return err
			})
			add("ControllerPublishVolume (node ID)", v, codesOf(codes.InvalidArgument, codes.NotFound), rule+"; spec: node does not exist → 5 NOT_FOUND", func(ctx context.Context, id string) error {
				_, err := c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: d.vol, NodeId: id, VolumeCapability: capa, Secrets: d.secrets})
				return err
			})
			add("ControllerUnpublishVolume", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := c.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: node, Secrets: d.secrets})
				return err
			})
		}
		add("ValidateVolumeCapabilities", v, invalidOnly, rule, func(ctx context.Context, id string) error {
			_, err := c.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: []*csi.VolumeCapability{capa}, Secrets: d.secrets})
			return err
		})
		add("ControllerExpandVolume", v, codesOf(codes.InvalidArgument, codes.Unimplemented), rule, func(ctx context.Context, id string) error {
			_, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 32 << 20}, Secrets: d.secrets})
			return err
		})
		add("ControllerModifyVolume", v, codesOf(codes.InvalidArgument, codes.Unimplemented), rule, func(ctx context.Context, id string) error {
			_, err := c.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: id, MutableParameters: map[string]string{"directIO": "false"}, Secrets: d.secrets})
			return err
		})
		add("ControllerGetVolume", v, codesOf(codes.InvalidArgument, codes.Unimplemented), rule, func(ctx context.Context, id string) error {
			_, err := c.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: id})
			return err
		})
		add("ControllerGetVolumeHealth", v, codesOf(codes.InvalidArgument, codes.Unimplemented), rule, func(ctx context.Context, id string) error {
			_, err := c.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
			return err
		})
		if d.snapshots {
			add("CreateSnapshot (source)", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap", SourceVolumeId: id, Secrets: d.secrets})
				return err
			})
			add("CreateSnapshot (name)", v, createNameWant(d, v), rule+"; a name is hashed, never a path", func(ctx context.Context, id string) error {
				resp, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: id, SourceVolumeId: d.vol, Secrets: d.secrets})
				if err == nil {
					_, err = c.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: resp.GetSnapshot().GetSnapshotId()})
					if err == nil {
						return errCreatedAndDeleted
					}
				}
				return err
			})
			add("DeleteSnapshot", v, codesOf(codes.InvalidArgument, codes.OK), ruleDeleteMissing, func(ctx context.Context, id string) error {
				_, err := c.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id, Secrets: d.secrets})
				return err
			})
			add("GetSnapshot", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := c.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: id, Secrets: d.secrets})
				return err
			})
			add("ListSnapshots (snapshot ID)", v, codesOf(codes.OK, codes.InvalidArgument), ruleListSnap, func(ctx context.Context, id string) error {
				return emptyList(c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: id, Secrets: d.secrets}))
			})
			add("ListSnapshots (source volume)", v, codesOf(codes.OK, codes.InvalidArgument), ruleListSnap, func(ctx context.Context, id string) error {
				return emptyList(c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: id, Secrets: d.secrets}))
			})
		}
		if d.groups {
			add("CreateVolumeGroupSnapshot (source)", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := g.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "group", SourceVolumeIds: []string{d.vol, id}, Secrets: d.secrets})
				return err
			})
			add("CreateVolumeGroupSnapshot (name)", v, createNameWant(d, v), rule, func(ctx context.Context, id string) error {
				resp, err := g.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: id, SourceVolumeIds: []string{d.vol}, Secrets: d.secrets})
				if err == nil {
					gs := resp.GetGroupSnapshot()
					var ids []string
					for _, s := range gs.GetSnapshots() {
						ids = append(ids, s.GetSnapshotId())
					}
					_, err = g.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: gs.GetGroupSnapshotId(), SnapshotIds: ids})
					if err == nil {
						return errCreatedAndDeleted
					}
				}
				return err
			})
			add("DeleteVolumeGroupSnapshot", v, codesOf(codes.InvalidArgument, codes.OK), ruleDeleteMissing, func(ctx context.Context, id string) error {
				_, err := g.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id, SnapshotIds: []string{id}, Secrets: d.secrets})
				return err
			})
			add("GetVolumeGroupSnapshot", v, invalidOnly, rule, func(ctx context.Context, id string) error {
				_, err := g.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id, SnapshotIds: []string{id}, Secrets: d.secrets})
				return err
			})
		}
		stage := filepath.Join(d.dir, "h-stage")
		target := filepath.Join(d.dir, "h-target")
		add("NodeStageVolume", v, invalidOnly, rule, func(ctx context.Context, id string) error {
			_, err := n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: stage, VolumeCapability: capa, Secrets: d.secrets})
			return err
		})
		add("NodeUnstageVolume", v, invalidOnly, rule, func(ctx context.Context, id string) error {
			_, err := n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: d.staging})
			return err
		})
		add("NodePublishVolume", v, invalidOnly, rule, func(ctx context.Context, id string) error {
			_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: d.staging, TargetPath: target, VolumeCapability: capa, Secrets: d.secrets})
			return err
		})
		add("NodeUnpublishVolume", v, invalidOnly, rule, func(ctx context.Context, id string) error {
			_, err := n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: d.target})
			return err
		})
		add("NodeGetVolumeStats", v, codesOf(codes.InvalidArgument, codes.NotFound, codes.Unimplemented), ruleStats, func(ctx context.Context, id string) error {
			_, err := n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: d.target})
			return err
		})
		add("NodeExpandVolume", v, codesOf(codes.InvalidArgument, codes.NotFound, codes.Unimplemented), ruleStats, func(ctx context.Context, id string) error {
			_, err := n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: d.target, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}, Secrets: d.secrets})
			return err
		})
		add("NodeGetVolumeHealth", v, codesOf(codes.InvalidArgument, codes.Unimplemented), rule, func(ctx context.Context, id string) error {
			_, err := n.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: d.target})
			return err
		})
	}
	return out
}

// createNameWant: a hostile name is either refused or, where the backend
// derives the ID from a hash of the name, harmless; the case then deletes
// what it made and reports errCreatedAndDeleted, which the table shows as
// OK. Names over 128 bytes are always refused.
func createNameWant(d *door, v value) []codes.Code {
	if len(v.v) > 128 || strings.ContainsAny(v.v, "\x00\n") {
		return invalidOnly
	}
	return codesOf(codes.InvalidArgument, codes.OK)
}

var errCreatedAndDeleted = status.Error(codes.OK, "made (the ID is derived from the name) and deleted again")

// cleanupCreated deletes a volume a hostile name made, so the host is as
// before, and says so.
func cleanupCreated(ctx context.Context, c csi.ControllerClient, d *door, resp *csi.CreateVolumeResponse, err error) error {
	if err != nil {
		return err
	}
	if _, err := c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: resp.GetVolume().GetVolumeId(), Secrets: d.secrets}); err != nil {
		return fmt.Errorf("delete what the hostile name made: %w", err)
	}
	return errCreatedAndDeleted
}

func emptyList(resp *csi.ListSnapshotsResponse, err error) error {
	if err == nil && len(resp.GetEntries()) > 0 {
		return fmt.Errorf("ListSnapshots of a hostile filter listed %d snapshots", len(resp.GetEntries()))
	}
	return err
}

// pathCases sends hostile staging, target and volume paths, symlinks
// included, with the good volume's ID.
func (d *door) pathCases() []csiCase {
	n := d.p.nodeC()
	capa := cap1(rw)
	var out []csiCase
	add := func(rpc, input string, want []codes.Code, rule string, call func(ctx context.Context) error) {
		out = append(out, csiCase{door: d.name, rpc: rpc, input: input, want: want, rule: rule, call: call})
	}
	paths := hostilePaths(d.dir)
	links := d.symlinks()
	for _, v := range append(paths, links...) {
		v := v
		rule := ruleInvalid
		if _, ok := linkNames[v.label]; ok {
			rule = ruleSymlink
		}
		add("NodeStageVolume (staging path)", "path: "+v.label, invalidOnly, rule, func(ctx context.Context) error {
			_, err := n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: d.vol, StagingTargetPath: v.v, VolumeCapability: capa, Secrets: d.secrets})
			return err
		})
		add("NodeUnstageVolume (staging path)", "path: "+v.label, invalidOnly, rule, func(ctx context.Context) error {
			_, err := n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: d.vol, StagingTargetPath: v.v})
			return err
		})
		add("NodePublishVolume (target path)", "path: "+v.label, invalidOnly, rule, func(ctx context.Context) error {
			_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: d.vol, StagingTargetPath: d.staging, TargetPath: v.v, VolumeCapability: capa, Secrets: d.secrets})
			return err
		})
		add("NodePublishVolume (staging path as bind source)", "path: "+v.label, invalidOnly, rule, func(ctx context.Context) error {
			_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: d.vol, StagingTargetPath: v.v, TargetPath: filepath.Join(d.dir, "h-target2"), VolumeCapability: capa, Secrets: d.secrets})
			return err
		})
		add("NodeUnpublishVolume (target path)", "path: "+v.label, invalidOnly, rule, func(ctx context.Context) error {
			_, err := n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: d.vol, TargetPath: v.v})
			return err
		})
		if _, ok := linkNames[v.label]; !ok {
			add("NodeGetVolumeStats (volume path)", "path: "+v.label, codesOf(codes.InvalidArgument, codes.NotFound, codes.Unimplemented), ruleStats, func(ctx context.Context) error {
				_, err := n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: d.vol, VolumePath: v.v})
				return err
			})
			add("NodeExpandVolume (volume path)", "path: "+v.label, codesOf(codes.InvalidArgument, codes.NotFound, codes.Unimplemented), ruleStats, func(ctx context.Context) error {
				_, err := n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: d.vol, VolumePath: v.v, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
				return err
			})
			add("NodeGetVolumeHealth (paths)", "path: "+v.label, codesOf(codes.InvalidArgument, codes.Unimplemented), ruleInvalid, func(ctx context.Context) error {
				_, err := n.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: d.vol, StagingTargetPath: v.v})
				return err
			})
		}
	}
	// Bind sources outside the pool: the staging path of a publish names
	// a directory the volume is not staged at.
	for _, src := range []value{{"bind source /", "/"}, {"bind source /etc", "/etc"}, {"bind source outside the pool", d.outside}} {
		src := src
		add("NodePublishVolume (staging path as bind source)", src.label, codesOf(codes.InvalidArgument, codes.FailedPrecondition),
			"spec NodePublishVolume: volume not staged at staging_target_path → 9 FAILED_PRECONDITION", func(ctx context.Context) error {
				_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: d.vol, StagingTargetPath: src.v, TargetPath: filepath.Join(d.dir, "h-target3"), VolumeCapability: capa, Secrets: d.secrets})
				return err
			})
	}
	return out
}

var linkNames = map[string]bool{
	"symlink to /": true, "symlink to another mount": true, "symlink to outside dir": true,
}

// symlinks made once in the door's directory: a target or staging path
// that is a symlink to "/", to another mount, to a directory outside.
func (d *door) symlinks() []value {
	return []value{
		{"symlink to /", filepath.Join(d.dir, "link-root")},
		{"symlink to another mount", filepath.Join(d.dir, "link-mount")},
		{"symlink to outside dir", filepath.Join(d.dir, "link-outside")},
	}
}

// flagCases sends mount flags that grant more than asked, on a read-only
// request, to every RPC that takes a capability.
func (d *door) flagCases() []csiCase {
	c, n := d.p.ctrl(), d.p.nodeC()
	var out []csiCase
	add := func(rpc string, v value, want []codes.Code, rule string, call func(ctx context.Context, capa *csi.VolumeCapability) error) {
		capa := cap1(ro, v.v)
		out = append(out, csiCase{door: d.name, rpc: rpc, input: "read-only, mount flag: " + v.label, want: want, rule: rule,
			call: func(ctx context.Context) error { return call(ctx, capa) }})
	}
	for _, v := range grantingFlags {
		add("CreateVolume", v, invalidOnly, ruleFlags, func(ctx context.Context, capa *csi.VolumeCapability) error {
			_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "flags", VolumeCapabilities: []*csi.VolumeCapability{capa}, Parameters: d.params, Secrets: d.secrets,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20}})
			return err
		})
		if d.attach {
			add("ControllerPublishVolume", v, invalidOnly, ruleFlags, func(ctx context.Context, capa *csi.VolumeCapability) error {
				_, err := c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: d.vol, NodeId: node, VolumeCapability: capa, Secrets: d.secrets})
				return err
			})
		}
		add("ValidateVolumeCapabilities", v, codesOf(codes.OK, codes.InvalidArgument), ruleVVC, func(ctx context.Context, capa *csi.VolumeCapability) error {
			resp, err := c.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: d.vol, VolumeCapabilities: []*csi.VolumeCapability{capa}, Secrets: d.secrets})
			if err == nil && resp.GetConfirmed() != nil {
				return fmt.Errorf("confirmed mount flag %q", capa.GetMount().GetMountFlags())
			}
			return err
		})
		add("NodeStageVolume", v, invalidOnly, ruleFlags, func(ctx context.Context, capa *csi.VolumeCapability) error {
			_, err := n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: d.vol, StagingTargetPath: filepath.Join(d.dir, "flag-stage"), VolumeCapability: capa, Secrets: d.secrets})
			return err
		})
		add("NodePublishVolume", v, invalidOnly, ruleFlags, func(ctx context.Context, capa *csi.VolumeCapability) error {
			_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: d.vol, StagingTargetPath: d.staging, TargetPath: filepath.Join(d.dir, "flag-target"), VolumeCapability: capa, Readonly: true, Secrets: d.secrets})
			return err
		})
	}
	return out
}

// sizeCases sends negative and huge sizes, and unknown parameters.
func (d *door) sizeCases() []csiCase {
	c, n := d.p.ctrl(), d.p.nodeC()
	capa := cap1(rw)
	var out []csiCase
	add := func(rpc, input string, want []codes.Code, rule string, call func(ctx context.Context) error) {
		out = append(out, csiCase{door: d.name, rpc: rpc, input: input, want: want, rule: rule, call: call})
	}
	create := func(r *csi.CapacityRange, params map[string]string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "sizes", VolumeCapabilities: []*csi.VolumeCapability{capa}, CapacityRange: r, Parameters: params, Secrets: d.secrets})
			return err
		}
	}
	add("CreateVolume", "required_bytes -1", invalidOnly, ruleNegative, create(&csi.CapacityRange{RequiredBytes: -1}, d.params))
	add("CreateVolume", "required_bytes MinInt64 (a varint over int64 arrives as this)", invalidOnly, ruleNegative, create(&csi.CapacityRange{RequiredBytes: math.MinInt64}, d.params))
	add("CreateVolume", "limit_bytes -1", invalidOnly, ruleNegative, create(&csi.CapacityRange{LimitBytes: -1}, d.params))
	if d.name != "s3" { // a bucket has no pool to exceed
		add("CreateVolume", "required_bytes MaxInt64 (over the pool)", codesOf(codes.ResourceExhausted, codes.OutOfRange), ruleCapacity, create(&csi.CapacityRange{RequiredBytes: math.MaxInt64}, d.params))
	}
	add("ControllerExpandVolume", "required_bytes -1", codesOf(codes.InvalidArgument, codes.Unimplemented), ruleNegative, func(ctx context.Context) error {
		_, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: d.vol, CapacityRange: &csi.CapacityRange{RequiredBytes: -1}, Secrets: d.secrets})
		return err
	})
	add("ControllerExpandVolume", "limit_bytes -1", codesOf(codes.InvalidArgument, codes.Unimplemented), ruleNegative, func(ctx context.Context) error {
		_, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: d.vol, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20, LimitBytes: -1}, Secrets: d.secrets})
		return err
	})
	if d.name != "s3" {
		add("ControllerExpandVolume", "required_bytes MaxInt64 (over the pool)", codesOf(codes.ResourceExhausted, codes.OutOfRange, codes.Unimplemented), ruleCapacity, func(ctx context.Context) error {
			_, err := c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: d.vol, CapacityRange: &csi.CapacityRange{RequiredBytes: math.MaxInt64}, Secrets: d.secrets})
			return err
		})
	}
	add("NodeExpandVolume", "required_bytes -1", codesOf(codes.InvalidArgument, codes.Unimplemented), ruleNegative, func(ctx context.Context) error {
		_, err := n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: d.vol, VolumePath: d.target, CapacityRange: &csi.CapacityRange{RequiredBytes: -1}, Secrets: d.secrets})
		return err
	})
	add("GetCapacity", "unknown parameter", codesOf(codes.OK, codes.InvalidArgument, codes.Unimplemented), "spec GetCapacity: parameters are the StorageClass's; the pool's room is the same for any (a read, nothing changes)", func(ctx context.Context) error {
		_, err := c.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"evil": "$(id)"}})
		return err
	})
	add("ListVolumes", "negative max_entries", codesOf(codes.InvalidArgument, codes.Unimplemented), ruleInvalid, func(ctx context.Context) error {
		_, err := c.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: -1})
		return err
	})
	add("ListVolumes", "hostile starting_token", codesOf(codes.Aborted, codes.Unimplemented), "spec ListVolumes: invalid starting_token → 10 ABORTED", func(ctx context.Context) error {
		_, err := c.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "../../" + d.outside})
		return err
	})
	for _, p := range d.badParams() {
		add("CreateVolume", "parameter "+p.label, invalidOnly, ruleInvalid, create(&csi.CapacityRange{RequiredBytes: 16 << 20}, p.params))
	}
	add("CreateVolume", "unknown mutable parameter", codesOf(codes.InvalidArgument), "spec CreateVolume: mutable_parameters not supported → 3 INVALID_ARGUMENT", func(ctx context.Context) error {
		_, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "mutable", VolumeCapabilities: []*csi.VolumeCapability{capa}, Parameters: d.params, Secrets: d.secrets,
			CapacityRange: &csi.CapacityRange{RequiredBytes: 16 << 20}, MutableParameters: map[string]string{"evil": "1"}})
		return err
	})
	add("ControllerModifyVolume", "unknown mutable parameter", codesOf(codes.InvalidArgument, codes.Unimplemented), "spec ControllerModifyVolume: parameters not supported → 3 INVALID_ARGUMENT", func(ctx context.Context) error {
		_, err := c.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{VolumeId: d.vol, MutableParameters: map[string]string{"evil;id": "$(id)"}, Secrets: d.secrets})
		return err
	})
	if d.snapshots {
		add("CreateSnapshot", "unknown parameter", invalidOnly, ruleInvalid, func(ctx context.Context) error {
			_, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "psnap", SourceVolumeId: d.vol, Parameters: map[string]string{"evil": "`id`"}})
			return err
		})
	}
	if d.ephemeral {
		for _, e := range []struct{ label, size, fs string }{
			{"size -1", "-1", ""}, {"size 1e400", "1e400", ""}, {"size 8Ei (over the pool)", "8Ei", ""},
			{"size 'Gi' (no number)", "Gi", ""}, {"fsType with ;", "16Mi", "ext4;touch " + d.outside + "/pwn"},
			{"fsType ../", "16Mi", "../../sbin/x"},
		} {
			want := invalidOnly
			if e.label == "size 8Ei (over the pool)" {
				want = codesOf(codes.ResourceExhausted, codes.OutOfRange)
			}
			add("NodePublishVolume (ephemeral)", e.label, want, ruleInvalid, func(ctx context.Context) error {
				vc := map[string]string{"csi.storage.k8s.io/ephemeral": "true", "size": e.size}
				if e.fs != "" {
					vc["fsType"] = e.fs
				}
				_, err := n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "eph-hostile", TargetPath: filepath.Join(d.dir, "eph-target"), VolumeCapability: capa, VolumeContext: vc})
				return err
			})
		}
	}
	return out
}

type badParam struct {
	label  string
	params map[string]string
}

func (d *door) badParams() []badParam {
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range d.params {
			m[a] = b
		}
		m[k] = v
		return m
	}
	out := []badParam{
		{"unknown key", with("evil", "1")},
		{"unknown key with shell", with("x;id", "$(id)")},
	}
	switch d.name {
	case "local":
		out = append(out,
			badParam{"fsType with ;", with("fsType", "ext4;touch "+d.outside+"/pwn")},
			badParam{"fsType ../", with("fsType", "../../bin/sh")},
			badParam{"layout ../", with("layout", "../native")})
	case "s3":
		out = append(out,
			badParam{"mounter with ;", with("mounter", "s3fs;id")},
			badParam{"uid -1", with("uid", "-1")},
			badParam{"fileMode 4777 (setuid)", with("fileMode", "4777")},
			badParam{"bucket ../", with("bucket", "../x")},
			badParam{"prefix ../", with("prefix", "../../x")})
	}
	return out
}
