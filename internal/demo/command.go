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
	"github.com/spf13/pflag"

	"github.com/volplug/volplug/internal/ctl"
	"github.com/volplug/volplug/internal/mounter"
)

// NewCommand returns the `volplug demo` command.
func NewCommand() *cobra.Command {
	o := options{}
	s3o := s3Options{}
	var size, backendName string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Walk one volume through create, attach, stage, publish and back, narrated",
		Long: `demo starts the volplug CSI driver as a child process with everything in a
fresh temporary directory, and takes one volume through the CSI lifecycle the
way Kubernetes would, explaining each call in Kubernetes terms, timing it, and
checking at the end that nothing is left behind. On any failure (or Ctrl-C)
it still tears down in reverse and keeps the directory with the logs.

--backend=local (the default): a disk image on a loop device. CreateVolume,
ControllerPublish, NodeStage, NodePublish, a write and read through the
mounted volume, a snapshot and its restore, online expansion, then all the
way back. Needs root and mkfs for the filesystem chosen.

--backend=s3: a bucket. With no --s3-endpoint the demo starts its own S3
server (versitygw, random keys) on 127.0.0.1; with one, the keys come from
the environment, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, never from
the command line. CreateVolume makes a bucket, NodeStage mounts it through
FUSE in the mounter the driver starts, two pods share it, expansion raises
its quota, and a kill -9 of the driver leaves the pods' mounts working.
Needs root and /dev/fuse (and s3fs or rclone for those mounters).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := ctl.ParseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			if n <= 0 {
				return fmt.Errorf("--size must be more than 0")
			}
			if err := checkBackendFlags(cmd.Flags(), backendName); err != nil {
				return err
			}
			o.size, s3o.size, s3o.keep = n, n, o.keep
			// Ctrl-C cancels the walk forward; the way back still runs.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// After the first signal, a second one kills the demo at once,
			// for when the teardown itself hangs.
			go func() { <-ctx.Done(); stop() }()
			if backendName == "s3" {
				return runS3(ctx, cmd.OutOrStdout(), s3o)
			}
			return run(ctx, cmd.OutOrStdout(), o)
		},
	}
	cmd.AddCommand(newAdaptCommand())
	f := cmd.Flags()
	f.StringVar(&backendName, "backend", "local", "local (a disk image on a loop device) or s3 (a bucket through FUSE)")
	f.BoolVar(&o.keep, "keep", false, "keep the temporary directory (pool, logs) for inspection")
	f.StringVar(&size, "size", "1Gi", "volume size (suffixes Ki, Mi, Gi accepted)")
	f.BoolVar(&o.attach, "attach", true, "local: run the driver with --enable-attach, so ControllerPublish is part of the walk")
	f.StringVar(&o.fsType, "fs-type", "ext4", "local: filesystem for the volume: ext4, xfs or btrfs")
	f.BoolVar(&o.more, "snapshots-and-expansion", true, "local: also snapshot the volume, restore the snapshot, and expand the volume online")
	f.StringVar(&s3o.endpoint, "s3-endpoint", "", "s3: the S3 endpoint to use, with keys from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY (default: start versitygw on 127.0.0.1)")
	f.StringVar(&s3o.region, "s3-region", "", "s3: the endpoint's region")
	f.StringVar(&s3o.mounterKind, "mounter", mounter.Builtin, "s3: how the bucket is mounted: builtin, s3fs or rclone")
	f.StringVar(&s3o.versitygw, "versitygw", "", "s3: the versitygw binary to start when no --s3-endpoint is given (default: bin/tools/versitygw, else $PATH)")
	return cmd
}

// localOnly and s3Only are the flags that mean something to one backend.
var (
	localOnly = []string{"attach", "fs-type", "snapshots-and-expansion"}
	s3Only    = []string{"s3-endpoint", "s3-region", "mounter", "versitygw"}
)

// checkBackendFlags refuses a flag the chosen backend would ignore, so a
// typo'd invocation does not silently walk something else.
func checkBackendFlags(f *pflag.FlagSet, backendName string) error {
	var other []string
	switch backendName {
	case "local":
		other = s3Only
	case "s3":
		other = localOnly
	default:
		return fmt.Errorf("--backend %q: want local or s3", backendName)
	}
	for _, name := range other {
		if f.Changed(name) {
			return fmt.Errorf("--%s has no meaning with --backend=%s", name, backendName)
		}
	}
	return nil
}
