package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func newNodeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "node",
		Aliases: []string{"n"},
		Short:   "The Node service: mount volumes on this node (what kubelet calls)",
	}
	cmd.AddCommand(newNodeStage(g), newNodeUnstage(g), newNodePublish(g), newNodeUnpublish(g),
		newNodeGetInfo(g), newNodeCaps(g), newNodeStats(g), newNodeExpand(g))
	return cmd
}

func newNodeStage(g *globals) *cobra.Command {
	var (
		caps           capsValue
		pubCtx, volCtx kvValue
		staging        string
	)
	cmd := &cobra.Command{
		Use:   "stage ID...",
		Short: "NodeStageVolume: make a volume ready on this node at a global path (kubelet's MountDevice)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			c, err := oneCap(&caps)
			if err != nil {
				return err
			}
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewNodeClient(conn).NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
					VolumeId: id, StagingTargetPath: staging, VolumeCapability: c,
					PublishContext: pubCtx.m, VolumeContext: volCtx.m, Secrets: s,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("NodeStageVolume %s at %s: %w", id, staging, err)
				}
				return r, nil, nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&staging, "staging-target-path", "", "global mount path for the volume on this node")
	_ = cmd.MarkFlagRequired("staging-target-path")
	capFlag(f, &caps, "capability to stage with (one)")
	f.Var(&pubCtx, "pub-context", "publish context from 'controller publish', k=v[,k=v] (repeatable)")
	f.Var(&volCtx, "vol-context", "volume context from create-volume, k=v[,k=v] (repeatable)")
	return cmd
}

func newNodeUnstage(g *globals) *cobra.Command {
	var staging string
	cmd := &cobra.Command{
		Use:   "unstage ID...",
		Short: "NodeUnstageVolume: undo stage (kubelet's UnmountDevice)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, _ map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewNodeClient(conn).NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{
					VolumeId: id, StagingTargetPath: staging,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("NodeUnstageVolume %s at %s: %w", id, staging, err)
				}
				return r, nil, nil
			})
		},
	}
	cmd.Flags().StringVar(&staging, "staging-target-path", "", "the path the volume was staged at")
	_ = cmd.MarkFlagRequired("staging-target-path")
	return cmd
}

func newNodePublish(g *globals) *cobra.Command {
	var (
		caps            capsValue
		pubCtx, volCtx  kvValue
		staging, target string
		readOnly        bool
	)
	cmd := &cobra.Command{
		Use:   "publish ID...",
		Short: "NodePublishVolume: mount a volume into a pod's directory (kubelet's SetUp)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			c, err := oneCap(&caps)
			if err != nil {
				return err
			}
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewNodeClient(conn).NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
					VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: c,
					Readonly: readOnly, PublishContext: pubCtx.m, VolumeContext: volCtx.m, Secrets: s,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("NodePublishVolume %s at %s: %w", id, target, err)
				}
				return r, nil, nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target-path", "", "the pod's volume path; the driver creates it")
	_ = cmd.MarkFlagRequired("target-path")
	f.StringVar(&staging, "staging-target-path", "", "where the volume was staged (needed if the driver stages)")
	capFlag(f, &caps, "capability to publish with (one)")
	f.BoolVar(&readOnly, "read-only", false, "mount read-only")
	f.Var(&pubCtx, "pub-context", "publish context from 'controller publish', k=v[,k=v] (repeatable)")
	f.Var(&volCtx, "vol-context", "volume context from create-volume, k=v[,k=v] (repeatable)")
	return cmd
}

func newNodeUnpublish(g *globals) *cobra.Command {
	var target string
	cmd := &cobra.Command{
		Use:   "unpublish ID...",
		Short: "NodeUnpublishVolume: unmount a volume from a pod's directory (kubelet's TearDown)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, _ map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewNodeClient(conn).NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{
					VolumeId: id, TargetPath: target,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("NodeUnpublishVolume %s at %s: %w", id, target, err)
				}
				return r, nil, nil
			})
		},
	}
	cmd.Flags().StringVar(&target, "target-path", "", "the path the volume was published at")
	_ = cmd.MarkFlagRequired("target-path")
	return cmd
}

func newNodeGetInfo(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get-info",
		Short: "NodeGetInfo: this node's ID (the CSINode object), volume limit and topology",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				r, err := csi.NewNodeClient(conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
				if err != nil {
					return fmt.Errorf("NodeGetInfo: %w", err)
				}
				return p.print(r, []string{"NODE_ID", "MAX_VOLUMES", "TOPOLOGY"}, func(t *table) {
					t.row(r.GetNodeId(), r.GetMaxVolumesPerNode(), FormatKV(r.GetAccessibleTopology().GetSegments()))
				})
			})
		},
	}
}

func newNodeCaps(g *globals) *cobra.Command {
	return capsCommand(g, "NodeGetCapabilities: which node calls the driver implements",
		func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, []string, error) {
			r, err := csi.NewNodeClient(conn).NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
			if err != nil {
				return nil, nil, fmt.Errorf("NodeGetCapabilities: %w", err)
			}
			var names []string
			for _, c := range r.GetCapabilities() {
				names = append(names, c.GetRpc().GetType().String())
			}
			return r, names, nil
		})
}

// parseStatsArg reads csc's ID:VOLUME_PATH[:STAGING_PATH]; paths given by
// flag fill in what the argument leaves out.
func parseStatsArg(arg, path, staging string) (id, p, s string, err error) {
	parts := strings.SplitN(arg, ":", 3)
	id = parts[0]
	p, s = path, staging
	if len(parts) > 1 {
		p = parts[1]
	}
	if len(parts) > 2 {
		s = parts[2]
	}
	if id == "" || p == "" {
		return "", "", "", fmt.Errorf("%q: want VOLUME_ID:VOLUME_PATH[:STAGING_PATH] or VOLUME_ID with --volume-path", arg)
	}
	return id, p, s, nil
}

func newNodeStats(g *globals) *cobra.Command {
	var path, staging string
	cmd := &cobra.Command{
		Use:   "stats ID:VOLUME_PATH[:STAGING_PATH]...",
		Short: "NodeGetVolumeStats: a mounted volume's space and inode use (kubelet's volume metrics)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				header := []string{"ID", "PATH", "UNIT", "TOTAL", "USED", "AVAILABLE"}
				for _, arg := range args {
					id, vp, sp, err := parseStatsArg(arg, path, staging)
					if err != nil {
						return err
					}
					r, err := csi.NewNodeClient(conn).NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{
						VolumeId: id, VolumePath: vp, StagingTargetPath: sp,
					})
					if err != nil {
						return fmt.Errorf("NodeGetVolumeStats %s at %s: %w", id, vp, err)
					}
					if err := p.print(r, header, func(t *table) {
						for _, u := range r.GetUsage() {
							t.row(id, vp, u.GetUnit().String(), u.GetTotal(), u.GetUsed(), u.GetAvailable())
						}
					}); err != nil {
						return err
					}
					header = nil
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&path, "volume-path", "", "path the volume is published or staged at (when the argument is only an ID)")
	cmd.Flags().StringVar(&staging, "staging-target-path", "", "the volume's staging path (optional)")
	return cmd
}

func newNodeExpand(g *globals) *cobra.Command {
	var (
		caps     capsValue
		req, lim int64
		staging  string
	)
	cmd := &cobra.Command{
		Use:   "expand-volume ID VOLUME_PATH",
		Short: "NodeExpandVolume: grow the filesystem after the controller grew the storage (kubelet's resize)",
		Long: "NodeExpandVolume: grow the filesystem after the controller grew the storage.\n" +
			"Prints VOLUME_ID CAPACITY_BYTES.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req == 0 && lim == 0 {
				return errors.New("give the new size with --req-bytes (and/or --lim-bytes)")
			}
			var c *csi.VolumeCapability
			if len(caps.caps) > 0 {
				var err error
				if c, err = oneCap(&caps); err != nil {
					return err
				}
			}
			id, path := args[0], args[1]
			return g.eachID(cmd, []string{id}, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewNodeClient(conn).NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
					VolumeId: id, VolumePath: path, StagingTargetPath: staging,
					CapacityRange: capacityRange(req, lim), VolumeCapability: c, Secrets: s,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("NodeExpandVolume %s at %s: %w", id, path, err)
				}
				return r, []any{r.GetCapacityBytes()}, nil
			})
		},
	}
	f := cmd.Flags()
	f.Var(sizeValue{&req}, "req-bytes", "new required size in bytes (suffixes accepted)")
	f.Var(sizeValue{&lim}, "lim-bytes", "new size limit in bytes (suffixes accepted)")
	f.StringVar(&staging, "staging-target-path", "", "the volume's staging path")
	capFlag(f, &caps, "the volume's capability (optional, one)")
	return cmd
}
