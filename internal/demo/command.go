// Package demo is `volplug demo`: it walks one volume through its whole
// CSI life on this machine, with the real driver, and says at every step
// what Kubernetes would be doing.
package demo

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/volplug/volplug/internal/ctl"
)

// NewCommand returns the `volplug demo` command.
func NewCommand() *cobra.Command {
	o := options{}
	var size string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Walk one volume through create, attach, stage, publish and back, narrated",
		Long: `demo starts the volplug CSI driver (local backend) as a child process with
everything in a fresh temporary directory, and takes one volume through the
CSI lifecycle the way Kubernetes would: CreateVolume, ControllerPublish,
NodeStage, NodePublish, a write and read through the mounted volume, then all
the way back. It explains each call in Kubernetes terms, times it, and checks
at the end that no mount or loop device is left behind.

It needs root (loop devices, mounts) and mkfs for the filesystem chosen.
On any failure it still tears down in reverse and keeps the directory with
the driver's log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := ctl.ParseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			if n <= 0 {
				return fmt.Errorf("--size must be more than 0")
			}
			o.size = n
			// Ctrl-C cancels the walk forward; the way back still runs.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// After the first signal, a second one kills the demo at once,
			// for when the teardown itself hangs.
			go func() { <-ctx.Done(); stop() }()
			return run(ctx, cmd.OutOrStdout(), o)
		},
	}
	cmd.AddCommand(newAdaptCommand())
	f := cmd.Flags()
	f.BoolVar(&o.keep, "keep", false, "keep the temporary directory (pool, driver log) for inspection")
	f.BoolVar(&o.attach, "attach", true, "run the driver with --enable-attach, so ControllerPublish is part of the walk")
	f.StringVar(&o.fsType, "fs-type", "ext4", "filesystem for the volume: ext4, xfs or btrfs")
	f.BoolVar(&o.more, "snapshots-and-expansion", true, "also snapshot the volume, restore the snapshot, and expand the volume online")
	f.StringVar(&size, "size", "1Gi", "volume size (suffixes Ki, Mi, Gi accepted)")
	return cmd
}
