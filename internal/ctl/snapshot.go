package ctl

import (
	"context"
	"fmt"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// snapshotRow is the one table layout of a snapshot, shared by create and list.
func snapshotRow(t *table, s *csi.Snapshot) {
	created := ""
	if ts := s.GetCreationTime(); ts != nil {
		created = ts.AsTime().UTC().Format(time.RFC3339)
	}
	t.row(s.GetSnapshotId(), s.GetSourceVolumeId(), s.GetSizeBytes(), created, s.GetReadyToUse())
}

func newCreateSnapshot(g *globals) *cobra.Command {
	var (
		params kvValue
		source string
	)
	cmd := &cobra.Command{
		Use:   "create-snapshot NAME...",
		Short: "CreateSnapshot: snapshot a volume (a VolumeSnapshot)",
		Long: "CreateSnapshot: snapshot a volume (a VolumeSnapshot).\n" +
			"Prints SNAPSHOT_ID SOURCE_VOLUME SIZE_BYTES CREATED READY per snapshot, no header.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, names []string) error {
			secrets, err := secretsFromEnv()
			if err != nil {
				return err
			}
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				c := csi.NewControllerClient(conn)
				for _, name := range names {
					r, err := c.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{
						Name: name, SourceVolumeId: source, Parameters: params.m, Secrets: secrets,
					})
					if err != nil {
						return fmt.Errorf("CreateSnapshot %s of %s: %w", name, source, err)
					}
					if err := p.print(r, nil, func(t *table) { snapshotRow(t, r.GetSnapshot()) }); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&source, "source-volume", "", "volume ID to snapshot")
	_ = cmd.MarkFlagRequired("source-volume")
	cmd.Flags().Var(&params, "params", "VolumeSnapshotClass parameters, k=v[,k=v] (repeatable)")
	return cmd
}

func newDeleteSnapshot(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-snapshot ID...",
		Short: "DeleteSnapshot: remove a snapshot",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return g.eachID(cmd, ids, func(ctx context.Context, conn *grpc.ClientConn, id string, s map[string]string) (proto.Message, []any, error) {
				r, err := csi.NewControllerClient(conn).DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id, Secrets: s})
				if err != nil {
					return nil, nil, fmt.Errorf("DeleteSnapshot %s: %w", id, err)
				}
				return r, nil, nil
			})
		},
	}
}

func newListSnapshots(g *globals) *cobra.Command {
	var (
		pf             pageFlags
		source, snapID string
	)
	cmd := &cobra.Command{
		Use:   "list-snapshots",
		Short: "ListSnapshots: snapshots, optionally of one volume or one ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			secrets, err := secretsFromEnv()
			if err != nil {
				return err
			}
			return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
				c := csi.NewControllerClient(conn)
				token, header := pf.token, []string{"ID", "SOURCE_VOLUME", "SIZE", "CREATED", "READY"}
				for {
					r, err := c.ListSnapshots(ctx, &csi.ListSnapshotsRequest{
						MaxEntries: pf.max, StartingToken: token, SourceVolumeId: source,
						SnapshotId: snapID, Secrets: secrets,
					})
					if err != nil {
						return fmt.Errorf("ListSnapshots: %w", err)
					}
					if err := p.print(r, header, func(t *table) {
						for _, e := range r.GetEntries() {
							snapshotRow(t, e.GetSnapshot())
						}
					}); err != nil {
						return err
					}
					header = nil
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
	cmd.Flags().StringVar(&source, "source-volume", "", "only snapshots of this volume ID")
	cmd.Flags().StringVar(&snapID, "snapshot-id", "", "only this snapshot ID")
	return cmd
}
