package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/adapt"
	"github.com/volplug/volplug/internal/csi"
)

func newAdaptCommand() *cobra.Command {
	var (
		opts     adapt.Options
		endpoint string
	)
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "adapt",
		Short: "Serve a FlexVolume driver executable as a CSI driver",
		Long: `Serve any FlexVolume driver as a CSI driver: volplug plays kubelet and
controller-manager towards the executable (init at start, then attach,
waitforattach, mountdevice, mount, unmount, ... as CSI calls arrive), with
a deadline on every call. README.md has the mapping.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Version = version
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			a, err := adapt.New(ctx, opts)
			if err != nil {
				return err
			}
			l, err := csi.Listen(endpoint)
			if err != nil {
				return err
			}
			err = a.Serve(ctx, l)
			klog.Flush()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DriverPath, "driver-path", "", "the FlexVolume driver executable (required)")
	f.StringVar(&opts.Name, "driver-name", "", "CSI driver name, e.g. flex.example.com (required)")
	f.StringVar(&endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint: unix:///path or tcp://host:port")
	f.StringVar(&opts.NodeID, "node-id", host, "this node's name, as the driver's attach and isattached are told")
	f.DurationVar(&opts.CallTimeout, "call-timeout", 2*time.Minute, "longest a driver call may run before its process group is killed")
	f.StringVar(&opts.Attach, "enable-attach", adapt.AttachAuto, "attach, stage and ControllerPublish: auto (as the driver's init says), true or false")
	_ = cmd.MarkFlagRequired("driver-path")
	_ = cmd.MarkFlagRequired("driver-name")
	addKlogFlags(cmd)
	return cmd
}
