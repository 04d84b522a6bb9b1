package ctl

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

func newIdentityCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "identity",
		Aliases: []string{"i"},
		Short:   "The Identity service: who the driver is and whether it is ready",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "plugin-info",
			Short: "GetPluginInfo: the driver's name, version and manifest",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
					r, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
					if err != nil {
						return fmt.Errorf("GetPluginInfo: %w", err)
					}
					return p.print(r, []string{"NAME", "VERSION", "MANIFEST"}, func(t *table) {
						t.row(r.GetName(), r.GetVendorVersion(), FormatKV(r.GetManifest()))
					})
				})
			},
		},
		&cobra.Command{
			Use:   "plugin-capabilities",
			Short: "GetPluginCapabilities: which services and features the driver offers",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
					r, err := csi.NewIdentityClient(conn).GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
					if err != nil {
						return fmt.Errorf("GetPluginCapabilities: %w", err)
					}
					return p.print(r, []string{"KIND", "CAPABILITY"}, func(t *table) {
						for _, c := range r.GetCapabilities() {
							t.row(PluginCapabilityString(c))
						}
					})
				})
			},
		},
		&cobra.Command{
			Use:   "probe",
			Short: "Probe: is the driver ready to serve",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return g.run(cmd, func(ctx context.Context, conn *grpc.ClientConn, p *printer) error {
					r, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
					if err != nil {
						return fmt.Errorf("Probe: %w", err)
					}
					return p.print(r, []string{"READY"}, func(t *table) {
						t.row(ProbeReady(r))
					})
				})
			},
		},
	)
	return cmd
}

// ProbeReady reads Probe's answer. An absent ready field means ready: the
// spec lets drivers that are always ready leave it out.
func ProbeReady(r *csi.ProbeResponse) bool {
	return r.GetReady() == nil || r.GetReady().GetValue()
}

// PluginCapabilityString names a plugin capability as two words, its kind
// and its value ("service CONTROLLER_SERVICE", "expansion ONLINE").
func PluginCapabilityString(c *csi.PluginCapability) (kind, name string) {
	switch {
	case c.GetService() != nil:
		return "service", c.GetService().GetType().String()
	case c.GetVolumeExpansion() != nil:
		return "expansion", c.GetVolumeExpansion().GetType().String()
	default:
		return "unknown", c.String()
	}
}
