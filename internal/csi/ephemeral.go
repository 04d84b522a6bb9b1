package csi

import (
	"context"
	"errors"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/volplug/volplug/internal/backend"
)

// Ephemeral inline volumes (volumeLifecycleModes: Ephemeral) are made at
// NodePublish and removed at NodeUnpublish: the pod spec carries the size
// and filesystem as volume attributes, and no controller is involved.
const (
	ephemeralKey  = "csi.storage.k8s.io/ephemeral"
	ephemeralSize = "size"   // e.g. "1Gi"
	ephemeralFs   = "fsType" // e.g. "xfs"
)

func (s *nodeServer) publishEphemeral(ctx context.Context, req *csi.NodePublishVolumeRequest, target string, capa capability) (*csi.NodePublishVolumeResponse, error) {
	if !s.d.backend.Capabilities().Ephemeral {
		return nil, status.Error(codes.InvalidArgument, "this backend has no ephemeral volumes")
	}
	var size int64
	if q := req.GetVolumeContext()[ephemeralSize]; q != "" {
		parsed, err := resource.ParseQuantity(q)
		if err != nil || parsed.Value() <= 0 {
			return nil, invalid("ephemeral volume size %q is not a positive quantity", q)
		}
		size = parsed.Value()
	}
	fsType := capa.fsType
	if fsType == "" {
		fsType = req.GetVolumeContext()[ephemeralFs]
	}
	v, err := s.d.backend.CreateVolume(ctx, &backend.CreateRequest{
		Name: req.GetVolumeId(), MinSize: size, FsType: fsType, Block: capa.block, Ephemeral: true,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	// Already published here: a retry, maybe by a driver restarted in a new
	// mount namespace, where its predecessor's staging mount is gone. Staging
	// again would check a filesystem that is mounted, and the clean-up of a
	// failure would take the volume from under its pod.
	if at, err := s.d.backend.VolumeAt(ctx, target); err != nil {
		return nil, toStatus(err)
	} else if at == v.ID {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	// Staging path "": the backend stages it in a place of its own.
	err = s.d.backend.Stage(ctx, &backend.StageRequest{ID: v.ID, Block: capa.block, FsType: fsType, MountFlags: capa.mountFlags})
	if err == nil {
		err = s.d.backend.Publish(ctx, &backend.PublishRequest{ID: v.ID, TargetPath: target, Block: capa.block, ReadOnly: req.GetReadonly()})
	}
	if err != nil {
		// Leave nothing of a pod that will not start.
		_ = s.removeEphemeral(ctx, v.ID, target)
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (s *nodeServer) removeEphemeral(ctx context.Context, id, target string) error {
	return errors.Join(
		s.d.backend.Unpublish(ctx, id, target),
		s.d.backend.Unstage(ctx, id, ""),
		s.d.backend.DeleteVolume(ctx, id, nil),
	)
}
