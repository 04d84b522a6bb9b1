// Package ctl is `volplug ctl`, a CSI client with the command set of csc
// (rexray/gocsi): enough to drive any CSI driver by hand through a volume's
// whole life, and to script it. Dial is reused by `volplug demo`.
package ctl

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// EndpointEnv is the variable csc and the CSI sidecars read the endpoint from.
const EndpointEnv = "CSI_ENDPOINT"

// globals are the flags every subcommand shares.
type globals struct {
	endpoint  string
	timeout   time.Duration
	output    string
	noHeaders bool
}

// NewCommand returns the `volplug ctl` command.
func NewCommand() *cobra.Command {
	g := &globals{}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Talk to a CSI driver (csc command set)",
		Long: `ctl calls a CSI driver's gRPC services directly, the way the Kubernetes
sidecars and kubelet would, one call per command.

Secrets for calls that take them are read from $` + SecretsEnv + ` (k=v,k2=v2) and
are never printed. Commands that change state print one line per object with
its ID first and no header; commands that read print a table with a header.
-o json prints each response as one protojson document.`,
		Example: `  export CSI_ENDPOINT=unix:///run/volplug/csi.sock
  volplug ctl identity plugin-info
  ID=$(volplug ctl controller create-volume --req-bytes 1Gi \
        --cap SINGLE_NODE_WRITER,mount,ext4 vol1 | awk '{print $1}')
  volplug ctl node stage --staging-target-path /mnt/stage \
        --cap SINGLE_NODE_WRITER,mount,ext4 "$ID"`,
		SilenceUsage: true,
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&g.endpoint, "endpoint", "e", os.Getenv(EndpointEnv),
		"CSI endpoint: unix:///path, /path, tcp://host:port or host:port (default $"+EndpointEnv+")")
	pf.DurationVarP(&g.timeout, "timeout", "t", time.Minute, "deadline for the whole command, dial included")
	pf.StringVarP(&g.output, "output", "o", FormatTable, "output format: table or json")
	pf.BoolVar(&g.noHeaders, "no-headers", false, "omit table headers")

	cmd.AddCommand(newIdentityCommand(g), newControllerCommand(g), newNodeCommand(g))
	return cmd
}

// run dials the endpoint and calls fn with a connection and a printer, all
// under one deadline, so a hung driver cannot hang a script.
func (g *globals) run(cmd *cobra.Command, fn func(ctx context.Context, conn *grpc.ClientConn, p *printer) error) error {
	p, err := newPrinter(cmd.OutOrStdout(), g.output, g.noHeaders)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	conn, err := Dial(ctx, g.endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(ctx, conn, p)
}

// hint prints a note for humans on stderr, out of the way of parsers.
func hint(cmd *cobra.Command, format string, args ...any) {
	fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...)
}
