package adapt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/csirpc"
	"github.com/volplug/volplug/internal/mount"
	"github.com/volplug/volplug/pkg/flex"
)

type nodeServer struct {
	csi.UnimplementedNodeServer
	a *Adapter
}

func (s *nodeServer) NodeGetInfo(ctx context.Context, req *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.a.opts.NodeID}, nil
}

func (s *nodeServer) NodeGetCapabilities(ctx context.Context, req *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var types []csi.NodeServiceCapability_RPC_Type
	f := s.a.feat
	if f.attach {
		types = append(types, csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME)
	}
	if f.expandNode {
		types = append(types, csi.NodeServiceCapability_RPC_EXPAND_VOLUME)
	}
	if f.mountGroup {
		types = append(types, csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP)
	}
	if f.nodeMetrics {
		types = append(types, csi.NodeServiceCapability_RPC_GET_VOLUME_STATS)
	}
	caps := make([]*csi.NodeServiceCapability, 0, len(types))
	for _, t := range types {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// nodeCapability is checkCapability, plus the fsGroup rule: kubelet sends
// VOLUME_MOUNT_GROUP only when it is advertised, i.e. when the driver
// applies fsGroup itself (init: fsGroup false).
func (s *nodeServer) nodeCapability(c *csi.VolumeCapability) (csirpc.Capability, error) {
	capa, err := checkCapability(c)
	if err == nil && capa.MountGroup != "" && !s.a.feat.mountGroup {
		capa.MountGroup = "" // kubelet applies it, as it would for this flex driver
	}
	return capa, err
}

// NodeStageVolume is what kubelet does for an attachable flex driver:
// waitforattach, then mountdevice (or, when the driver has none, format
// the device if blank and mount it) at the staging path.
func (s *nodeServer) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if !s.a.feat.attach {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not attach volumes, so nothing is staged")
	}
	staging, err := checkIDAndPath(req.GetVolumeId(), "staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	capa, err := s.nodeCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if on, err := mount.New().Mounted(staging); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if on != nil {
		return &csi.NodeStageVolumeResponse{}, nil // kubelet: mountdevice only once
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, status.Errorf(codes.Internal, "staging path: %v", err)
	}
	opts := driverOptions{volumeID: req.GetVolumeId(), attrs: req.GetVolumeContext(), capa: capa, secrets: req.GetSecrets()}
	js := opts.json()
	device := req.GetPublishContext()[publishDevice]
	res, err := s.a.call(ctx, flex.CallWaitForAttach, device, js)
	switch {
	case errors.Is(err, flex.ErrNotSupported):
	case err != nil:
		return nil, toStatus(res, err)
	case res.Device != "":
		device = res.Device
	}
	res, err = s.a.call(ctx, flex.CallMountDevice, staging, device, js)
	if errors.Is(err, flex.ErrNotSupported) {
		err = formatAndMount(device, staging, capa)
		res = nil
	}
	if err != nil {
		return nil, toStatus(res, err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// formatAndMount is kubelet's default mountdevice.
func formatAndMount(device, staging string, capa csirpc.Capability) error {
	if device == "" {
		return status.Error(codes.FailedPrecondition, "the driver has no mountdevice and attach named no device to mount")
	}
	fsType := capa.FsType
	if fsType == "" {
		fsType = "ext4" // kubelet's default
	}
	flags := capa.MountFlags
	if capa.ReadOnly {
		flags = append([]string{"ro"}, flags...)
	}
	if err := mount.New().FormatAndMount(device, staging, fsType, flags); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

func (s *nodeServer) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if !s.a.feat.attach {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not attach volumes, so nothing is staged")
	}
	staging, err := checkIDAndPath(req.GetVolumeId(), "staging target path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.undo(ctx, flex.CallUnmountDevice, staging); err != nil {
		return nil, err
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume is kubelet's SetUp: the driver's mount, or, when it
// has none, a bind mount from where mountdevice staged the volume.
func (s *nodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target, err := checkIDAndPath(req.GetVolumeId(), "target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	capa, err := s.nodeCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	var staging string
	if s.a.feat.attach {
		if req.GetStagingTargetPath() == "" {
			return nil, status.Error(codes.FailedPrecondition, "staging target path is missing: this driver stages volumes (NodeStageVolume) before publishing them")
		}
		if staging, err = csirpc.CheckNodePath("staging target path", req.GetStagingTargetPath()); err != nil {
			return nil, err
		}
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	m := mount.New()
	if on, err := m.Mounted(target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	} else if on != nil {
		return &csi.NodePublishVolumeResponse{}, nil // kubelet: mount only once
	}
	if staging != "" {
		// The bind's source must be what NodeStage mounted: a staging
		// path with nothing mounted on it (or the root of the mount
		// namespace) would put the host's own directories in the pod.
		if on, err := m.Mounted(staging); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		} else if on == nil || staging == "/" {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s: NodeStageVolume first", req.GetVolumeId(), staging)
		}
	}
	// kubelet makes the pod's volume directory before mount; CSI leaves
	// the target to the driver.
	_, statErr := os.Stat(target)
	made := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, status.Errorf(codes.Internal, "target path: %v", err)
	}
	readOnly := req.GetReadonly() || capa.ReadOnly
	opts := driverOptions{volumeID: req.GetVolumeId(), attrs: req.GetVolumeContext(), capa: capa,
		readOnly: readOnly, secrets: req.GetSecrets()}
	res, err := s.a.call(ctx, flex.CallMount, target, opts.json())
	if errors.Is(err, flex.ErrNotSupported) {
		res, err = nil, s.bind(staging, target, readOnly)
	}
	if err != nil {
		if made {
			// Leave nothing behind: the directory goes unless the driver
			// left a mount on it, which unpublish will take down.
			if on, _ := m.Mounted(target); on == nil {
				_ = os.Remove(target)
			}
		}
		return nil, toStatus(res, err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// bind is kubelet's default mount: the staged filesystem, bound into the pod.
func (s *nodeServer) bind(staging, target string, readOnly bool) error {
	if staging == "" {
		return status.Error(codes.FailedPrecondition, "the driver has no mount call and stages nothing (no attach) to bind from")
	}
	if err := mount.New().Bind(staging, target, readOnly); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

func (s *nodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target, err := checkIDAndPath(req.GetVolumeId(), "target path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.undo(ctx, flex.CallUnmount, target); err != nil {
		return nil, err
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove target %s: %v", target, err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// undo runs unmount or unmountdevice, which take nothing but the path, so
// no state is needed: a path that is gone is done; "Not supported" gets
// kubelet's default, an unmount. A path the driver says it unmounted must
// really be unmounted. A driver failing on a path nothing is mounted at
// (a repeat, after a restart) is only logged: there is nothing left to undo.
func (s *nodeServer) undo(ctx context.Context, call, path string) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	m := mount.New()
	on, err := m.Mounted(path)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	res, err := s.a.call(ctx, call, path)
	switch {
	case errors.Is(err, flex.ErrNotSupported):
		if err := m.Unmount(path); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
	case err != nil && on == nil && !errors.Is(err, context.DeadlineExceeded):
		klog.InfoS("driver failed to undo a path nothing is mounted at", "call", call, "path", path, "error", err)
	case err != nil:
		return toStatus(res, err)
	}
	if on, err := m.Mounted(path); err != nil {
		return status.Error(codes.Internal, err.Error())
	} else if on != nil {
		return status.Errorf(codes.Internal, "the driver's %s answered Success, but %s is still mounted (%s)", call, path, on.Source)
	}
	return nil
}

// NodeExpandVolume is kubelet's expandfs, or its generic resize of the
// staged device when the driver has none.
func (s *nodeServer) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	if !s.a.feat.expandNode {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not grow filesystems")
	}
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	path, err := csirpc.CheckVolumePath(req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return nil, csirpc.Invalid("raw block volumes: a FlexVolume driver has no raw block mode")
	}
	deviceMountPath := path
	if p := req.GetStagingTargetPath(); p != "" {
		if deviceMountPath, err = csirpc.CheckPath("staging target path", p); err != nil {
			return nil, err
		}
	}
	release, err := s.a.locks.Acquire(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	m := mount.New()
	on, err := m.Mounted(path)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if on == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", req.GetVolumeId(), path)
	}
	device := ""
	if dm, err := m.Mounted(deviceMountPath); err == nil && dm != nil {
		device = dm.Source
	}
	want := req.GetCapacityRange().GetRequiredBytes()
	opts := driverOptions{volumeID: req.GetVolumeId(), secrets: req.GetSecrets()}
	res, err := s.a.call(ctx, flex.CallExpandFS, opts.json(), device, deviceMountPath, strconv.FormatInt(want, 10), "0")
	switch {
	case errors.Is(err, flex.ErrNotSupported):
		if device == "" || !isBlockDevice(device) {
			return nil, status.Errorf(codes.FailedPrecondition, "the driver has no expandfs and %s is not on a block device to grow", deviceMountPath)
		}
		if err := m.Resize(device, deviceMountPath); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	case err != nil:
		return nil, toStatus(res, err)
	case res.VolumeNewSize > 0:
		want = res.VolumeNewSize
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: want}, nil
}

func isBlockDevice(path string) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK
}

// NodeGetVolumeStats is what kubelet does for a driver that reports
// supportsMetrics: statfs of the published volume.
func (s *nodeServer) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if !s.a.feat.nodeMetrics {
		return nil, status.Error(codes.Unimplemented, "the FlexVolume driver does not report supportsMetrics")
	}
	if err := checkID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	path, err := csirpc.CheckVolumePath(req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	on, err := mount.New().Mounted(path)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if on == nil {
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", req.GetVolumeId(), path)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, status.Error(codes.Internal, fmt.Sprintf("statfs %s: %v", path, err))
	}
	bs := int64(st.Bsize)
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: int64(st.Blocks) * bs, Available: int64(st.Bavail) * bs, Used: int64(st.Blocks-st.Bfree) * bs},
		{Unit: csi.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree), Used: int64(st.Files - st.Ffree)},
	}}, nil
}
