package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// defaultCap is what a command sends when --cap is not given and the call
// needs one: the access mode a ReadWriteOnce PVC maps to, filesystem left
// to the driver. It keeps quick manual use short.
const defaultCap = "SINGLE_NODE_WRITER,mount"

// capFlag registers --cap on fs.
func capFlag(fs *pflag.FlagSet, v *capsValue, what string) {
	fs.Var(v, "cap", what+"; MODE,TYPE[,FSTYPE,MOUNT_FLAGS], e.g. SINGLE_NODE_WRITER,mount,ext4,noatime or 1,block (repeatable)")
}

// capsOrDefault returns the given capabilities or the default one.
func capsOrDefault(v *capsValue) []*csi.VolumeCapability {
	if len(v.caps) > 0 {
		return v.caps
	}
	c, err := ParseCapability(defaultCap)
	if err != nil {
		panic(err) // a constant that does not parse is a programming error
	}
	return []*csi.VolumeCapability{c}
}

// oneCap is for calls that take exactly one capability.
func oneCap(v *capsValue) (*csi.VolumeCapability, error) {
	caps := capsOrDefault(v)
	if len(caps) != 1 {
		return nil, fmt.Errorf("this call takes one --cap, got %d", len(caps))
	}
	return caps[0], nil
}

func capacityRange(req, lim int64) *csi.CapacityRange {
	if req == 0 && lim == 0 {
		return nil
	}
	return &csi.CapacityRange{RequiredBytes: req, LimitBytes: lim}
}

func newControllerCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "controller",
		Aliases: []string{"c"},
		Short:   "The Controller service: provision, attach, snapshot, expand (what external-provisioner and external-attacher call)",
	}
	cmd.AddCommand(
		newCreateVolume(g), newDeleteVolume(g), newControllerPublish(g), newControllerUnpublish(g),
		newValidateCaps(g), newListVolumes(g), newGetCapacity(g), newControllerCaps(g),
		newCreateSnapshot(g), newDeleteSnapshot(g), newListSnapshots(g), newControllerExpand(g),
		newGetVolume(g),
	)
	return cmd
}

func newCreateVolume(g *globals) *cobra.Command {
	var (
		caps               capsValue
		params             kvValue
		req, lim           int64
		srcVolume, srcSnap string
	)
	cmd := &cobra.Command{
		Use:   "create-volume NAME...",
		Short: "CreateVolume: provision a volume (a PVC being bound to a new PV)",
		Long: "CreateVolume: provision a volume (a PVC being bound to a new PV).\n" +
			"Prints VOLUME_ID CAPACITY_BYTES VOLUME_CONTEXT per volume, no header.\n" +
			"Without --cap, " + defaultCap + " is sent.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, names []string) error {
			if srcVolume != "" && srcSnap != "" {
				return errors.New("--source-volume and --source-snapshot exclude each other")
			}
			secrets, err := secretsFromEnv()
			if err != nil {
				return err
			}
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				c := csi.NewControllerClient(conn)
				for _, name := range names {
					r, err := c.CreateVolume(ctx, &csi.CreateVolumeRequest{
						Name:                name,
						CapacityRange:       capacityRange(req, lim),
						VolumeCapabilities:  capsOrDefault(&caps),
						Parameters:          params.m,
						Secrets:             secrets,
						VolumeContentSource: contentSource(srcVolume, srcSnap),
					})
					if err != nil {
						return fmt.Errorf("CreateVolume %s: %w", name, err)
					}
					v := r.GetVolume()
					if err := p.print(r, nil, func(t *table) {
						t.row(v.GetVolumeId(), v.GetCapacityBytes(), FormatKV(v.GetVolumeContext()))
					}); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	capFlag(f, &caps, "capability the volume must support")
	f.Var(&params, "params", "StorageClass parameters, k=v[,k=v] (repeatable)")
	f.Var(sizeValue{&req}, "req-bytes", "required size in bytes (suffixes Ki, Mi, Gi, Ti accepted)")
	f.Var(sizeValue{&lim}, "lim-bytes", "size limit in bytes (suffixes accepted)")
	f.StringVar(&srcVolume, "source-volume", "", "clone this volume ID")
	f.StringVar(&srcSnap, "source-snapshot", "", "restore this snapshot ID")
	return cmd
}

func contentSource(vol, snap string) *csi.VolumeContentSource {
	switch {
	case vol != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: vol}}}
	case snap != "":
		return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap}}}
	}
	return nil
}

// idCall is one RPC for one ID: it returns the response (printed as JSON
// with -o json) and the table cells that follow the ID.
type idCall func(ctx context.Context, conn *grpc.ClientConn, id string, secrets map[string]string) (proto.Message, []any, error)

// eachID repeats one call per ID, the shape of every command that acts on
// IDs, stopping at the first error as csc does.
func (g *globals) eachID(cmd *cobra.Command, ids []string, call idCall) error {
	secrets, err := secretsFromEnv()
	if err != nil {
		return err
	}
	return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
		for _, id := range ids {
			r, cells, err := call(ctx, conn, id, secrets)
			if err != nil {
				return err
			}
			if err := p.print(r, nil, func(t *table) { t.row(append([]any{id}, cells...)...) }); err != nil {
				return err
			}
		}
		return nil
	})
}

func newDeleteVolume(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-volume ID...",
		Short: "DeleteVolume: remove a volume (a PV with reclaim policy Delete going away)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewControllerClient(conn).DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: s})
				if err != nil {
					return nil, nil, fmt.Errorf("DeleteVolume %s: %w", id, err)
				}
				return r, nil, nil
			})
		},
	}
}

func newControllerPublish(g *globals) *cobra.Command {
	var (
		caps     capsValue
		volCtx   kvValue
		nodeID   string
		readOnly bool
	)
	cmd := &cobra.Command{
		Use:   "publish ID...",
		Short: "ControllerPublishVolume: attach a volume to a node (a VolumeAttachment)",
		Long: "ControllerPublishVolume: attach a volume to a node (a VolumeAttachment).\n" +
			"Prints VOLUME_ID PUBLISH_CONTEXT; pass the context to `node stage --pub-context`.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			c, err := oneCap(&caps)
			if err != nil {
				return err
			}
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewControllerClient(conn).ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
					VolumeId: id, NodeId: nodeID, VolumeCapability: c, Readonly: readOnly,
					Secrets: s, VolumeContext: volCtx.m,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("ControllerPublishVolume %s to %s: %w", id, nodeID, err)
				}
				return r, []any{FormatKV(r.GetPublishContext())}, nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&nodeID, "node-id", "", "node to attach to (as 'node get-info' reports it)")
	_ = cmd.MarkFlagRequired("node-id")
	capFlag(f, &caps, "capability to publish with (one)")
	f.BoolVar(&readOnly, "read-only", false, "attach read-only")
	f.Var(&volCtx, "vol-context", "volume context from create-volume, k=v[,k=v] (repeatable)")
	return cmd
}

func newControllerUnpublish(g *globals) *cobra.Command {
	var nodeID string
	cmd := &cobra.Command{
		Use:   "unpublish ID...",
		Short: "ControllerUnpublishVolume: detach a volume from a node (a VolumeAttachment deleted)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewControllerClient(conn).ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{
					VolumeId: id, NodeId: nodeID, Secrets: s,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("ControllerUnpublishVolume %s from %s: %w", id, nodeID, err)
				}
				return r, nil, nil
			})
		},
	}
	cmd.Flags().StringVar(&nodeID, "node-id", "", "node to detach from; empty means every node (as the spec allows)")
	return cmd
}

func newValidateCaps(g *globals) *cobra.Command {
	var (
		caps           capsValue
		volCtx, params kvValue
	)
	cmd := &cobra.Command{
		Use:   "validate-volume-capabilities ID...",
		Short: "ValidateVolumeCapabilities: can this existing volume be used this way (a pre-provisioned PV)",
		Long: "ValidateVolumeCapabilities: can this existing volume be used this way.\n" +
			"Prints VOLUME_ID CONFIRMED MESSAGE; CONFIRMED lists the capabilities the driver confirmed, or 'no'.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewControllerClient(conn).ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{
					VolumeId: id, VolumeCapabilities: capsOrDefault(&caps), VolumeContext: volCtx.m,
					Parameters: params.m, Secrets: s,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("ValidateVolumeCapabilities %s: %w", id, err)
				}
				confirmed := "no"
				if cf := r.GetConfirmed(); cf != nil {
					s := make([]string, len(cf.GetVolumeCapabilities()))
					for i, c := range cf.GetVolumeCapabilities() {
						s[i] = FormatCapability(c)
					}
					confirmed = strings.Join(s, " ")
				}
				return r, []any{confirmed, r.GetMessage()}, nil
			})
		},
	}
	f := cmd.Flags()
	capFlag(f, &caps, "capability to check")
	f.Var(&volCtx, "vol-context", "volume context, k=v[,k=v] (repeatable)")
	f.Var(&params, "params", "parameters, k=v[,k=v] (repeatable)")
	return cmd
}

// pageFlags are the paging flags of the List calls.
type pageFlags struct {
	max    int32
	token  string
	paging bool
}

func (pf *pageFlags) register(fs *pflag.FlagSet) {
	fs.Int32Var(&pf.max, "max-entries", 0, "at most this many entries per response (0: driver decides)")
	fs.StringVar(&pf.token, "starting-token", "", "continue from this token (from an earlier response)")
	fs.BoolVar(&pf.paging, "paging", false, "follow next tokens until the list ends")
}

func newListVolumes(g *globals) *cobra.Command {
	var pf pageFlags
	cmd := &cobra.Command{
		Use:   "list-volumes",
		Short: "ListVolumes: every volume the driver knows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				c := csi.NewControllerClient(conn)
				token, header := pf.token, []string{"ID", "CAPACITY", "CONTEXT", "PUBLISHED_NODES"}
				for {
					r, err := c.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: pf.max, StartingToken: token})
					if err != nil {
						return fmt.Errorf("ListVolumes: %w", err)
					}
					if err := p.print(r, header, func(t *table) {
						for _, e := range r.GetEntries() {
							v := e.GetVolume()
							t.row(v.GetVolumeId(), v.GetCapacityBytes(), FormatKV(v.GetVolumeContext()),
								strings.Join(e.GetStatus().GetPublishedNodeIds(), ","))
						}
					}); err != nil {
						return err
					}
					header = nil // one header for the whole listing
					if token = r.GetNextToken(); token == "" {
						return nil
					}
					if !pf.paging {
						hint(cmd, "more entries: --starting-token %s", token)
						return nil
					}
				}
			})
		},
	}
	pf.register(cmd.Flags())
	return cmd
}

func newGetCapacity(g *globals) *cobra.Command {
	var (
		caps   capsValue
		params kvValue
	)
	cmd := &cobra.Command{
		Use:   "get-capacity",
		Short: "GetCapacity: free space for new volumes (what CSIStorageCapacity objects report)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				r, err := csi.NewControllerClient(conn).GetCapacity(ctx, &csi.GetCapacityRequest{
					VolumeCapabilities: caps.caps, Parameters: params.m,
				})
				if err != nil {
					return fmt.Errorf("GetCapacity: %w", err)
				}
				return p.print(r, []string{"AVAILABLE", "MAX_VOLUME_SIZE", "MIN_VOLUME_SIZE"}, func(t *table) {
					t.row(r.GetAvailableCapacity(), optInt(r.GetMaximumVolumeSize()), optInt(r.GetMinimumVolumeSize()))
				})
			})
		},
	}
	capFlag(cmd.Flags(), &caps, "only count space usable with this capability")
	cmd.Flags().Var(&params, "params", "StorageClass parameters, k=v[,k=v] (repeatable)")
	return cmd
}

// optInt prints an optional wrapped integer, empty (shown "-") when unset.
func optInt(v *wrapperspb.Int64Value) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v.GetValue())
}

func newControllerCaps(g *globals) *cobra.Command {
	return capsCommand(g, "ControllerGetCapabilities: which controller calls the driver implements",
		func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, []string, error) {
			r, err := csi.NewControllerClient(conn).ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
			if err != nil {
				return nil, nil, fmt.Errorf("ControllerGetCapabilities: %w", err)
			}
			var names []string
			for _, c := range r.GetCapabilities() {
				names = append(names, c.GetRpc().GetType().String())
			}
			return r, names, nil
		})
}

// capsCommand is a get-capabilities command: one call, a one-column table.
func capsCommand(g *globals, short string, get func(context.Context, *grpc.ClientConn) (proto.Message, []string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "get-capabilities",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				r, names, err := get(ctx, conn)
				if err != nil {
					return err
				}
				return p.print(r, []string{"CAPABILITY"}, func(t *table) {
					for _, n := range names {
						t.row(n)
					}
				})
			})
		},
	}
}

func newControllerExpand(g *globals) *cobra.Command {
	var (
		caps     capsValue
		req, lim int64
	)
	cmd := &cobra.Command{
		Use:   "expand-volume ID...",
		Short: "ControllerExpandVolume: grow a volume's storage (a PVC's size raised)",
		Long: "ControllerExpandVolume: grow a volume's storage (a PVC's size raised).\n" +
			"Prints VOLUME_ID CAPACITY_BYTES NODE_EXPANSION_REQUIRED.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
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
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewControllerClient(conn).ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
					VolumeId: id, CapacityRange: capacityRange(req, lim), Secrets: s, VolumeCapability: c,
				})
				if err != nil {
					return nil, nil, fmt.Errorf("ControllerExpandVolume %s: %w", id, err)
				}
				return r, []any{r.GetCapacityBytes(), r.GetNodeExpansionRequired()}, nil
			})
		},
	}
	f := cmd.Flags()
	f.Var(sizeValue{&req}, "req-bytes", "new required size in bytes (suffixes accepted)")
	f.Var(sizeValue{&lim}, "lim-bytes", "new size limit in bytes (suffixes accepted)")
	capFlag(f, &caps, "the volume's capability (optional, one)")
	return cmd
}

func newGetVolume(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get-volume ID...",
		Short: "ControllerGetVolume: one volume's size, context and the nodes it is published to",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				header := []string{"ID", "CAPACITY", "CONTEXT", "PUBLISHED_NODES"}
				for _, id := range ids {
					r, err := csi.NewControllerClient(conn).ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: id})
					if err != nil {
						return fmt.Errorf("ControllerGetVolume %s: %w", id, err)
					}
					v := r.GetVolume()
					if err := p.print(r, header, func(t *table) {
						t.row(v.GetVolumeId(), v.GetCapacityBytes(), FormatKV(v.GetVolumeContext()),
							strings.Join(r.GetStatus().GetPublishedNodeIds(), ","))
					}); err != nil {
						return err
					}
					header = nil
				}
				return nil
			})
		},
	}
}
